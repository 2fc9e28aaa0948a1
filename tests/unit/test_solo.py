"""A cluster of one (mastercontroller/solo.py): a node without features.CLUSTER runs the cluster's modes
on itself, keeps its mode across a restart, lets a person's fresh request override the mode (which then
resumes bumplessly), and no mode ever takes the node past its limits (random sequences).

The node runs in-process on virtual time with the in-process plant (as tests/unit/test_runtime.py)."""
import json
import random

import pytest

from mastercontroller.solo import STATE_FILE, SoloConsensus, SoloService
from mastercontroller.state import ClusterState
from sitecontroller.control.sources import CLUSTER, LOCAL, SCADA, CLOUD
from tests.unit.test_runtime import runtime, stepping

pytestmark = pytest.mark.vtime

PERSONS = (LOCAL, SCADA, CLOUD)  # in the order they outrank each other; all outrank the mode


async def command(rt, plant, clock, **raw):
    ack = rt.node.commands.submit(raw)
    for _ in range(50):  # the executor runs in the next cycle; a cluster change on a worker thread
        await stepping(plant, clock, 0.1, 0.1)
        ack = rt.node.commands.ack_of(ack.id)
        if ack.final:
            return ack
    raise AssertionError(f"no final ack for {raw}: {ack}")


def params_without_pv(make_params):
    # a constant house load and no PV: self-consumption has one clear answer (battery = load)
    return make_params(simulation={"pv_peak_w": 0.0, "load_avg_w": 1500.0, "initial_soc": 0.6})


async def test_a_single_node_runs_a_mode_alone_and_keeps_it_across_a_restart(make_params):
    params = params_without_pv(make_params)
    rt, plant, clock = runtime(params, [SoloService])
    await rt.start()
    await stepping(plant, clock, 0.1, 1.0)
    assert rt.node.status()["setpoint_source"] is None  # passive: the mode does not steer
    assert (await command(rt, plant, clock, type="cluster_mode", mode="self_consumption", params={})).status == "done"
    await stepping(plant, clock, 0.1, 40.0)
    s = rt.node.status()
    assert s["setpoint_source"] == CLUSTER and s["role"] == "alone"
    assert abs(plant.grid_p_w) < 0.05 * plant.load_w, (plant.grid_p_w, plant.load_w)  # the house from the battery
    saved = json.loads((params.data_dir / STATE_FILE).read_text())
    assert (saved["mode"], saved["version"]) == ("self_consumption", 1)
    await rt.stop()
    # the process ends; the next one starts in the same mode, without being told again
    rt2, plant2, clock2 = runtime(params, [SoloService])
    await rt2.start()
    await stepping(plant2, clock2, 0.1, 30.0)
    assert rt2.node.cluster.consensus.state().mode == "self_consumption"
    assert rt2.node.status()["setpoint_source"] == CLUSTER and abs(plant2.grid_p_w) < 0.05 * plant2.load_w
    # a cluster of one has no members to add: refused with the reason, nothing changes
    ack = await command(rt2, plant2, clock2, type="cluster_remove_member", node_id="node2")
    assert ack.status == "rejected" and "cluster of one" in ack.detail
    # passive hands the node back to its own sources: no request, 0 W
    assert (await command(rt2, plant2, clock2, type="cluster_mode", mode="passive", params={})).status == "done"
    await stepping(plant2, clock2, 0.1, 3.0)
    assert rt2.node.status()["setpoint_source"] is None and plant2.inverter.p_w == pytest.approx(0.0, abs=1)
    await rt2.stop()


async def test_a_persons_request_overrides_the_mode_which_then_resumes_bumplessly(make_params):
    rt, plant, clock = runtime(params_without_pv(make_params), [SoloService])
    await rt.start()
    await command(rt, plant, clock, type="cluster_mode", mode="self_consumption", params={})
    await stepping(plant, clock, 0.1, 40.0)
    ack = await command(rt, plant, clock, type="set_power", p_w=-2000, hold_s=5, source="scada")
    assert ack.status == "done"
    await stepping(plant, clock, 0.1, 2.0)
    assert rt.node.status()["setpoint_source"] == SCADA and plant.inverter.p_w == pytest.approx(-2000, abs=50)
    await stepping(plant, clock, 0.1, 3.5)  # the request expires: the mode steers again ...
    assert rt.node.status()["setpoint_source"] == CLUSTER
    # ... from the power measured then (-2000 W), not from what its controller wound up meanwhile:
    # it moves towards the load without overshooting it
    peak = 0.0
    for _ in range(300):
        await stepping(plant, clock, 0.1, 0.1)
        peak = max(peak, plant.inverter.p_w)
    assert peak < 1.1 * plant.load_w and abs(plant.grid_p_w) < 0.05 * plant.load_w, (peak, plant.grid_p_w)
    await rt.stop()


@pytest.mark.parametrize("seed", range(4))
async def test_invariant_a_persons_fresh_request_owns_the_node_and_nothing_exceeds_the_limits(make_params, seed):
    """Random sequences of mode changes (every mode with random parameters), local requests from
    the three person sources, grid services on and off, e-stops and state changes. Every cycle:
    a fresh person request owns the setpoint (the mode never overrides a person), the mode owns it
    only with no person's request, and the setpoint is within the limits of that cycle."""
    rng = random.Random(seed)
    rt, plant, clock = runtime(make_params(), [SoloService])
    node = rt.node
    seen = {"cycles": 0, "mode": 0, "person": 0}
    write = node._write

    def checked(decision):
        setpoints = node.image.setpoints
        persons = [s for s in PERSONS if s in setpoints]
        if decision.source is not None:
            assert decision.source == (persons[0] if persons else CLUSTER), (decision, setpoints)
            seen["person" if persons else "mode"] += 1
        lim = decision.limits
        assert -lim.charge_w - 1e-6 <= decision.setpoint_w <= lim.discharge_w + 1e-6, decision
        seen["cycles"] += 1
        write(decision)

    node._write = checked
    await rt.start()
    modes = [("self_consumption", {"grid_target_w": rng.choice([0, 300, -500])}),
             ("load_matching", {"import_limit_w": 500, "export_limit_w": 500}),
             ("charge_only", {"target_soc": 0.9, "max_charge_w": 2000}),
             ("passive", {})]
    for _ in range(40):
        op = rng.random()
        if op < 0.35:
            mode, p = rng.choice(modes)
            await command(rt, plant, clock, type="cluster_mode", mode=mode, params=p)
        elif op < 0.55:
            await command(rt, plant, clock, type="cluster_setpoint", target_w=rng.uniform(-4000, 4000), hold_s=3)
        elif op < 0.8:
            edge = rng.choice(["cli", "scada", "cloud"])
            await command(rt, plant, clock, type="set_power", p_w=rng.uniform(-5000, 5000), hold_s=rng.uniform(0.5, 4),
                          source=edge)
        elif op < 0.9:
            cap = rng.choice([0, 1000])
            await command(rt, plant, clock, type="cluster_service", service="fcr_n", capacity_w=cap, params={})
        else:
            await command(rt, plant, clock, type="estop", engaged=True)
            await stepping(plant, clock, 0.1, rng.uniform(0.2, 2))
            await command(rt, plant, clock, type="estop", engaged=False)
            await command(rt, plant, clock, type="ack_error", code="all")
            await command(rt, plant, clock, type="set_state", target="run")
        await stepping(plant, clock, 0.1, rng.uniform(0.2, 4))
    await rt.stop()
    assert seen["cycles"] > 500 and seen["mode"] > 50 and seen["person"] > 50, seen


def test_the_state_survives_as_written_and_an_unreadable_file_means_passive(tmp_path):
    path = tmp_path / STATE_FILE
    c = SoloConsensus("node1", path)
    assert c.state() == ClusterState() and c.role == "alone" and c.has_lease()
    c.propose({"mode": "charge_only", "mode_params": {"target_soc": 0.8}})
    c.propose({"service": {"name": "fcr_n", "capacity_w": 1000.0, "params": {}}})
    again = SoloConsensus("node1", path).state()
    assert again == c.state() and again.version == 2 and again.services["fcr_n"]["capacity_w"] == 1000.0
    with pytest.raises(ValueError, match="mode"):
        c.propose({"mode": ""})  # a bad change is refused whole; the file keeps the last good state
    assert SoloConsensus("node1", path).state().version == 2
    path.write_text('{"mode": "charge_only", "version": ')  # e.g. a disk that lost the tail
    assert SoloConsensus("node1", path).state() == ClusterState()
