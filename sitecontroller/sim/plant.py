"""Plant physics for the simulators: battery, inverter, grid, PV and load.

This is the *physical* side only; the protocol side (CAN frames, Modbus
registers, HTTP) lives in the simulated devices, which read this state and
write setpoints into it. Time comes from the caller: `Plant.step(dt_s, wall_s)`.

Signs: battery and inverter power positive = discharge; grid positive = import.

Optional physics (defaults keep the simple behaviour): an inverter first-order response
(`Inverter.response_s`), and a grid loss (`Grid.lost`), which only a site of several nodes
models (`site_plant.SitePlant`).
"""
from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .frequency import Player
    from .site_plant import SitePlant

# LFP open-circuit voltage per cell against SOC (typical published curve shape).
OCV_SOC = (0.0, 0.05, 0.10, 0.20, 0.35, 0.50, 0.65, 0.80, 0.90, 0.95, 1.0)
OCV_V = (2.80, 3.10, 3.20, 3.25, 3.27, 3.29, 3.30, 3.32, 3.34, 3.38, 3.55)


def ocv_cell_v(soc: float) -> float:
    soc = min(1.0, max(0.0, soc))
    i = min(bisect.bisect_right(OCV_SOC, soc), len(OCV_SOC) - 1)
    s0, s1, v0, v1 = OCV_SOC[i - 1], OCV_SOC[i], OCV_V[i - 1], OCV_V[i]
    return v0 + (v1 - v0) * (soc - s0) / (s1 - s0)


@dataclass
class Battery:
    capacity_wh: float
    soc: float = 0.5
    soh: float = 0.98
    racks: int = 1
    cells_per_rack: int = 16
    r_cell_ohm: float = 0.0008
    charge_eff: float = 0.97
    discharge_eff: float = 0.97
    ambient_c: float = 22.0
    thermal_tau_s: float = 1800.0
    heat_c_per_a2s: float = 2.0e-6  # temperature rise per A² per second
    contactor_closed: bool = True
    balancing: bool = False
    sleeping: bool = False
    # fault knobs (tests and the simulator CLI set these)
    cell_v_fault_v: float = 0.0  # added to one cell of rack 0 (over/under-voltage)
    temp_fault_c: float = 0.0  # added to every cell temperature (over-temperature)
    # derived each step
    pack_a: float = 0.0  # positive = discharge
    temp_c: list[float] = field(default_factory=list)  # per rack
    cell_spread: list[list[float]] = field(default_factory=list)  # per cell SOC offset
    cell_t_spread: list[list[float]] = field(default_factory=list)
    _ocv_tables: dict = field(default_factory=dict, repr=False, compare=False)  # `_ocv_sum`'s cache

    def seed_spread(self, rng: random.Random) -> None:
        self.cell_spread = [[rng.gauss(0, 0.004) for _ in range(self.cells_per_rack)] for _ in range(self.racks)]
        self.cell_t_spread = [[rng.gauss(0, 0.5) for _ in range(self.cells_per_rack)] for _ in range(self.racks)]
        self.temp_c = [self.ambient_c] * self.racks

    @property
    def nominal_v(self) -> float:
        return 3.2 * self.cells_per_rack

    def cell_v(self, rack: int) -> list[float]:
        """Cell voltages of one rack (current splits evenly across racks)."""
        i_rack = self.pack_a / self.racks
        vs = [ocv_cell_v(self.soc + d) - i_rack * self.r_cell_ohm for d in self.cell_spread[rack]]
        if rack == 0 and self.cell_v_fault_v:
            vs[3 % len(vs)] += self.cell_v_fault_v
        return vs

    def cell_t(self, rack: int) -> list[float]:
        base = self.temp_c[rack] + self.temp_fault_c
        return [base + d for d in self.cell_t_spread[rack]]

    @property
    def pack_v(self) -> float:
        """Racks are in parallel: the pack voltage is a rack's string voltage."""
        return sum(self.cell_v(0))

    def _ocv_sum(self, spread: list[float]) -> float:
        """sum(ocv_cell_v(soc + d) for d in spread), cheaply: as a function of SOC that sum is
        piecewise linear with a corner where any cell crosses a corner of the OCV curve, so it is
        tabulated once per set of offsets (exactly, at its corners) and interpolated."""
        key = tuple(spread)
        table = self._ocv_tables.get(key)
        if table is None:
            xs = sorted({x - d for x in OCV_SOC for d in spread})
            table = (xs, [sum(ocv_cell_v(x + d) for d in spread) for x in xs])
            if len(self._ocv_tables) > 8:
                self._ocv_tables.clear()
            self._ocv_tables[key] = table
        xs, ys = table
        i = bisect.bisect_right(xs, self.soc)
        if i == 0:
            return ys[0]
        if i == len(xs):
            return ys[-1]
        x0, y0 = xs[i - 1], ys[i - 1]
        return y0 + (ys[i] - y0) * (self.soc - x0) / (xs[i] - x0)

    def cell_summary(self) -> tuple[float, float, float, float, float, float]:
        """(pack_v, cell_v_min, cell_v_max, cell_v_avg, cell_t_min, cell_t_max) over every rack, without
        building the per-cell lists (the OCV curve rises with SOC, so the extreme cells are those with
        the extreme SOC offsets). The same values as `pack_v`, `cell_v` and `cell_t` (to rounding)."""
        if self.cell_v_fault_v:  # the knob moves one cell of rack 0: take the slow, exact path
            cells = [v for r in range(self.racks) for v in self.cell_v(r)]
            return (sum(self.cell_v(0)), min(cells), max(cells), sum(cells) / len(cells)) + self._cell_t_extremes()
        spread, n, soc = self.cell_spread, self.cells_per_rack, self.soc
        drop = self.pack_a / self.racks * self.r_cell_ohm
        pack_ocv = self._ocv_sum(spread[0])
        if self.racks == 1:
            lo, hi, avg_ocv = min(spread[0]), max(spread[0]), pack_ocv / n
        else:
            lo, hi = min(map(min, spread)), max(map(max, spread))
            avg_ocv = sum(map(self._ocv_sum, spread)) / (n * self.racks)
        return (pack_ocv - n * drop, ocv_cell_v(soc + lo) - drop, ocv_cell_v(soc + hi) - drop, avg_ocv - drop,
                *self._cell_t_extremes())

    def _cell_t_extremes(self) -> tuple[float, float]:
        # base + d rises with d (rounding is monotonic): the extremes are base + the extreme offsets
        fault, spread = self.temp_fault_c, self.cell_t_spread
        if self.racks == 1:
            base = self.temp_c[0] + fault
            return base + min(spread[0]), base + max(spread[0])
        bases = [t + fault for t in self.temp_c]
        return (min(b + min(d) for b, d in zip(bases, spread)), max(b + max(d) for b, d in zip(bases, spread)))

    @property
    def usable_wh(self) -> float:
        return self.capacity_wh * self.soh

    def limits_a(self, t_extremes: tuple[float, float] | None = None) -> tuple[float, float]:
        """The BMS's own charge/discharge current limits (what it would send); `t_extremes`: the
        (min, max) cell temperature when the caller has it already (`cell_summary`)."""
        one_c = self.usable_wh / self.nominal_v
        t_min, t_max = t_extremes or self._cell_t_extremes()
        derate = 1.0 if t_max < 45 else max(0.0, (55 - t_max) / 10)
        if t_min < 5:
            charge_t = max(0.0, t_min / 5)
        else:
            charge_t = 1.0
        charge = one_c * derate * charge_t * min(1.0, max(0.0, (1.0 - self.soc) / 0.05))
        discharge = one_c * derate * min(1.0, max(0.0, self.soc / 0.05))
        return charge, discharge

    def step(self, dc_w: float, dt_s: float) -> None:
        """Move `dc_w` (positive = discharge) through the battery for `dt_s`."""
        if not self.contactor_closed or self.sleeping:
            dc_w = 0.0
        drop = self.pack_a / self.racks * self.r_cell_ohm
        v = max(self.pack_v if self.cell_v_fault_v else self._ocv_sum(self.cell_spread[0]) - self.cells_per_rack * drop,
                1.0)
        self.pack_a = dc_w / v
        if dc_w >= 0:
            chem_wh = dc_w * dt_s / 3600 / self.discharge_eff
        else:
            chem_wh = dc_w * dt_s / 3600 * self.charge_eff
        self.soc = min(1.0, max(0.0, self.soc - chem_wh / self.usable_wh))
        i_rack = self.pack_a / self.racks
        for r in range(self.racks):
            heating = self.heat_c_per_a2s * i_rack * i_rack * dt_s
            cooling = (self.temp_c[r] - self.ambient_c) * min(1.0, dt_s / self.thermal_tau_s)
            self.temp_c[r] += heating - cooling


@dataclass
class Inverter:
    rated_w: float
    ramp_w_per_s: float = 20_000.0
    efficiency: float = 0.97
    response_s: float = 0.0  # first-order lag toward the (ramp-limited) setpoint; 0: none
    setpoint_p_w: float = 0.0
    setpoint_q_var: float = 0.0
    run_requested: bool = False
    grid_forming: bool = False  # allowed to form the grid when it is lost (backup; see SitePlant)
    p_w: float = 0.0  # AC side, positive = discharge
    q_var: float = 0.0
    temp_c: float = 30.0
    tripped: bool = False
    faults: set[str] = field(default_factory=set)

    @property
    def running(self) -> bool:
        return self.run_requested and not self.tripped

    def trip(self, fault: str = "GRID_FAULT") -> None:
        """Fault knob: the inverter stops at once and reports the fault."""
        self.tripped = True
        self.faults.add(fault)

    def reset(self) -> None:
        self.tripped = False
        self.faults.clear()

    def step(self, battery: Battery, dt_s: float) -> float:
        """Advance the AC power toward the setpoint; return the DC power drawn."""
        target = max(-self.rated_w, min(self.rated_w, self.setpoint_p_w)) if self.running else 0.0
        if not battery.contactor_closed or battery.sleeping:
            target = 0.0
        if battery.soc <= 0.0 and target > 0:
            target = 0.0
        if battery.soc >= 1.0 and target < 0:
            target = 0.0
        step = self.ramp_w_per_s * dt_s
        move = target - self.p_w
        if self.response_s > 0:
            move *= -math.expm1(-dt_s / self.response_s)
        self.p_w += max(-step, min(step, move))
        if not self.running:
            self.p_w = 0.0
        self.q_var = max(-self.rated_w, min(self.rated_w, self.setpoint_q_var)) if self.running else 0.0
        return self._settle(dt_s)

    def carry(self, p_w: float, dt_s: float) -> float:
        """Grid forming (islanded): deliver exactly `p_w` (the site's balance), no ramp or lag;
        return the DC power drawn."""
        self.p_w = p_w if self.running else 0.0
        self.q_var = 0.0
        return self._settle(dt_s)

    def _settle(self, dt_s: float) -> float:
        loss_w = abs(self.p_w) * (1 - self.efficiency)
        self.temp_c += (30.0 + loss_w / 20 - self.temp_c) * min(1.0, dt_s / 600)
        return self.p_w / self.efficiency if self.p_w >= 0 else self.p_w * self.efficiency


@dataclass
class Grid:
    nominal_hz: float = 50.0
    nominal_v: float = 230.0
    freq_hz: float = 50.0
    freq_offset_hz: float = 0.0  # knob: a frequency event for grid-service tests
    lost: bool = False  # knob: the grid is gone (a blackout at the connection point; see SitePlant.step)
    player: "Player | None" = field(default=None, repr=False)  # a frequency profile playing (sim/frequency.py)

    def step(self, rng: random.Random, dt_s: float) -> None:
        # a slow, bounded random walk around nominal (±0.1 Hz)
        drift = (self.nominal_hz - self.freq_hz) * min(1.0, dt_s / 30) + rng.gauss(0, 0.002) * math.sqrt(dt_s)
        self.freq_hz = min(self.nominal_hz + 0.1, max(self.nominal_hz - 0.1, self.freq_hz + drift))
        if self.playing:
            self.player.advance(dt_s)

    @property
    def playing(self) -> bool:
        return self.player is not None and not self.player.done

    @property
    def measured_hz(self) -> float:
        return (self.player.hz if self.playing else self.freq_hz) + self.freq_offset_hz

    def trace(self, powers: dict[str, float]) -> None:
        """Record the inverters' power (node id -> W) at this step while a profile plays."""
        if self.playing:
            self.player.record(powers)


@dataclass
class Solar:
    peak_w: float
    cloud: float = 1.0  # 0..1 transmission, a random walk

    def power_w(self, wall_s: float) -> float:
        hour = (wall_s % 86400) / 3600
        elevation = math.sin(math.pi * (hour - 6) / 12)
        return self.peak_w * max(0.0, elevation) ** 1.3 * self.cloud

    def step(self, rng: random.Random, dt_s: float) -> None:
        self.cloud = min(1.0, max(0.2, self.cloud + rng.gauss(0, 0.01) * math.sqrt(dt_s) + (0.9 - self.cloud) * dt_s / 600))


@dataclass
class Load:
    avg_w: float
    noise: float = 0.0

    def power_w(self, wall_s: float) -> float:
        hour = (wall_s % 86400) / 3600
        shape = 0.6 + 0.5 * math.exp(-((hour - 8) ** 2) / 2) + 0.9 * math.exp(-((hour - 19) ** 2) / 4)
        return max(0.0, self.avg_w * shape * (1 + self.noise))

    def step(self, rng: random.Random, dt_s: float) -> None:
        self.noise += -self.noise * min(1.0, dt_s / 20) + rng.gauss(0, 0.02) * math.sqrt(dt_s)


class ConnectionPoint:
    """What is measured at a grid connection point of its load, PV and voltages: a single node's
    `Plant`, or a `SitePlant` of several nodes (each has `solar`, `load`, `grid`, `wall_s`, `phases`)."""

    @property
    def pv_w(self) -> float:
        return self.solar.power_w(self.wall_s)

    @property
    def load_w(self) -> float:
        return self.load.power_w(self.wall_s)

    def phase_split(self, total: float) -> tuple[float, ...]:
        weights = (0.36, 0.33, 0.31)[: self.phases]
        return tuple(total * w for w in weights)

    def phase_v(self) -> tuple[float, ...]:
        return tuple(self.grid.nominal_v * (1 + 0.005 * k) for k in range(self.phases))


@dataclass
class Plant(ConnectionPoint):
    """One battery node behind one grid connection point with PV and load."""

    battery: Battery
    inverter: Inverter
    grid: Grid
    solar: Solar
    load: Load
    seed: int = 1
    wall_s: float = 0.0
    meter_stopped: bool = False  # knob for the simulated meter
    phases: int = 3
    site: "SitePlant | None" = field(default=None, repr=False, compare=False)  # one node of several behind one meter

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.battery.seed_spread(self.rng)

    @classmethod
    def from_params(cls, params, wall_s: float = 0.0) -> "Plant":
        """Build the plant a parameter file describes (its `simulation` section)."""
        from ..params import SimulationParams

        sim = params.simulation or SimulationParams()
        battery = Battery(
            capacity_wh=params.battery.capacity_wh,
            soc=sim.initial_soc,
            racks=params.devices.bms.racks,
            cells_per_rack=sim.cells_per_rack,
        )
        inverter = Inverter(rated_w=params.devices.inverter.rated_w)
        return cls(battery, inverter, Grid(), Solar(sim.pv_peak_w), Load(sim.load_avg_w), seed=sim.seed, wall_s=wall_s)

    def step(self, dt_s: float, wall_s: float | None = None) -> None:
        if self.site is not None:  # the grid, PV and load are the site's: it steps them, once, for all nodes
            self.site.step(dt_s, wall_s)
            return
        self.wall_s = self.wall_s + dt_s if wall_s is None else wall_s
        self.grid.step(self.rng, dt_s)
        self.solar.step(self.rng, dt_s)
        self.load.step(self.rng, dt_s)
        self.step_node(dt_s)
        if self.grid.playing:
            self.grid.trace({"node": self.inverter.p_w})

    def step_node(self, dt_s: float) -> None:
        """This node's own devices only: the inverter moves power through the battery."""
        dc_w = self.inverter.step(self.battery, dt_s)
        self.battery.step(dc_w, dt_s)

    # --- what meters and inverters measure (and ConnectionPoint's) ---------------
    @property
    def grid_p_w(self) -> float:
        """At the connection point, positive = import (in a site of several nodes: the site's one meter)."""
        if self.site is not None:
            return self.site.grid_p_w
        return self.load_w - self.pv_w - self.inverter.p_w
