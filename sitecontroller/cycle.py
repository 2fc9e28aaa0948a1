"""The deadline-scheduled control cycle (DESIGN §2.2).

Deadlines are absolute (`t0 + k * period`), so the cycle never drifts: a slow
cycle does not push every later one back. A cycle that finishes after the next
deadline is an *overrun*; the missed slots are skipped (never run in a burst to
catch up) and counted.
"""
from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable

log = logging.getLogger("sitecontroller.cycle")


def nearest_rank(values, q: float) -> float | None:
    """The q-th percentile (nearest rank) of `values`; None if there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


class CycleStats:
    """Start-to-start periods of the last `window` cycles, and overrun counts."""

    def __init__(self, window: int = 3000):
        self.periods_s: deque[float] = deque(maxlen=window)
        self.cycles = 0
        self.overruns = 0
        self.missed_slots = 0
        self.max_period_s = 0.0
        self._last_start: float | None = None

    def started(self, t: float) -> None:
        if self._last_start is not None:
            period = t - self._last_start
            self.periods_s.append(period)
            self.max_period_s = max(self.max_period_s, period)
        self._last_start = t
        self.cycles += 1

    def percentile_ms(self, q: float) -> float | None:
        value = nearest_rank(self.periods_s, q)
        return None if value is None else value * 1000

    def summary(self) -> dict[str, float | int | None]:
        p50, p99 = self.percentile_ms(50), self.percentile_ms(99)
        return {
            "period_ms_p50": None if p50 is None else round(p50, 3),
            "period_ms_p99": None if p99 is None else round(p99, 3),
            "period_ms_max": round(self.max_period_s * 1000, 3),
            "overruns": self.overruns,
            "missed_slots": self.missed_slots,
            "cycles": self.cycles,
        }


class Deadlines:
    """Absolute deadlines t0 + k*period; decides when the next cycle starts."""

    def __init__(self, period_s: float, t0: float):
        if period_s <= 0:
            raise ValueError("period must be positive")
        self.period_s = period_s
        self.t0 = t0
        self.k = 0

    @property
    def current(self) -> float:
        return self.t0 + self.k * self.period_s

    def next_after(self, finished_at: float, stats: CycleStats) -> float:
        """Move to the next slot after a cycle finished at `finished_at`."""
        self.k += 1
        nxt = self.current
        if finished_at > nxt:
            stats.overruns += 1
            late_slots = math.floor((finished_at - self.t0) / self.period_s) + 1 - self.k
            stats.missed_slots += late_slots
            self.k += late_slots
            log.debug("cycle overran by %.1f ms; skipped %d slot(s)", (finished_at - nxt) * 1000, late_slots)
        return self.current


def aligned_start(clock, period_s: float, offset_s: float = 0.0) -> float:
    """The monotonic time of the next wall-clock instant `k * period_s + offset_s`.

    Cluster members start their cycles there, so nodes whose clocks agree (NTP) run in step
    and the leader's dispatch, sent a little before that instant, reaches every node just
    before its cycle (mastercontroller/service.py). Clocks that disagree cost latency (up to
    one period), never safety. A later step of the wall clock is not followed (monotonic
    deadlines never jump)."""
    return clock.monotonic() + (offset_s - clock.wall()) % period_s


async def run_cycles(clock, period_s: float, step: Callable[[], None], stop: asyncio.Event, stats: CycleStats,
                     t0: float | None = None) -> None:
    """Call `step` once per period until `stop` is set; the first at `t0` (monotonic; default now)."""
    if t0 is not None:
        await clock.sleep_until(t0)
    deadlines = Deadlines(period_s, clock.monotonic() if t0 is None else t0)
    while not stop.is_set():
        stats.started(clock.monotonic())
        step()
        await clock.sleep_until(deadlines.next_after(clock.monotonic(), stats))
