"""Device twin desired `parameters` ↔ site parameters: validated as a whole, run-time keys put in effect
at once (through the node's `apply_parameters` command, on a whole node stepped on the simulated clock),
the rest staged for a restart, invalid ones rejected with nothing applied, versions in order (older
never overwrites newer, a gap reads the whole twin), the last valid overlay cached on disk."""
import asyncio
import json
import random
import types

import pytest

from sitecontroller import live_params
from sitecontroller import params as site_params
from sitecontroller.cloud.twin import ParameterTwin, merge, with_cached
from tests.unit.test_node import Rig
from tests.util import isolated_example, wait_until


class Twin:
    """A twin on a whole node (in-process devices, simulated clock) whose cycles run while it waits."""

    def __init__(self, params):
        self.rig = Rig(params)
        self.node = self.rig.node
        self.rig.run(0.3)
        self.t = ParameterTwin(self.node)

    def run(self, coro):
        async def main():
            async def cycles():
                while True:
                    self.rig.run(self.rig.period)
                    await asyncio.sleep(0.001)

            stepper = asyncio.create_task(cycles())
            try:
                return await coro
            finally:
                stepper.cancel()
        return asyncio.run(main())

    def patch(self, version, parameters):
        return self.run(self.t.desired_patch({"$version": version, "parameters": parameters}))


@pytest.fixture
def twin(tmp_path):
    data = isolated_example("sim_node1_inproc.json", tmp_path)
    data["cloud"] = {"connection_string_file": "x.cs", "telemetry_interval_s": 10}
    tw = Twin(site_params.parse(data))
    tw.run(tw.t.desired_twin({"$version": 1}))  # what the client does first: read the whole twin
    return tw


def test_runtime_keys_apply_at_once_the_rest_is_staged_invalid_is_rejected(twin):
    t, node = twin.t, twin.node
    heard = []
    node.live.listeners.append(lambda old, new: heard.append(new.cloud.telemetry_interval_s)
                               if new.cloud.telemetry_interval_s != old.cloud.telemetry_interval_s else None)
    twin.patch(2, {"cloud": {"telemetry_interval_s": 3}})
    assert t.status == {"desired_version": 2, "status": "applied", "detail": "applied: cloud.telemetry_interval_s"}
    assert node.params.cloud.telemetry_interval_s == 3 and heard == [3]
    twin.patch(3, {"safety": {"soc_max": 0.5}, "staleness": {"meter_s": 5}})  # SOC is 0.6
    assert t.status["status"] == "applied" and "safety.soc_max, staleness.meter_s" in t.status["detail"]
    assert node.status()["limits"]["charge_w"] == 0 and node.params.staleness.meter_s == 5
    twin.patch(4, {"safety": {"ramp_w_per_s": 4000}, "cycle": {"period_s": 0.2}})  # mixed
    assert t.status == {"desired_version": 4, "status": "staged",
                        "detail": "needs a restart: cycle.period_s; applied now: safety.ramp_w_per_s"}
    assert node.params.safety.ramp_w_per_s == 4000 and node.params.cycle.period_s == 0.1
    before, overlay = node.params, dict(t.overlay)
    twin.patch(5, {"safety": {"soc_min": 2}, "cloud": {"telemetry_interval_s": 1}})
    assert t.status["status"] == "rejected" and "$.safety.soc_min" in t.status["detail"]
    assert t.overlay == overlay and node.params is before and heard == [3]  # nothing of it, the valid part neither
    twin.patch(6, {"safety": {"soc_reserve": 0.55}})  # valid alone, but not with soc_max 0.5 in effect
    assert t.status["status"] == "rejected" and "soc_reserve (0.55)" in t.status["detail"] and node.params is before
    twin.patch(7, {"nonsense": 1})
    assert t.status["status"] == "rejected" and "$.nonsense" in t.status["detail"]
    audit = [json.loads(x) for x in (node.params.data_dir / "audit.jsonl").read_text().splitlines()]
    done = [a for a in audit if a["type"] == "apply_parameters" and a["status"] == "done"]
    assert [a["payload"]["origin"] for a in done] == ["desired version 2", "desired version 3", "desired version 4"]
    assert done[-1]["result"]["changed"] == {"safety.ramp_w_per_s": [10000.0, 4000.0]}


def test_versions_in_order_older_never_overwrites_a_gap_reads_the_whole_twin(twin):
    t, node = twin.t, twin.node
    assert twin.patch(2, {"cloud": {"telemetry_interval_s": 5}}) == "applied"
    assert twin.patch(2, {"cloud": {"telemetry_interval_s": 7}}) == "old"
    assert twin.patch(1, {"cloud": {"telemetry_interval_s": 9}}) == "old"
    assert twin.patch(4, {"cloud": {"telemetry_interval_s": 8}}) == "gap"
    assert t.overlay == {"cloud": {"telemetry_interval_s": 5}} and t.version == 2
    # the whole twin (after a gap or a reconnect) replaces the overlay, and only if newer
    assert twin.run(t.desired_twin({"$version": 4, "parameters": {"cloud": {"telemetry_interval_s": 8}}}))
    assert t.overlay == {"cloud": {"telemetry_interval_s": 8}} and node.params.cloud.telemetry_interval_s == 8
    assert not twin.run(t.desired_twin({"$version": 3, "parameters": {}}))


def test_the_last_valid_parameters_are_cached_and_used_at_the_next_start(twin):
    t, params = twin.t, twin.node.params
    twin.patch(2, {"cloud": {"telemetry_interval_s": 4}, "safety": {"ramp_w_per_s": 4000}, "cycle": {"period_s": 0.2}})
    twin.patch(3, {"safety": {"soc_max": 7}})  # rejected: not cached
    started = with_cached(params)
    assert started.cloud.telemetry_interval_s == 4 and started.safety.ramp_w_per_s == 4000
    assert started.cycle.period_s == 0.2
    cache = json.loads((params.data_dir / "cloud" / "desired.json").read_text())
    assert cache["version"] == 2
    again = ParameterTwin(types.SimpleNamespace(params=started))
    assert again.version == 2 and again.overlay == cache["parameters"]


def test_a_change_the_node_refuses_is_neither_applied_nor_cached(twin):
    """The node checks again, with what is in effect when its cycle carries the change out: if it
    refuses (here: the node is stopping), the twin reports `rejected` and caches nothing."""
    t, node = twin.t, twin.node
    node.commands.close()
    twin.patch(2, {"safety": {"ramp_w_per_s": 4000}})
    assert t.status["status"] == "rejected" and "stopping" in t.status["detail"]
    assert node.params.safety.ramp_w_per_s == 10000 and t.overlay == {}
    assert json.loads((node.params.data_dir / "cloud" / "desired.json").read_text()) == {"version": 1, "parameters": {}}


@pytest.mark.slow
def test_twin_patches_through_the_sdk_and_a_patch_sent_during_an_outage(emulator, cloud_node):
    hub = emulator()
    node = cloud_node(hub)
    node.wait_status(lambda s: s.get("cloud") and s["cloud"]["connected"], 60, "connected")
    v = hub.desired("node1", {"parameters": {"cloud": {"telemetry_interval_s": 3}}})
    wait_until(lambda: hub.twin()["reported"].get("parameters_status", {}).get("desired_version") == v, 15, 0.1,
               "the patch reported")
    rep = hub.twin()["reported"]
    assert rep["parameters_status"]["status"] == "applied" and rep["parameters"] == {"cloud": {"telemetry_interval_s": 3}}
    assert {"firmware_version", "node_id", "state", "role", "mode"} <= set(rep) and rep["node_id"] == "node1"
    # invalid: rejected, naming the field; nothing applied
    v = hub.desired("node1", {"parameters": {"cloud": {"telemetry_interval_s": 0.1}}})
    wait_until(lambda: hub.twin()["reported"]["parameters_status"]["desired_version"] == v, 15, 0.1, "rejected")
    rep = hub.twin()["reported"]
    assert rep["parameters_status"]["status"] == "rejected"
    assert "$.cloud.telemetry_interval_s" in rep["parameters_status"]["detail"]
    assert rep["parameters"] == {"cloud": {"telemetry_interval_s": 3}}
    # a patch sent while the node's link is down is picked up when it connects again (whole twin read)
    hub.cut_link("node1", True)
    node.wait_status(lambda s: not s["cloud"]["connected"], 30, "the node sees the outage")
    # (the desired side still holds the invalid interval: this patch mends it, or all would stay rejected)
    v = hub.desired("node1", {"parameters": {"cycle": {"period_s": 0.2}, "cloud": {"telemetry_interval_s": 3}}})
    hub.cut_link("node1", False)
    wait_until(lambda: hub.twin()["reported"]["parameters_status"]["desired_version"] == v, 60, 0.2,
               "the outage's patch reported")
    assert hub.twin()["reported"]["parameters_status"]["status"] == "staged"
    # Setup_Device: the same validation, as a method
    code, body = hub.invoke("node1", "Setup_Device", {"cloud": {"telemetry_interval_s": 2}})
    assert code == 200 and body["parameters_status"] in ("applied", "staged"), body
    code, body = hub.invoke("node1", "Setup_Device", {"battery": {"capacity_wh": -1}})
    assert code == 400 and "$.battery.capacity_wh" in body["detail"], body
    assert "Traceback" not in node.output()


@pytest.mark.parametrize("seed", range(20))
def test_random_patch_orders_end_where_the_hub_is(twin, seed):
    """Desired patches arrive late, twice or out of order (seeded); the client reads the whole twin
    on a gap, as the service does. Invariants after every step: the version never goes back, the
    overlay is always one that validated, the run-time keys in effect are the overlay's, and at the
    end it is the hub's (the last valid) state."""
    t, node = twin.t, twin.node
    rng = random.Random(seed)
    hub, versions = {}, []  # the hub's desired parameters after each version
    patches = []
    for version in range(2, 12):
        patch = {"cloud": {"telemetry_interval_s": rng.choice([1, 2, 5, 0.2])}} if rng.random() < 0.5 else \
            {"safety": {"ramp_w_per_s": rng.choice([1000, 4000])}} if rng.random() < 0.6 else \
            {"cycle": {"period_s": rng.choice([0.1, 0.2])}}
        hub = merge(hub, patch)
        versions.append(hub)
        patches.append({"$version": version, "parameters": patch})
    arrivals = patches + rng.sample(patches, 4)
    rng.shuffle(arrivals)
    last_version = t.version
    for patch in arrivals:
        if twin.run(t.desired_patch(patch)) == "gap":  # read the whole twin, as the hub has it now
            twin.run(t.desired_twin({"$version": 11, "parameters": versions[-1]}))
        assert t.version >= last_version
        last_version = t.version
        wanted = site_params.parse(merge(t.file_doc, t.overlay))  # what is in effect always validates
        assert live_params.runtime_view(node.params) == live_params.runtime_view(wanted)
        assert node.params.cycle.period_s == 0.1  # staged, never in effect before a restart
    assert t.version == 11
    try:
        site_params.parse(merge(t.file_doc, versions[-1]))
    except site_params.ParamsError:
        assert t.status["status"] == "rejected"  # the hub's last state is invalid: the last valid one stays
    else:
        assert t.overlay == versions[-1]
