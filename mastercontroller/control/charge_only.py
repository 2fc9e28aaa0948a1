"""``charge_only``: charge the cluster to ``target_soc`` inside time windows; never discharge.

Every cycle each running node gets discharge cap 0 (``node_limits``), and a node at or above
``target_soc`` also gets charge cap 0. Inside a charge window (``windows`` as local "HH:MM"
times in ``tz``; an empty list means always; a window may wrap midnight) and while the
cluster SOC is below ``target_soc``, the target is
``-min(max_charge_w, the running nodes' remaining charge caps)``, tapering linearly to 0 W
over the last 0.02 of SOC below ``target_soc``. Outside the windows or at target: 0 W.
"""
from __future__ import annotations

import math
import re
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from .base import MAX_W, ClusterImage, ModeParams, ModeResult, clamp

NAME = "charge_only"

TAPER_SOC = 0.02      # the charge power ramps down to 0 W over this last SOC band below target
MAX_WINDOWS = 48
_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


def _minutes(hhmm: str) -> int:
    m = _HHMM.fullmatch(hhmm)
    return int(m.group(1)) * 60 + int(m.group(2))


class Window(ModeParams):
    """One daily charge window in local time: [start, end); end before start wraps midnight."""

    start: str = Field(description="HH:MM, 00:00..23:59")
    end: str = Field(description="HH:MM, 00:00..23:59")

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.fullmatch(value):
            raise ValueError(f"expected a time HH:MM from 00:00 to 23:59, got {value!r}")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> "Window":
        if self.start == self.end:
            raise ValueError(f"start and end must differ (both {self.start}); "
                             "a window may wrap midnight, e.g. 22:00-06:00")
        return self

    def contains(self, minute: float) -> bool:
        start, end = _minutes(self.start), _minutes(self.end)
        if start < end:
            return start <= minute < end
        return minute >= start or minute < end      # wraps midnight


class Params(ModeParams):
    target_soc: float = Field(0.9, ge=0.0, le=1.0)
    max_charge_w: float | None = Field(None, gt=0.0, le=MAX_W)   # None: the nodes' own charge caps
    windows: tuple[Window, ...] = Field((), max_length=MAX_WINDOWS)  # empty: always allowed
    tz: str = Field("UTC", min_length=1, max_length=64)             # IANA zone of the windows

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as "
                             "'UTC' or 'Europe/Stockholm'") from None
        return value


def start(image: ClusterImage, params: Params) -> None:
    return None


def _in_window(wall: float, params: Params) -> bool | None:
    """Whether ``wall`` falls in a charge window (None: the wall clock cannot be read)."""
    if not params.windows:
        return True
    try:
        local = datetime.fromtimestamp(wall, ZoneInfo(params.tz))
    except (ValueError, OverflowError, OSError):
        return None
    minute = local.hour * 60 + local.minute + (local.second + local.microsecond / 1e6) / 60
    return any(w.contains(minute) for w in params.windows)


def _pct(soc: float) -> str:
    return f"{soc * 100:.4g} %"


def step(image: ClusterImage, params: Params, memory: None) -> ModeResult:
    target = params.target_soc
    limits = {}
    for n in image.running():
        limits[n.node_id] = (max(0.0, n.charge_w) if n.soc < target else 0.0, 0.0)
    soc = image.soc
    if soc is None:
        return ModeResult(0.0, None, "charge only: no running nodes: 0 W", limits)
    if soc >= target:
        return ModeResult(0.0, None, f"charge only: at target SOC ({_pct(soc)} >= {_pct(target)}): 0 W", limits)
    inside = _in_window(image.wall, params)
    if inside is None:
        return ModeResult(0.0, None, f"charge only: wall clock {image.wall!r} unreadable: 0 W", limits)
    if not inside:
        return ModeResult(0.0, None, f"charge only: outside the charge windows ({params.tz}): 0 W", limits)
    cap = math.fsum(c for c, _ in limits.values())
    if params.max_charge_w is not None:
        cap = min(cap, params.max_charge_w)
    taper = clamp((target - soc) / TAPER_SOC, 0.0, 1.0)
    power = cap * taper
    note = f"charging to {_pct(target)}: {power:.0f} W (SOC {soc * 100:.1f} %"
    note += ", tapering)" if taper < 1.0 else ")"
    return ModeResult(-power if power > 0 else 0.0, None, note, limits)
