"""A small closed loop on a simulated clock for mode stability tests: one site, N nodes.

Net load (load - PV) is a function of time; the nodes' inverters follow their setpoints with
a first-order lag (``response_s``) and a ramp; the site meter samples every ``meter_s`` and
holds (sample and hold). The leader's ``ModeRunner`` runs every ``dt_s`` on the image the
meter and the nodes give it, and its dispatch reaches the nodes one cycle later.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from mastercontroller.control.base import ClusterImage
from mastercontroller.control.runner import ModeRunner
from mastercontroller.dispatch import DispatchParams, NodeView
from mastercontroller.state import ClusterState


@dataclass
class Node:
    node_id: str
    soc: float = 0.5
    usable_wh: float = 10_000.0
    limit_w: float = 5000.0
    p_w: float = 0.0
    setpoint_w: float = 0.0


@dataclass
class Loop:
    net_load_w: object                   # t -> W (load - PV)
    meter_s: float = 1.0
    response_s: float = 1.0
    ramp_w_per_s: float = 20_000.0
    dt_s: float = 0.1
    nodes: list = field(default_factory=lambda: [Node("n1"), Node("n2"), Node("n3")])
    meter_up: object = lambda t: True    # t -> whether the meter answers
    t: float = 0.0

    def run(self, state: ClusterState, seconds: float) -> list[tuple[float, float, float]]:
        """Samples (t, grid_w, target_w) every cycle."""
        runner = ModeRunner(DispatchParams(sleep_enabled=False))
        sample = None  # (t, grid_w)
        out = []
        for _ in range(int(round(seconds / self.dt_s))):
            grid = self.net_load_w(self.t) - sum(n.p_w for n in self.nodes)
            k = int(math.floor(self.t / self.meter_s + 1e-9))
            if self.meter_up(self.t) and (sample is None or k * self.meter_s > sample[0] + 1e-9):
                sample = (k * self.meter_s, grid)
            fresh = sample if sample is not None and self.meter_up(self.t) else None
            views = tuple(NodeView(n.node_id, True, "run", n.soc, n.usable_wh, n.limit_w, n.limit_w, n.p_w)
                          for n in self.nodes)
            image = ClusterImage(self.t, 1_780_000_000.0 + self.t, self.dt_s, views,
                                 grid_w=None if fresh is None else fresh[1], grid_t=None if fresh is None else fresh[0])
            step = runner.step(state, image)
            for n in self.nodes:  # the plant moves for one cycle, toward last cycle's setpoint
                alpha = 1.0 if self.response_s <= 0 else 1.0 - math.exp(-self.dt_s / self.response_s)
                want = n.p_w + alpha * (n.setpoint_w - n.p_w)
                r = self.ramp_w_per_s * self.dt_s
                n.p_w = min(n.p_w + r, max(n.p_w - r, want))
                n.soc -= n.p_w * self.dt_s / 3600 / n.usable_wh
                n.setpoint_w = step.dispatch.setpoints[n.node_id]
            out.append((self.t, grid, step.target_w))
            self.t = round(self.t + self.dt_s, 9)
        return out


def sign_changes(values, band_w: float) -> int:
    """How often the sign flips, counting only values outside ±band_w."""
    last, count = 0, 0
    for v in values:
        s = 1 if v > band_w else -1 if v < -band_w else 0
        if s and last and s != last:
            count += 1
        if s:
            last = s
    return count
