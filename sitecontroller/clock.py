"""Injected time (DESIGN §2.6).

Every component takes a `Clock`. `RealClock` drives a node in the field;
`SimClock` drives tests and the deterministic simulator, where time only moves
when the test (or simulator) advances it.
"""
from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (for deadlines and staleness)."""

    def wall(self) -> float:
        """Unix time in seconds (for timestamps people and the cloud read)."""

    async def sleep_until(self, t_mono: float) -> None:
        """Return once monotonic() >= t_mono."""


class RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep_until(self, t_mono: float) -> None:
        delay = t_mono - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


class SimClock:
    """A clock that moves only when told to.

    `sleep_until` jumps time forward to the deadline, so an asyncio loop driven
    by a SimClock runs as fast as the CPU allows and is fully deterministic.
    """

    def __init__(self, start_mono: float = 1000.0, start_wall: float = 1_780_000_000.0):
        self._mono = start_mono
        self._wall_offset = start_wall - start_mono

    def monotonic(self) -> float:
        return self._mono

    def wall(self) -> float:
        return self._mono + self._wall_offset

    def advance(self, dt_s: float) -> None:
        if dt_s < 0:
            raise ValueError("time cannot go backwards")
        self._mono += dt_s

    def set(self, t_mono: float) -> None:
        self.advance(t_mono - self._mono)

    async def sleep_until(self, t_mono: float) -> None:
        if t_mono > self._mono:
            self._mono = t_mono
        await asyncio.sleep(0)
