"""The twelve direct methods through the real SDK and the emulator (TLS): each answered with its
Command's outcome: success, 400 naming the field, 409 when the state forbids it, 404 unknown,
a mode on a node without the cluster feature (a cluster of one),
501 not in this version, duplicates answered from the command book, too old (408), rate limit (429)."""
import datetime as dt

import pytest

from tests.util import wait_until

pytestmark = pytest.mark.slow


def _connected(node, timeout=60):
    return node.wait_status(lambda s: s.get("cloud") and s["cloud"]["connected"] and s["state"] == "run",
                            timeout, "node in run and connected to the hub")


def test_state_restart_and_unavailable_methods(emulator, cloud_node):
    hub = emulator()
    node = cloud_node(hub)
    _connected(node)
    # success, and the final status as an SC_command_event
    code, body = hub.invoke("node1", "GoToState_Idling", {"request_id": "idle-1"})
    assert (code, body["status"], body["command_id"]) == (200, "done", "cloud-idle-1"), body
    assert body["detail"] == "run -> sleep"
    node.wait_status(lambda s: s["state"] == "sleep", 5, "node asleep")
    wait_until(lambda: [m for m in hub.messages(kind="SC_command_event") if m["body"]["command_id"] == "cloud-idle-1"],
               10, 0.1, "the command event")
    # duplicate request id: answered from the command book, not carried out again
    node.cli("state", "run")
    node.wait_status(lambda s: s["state"] == "run", 5, "node running again")
    code, body = hub.invoke("node1", "GoToState_Idling", {"request_id": "idle-1"})
    assert code == 200 and body["detail"].startswith("duplicate request") and "run -> sleep" in body["detail"]
    assert node.status()["state"] == "run"
    # bad payload: 400 with the JSON path
    code, body = hub.invoke("node1", "GoToState_Running", {"speed": 3})
    assert code == 400 and body["detail"].startswith("$.speed"), body
    code, body = hub.invoke("node1", "Restart_Device", {"reboot": "yes"})
    assert code == 400 and body["detail"].startswith("$.reboot"), body
    code, body = hub.invoke("node1", "GoToState_Running", {"issued_at": "yesterday"})
    assert code == 400 and body["detail"].startswith("$.issued_at"), body
    # the state forbids it: 409 with the reason (maintenance only from run; e-stop blocks run)
    assert node.cli("estop", "engage").returncode == 0
    node.wait_status(lambda s: s["state"] == "error", 5, "node in error")
    code, body = hub.invoke("node1", "GoToState_Running", {})
    assert code == 409 and body["status"] == "rejected" and body["detail"], body
    # unknown and not-yet methods
    code, body = hub.invoke("node1", "Self_Destruct", {})
    assert code == 404 and "unknown method" in body["detail"]
    for name in ("Update_Device", "Receive_Artifact"):
        code, body = hub.invoke("node1", name, {})
        assert code == 501 and "not available in this version" in body["detail"]
    # a request older than its time-to-live is refused (no replays)
    old = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)).isoformat()
    code, body = hub.invoke("node1", "GoToState_Idling", {"issued_at": old})
    assert code == 408 and "older than method_ttl_s" in body["detail"]
    assert "Traceback" not in node.output()


def test_rate_limit_per_method(emulator, cloud_node):
    hub = emulator()
    node = cloud_node(hub, method_rate_per_min=3)
    _connected(node)
    codes = [hub.invoke("node1", "GoToState_Running", {})[0] for _ in range(4)]
    assert codes == [200, 200, 200, 429], codes
    assert hub.invoke("node1", "GoToState_Idling", {})[0] == 200  # per method


def test_a_node_without_the_cluster_feature_runs_a_mode_as_a_cluster_of_one(emulator, cloud_node):
    hub = emulator()
    node = cloud_node(hub)
    _connected(node)
    code, body = hub.invoke("node1", "GoToMode_ChargeOnly", {"target_soc": 0.9, "max_charge_w": 1000})
    assert code == 200 and body["status"] == "done", body
    s = node.wait_status(lambda s: s["setpoint_source"] == "cluster" and abs(s["p_w"] + 1000) < 50, 15,
                         "the node charging at 1000 W by itself")
    assert s["role"] == "alone"
    wait_until(lambda: hub.twin()["reported"].get("mode") == "charge_only", 15, 0.2, "mode reported")


def test_restart_device_is_an_orderly_restart(emulator, cloud_node):
    hub = emulator()
    node = cloud_node(hub)
    before = _connected(node)["pid"]
    code, body = hub.invoke("node1", "Restart_Device", {})
    assert code == 200 and body["status"] == "done" and "orderly restart" in body["detail"], body
    # scripts/run-sim starts the node again (exit 75): it comes back and connects again
    node.wait_status(lambda s: s["pid"] != before and s["cloud"]["connected"], 60, "the restarted node connected")
    assert "exit status 75" in node.output()


def test_mode_methods_go_through_the_cluster(emulator, cloud_node):
    hub = emulator()
    node = cloud_node(hub, cluster=True)
    node.wait_status(lambda s: s.get("cloud") and s["cloud"]["connected"] and s["role"] == "leader", 60,
                     "a connected leader")
    code, body = hub.invoke("node1", "GoToMode_ChargeOnly", {"target_soc": 0.9, "max_charge_w": 1000,
                                                            "request_id": "mode-1"})
    assert code == 200 and body["status"] in ("done", "accepted"), body
    code, again = hub.invoke("node1", "GoToMode_ChargeOnly", {"target_soc": 0.9, "request_id": "mode-1"})
    assert code == 200 and again["command_id"] == "cloud-mode-1" and again["detail"].startswith("duplicate"), again
    wait_until(lambda: hub.twin()["reported"].get("mode") == "charge_only", 15, 0.2, "mode reported")
    code, body = hub.invoke("node1", "GoToMode_ChargeOnly", {"target_soc": 7})
    assert code == 400 and body["detail"].startswith("$.target_soc"), body
    code, body = hub.invoke("node1", "GoToMode_SelfConsumption", {"grid_target_w": 0})
    assert code == 200, body
    wait_until(lambda: hub.twin()["reported"].get("mode") == "self_consumption", 15, 0.2, "mode reported")
    # the leader tells the cloud about the cluster: leader, term, members, mode
    events = wait_until(lambda: [m["body"] for m in hub.messages(kind="SC_cluster_state_event")
                                 if m["body"]["mode"] == "self_consumption"], 15, 0.2, "a cluster state event")
    assert events[0]["leader"] == "node1" and events[0]["members"] == ["node1"] and events[0]["term"] >= 1
