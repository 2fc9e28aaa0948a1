"""Run-time parameters through the real SDK against the emulator, on a simulated node process: a desired
patch of run-time keys is reported `applied` and is in effect (status limits and `parameters`) without a
restart; a mixed patch applies its run-time part and stages the rest; an invalid patch changes nothing;
Setup_Device goes the same way; after a restart the node starts as the cloud left it."""
import json

import pytest

from tests.util import wait_until

pytestmark = pytest.mark.slow


def reported(hub, version):
    """The node's parameters_status once it answers `version`."""
    return wait_until(lambda: (r := hub.twin()["reported"].get("parameters_status")) and
                      r.get("desired_version") == version and r, 15, 0.1, f"desired version {version} reported")


def test_run_time_parameters_take_effect_at_once_the_rest_is_staged_invalid_changes_nothing(
        tmp_path, emulator, cloud_node):
    hub = emulator()
    node = cloud_node(hub)
    first = node.wait_status(lambda s: s["state"] == "run" and s.get("cloud") and s["cloud"]["connected"]
                             and s["limits"] and s["limits"]["charge_w"] > 0, 60, "connected and running")
    assert first["parameters"]["safety"]["soc_max"] == 0.95 and first["parameters_changed"] is None
    # 1. run-time keys: applied, and the status shows their effect as soon as the twin says so
    v = hub.desired("node1", {"parameters": {"safety": {"soc_max": 0.3}, "staleness": {"meter_s": 5}}})
    assert reported(hub, v) == {"desired_version": v, "status": "applied",
                                "detail": "applied: safety.soc_max, staleness.meter_s"}
    s = node.status()
    assert s["limits"]["charge_w"] == 0 and "at max 0.30" in " ".join(s["limits"]["reasons"]), s["limits"]
    assert s["parameters"]["safety"]["soc_max"] == 0.3 and s["parameters"]["staleness"]["meter_s"] == 5
    assert s["parameters_changed"]["keys"] == {"safety.soc_max": [0.95, 0.3], "staleness.meter_s": [3.0, 5.0]}
    assert s["parameters_changed"]["origin"] == f"desired version {v}"
    assert s["pid"] == first["pid"] and s["cycle"]["cycles"] > first["cycle"]["cycles"]  # no restart
    assert f"site parameters changed (desired version {v}): safety.soc_max 0.95 -> 0.3" in node.output()
    audit = tmp_path / "node1" / "audit.jsonl"
    line = wait_until(lambda: [a for a in map(json.loads, audit.read_text().splitlines())
                               if a["type"] == "apply_parameters" and a["status"] == "done"], 10, 0.1, "audited")
    assert line[0]["payload"]["source"] == "cloud" and line[0]["payload"]["origin"] == f"desired version {v}"
    assert line[0]["payload"]["parameters"] == {"safety": {"soc_max": 0.3}, "staleness": {"meter_s": 5.0}}
    # 2. mixed: the run-time key now, the restart key staged
    v = hub.desired("node1", {"parameters": {"safety": {"ramp_w_per_s": 2000}, "cycle": {"period_s": 0.2}}})
    assert reported(hub, v)["detail"] == "needs a restart: cycle.period_s; applied now: safety.ramp_w_per_s"
    assert hub.twin()["reported"]["parameters_status"]["status"] == "staged"
    s = node.status()
    assert s["parameters"]["safety"]["ramp_w_per_s"] == 2000 and s["parameters_changed"]["origin"].endswith(str(v))
    assert 90 < s["cycle"]["period_ms_p50"] < 110  # still 100 ms
    changed = s["parameters_changed"]
    # 3. invalid (soc_reserve above the soc_max in effect): rejected, nothing of it applied
    v = hub.desired("node1", {"parameters": {"safety": {"soc_reserve": 0.5}, "staleness": {"bms_s": 9}}})
    rep = reported(hub, v)
    assert rep["status"] == "rejected" and "soc_reserve (0.5)" in rep["detail"] and "nothing applied" in rep["detail"]
    s = node.status()
    assert s["parameters"]["staleness"]["bms_s"] == 2 and s["parameters"]["safety"]["soc_reserve"] == 0.1
    assert s["parameters_changed"] == changed and s["limits"]["charge_w"] == 0
    assert hub.twin()["reported"]["parameters"] == {"safety": {"soc_max": 0.3, "ramp_w_per_s": 2000},
                                                    "staleness": {"meter_s": 5}, "cycle": {"period_s": 0.2}}
    # 4. Setup_Device: the same path, as a method (the staged period still needs its restart)
    code, body = hub.invoke("node1", "Setup_Device", {"safety": {"soc_max": 0.9}})
    assert code == 200 and body["parameters_status"] == "staged", body
    assert body["detail"] == "needs a restart: cycle.period_s; applied now: safety.soc_max", body
    s = node.status()
    assert s["limits"]["charge_w"] > 0 and s["parameters"]["safety"]["soc_max"] == 0.9
    assert s["parameters_changed"]["origin"].startswith("Setup_Device")
    # 5. a restart: the node starts as the cloud left it, the staged period included
    before = node.output()
    node.kill()
    again = cloud_node(hub, restart_of=node)
    s = again.wait_status(lambda s: s["state"] == "run" and s["cycle"]["cycles"] > 20, 60, "restarted")
    assert s["parameters"]["safety"]["ramp_w_per_s"] == 2000 and s["parameters"]["safety"]["soc_max"] == 0.9
    assert s["parameters"]["staleness"]["meter_s"] == 5 and 190 < s["cycle"]["period_ms_p50"] < 210
    assert "Traceback" not in before + again.output()
