"""The driver boundary (DESIGN §2.1, §4).

A driver does I/O only: it polls its device in its own asyncio task and keeps
the latest timestamped reading; the cycle reads `latest()` and never waits on a
device. Writes go the other way: the cycle hands the driver a command with
`command()` (non-blocking); the driver's task writes it, reads it back or
checks the acknowledgement, and reports a failed write as an active issue.

A driver never decides power: it only reports what it sees (`latest`,
`issues`) and carries out what it is told (`command`).

Lifecycle: `start()` never raises for a silent device; `close()` always returns
within a bounded time (cancellation wins, see `drivers/polling.py`); before an
orderly stop closes the drivers, `await flush(timeout_s)` pushes the last
command (e.g. run=False, 0 W) to the device and says whether it got there.
Polling drivers share one base, `drivers.polling.PollingDriver`.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..errors import CRITICAL, ERROR, WARNING  # noqa: F401  (drivers name their issue severities with these)
from ..process_image import BmsReading, InverterReading, MeterReading

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class DeviceIssue:
    """A condition a driver sees right now (e.g. a rack timeout, a failed write).

    `code` is a stable id registered in `sitecontroller.errors.CATALOG`.
    The node raises the error while the issue is reported and clears it when
    the driver stops reporting it.
    """

    code: str
    text: str


@dataclass(frozen=True, slots=True)
class InverterCommand:
    p_w: float  # active power setpoint, positive = discharge
    q_var: float = 0.0
    run: bool = True
    grid_forming: bool = False  # backup: form the grid when it is lost (the node's BACKUP hardware only)


@dataclass(frozen=True, slots=True)
class BmsCommand:
    contactor_closed: bool
    balancing: bool = False
    sleep: bool = False


class Driver(abc.ABC, Generic[R]):
    """Base of every device driver."""

    kind: str = "device"

    @abc.abstractmethod
    async def start(self) -> None:
        """Open the connection and start the polling task. Must not raise on a
        device that does not answer: that is reported through `issues()`."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop the task and release the bus/socket. Returns within a bounded time (a task that
        does not stop is logged and left behind, never awaited forever)."""

    async def flush(self, timeout_s: float) -> bool:
        """Write the pending command now and wait until the device acknowledged it (the write
        was answered) or `timeout_s` passed. True if nothing is pending or it got there."""
        return True

    @abc.abstractmethod
    def latest(self) -> R | None:
        """The most recent reading, or None if nothing was ever received."""

    def issues(self) -> list[DeviceIssue]:
        """Conditions active right now (communication, decode, write failures)."""
        return []

    def stats(self) -> dict[str, float]:
        """Counters for status and benchmarks (frames, errors, round trips)."""
        return {}


class BmsDriver(Driver[BmsReading]):
    kind = "bms"

    @abc.abstractmethod
    def command(self, cmd: BmsCommand) -> None:
        """Ask the BMS for a contactor / balancing / sleep state (non-blocking)."""


class InverterDriver(Driver[InverterReading]):
    kind = "inverter"
    can_form_grid: bool = False  # it can be told to form the grid when the grid is lost (backup)
    can_set_q: bool = False  # it can be told a reactive power setpoint

    @abc.abstractmethod
    def command(self, cmd: InverterCommand) -> None:
        """Set the power setpoint and run/stop (non-blocking; the driver writes it)."""

    def set_soc_window(self, soc_reserve: float, soc_max: float) -> None:
        """The node's SOC window changed at run time: a model with a device-side SOC stop writes the
        new one with its next command (default: the device has none, nothing to do)."""


class MeterDriver(Driver[MeterReading]):
    kind = "meter"
