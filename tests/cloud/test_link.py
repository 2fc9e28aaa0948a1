"""The link to the hub: telemetry contents, properties and interval; an outage (the emulator killed
and started again) after which everything queued arrives in order; a bad device key reported
clearly and retried with backoff, without harm to the node."""
import datetime as dt
import random
import signal
import time

import pytest

from tests.util import wait_until

pytestmark = pytest.mark.slow

OUTAGE_S = 120.0  # "an outage of minutes": two (bench/cloud.py drains a backlog of any size, e.g. a week's)


def _ts(body) -> float:
    return dt.datetime.fromisoformat(body["ts"].replace("Z", "+00:00")).timestamp()


def test_telemetry_contents_properties_and_interval(emulator, cloud_node):
    hub = emulator()
    node = cloud_node(hub, telemetry_interval_s=2)
    node.wait_status(lambda s: s.get("cloud") and s["cloud"]["connected"] and s["state"] == "run", 60, "connected")
    spots = wait_until(lambda: (m := hub.messages(kind="SC_Spot_10s")) and len(m) >= 4 and m, 30, 0.2, "4 spots")
    m = spots[-1]
    assert m["properties"] == {"$.ct": "application/json", "$.ce": "utf-8", "type": "SC_Spot_10s"}
    body = m["body"]
    for key in ("ts", "seq", "node_id", "state", "mode", "role", "soc", "soh", "p_w", "grid_p_w", "limits",
                "cell_v_min_v", "cell_v_max_v", "cell_t_min_c", "cell_t_max_c", "inverter", "meter", "freq_hz", "errors"):
        assert key in body, key
    assert body["ts"].endswith("Z") and body["node_id"] == "node1" and 0 <= body["soc"] <= 1
    gaps = [_ts(b["body"]) - _ts(a["body"]) for a, b in zip(spots[1:], spots[2:])]
    assert all(1.5 < g < 3.5 for g in gaps), gaps
    # a state change and an error each make an event
    assert node.cli("state", "sleep").returncode == 0
    ev = wait_until(lambda: [m["body"] for m in hub.messages(kind="SC_state_event") if m["body"]["to"] == "sleep"],
                    15, 0.2, "a state event")
    assert ev[0]["from"] == "run" and "command" in ev[0]["reason"]
    assert node.cli("estop", "engage").returncode == 0
    err = wait_until(lambda: [m for m in hub.messages(kind="SC_error_event") if m["body"]["code"] == "ESTOP"], 15,
                     0.2, "an error event")
    assert err[0]["body"]["raised"] is True
    seqs = [m["body"]["seq"] for m in hub.messages()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


@pytest.mark.timeout(OUTAGE_S + 180)
def test_an_outage_loses_nothing_and_delivers_in_order(emulator, cloud_node):
    hub = emulator()
    node = cloud_node(hub, reconnect_max_s=10)  # (5 min by default: the node would try again up to 7.5 min later)
    node.wait_status(lambda s: s.get("cloud") and s["cloud"]["connected"], 60, "connected")
    wait_until(lambda: len(hub.messages()) >= 3, 20, 0.2, "first messages")
    hub.stop()  # kill -9 of the hub: the node's link breaks
    t_stop = time.monotonic()
    node.wait_status(lambda s: not s["cloud"]["connected"], 30, "the node sees the outage")
    assert node.cli("state", "sleep").returncode == 0  # an event during the outage too
    wait_until(lambda: time.monotonic() - t_stop > OUTAGE_S, OUTAGE_S + 5, 0.5, "the outage")
    s = node.status()["cloud"]
    assert s["queued"] >= OUTAGE_S * 0.8 and s["oldest_queued_s"] >= OUTAGE_S * 0.8, s
    hub.start()
    node.wait_status(lambda s: s["cloud"]["connected"] and s["cloud"]["queued"] == 0, 120, "queue drained")
    msgs = hub.messages()
    seqs = [m["body"]["seq"] for m in msgs]
    first_seen = list(dict.fromkeys(seqs))  # at least once: a resend after a cut is allowed, never a hole
    assert first_seen == list(range(first_seen[0], first_seen[-1] + 1)), "a message is missing or out of order"
    assert any(m["properties"]["type"] == "SC_state_event" and m["body"]["to"] == "sleep" for m in msgs)
    spots = [m for m in msgs if m["properties"]["type"] == "SC_Spot_10s"]
    assert max(_ts(b["body"]) - _ts(a["body"]) for a, b in zip(spots, spots[1:])) < 3  # none missing in the outage
    assert "Traceback" not in node.output()


def test_a_bad_device_key_is_reported_and_retried_with_backoff(emulator, cloud_node, tmp_path):
    hub = emulator()
    good = hub.cs_file().read_text().strip()
    bad = tmp_path / "bad.cs"
    bad.write_text(good.rsplit("SharedAccessKey=", 1)[0] + "SharedAccessKey=" + "QUJD" * 11 + "=\n")
    node = cloud_node(hub, connection_string_file=str(bad))
    s = node.wait_status(lambda s: s.get("cloud") and s["cloud"]["problem"] and s["state"] == "run"
                         and "authentication failed" in s["cloud"]["problem"], 60,
                         "authentication failure reported, the node running regardless")
    assert s["cloud"]["connected"] is False
    r = node.cli("status")
    assert "cloud: NOT connected" in r.stdout and "authentication failed" in r.stdout, r.stdout
    wait_until(lambda: hub.output().count("signature does not match") >= 3, 30, 0.2, "three tries")
    out = node.output()
    assert "authentication failed" in out and "next try in" in out and "Traceback" not in out
    assert good.split("SharedAccessKey=")[1] not in out  # the secret is never logged


def test_mqtt_over_websockets(emulator, cloud_node):
    """`cloud.websockets`: MQTT over WSS on 443, the same protocol."""
    hub = emulator()
    node = cloud_node(hub, websockets=True)
    node.wait_status(lambda s: s.get("cloud") and s["cloud"]["connected"], 60, "connected over WSS")
    wait_until(lambda: hub.messages(kind="SC_Spot_10s"), 20, 0.2, "telemetry over WSS")
    code, body = hub.invoke("node1", "GoToState_Idling", {})
    assert code == 200 and body["status"] == "done", body
    assert " wss" in hub.output()
    t0 = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)  # the orderly stop stays within 2 s with the cloud client
    assert node.proc.wait(5) == 0 and time.monotonic() - t0 < 2.5, node.output()


def test_kill_9_of_the_node_loses_no_queued_message(emulator, cloud_node):
    """The node killed (-9, with its simulator) at random moments while it sends, its link cut now and
    then so that a backlog drains; started again on the same data: the hub ends with every seq, in order."""
    rng = random.Random(3)
    hub = emulator()
    node = cloud_node(hub)
    for round_ in range(5):
        node.wait_status(lambda s: s.get("cloud") and s["cloud"]["connected"], 60, "connected")
        if round_ % 2:
            hub.cut_link("node1", True)
            wait_until(lambda: node.status()["cloud"]["queued"] >= 3, 20, 0.2, "a backlog")
            hub.cut_link("node1", False)
        deadline = time.monotonic() + rng.uniform(0.0, 3.0)
        wait_until(lambda: time.monotonic() > deadline, 5, 0.05, "a random moment")
        node.kill()
        node = cloud_node(hub, restart_of=node)
    node.wait_status(lambda s: s.get("cloud") and s["cloud"]["connected"] and s["cloud"]["queued"] == 0, 90,
                     "everything delivered")
    seqs = list(dict.fromkeys(m["body"]["seq"] for m in hub.messages()))
    assert seqs == list(range(1, len(seqs) + 1)), "a queued message is missing or out of order"
