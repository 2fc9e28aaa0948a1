"""Several battery nodes behind one grid connection point: the shared load, PV, grid and meter,
and a grid loss with or without grid-forming inverters. One node's own physics: `plant.py`.

Signs: battery and inverter power positive = discharge; grid positive = import.
"""
from __future__ import annotations

import random

from .plant import ConnectionPoint, Grid, Load, Plant, Solar


class SitePlant(ConnectionPoint):
    """Several battery nodes behind ONE grid connection point: one load, one PV field, one grid, one meter.

    Each node keeps its own `Plant` (its battery and inverter, which its simulated BMS and
    inverter read and write); those plants share this site's `Grid`, `Solar` and `Load`
    objects, and their `grid_p_w` is the site's: load - PV - the sum of every node's
    inverter power. The site steps the shared physics once per step, then every node.
    It has the attributes a simulated meter reads (`grid_p_w`, `grid`, `phase_split`,
    `phase_v`, `meter_stopped`), so the one site meter is served from it.

    Grid loss (`grid.lost`): the meter reads 0 W, and each step either the inverters form the grid
    and carry the site within their `windows` — the inverters their nodes told to
    (`Inverter.grid_forming`) — or the site is dark; `unserved_w` and `curtailed_w` report
    what could not be balanced.
    """

    def __init__(self, grid: Grid, solar: Solar, load: Load, seed: int = 1, wall_s: float = 0.0, phases: int = 3):
        self.grid, self.solar, self.load = grid, solar, load
        self.rng = random.Random(seed)
        self.wall_s = wall_s
        self.phases = phases
        self.meter_stopped = False
        self.nodes: dict[str, Plant] = {}
        # grid loss (`grid.lost`): set by whoever controls the cluster, read each step
        self.windows: dict[str, tuple[float, float]] = {}  # node id -> (charge_w, discharge_w) it may carry
        # results of the last step during a loss, W
        self.unserved_w = 0.0  # load nobody supplied
        self.curtailed_w = 0.0  # PV that could not be used

    @classmethod
    def from_params(cls, params_list, wall_s: float = 0.0) -> "SitePlant":
        """The site the parameter files describe: load, PV and seed from the first file's `simulation`
        section (the site's), one node plant per file (its battery, inverter, initial SOC), by node id."""
        from ..params import SimulationParams

        first = params_list[0].simulation or SimulationParams()
        site = cls(Grid(), Solar(first.pv_peak_w), Load(first.load_avg_w), seed=first.seed, wall_s=wall_s)
        for params in params_list:
            node = Plant.from_params(params, wall_s=wall_s)
            node.grid, node.solar, node.load, node.site = site.grid, site.solar, site.load, site
            site.nodes[params.identity.node_id] = node
        return site

    def step(self, dt_s: float, wall_s: float | None = None) -> None:
        self.wall_s = self.wall_s + dt_s if wall_s is None else wall_s
        self.grid.step(self.rng, dt_s)
        self.solar.step(self.rng, dt_s)
        self.load.step(self.rng, dt_s)
        for node in self.nodes.values():
            node.wall_s = self.wall_s
        if self.grid.lost:
            self._island(dt_s)
        else:
            self.unserved_w = self.curtailed_w = 0.0
            for node in self.nodes.values():
                node.step_node(dt_s)
        if self.grid.playing:
            self.grid.trace({node_id: node.inverter.p_w for node_id, node in self.nodes.items()})

    def _island(self, dt_s: float) -> None:
        """The grid is lost. The forming inverters carry load - PV, shared in proportion to their
        windows in that direction (`windows`, default their rating, within the battery's own
        limits; an inverter that does not run or does not form the grid carries nothing); load
        above what they can give is unserved, PV above what they can take is curtailed. No
        inverter forms the grid: a blackout, every inverter at 0 W, all load unserved."""
        load, pv = self.load_w, self.pv_w
        forming = {node_id for node_id, node in self.nodes.items() if node.inverter.grid_forming}
        if not forming:
            self.unserved_w, self.curtailed_w = load, pv
            for node in self.nodes.values():
                node.battery.step(node.inverter.carry(0.0, dt_s), dt_s)
            return
        net = load - pv  # + : the batteries discharge
        caps = {}
        for node_id, node in self.nodes.items():
            c, d = self.windows.get(node_id, (node.inverter.rated_w, node.inverter.rated_w))
            b = node.battery
            able = node_id in forming and node.inverter.running and b.contactor_closed and not b.sleeping
            if not able or (net > 0 and b.soc <= 0.0) or (net < 0 and b.soc >= 1.0):
                c = d = 0.0
            bms_c, bms_d = (a * b.nominal_v for a in b.limits_a())
            cap = min(node.inverter.rated_w, d, bms_d) if net >= 0 else min(node.inverter.rated_w, c, bms_c)
            caps[node_id] = max(0.0, cap)
        total = sum(caps.values())
        done = min(abs(net), total)
        self.unserved_w = max(0.0, net - done) if net >= 0 else 0.0
        self.curtailed_w = max(0.0, -net - done) if net < 0 else 0.0
        sign = 1.0 if net >= 0 else -1.0
        for node_id, node in self.nodes.items():
            share = sign * done * caps[node_id] / total if total > 0 else 0.0
            node.battery.step(node.inverter.carry(share, dt_s), dt_s)

    @property
    def nodes_p_w(self) -> float:
        """The sum of every node's inverter power (positive = discharge)."""
        return sum(node.inverter.p_w for node in self.nodes.values())

    @property
    def grid_p_w(self) -> float:
        """At the one connection point, positive = import: load - PV - every node's inverter power
        (0 while the grid is lost)."""
        if self.grid.lost:
            return 0.0
        return self.load_w - self.pv_w - self.nodes_p_w
