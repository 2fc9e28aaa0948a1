"""One simulated day: the real node decisions, cluster mode and dispatch against the plant physics.

Nothing here models the controller: every control step runs the code the field runs —
``sitecontroller.control.decide.decide`` on each node (with its limiter and ramp) and one
``mastercontroller.control.runner.ModeRunner.step`` on the leader (the mode, the cluster limits,
``dispatch.py``) — against ``sitecontroller.sim.site_plant.SitePlant`` (one load, one PV field, one grid,
one battery and inverter per node), on a ``VirtualTimeLoop`` whose clock jumps from step to step,
so a day runs as fast as the CPU allows. What is left out is the transport: readings are built
from the plant directly (no CAN or Modbus), and statuses and dispatch are handed over in memory.

One control step at virtual time t (seconds from the scenario's start), in this order:

1. physics: the plant advances from t - dt to t with the setpoints written at t - dt;
2. the site meter samples grid power if a sample is due (every ``meter_period_s``; sample and
   hold: the leader sees only the latest sample and its time, absent when older than
   max(3 s, 2 x period));
3. every node freezes its process image (BMS and inverter readings from its plant; the cluster
   setpoint from its inbox, absent once expired), decides, and writes the inverter and BMS
   commands; its status (SOC, usable energy, the decision's limits, actual power) is published;
4. the leader builds the cluster image (``island`` while the grid is lost) and steps the runner
   (``backup`` as the scenario says); the dispatch reaches each node's inbox for the next step
   (one step of latency, as in the field; valid for 3 steps); the nodes' limits are the windows
   their inverters carry an island within from the next step on (an inverter of a node with
   backup hardware forms the grid by itself the moment it is lost, as in the field);
5. the step is recorded (preallocated numpy arrays, one column per step).

Each node runs with the example in-process node's parameters (``site_parameters/
sim_node1_inproc.json``) with the scenario's battery and inverter, cycle = the step, and
``features.BACKUP`` = the scenario's ``backup`` (as the leader's runner reads it in the field).

Loads and PV follow the scenario's profiles with seeded noise and clouds on the plant's rng:
the same scenario and seed give the same run.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sitecontroller import params as site_params
from sitecontroller.control.decide import ControlInput, decide
from sitecontroller.control.sources import CLUSTER, SetpointReading
from sitecontroller.process_image import BmsReading, InverterReading, ProcessImage
from sitecontroller.sim.plant import Battery, Grid, Inverter, Plant
from sitecontroller.sim.site_plant import SitePlant
from sitecontroller.vtime import VirtualClock, VirtualTimeLoop

from ..control.base import ClusterImage
from ..control.runner import ModeRunner
from ..dispatch import DispatchParams, NodeView
from .profiles import ProfileLoad, ProfileSolar
from .scenario import NodeSpec, Scenario, price_at

NODE_PARAMS = Path(__file__).resolve().parents[2] / "site_parameters" / "sim_node1_inproc.json"


def node_params(node_id: str, spec: NodeSpec, step_s: float, backup: bool):
    """The node's SiteParams: the example in-process node with this node's battery and inverter."""
    data = json.loads(NODE_PARAMS.read_text(encoding="utf-8"))
    data["identity"]["node_id"] = node_id
    data["cycle"]["period_s"] = step_s
    data["battery"] = {"capacity_wh": spec.capacity_wh, "max_charge_w": spec.max_charge_w,
                       "max_discharge_w": spec.max_discharge_w}
    data["devices"]["inverter"]["rated_w"] = spec.rated_w
    data["features"]["BACKUP"] = backup  # as on a site whose nodes may form the grid (service.py reads it)
    return site_params.parse(data, f"{NODE_PARAMS.name} for {node_id}")


class SimNode:
    """One node's read -> decide -> write on its plant, without protocols."""

    def __init__(self, node_id: str, params, plant: Plant, valid_s: float):
        self.node_id, self.params, self.plant, self.valid_s = node_id, params, plant, valid_s
        self.rated_w = params.devices.inverter.rated_w
        self.usable_wh = params.battery.capacity_wh * plant.battery.soh
        self.inbox: SetpointReading | None = None
        self.base_w = 0.0
        self.setpoint_w = 0.0
        self.limits = (0.0, 0.0)   # (charge_w, discharge_w) of the last decision

    def put(self, p_w: float, t: float) -> None:
        self.inbox = SetpointReading(CLUSTER, p_w, t, t + self.valid_s)

    def step(self, t: float, wall: float, dt_s: float, freq_hz: float) -> NodeView:
        b, inv = self.plant.battery, self.plant.inverter
        pack_v, v_min, v_max, v_avg, t_min, t_max = b.cell_summary()
        charge_a, discharge_a = b.limits_a((t_min, t_max))
        bms = BmsReading(t, b.soc, b.soh, pack_v, b.pack_a, v_min, v_max, v_avg, t_min, t_max, charge_a,
                         discharge_a, b.contactor_closed, capacity_wh=b.capacity_wh)
        reading = InverterReading(t, inv.p_w, inv.q_var, freq_hz, running=inv.running, rated_w=inv.rated_w,
                                  setpoint_p_w=inv.setpoint_p_w, state="running" if inv.running else "stopped",
                                  island=self.plant.grid.lost)
        inbox = self.inbox
        setpoints = {CLUSTER: inbox} if inbox is not None and t < inbox.valid_until else {}
        image = ProcessImage(t, wall, bms, reading, None, meter_configured=False, setpoints=setpoints)
        d = decide(ControlInput(image, "run", "cluster", None, self.base_w, dt_s, self.params, self.rated_w))
        self.base_w, self.setpoint_w = d.base_w, d.setpoint_w
        inv.setpoint_p_w, inv.run_requested, inv.grid_forming = d.setpoint_w, d.inverter_run, d.grid_forming
        b.contactor_closed, b.balancing, b.sleeping = d.contactor_closed, d.balancing, d.bms_sleep
        lim = d.limits
        self.limits = (lim.charge_w, lim.discharge_w)
        return NodeView(self.node_id, True, "run", min(1.0, max(0.0, b.soc)), self.usable_wh,
                        lim.charge_w, lim.discharge_w, reading.p_w)


class Meter:
    """The site meter: samples every ``period_s`` and holds the value (sample and hold)."""

    def __init__(self, period_s: float, stale_s: float):
        self.period_s, self.stale_s = period_s, stale_s
        self.next_t = -math.inf
        self.value: float | None = None
        self.freq_hz: float | None = None
        self.t: float | None = None

    def poll(self, t: float, site: SitePlant) -> None:
        if t + 1e-9 >= self.next_t:
            self.value, self.freq_hz, self.t = site.grid_p_w, site.grid.measured_hz, t
            self.next_t = t + self.period_s if self.next_t == -math.inf else self.next_t + self.period_s

    def reading(self, t: float) -> tuple[float | None, float | None]:
        if self.t is None or t - self.t > self.stale_s:
            return None, None
        return self.value, self.t


@dataclass
class DayRun:
    """What a run recorded: one column per control step (the state at the end of that step)."""

    scenario: Scenario
    step_s: float
    node_ids: list[str]
    specs: list[NodeSpec]
    arrays: dict[str, np.ndarray]
    mode_names: list[str]
    wall_s: float = 0.0
    usable_wh: list[float] = field(default_factory=list)      # per node
    power_w: list[tuple[float, float]] = field(default_factory=list)  # per node (charge_w, discharge_w) nameplate
    soc_min: float = 0.10       # the nodes' normal SOC floor (soc_reserve) and ceiling
    soc_max: float = 0.95
    charge_eff: float = 1.0     # AC -> chemical, one node (inverter x battery)
    discharge_eff: float = 1.0


ARRAYS_1D = ("t_s", "grid_w", "load_w", "pv_w", "unserved_w", "curtailed_w", "target_w", "placed_w", "price",
             "freq_hz", "grid_forming", "island", "mode")
ARRAYS_2D = ("soc", "p_w", "setpoint_w", "limit_charge_w", "limit_discharge_w")


class Engine:
    """The run's objects (plant, nodes, meter, leader) and its control step (``tick``)."""

    def __init__(self, scenario: Scenario, *, nodes: int | None = None, hours: float = 24.0, step_s: float = 1.0):
        if not 0.01 <= step_s <= 10.0:
            raise ValueError(f"step_s: must be from 0.01 to 10 s, got {step_s}")
        if not 0 < hours <= 24 * 14:
            raise ValueError(f"hours: must be > 0 and at most {24 * 14}, got {hours}")
        count = len(scenario.nodes) if nodes is None else nodes
        if not 1 <= count <= 64:
            raise ValueError(f"nodes: must be from 1 to 64, got {count}")
        self.scenario, self.step_s = scenario, float(step_s)
        self.n = max(1, round(hours * 3600.0 / step_s))
        self.specs = [scenario.nodes[i % len(scenario.nodes)] for i in range(count)]  # more nodes: repeated
        self.node_ids = [f"node{i + 1}" for i in range(count)]
        start = scenario.start_wall
        self.site = SitePlant(Grid(), ProfileSolar(scenario.pv, start), ProfileLoad(scenario.load, start),
                              seed=scenario.seed, wall_s=start)
        self.nodes = [self._node(i, node_id, spec) for i, (node_id, spec) in enumerate(zip(self.node_ids, self.specs))]
        first = self.nodes[0]
        self.soc_min, self.soc_max = first.params.safety.soc_reserve, first.params.safety.soc_max
        self.charge_eff = first.plant.inverter.efficiency * first.plant.battery.charge_eff
        self.discharge_eff = first.plant.inverter.efficiency * first.plant.battery.discharge_eff
        self.meter = Meter(scenario.meter_period_s, max(3.0, 2.0 * scenario.meter_period_s))
        settings = scenario.dispatch  # the field defaults unless the scenario overrides them
        dwell = max(1, round(settings.min_dwell_s / self.step_s))  # 5 s: the field's 50 cycles of 100 ms
        overrides = settings.model_dump(exclude_none=True, exclude={"min_dwell_s"})
        self.runner = ModeRunner(DispatchParams(min_dwell_cycles=dwell, **overrides), backup=scenario.backup)
        self.state = scenario.cluster_state()
        self.mode_names: list[str] = []
        self._schedules()
        self.arrays = {k: np.zeros(self.n) for k in ARRAYS_1D}
        self.arrays.update({k: np.zeros((count, self.n)) for k in ARRAYS_2D})

    def _node(self, i: int, node_id: str, spec: NodeSpec) -> SimNode:
        """One node: its battery and inverter in the site plant, its parameters, its cluster inbox."""
        sc, site = self.scenario, self.site
        battery = Battery(capacity_wh=spec.capacity_wh, soc=spec.soc0, cells_per_rack=16)
        inverter = Inverter(rated_w=spec.rated_w, response_s=sc.response_s)
        plant = Plant(battery, inverter, site.grid, site.solar, site.load, seed=sc.seed * 1000 + i + 1,
                      wall_s=sc.start_wall, site=site)
        site.nodes[node_id] = plant
        # a dispatch stays valid for 3 steps (the field: 0.3 s at 100 ms cycles)
        return SimNode(node_id, node_params(node_id, spec, self.step_s, sc.backup), plant, valid_s=3.0 * self.step_s)

    def _schedules(self) -> None:
        """Per step (index k = 1..n at t = k * step_s): grid lost during the step that ends at t
        (i.e. at its start, t - step_s, inside [start_s, end_s)), frequency offset, price."""
        t = np.arange(self.n + 1) * self.step_s
        lost = np.zeros(self.n + 1, dtype=bool)
        begun = np.concatenate(([0.0], t[:-1]))
        for ev in self.scenario.grid_loss:
            lost |= (begun >= ev.start_s) & (begun < ev.end_s)
        offset = np.zeros(self.n + 1)
        for fs in sorted(self.scenario.frequency, key=lambda f: f.at_s):
            offset[t >= fs.at_s] = fs.hz - self.site.grid.nominal_hz
        self.lost, self.freq_offset = lost.tolist(), offset.tolist()
        self.price = [price_at(self.scenario.prices, x) for x in t.tolist()]

    def _mode_index(self, name: str) -> int:
        try:
            return self.mode_names.index(name)
        except ValueError:
            self.mode_names.append(name)
            return len(self.mode_names) - 1

    def tick(self, k: int, t: float, wall: float) -> None:
        site, grid, dt = self.site, self.site.grid, self.step_s
        grid.lost, grid.freq_offset_hz = self.lost[k], self.freq_offset[k]
        if k > 0:
            site.step(dt, wall)
        self.meter.poll(t, site)
        freq = grid.measured_hz
        views = tuple(node.step(t, wall, dt, freq) for node in self.nodes)
        grid_w, grid_t = self.meter.reading(t)
        image = ClusterImage(t, wall, dt, views, grid_w, grid_t, self.meter.freq_hz, island=grid.lost)
        step = self.runner.step(self.state, image)
        setpoints = step.dispatch.setpoints
        windows = {}
        for node in self.nodes:
            node.put(setpoints[node.node_id], t)
            windows[node.node_id] = node.limits
        site.windows = windows
        if k > 0:
            self._record(k - 1, t, step)

    def _record(self, j: int, t: float, step) -> None:
        a, site = self.arrays, self.site
        a["t_s"][j] = t
        a["grid_w"][j] = site.grid_p_w
        a["load_w"][j] = site.load_w
        a["pv_w"][j] = site.pv_w
        a["unserved_w"][j] = site.unserved_w
        a["curtailed_w"][j] = site.curtailed_w
        a["target_w"][j] = step.target_w
        a["placed_w"][j] = step.dispatch.placed_w
        a["price"][j] = self.price[j]  # the import price when this step began
        a["freq_hz"][j] = site.grid.measured_hz
        a["grid_forming"][j] = step.result.grid_forming
        a["island"][j] = site.grid.lost
        a["mode"][j] = self._mode_index(step.mode)
        soc, p, sp, lc, ld = a["soc"], a["p_w"], a["setpoint_w"], a["limit_charge_w"], a["limit_discharge_w"]
        for i, node in enumerate(self.nodes):
            soc[i, j] = node.plant.battery.soc
            p[i, j] = node.plant.inverter.p_w
            sp[i, j] = node.setpoint_w
            lc[i, j], ld[i, j] = node.limits

    async def _main(self, loop: VirtualTimeLoop) -> None:
        clock = VirtualClock(loop)
        t0, wall0 = loop.time(), loop.wall()
        for k in range(self.n + 1):
            t = t0 + k * self.step_s
            await clock.sleep_until(t)
            self.tick(k, t - t0, wall0 + k * self.step_s)

    def run(self) -> DayRun:
        started = time.perf_counter()
        loop = VirtualTimeLoop(start_mono=0.0, start_wall=self.scenario.start_wall, zero_polls=0)
        try:
            loop.run_until_complete(self._main(loop))
        finally:
            loop.close()
        wall_s = time.perf_counter() - started
        power = [(min(s.rated_w, s.max_charge_w), min(s.rated_w, s.max_discharge_w)) for s in self.specs]
        return DayRun(self.scenario, self.step_s, self.node_ids, self.specs, self.arrays, self.mode_names, wall_s,
                      [n.usable_wh for n in self.nodes], power, self.soc_min, self.soc_max, self.charge_eff,
                      self.discharge_eff)


def simulate(scenario: Scenario, *, nodes: int | None = None, hours: float = 24.0, step_s: float = 1.0) -> DayRun:
    """Run the scenario (``wall_s``: building and running it); ValueError naming a bad nodes/hours/step_s."""
    started = time.perf_counter()
    run = Engine(scenario, nodes=nodes, hours=hours, step_s=step_s).run()
    run.wall_s = time.perf_counter() - started
    return run
