"""Device twin desired `parameters` ↔ site parameters: validated as a whole, run-time keys applied at
once, the rest staged for a restart, invalid ones rejected with nothing applied, versions in order
(older never overwrites newer, a gap reads the whole twin), the last valid overlay cached on disk."""
import asyncio
import json
import random
import types

import pytest

from sitecontroller import params as site_params
from sitecontroller.cloud.twin import ParameterTwin, merge, with_cached
from tests.util import isolated_example, wait_until


@pytest.fixture
def twin(tmp_path):
    data = isolated_example("sim_node1.json", tmp_path)
    data["cloud"] = {"connection_string_file": "x.cs", "telemetry_interval_s": 10}
    params = site_params.parse(data)
    applied = []
    node = types.SimpleNamespace(params=params)
    t = ParameterTwin(node, applied.append)
    asyncio.run(t.desired_twin({"$version": 1}))  # what the client does first: read the whole twin
    return t, applied, params


def test_runtime_keys_apply_at_once_the_rest_is_staged_invalid_is_rejected(twin):
    t, applied, params = twin
    asyncio.run(t.desired_patch({"$version": 2, "parameters": {"cloud": {"telemetry_interval_s": 3}}}))
    assert t.status == {"desired_version": 2, "status": "applied", "detail": "applied: cloud.telemetry_interval_s"}
    assert applied[-1].cloud.telemetry_interval_s == 3
    asyncio.run(t.desired_patch({"$version": 3, "parameters": {"safety": {"ramp_w_per_s": 4000}}}))
    assert t.status["status"] == "staged" and "needs a restart: safety.ramp_w_per_s" in t.status["detail"]
    before = dict(t.overlay)
    asyncio.run(t.desired_patch({"$version": 4, "parameters": {"safety": {"soc_min": 2}, "cloud": {"telemetry_interval_s": 1}}}))
    assert t.status["status"] == "rejected" and "$.safety.soc_min" in t.status["detail"]
    assert t.overlay == before and len(applied) == 1  # nothing of it applied, the valid part neither
    asyncio.run(t.desired_patch({"$version": 5, "parameters": {"nonsense": 1}}))
    assert t.status["status"] == "rejected" and "$.nonsense" in t.status["detail"]


def test_versions_in_order_older_never_overwrites_a_gap_reads_the_whole_twin(twin):
    t, applied, _ = twin
    assert asyncio.run(t.desired_patch({"$version": 2, "parameters": {"cloud": {"telemetry_interval_s": 5}}})) == "applied"
    assert asyncio.run(t.desired_patch({"$version": 2, "parameters": {"cloud": {"telemetry_interval_s": 7}}})) == "old"
    assert asyncio.run(t.desired_patch({"$version": 1, "parameters": {"cloud": {"telemetry_interval_s": 9}}})) == "old"
    assert asyncio.run(t.desired_patch({"$version": 4, "parameters": {"cloud": {"telemetry_interval_s": 8}}})) == "gap"
    assert t.overlay == {"cloud": {"telemetry_interval_s": 5}} and t.version == 2
    # the whole twin (after a gap or a reconnect) replaces the overlay, and only if newer
    assert asyncio.run(t.desired_twin({"$version": 4, "parameters": {"cloud": {"telemetry_interval_s": 8}}}))
    assert t.overlay == {"cloud": {"telemetry_interval_s": 8}} and applied[-1].cloud.telemetry_interval_s == 8
    assert not asyncio.run(t.desired_twin({"$version": 3, "parameters": {}}))


def test_the_last_valid_parameters_are_cached_and_used_at_the_next_start(twin):
    t, _, params = twin
    asyncio.run(t.desired_patch({"$version": 2, "parameters": {"cloud": {"telemetry_interval_s": 4},
                                                               "safety": {"ramp_w_per_s": 4000}}}))
    asyncio.run(t.desired_patch({"$version": 3, "parameters": {"safety": {"soc_max": 7}}}))  # rejected: not cached
    started = with_cached(params)
    assert started.cloud.telemetry_interval_s == 4 and started.safety.ramp_w_per_s == 4000
    cache = json.loads((params.data_dir / "cloud" / "desired.json").read_text())
    assert cache["version"] == 2
    again = ParameterTwin(types.SimpleNamespace(params=started), lambda p: None)
    assert again.version == 2 and again.overlay == cache["parameters"]


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
    v = hub.desired("node1", {"parameters": {"safety": {"ramp_w_per_s": 4000}, "cloud": {"telemetry_interval_s": 3}}})
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
    overlay is always one that validated, and at the end it is the hub's (the last valid) state."""
    t, _, _ = twin
    rng = random.Random(seed)
    hub, versions = {}, []  # the hub's desired parameters after each version
    patches = []
    for version in range(2, 12):
        patch = {"cloud": {"telemetry_interval_s": rng.choice([1, 2, 5, 0.2])}} if rng.random() < 0.7 else \
            {"safety": {"ramp_w_per_s": rng.choice([1000, 4000])}}
        hub = merge(hub, patch)
        versions.append(hub)
        patches.append({"$version": version, "parameters": patch})
    arrivals = patches + rng.sample(patches, 4)
    rng.shuffle(arrivals)
    last_version = t.version
    for patch in arrivals:
        if asyncio.run(t.desired_patch(patch)) == "gap":  # read the whole twin, as the hub has it now
            asyncio.run(t.desired_twin({"$version": 11, "parameters": versions[-1]}))
        assert t.version >= last_version
        last_version = t.version
        site_params.parse(merge(t.file_doc, t.overlay))  # what is in effect always validates
    assert t.version == 11
    try:
        site_params.parse(merge(t.file_doc, versions[-1]))
    except site_params.ParamsError:
        assert t.status["status"] == "rejected"  # the hub's last state is invalid: the last valid one stays
    else:
        assert t.overlay == versions[-1]
