"""A meter that polls its device on a fixed period (DESIGN §4, drivers).

`PollingMeter` adds to the one polling-driver base (`drivers/polling.py`: the
task, absolute deadlines, comm loss, bounded close) what every meter shares: the
per-poll timeout, the plausibility check, the latest reading and the issues.
A transport subclass only implements `_open`, `_read` and `_close`, and says
what went wrong by raising one of the three errors below:

- `MeterCommError`: no answer (refused, reset, timeout). After
  `config.comm_lost_after` unanswered polls in a row, METER_COMM_LOST is active;
  the first answer of any kind clears it.
- `MeterDecodeError`: an answer that cannot be turned into a reading
  (bad JSON, missing field, implausible value: `check_plausible`). METER_DECODE is active until
  the next good reading.
- `MeterRejectedError`: the device answered but refused the request (Modbus
  exception, HTTP error status). METER_REJECTED is active until the next good
  reading.

A failed poll never replaces the latest reading: `latest()` simply stops
updating and goes stale, and the process image treats it as absent. A reading
whose timestamp (the device's own, where it has one) did not advance is not
published either: a frozen meter goes stale like a silent one.
"""
from __future__ import annotations

import abc
import asyncio
import logging
import math

from ...process_image import MeterReading
from ..base import DeviceIssue, MeterDriver
from ..polling import PollingDriver, raise_if_cancelling
from .config import MeterConfig

log = logging.getLogger(__name__)

COMM_LOST, DECODE, REJECTED = "METER_COMM_LOST", "METER_DECODE", "METER_REJECTED"


class MeterCommError(Exception):
    """The device did not answer."""


class MeterDecodeError(Exception):
    """The device answered with something that is not a valid reading."""


class MeterRejectedError(Exception):
    """The device answered with an error instead of data."""


# Plausibility bounds: a value outside them is a decoding problem, not a measurement.
MAX_ABS_W = 10_000_000.0
MAX_ABS_A = 100_000.0
V_RANGE = (0.0, 1_000.0)
HZ_RANGE = (40.0, 70.0)


def check_plausible(reading: MeterReading) -> MeterReading:
    """The reading itself, or MeterDecodeError naming the first implausible value."""

    def need(ok: bool, what: str, value) -> None:
        if not ok:
            raise MeterDecodeError(f"implausible {what} = {value!r}")

    need(reading.p_w is not None and math.isfinite(reading.p_w) and abs(reading.p_w) <= MAX_ABS_W, "p_w", reading.p_w)
    for i, w in enumerate(reading.phase_p_w, start=1):
        need(w is not None and math.isfinite(w) and abs(w) <= MAX_ABS_W, f"L{i} power (W)", w)
    for i, v in enumerate(reading.phase_v, start=1):
        need(v is not None and V_RANGE[0] <= v <= V_RANGE[1], f"L{i} voltage (V)", v)
    for i, a in enumerate(reading.phase_a, start=1):
        need(a is not None and math.isfinite(a) and abs(a) <= MAX_ABS_A, f"L{i} current (A)", a)
    if reading.freq_hz is not None:
        need(HZ_RANGE[0] <= reading.freq_hz <= HZ_RANGE[1], "frequency (Hz)", reading.freq_hz)
    return reading


class PollingMeter(PollingDriver, MeterDriver):
    comm_lost_code = COMM_LOST

    def __init__(self, config: MeterConfig, clock) -> None:
        super().__init__(clock, poll_s=config.poll_s, comm_lost_s=0.0, comm_lost_polls=config.comm_lost_after)
        self.config = config
        self._latest: MeterReading | None = None
        self._answer_problem: tuple[str, str] | None = None  # (code, text) of the last answered poll
        self._stats: dict[str, float] = {
            "readings": 0,
            "comm_errors": 0,
            "decode_errors": 0,
            "rejected": 0,
            "last_rtt_s": 0.0,
        }

    # --- what a transport implements -------------------------------------
    @property
    def poll_timeout_s(self) -> float:
        """The longest one poll may take (a transport that makes several requests widens it)."""
        return self.config.timeout_s

    @abc.abstractmethod
    async def _read(self) -> MeterReading:
        """One poll: fetch and decode, or raise one of the Meter*Error."""

    # --- MeterDriver ------------------------------------------------------
    def latest(self) -> MeterReading | None:
        return self._latest

    def issues(self) -> list[DeviceIssue]:
        out = super().issues()
        if self._answer_problem is not None:
            out.append(DeviceIssue(*self._answer_problem))
        return out

    def _comm_lost_text(self) -> str:
        return (f"{self.config.model} meter at {self.endpoint}: no answer to the last "
                f"{self._unanswered} polls ({self._last_comm_error})")

    def stats(self) -> dict[str, float]:
        return dict(super().stats(), **self._stats)

    # --- one poll -----------------------------------------------------------
    async def _poll(self) -> bool:
        await self.poll_once()
        return False  # a meter takes no commands

    async def poll_once(self) -> MeterReading | None:
        """Poll the device once; return the new reading, or None if the poll failed."""
        t0 = self.clock.monotonic()
        try:
            async with asyncio.timeout(self.poll_timeout_s):
                reading = check_plausible(await self._read())
        except (MeterCommError, TimeoutError, OSError) as exc:
            raise_if_cancelling()
            text = str(exc) or f"timeout after {self.poll_timeout_s:g} s"
            self._meter_no_answer(text)
            return None
        except MeterDecodeError as exc:
            self._meter_answered((DECODE, f"{self.config.model} meter at {self.endpoint}: unusable data: {exc}"))
            self._stats["decode_errors"] += 1
            return None
        except MeterRejectedError as exc:
            self._meter_answered((REJECTED, f"{self.config.model} meter at {self.endpoint}: request refused: {exc}"))
            self._stats["rejected"] += 1
            return None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never let the task die: report it as no answer
            raise_if_cancelling()
            text = f"{type(exc).__name__}: {exc}"
            if text != self._last_comm_error:  # once per distinct error, not every poll
                log.exception("meter %s: unexpected error while polling", self.endpoint)
            self._meter_no_answer(text)
            return None
        self._stats["last_rtt_s"] = self.clock.monotonic() - t0
        self._meter_answered(None)
        if self._latest is not None and reading.t <= self._latest.t:
            return None  # the device's own timestamp did not advance: a frozen reading is no news
        self._stats["readings"] += 1
        self._latest = reading
        return reading

    def _meter_no_answer(self, text: str) -> None:
        self._stats["comm_errors"] += 1
        self._no_answer(text)
        if self.comm_lost:
            self._answer_problem = None  # what the device last said is no longer news

    def _meter_answered(self, problem: tuple[str, str] | None) -> None:
        self._answered()
        if problem is not None and problem != self._answer_problem:
            log.warning("%s", problem[1])
        self._answer_problem = problem
