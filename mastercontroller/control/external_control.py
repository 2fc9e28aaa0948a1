"""``external_control``: follow an external schedule of power entries; ``fallback_w`` in its gaps.

``schedule`` is a list of entries ``{"start", "end", "p_w", "q_var"}`` with ISO 8601 times that
carry a timezone offset (stored as UTC). The entry whose [start, end) holds the wall clock
gives the cycle's target (``p_w``, + = discharge) and reactive target (``q_var``); outside
every entry the target is ``fallback_w``. Entries may come unsorted but must not overlap
(one ending exactly where the next starts is fine). Lookup is a bisection over sorted starts.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from datetime import datetime, timezone

from pydantic import Field, PrivateAttr, field_validator, model_validator

from .base import MAX_W, ClusterImage, ModeParams, ModeResult

NAME = "external_control"

MAX_ENTRIES = 500


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


class Entry(ModeParams):
    start: datetime      # aware, stored as UTC
    end: datetime        # aware, stored as UTC; exclusive
    p_w: float = Field(ge=-MAX_W, le=MAX_W)          # + = discharge
    q_var: float = Field(0.0, ge=-MAX_W, le=MAX_W)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _text(cls, value):
        if not isinstance(value, (str, datetime)):
            raise ValueError("expected an ISO 8601 datetime string with a timezone offset, "
                             f"e.g. 2024-06-01T12:00:00+02:00, got {type(value).__name__}")
        return value

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.utcoffset() is None:
            raise ValueError(f"{value.isoformat()} has no timezone: add an offset such as "
                             "+02:00 or Z (naive datetimes are ambiguous)")
        try:
            return value.astimezone(timezone.utc)
        except OverflowError:
            raise ValueError(f"{value.isoformat()} is out of range in UTC") from None

    @model_validator(mode="after")
    def _end_after_start(self) -> "Entry":
        if self.end <= self.start:
            raise ValueError(f"end ({_iso(self.end)}) must be after start ({_iso(self.start)})")
        return self


class Params(ModeParams):
    schedule: tuple[Entry, ...] = Field((), max_length=MAX_ENTRIES)
    fallback_w: float = Field(0.0, ge=-MAX_W, le=MAX_W)   # outside every entry

    _order: tuple[int, ...] = PrivateAttr(())      # entry indices sorted by start
    _starts: tuple[float, ...] = PrivateAttr(())   # their starts, UTC epoch s
    _ends: tuple[float, ...] = PrivateAttr(())

    @field_validator("schedule")
    @classmethod
    def _no_overlap(cls, schedule: tuple[Entry, ...]) -> tuple[Entry, ...]:
        order = sorted(range(len(schedule)), key=lambda i: (schedule[i].start, i))
        for prev, cur in zip(order, order[1:]):
            a, b = schedule[prev], schedule[cur]
            if b.start < a.end:   # sorted by start: adjacent pairs are enough
                raise ValueError(
                    f"schedule[{cur}] overlaps schedule[{prev}] ({_iso(b.start)}..{_iso(b.end)} "
                    f"starts before {_iso(a.start)}..{_iso(a.end)} ends)")
        return schedule

    def model_post_init(self, context) -> None:
        order = sorted(range(len(self.schedule)), key=lambda i: self.schedule[i].start)
        self._order = tuple(order)
        self._starts = tuple(self.schedule[i].start.timestamp() for i in order)
        self._ends = tuple(self.schedule[i].end.timestamp() for i in order)

    def entry_at(self, wall: float) -> int | None:
        """The index (as given) of the entry whose [start, end) holds ``wall``, or None."""
        if not math.isfinite(wall):
            return None
        k = bisect_right(self._starts, wall) - 1
        if k >= 0 and wall < self._ends[k]:
            return self._order[k]
        return None


def start(image: ClusterImage, params: Params) -> None:
    return None


def step(image: ClusterImage, params: Params, memory: None) -> ModeResult:
    i = params.entry_at(image.wall)
    if i is None:
        return ModeResult(params.fallback_w, None, f"no schedule entry: fallback {params.fallback_w:.0f} W")
    e = params.schedule[i]
    note = f"schedule[{i}]: {e.p_w:.0f} W, {e.q_var:.0f} var until {_iso(e.end)}"
    return ModeResult(e.p_w, None, note, target_var=e.q_var)
