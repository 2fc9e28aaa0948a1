"""What every cluster mode sees and returns (DESIGN §2.1, §5): the cluster process image in, a target out.

A mode is one module in this package with:

- ``NAME``: its name in the replicated state and on every interface;
- ``Params``: a pydantic model of its parameters (unknown keys are rejected; every field has a
  range), the single place its parameters are validated;
- ``start(image, params) -> memory``: its small state on entry, taken from what is measured
  (so a new leader, or a mode switch, continues bumplessly from the power the cluster is
  actually exchanging, never from zero);
- ``step(image, params, memory) -> ModeResult``: one cycle, pure: same inputs, same result.

The caller (``runner.ModeRunner``, on the leader and in the day simulation alike) narrows the
mode's target by the cluster limits and each node's own limits (DESIGN §2.3): a mode can only
ask, never widen.

Signs and units as everywhere: battery power positive = discharge, grid positive = import, W.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict

from ..dispatch import RUN_STATE, NodeView


MAX_W = 10_000_000.0  # the bound of every power parameter, W


class ModeParams(BaseModel):
    """Base of every mode's parameters: strict keys, finite numbers, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass(frozen=True, slots=True)
class ClusterImage:
    """The leader's snapshot of the cluster for one cycle. None means absent (missing or stale)."""

    t: float                      # monotonic s (virtual in the simulation)
    wall: float                   # UTC epoch s: schedules, prices, time windows
    dt_s: float                   # the cycle period
    nodes: tuple[NodeView, ...]
    grid_w: float | None = None   # the site meter at the connection point, + = import; None: stale/absent
    grid_t: float | None = None   # the reading's time (the reporting node's monotonic s): a new sample when it changes
    freq_hz: float | None = None  # grid frequency (meter or an inverter)
    grid_v: float | None = None   # phase voltage at the connection point
    island: bool = False          # an inverter reports islanded operation (grid lost)
    request_w: float | None = None     # the cluster's local request (``cluster setpoint``: CLI/SCADA); None: none
    request_wall: float | None = None  # UTC epoch s when it was last set or refreshed (its heartbeat)
    limit_charge_w: float | None = None     # the cluster limits (replicated state), None: none
    limit_discharge_w: float | None = None

    def running(self) -> list[NodeView]:
        """Nodes that may exchange power now: online, in state run, with finite numbers."""
        return [n for n in self.nodes if n.online is True and n.state == RUN_STATE
                and all(math.isfinite(v) for v in (n.soc, n.usable_wh, n.charge_w, n.discharge_w, n.p_w))]

    @property
    def battery_w(self) -> float:
        """What the running nodes exchange now (+ = discharge)."""
        return math.fsum(n.p_w for n in self.running())

    @property
    def charge_cap_w(self) -> float:
        """What the cluster may charge now: the running nodes' caps, within the cluster limit."""
        cap = math.fsum(max(0.0, n.charge_w) for n in self.running())
        return cap if self.limit_charge_w is None else min(cap, self.limit_charge_w)

    @property
    def discharge_cap_w(self) -> float:
        cap = math.fsum(max(0.0, n.discharge_w) for n in self.running())
        return cap if self.limit_discharge_w is None else min(cap, self.limit_discharge_w)

    @property
    def usable_wh(self) -> float:
        return math.fsum(n.usable_wh for n in self.running())

    @property
    def soc(self) -> float | None:
        """Energy-weighted SOC of the running nodes (None: none runs)."""
        nodes = self.running()
        total = math.fsum(n.usable_wh for n in nodes)
        if total <= 0:
            return None
        return math.fsum(n.soc * n.usable_wh for n in nodes) / total


@dataclass(frozen=True, slots=True)
class ModeResult:
    target_w: float                        # cluster battery target, + = discharge
    memory: Any = None                    # the mode's state for its next cycle (opaque to the caller)
    note: str = ""                         # why, for status and logs
    # per node (charge_w, discharge_w) caps: narrow only (e.g. a SOC reserve, "never discharge")
    node_limits: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    grid_forming: bool = False             # the inverters should form the grid (backup, islanded)
    target_var: float = 0.0                # reactive power target, var (+ = delivered, over-excited, as P + = discharge)


def reserve_limits(image: ClusterImage, reserve_soc: float, *, charge: bool = True) -> dict[str, tuple[float, float]]:
    """Per-node caps that keep ``reserve_soc`` in every node: no discharge at or below it
    (and, with ``charge=False``, no charge at all)."""
    out = {}
    for n in image.running():
        discharge = 0.0 if n.soc <= reserve_soc else n.discharge_w
        out[n.node_id] = (n.charge_w if charge else 0.0, discharge)
    return out


def clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))
