"""``grid_forming`` (backup): keep ``backup_reserve_soc`` for a blackout and carry the site through one.

Grid present: every node keeps the reserve (no discharge at or below it); below it the
cluster recharges at up to ``charge_w``; above it, it idles.

Grid lost — an inverter reports islanded operation, or the measured frequency or voltage is
outside ``[f_min_hz, f_max_hz]`` / ``[v_min_v, v_max_v]`` — the result asks the nodes'
inverters to form the grid (``grid_forming``): they then carry the site load themselves
within their limits, down to each node's own SOC floor (the reserve exists for this), and
the target reported is the power they carry. A load above their capacity is reported in the
note. The grid counts as back only after it has been healthy for ``resync_s`` without a break
(the inverters resynchronise meanwhile); then the mode returns to its normal behaviour.

``island`` / ``start_island`` serve the runner too: with backup enabled, any mode hands over
to this island behaviour on grid loss and gets the cluster back when the grid returns.
"""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, model_validator

from .base import MAX_W, ClusterImage, ModeParams, ModeResult, reserve_limits

NAME = "grid_forming"


class Params(ModeParams):
    backup_reserve_soc: float = Field(0.30, ge=0, le=1, description="kept for a blackout")
    charge_w: float = Field(1000.0, ge=0, le=MAX_W, description="recharge to the reserve at most at this power")
    f_min_hz: float = Field(47.5, ge=40, le=70)
    f_max_hz: float = Field(52.0, ge=40, le=70)
    v_min_v: float = Field(195.5, ge=0, le=1000)
    v_max_v: float = Field(264.5, ge=0, le=1000, description="1.15 pu: a fast over-voltage, not the 10-min mean")
    resync_s: float = Field(10.0, ge=0, le=3600, description="the grid must be healthy this long before leaving the island")

    @model_validator(mode="after")
    def _ranges(self):
        if self.f_min_hz >= self.f_max_hz:
            raise ValueError(f"f_min_hz ({self.f_min_hz}) must be below f_max_hz ({self.f_max_hz})")
        if self.v_min_v >= self.v_max_v:
            raise ValueError(f"v_min_v ({self.v_min_v}) must be below v_max_v ({self.v_max_v})")
        return self


@dataclass(frozen=True, slots=True)
class Island:
    islanded: bool
    healthy_since: float | None = None   # grid healthy again since (monotonic), while still islanded


def grid_lost(image: ClusterImage, params: Params) -> str | None:
    """Why the grid counts as lost in this image, or None."""
    if image.island:
        return "an inverter reports islanded operation"
    if image.freq_hz is not None and not params.f_min_hz <= image.freq_hz <= params.f_max_hz:
        return f"grid frequency {image.freq_hz:.2f} Hz outside {params.f_min_hz}..{params.f_max_hz} Hz"
    if image.grid_v is not None and not params.v_min_v <= image.grid_v <= params.v_max_v:
        return f"grid voltage {image.grid_v:.0f} V outside {params.v_min_v:.0f}..{params.v_max_v:.0f} V"
    return None


def start_island(image: ClusterImage, params: Params) -> Island:
    return Island(grid_lost(image, params) is not None)


def island(image: ClusterImage, params: Params, memory: Island) -> ModeResult | None:
    """The islanded result for this cycle, or None when the cluster is (back) on the grid."""
    why = grid_lost(image, params)
    if why is None and not memory.islanded:
        return None
    if why is not None:
        memory = Island(True, None)
    else:
        since = memory.healthy_since if memory.healthy_since is not None else image.t
        if image.t - since >= params.resync_s:
            return None
        memory = Island(True, since)
        why = f"grid back for {image.t - since:.0f} s: resynchronising ({params.resync_s:.0f} s)"
    carried, cap = image.battery_w, image.discharge_cap_w
    note = f"islanded ({why}): the inverters form the grid and carry {carried:.0f} W of {cap:.0f} W"
    if carried >= 0.98 * cap:
        note += "; site load at or above the battery's capacity"
    return ModeResult(carried, memory, note, grid_forming=True)


def start(image: ClusterImage, params: Params) -> Island:
    return start_island(image, params)


def step(image: ClusterImage, params: Params, memory: Island) -> ModeResult:
    result = island(image, params, memory)
    if result is not None:
        return result
    caps = reserve_limits(image, params.backup_reserve_soc)
    soc = image.soc
    if soc is not None and soc < params.backup_reserve_soc:
        target = -min(params.charge_w, image.charge_cap_w)
        note = f"backup: recharging to the {params.backup_reserve_soc:.0%} reserve ({target:.0f} W)"
    else:
        target, note = 0.0, f"backup: reserve {params.backup_reserve_soc:.0%} kept, idle"
    return ModeResult(target, Island(False), note, caps)
