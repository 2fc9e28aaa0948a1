"""The IoT Hub emulator on its own: SAS tokens checked against each device's key, every device kept
to its own topics (a device cannot read or write another device's), certificates, the operator CLI."""
import base64
import hashlib
import hmac
import json
import queue
import ssl
import threading
import subprocess
import sys
import time
import urllib.parse

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509

from tests.util import REPO, wait_until


def _token(host: str, device: str, key: str, ttl_s: int = 3600) -> str:
    sr = urllib.parse.quote(f"{host}/devices/{device}", safe="")
    se = str(int(time.time()) + ttl_s)
    sig = base64.b64encode(hmac.new(base64.b64decode(key), f"{sr}\n{se}".encode(), hashlib.sha256).digest()).decode()
    return f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig, safe='')}&se={se}"


def _key(hub, device):
    return dict(p.split("=", 1) for p in hub.cs_file(device).read_text().strip().split(";"))["SharedAccessKey"]


class Device:
    """A raw MQTT 3.1.1 client (paho, as the SDK uses) logged in as `device`."""

    def __init__(self, hub, device, key=None, client_id=None):
        self.got, self.suback, self.connack = queue.Queue(), queue.Queue(), queue.Queue()
        self.c = mqtt.Client(client_id=client_id or device, clean_session=True, protocol=mqtt.MQTTv311)
        self.c.username_pw_set(f"{hub.host}/{device}/?api-version=2021-04-12", _token(hub.host, device, key or _key(hub, device)))
        self.c.tls_set(ca_certs=str(hub.dir / "ca.pem"), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.c.on_connect = lambda c, u, f, rc: self.connack.put(rc)
        self.c.on_message = lambda c, u, m: self.got.put((m.topic, m.payload))
        self.c.on_subscribe = lambda c, u, mid, qos: self.suback.put(qos)
        self.disconnected = False
        self.c.on_disconnect = lambda c, u, rc: setattr(self, "disconnected", True)
        self.c.connect(hub.host, 8883)
        self.c.loop_start()
        self.rc = self.connack.get(timeout=10)

    def subscribe(self, topic):
        self.c.subscribe(topic, 1)
        return self.suback.get(timeout=10)[0]

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def two_devices(emulator):
    hub = emulator(devices=("node1", "node2"))
    made = []

    def connect(device, **kw):
        d = Device(hub, device, **kw)
        made.append(d)
        return d

    yield hub, connect
    for d in made:
        d.close()


def test_sas_tokens_are_checked_against_the_device_key(two_devices):
    hub, connect = two_devices
    assert connect("node1").rc == 0
    assert connect("node2", key=_key(hub, "node1")).rc == 4  # another device's key: bad credentials
    assert connect("node3", key=_key(hub, "node1")).rc == 5  # unknown device
    assert connect("node1", client_id="node2").rc == 4  # logged in as node1 with node2's client id
    assert "signature does not match" in hub.output()


def test_a_device_cannot_read_or_write_another_devices_topics(two_devices):
    hub, connect = two_devices
    node1, node2 = connect("node1"), connect("node2")
    assert node1.rc == node2.rc == 0
    assert node1.subscribe("devices/node2/messages/devicebound/#") == 128
    assert node1.subscribe("#") == 128
    assert node1.subscribe("$iothub/methods/POST/#") == 1
    assert node2.subscribe("$iothub/methods/POST/#") == 1
    # a method for node2 reaches node2 only, and only node2's answer counts
    answer = {}

    def invoke():
        answer["r"] = hub.invoke("node2", "Ping", {"x": 1}, timeout=10)

    t = threading.Thread(target=invoke)
    t.start()
    topic, payload = node2.got.get(timeout=10)
    assert topic.startswith("$iothub/methods/POST/Ping/?$rid=") and json.loads(payload) == {"x": 1}
    rid = topic.split("$rid=")[1]
    node1.c.publish(f"$iothub/methods/res/200/?$rid={rid}", json.dumps({"from": "node1"}), qos=1)
    wait_until(lambda: "node1 answered method request" in hub.output(), 10, 0.05, "node1's answer refused")
    node2.c.publish(f"$iothub/methods/res/200/?$rid={rid}", json.dumps({"from": "node2"}), qos=1)
    t.join(15)
    assert answer["r"] == (200, {"from": "node2"})
    assert node1.got.empty()
    # writing to another device's telemetry: disconnected, nothing stored for node2
    node1.c.publish("devices/node2/messages/events/", b'{"forged": true}', qos=1)
    wait_until(lambda: node1.disconnected, 10, 0.05, "node1 disconnected")
    assert hub.messages("node2") == []
    assert "refused (not its topic)" in hub.output()


def test_certificates_name_the_emulator_address(emulator):
    hub = emulator()
    cert = x509.load_pem_x509_certificate((hub.dir / "server.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {str(n.value) for n in san}
    assert {hub.host, "localhost", "127.0.0.1"} <= names


def test_operator_cli_twin_desired_and_invoke_offline(emulator):
    hub = emulator()
    cli = [sys.executable, "-m", "sitecontroller.cloud.emulator", "--dir", str(hub.dir)]
    r = subprocess.run(cli + ["desired", "node1", '{"parameters": {"cloud": {"telemetry_interval_s": 5}}}'],
                       capture_output=True, text=True, cwd=REPO, timeout=20)
    assert r.returncode == 0 and json.loads(r.stdout) == {"$version": 2}, r.stderr
    r = subprocess.run(cli + ["twin", "node1"], capture_output=True, text=True, cwd=REPO, timeout=20)
    assert json.loads(r.stdout)["desired"]["parameters"]["cloud"]["telemetry_interval_s"] == 5
    r = subprocess.run(cli + ["invoke", "node1", "GoToState_Running", "{}", "--timeout", "2"],
                       capture_output=True, text=True, cwd=REPO, timeout=20)
    assert r.returncode == 1 and json.loads(r.stdout)["status"] == 404  # the device is not connected
    r = subprocess.run(cli + ["invoke", "node1", "X", "not json"], capture_output=True, text=True, cwd=REPO, timeout=20)
    assert r.returncode == 1 and "not JSON" in r.stderr
