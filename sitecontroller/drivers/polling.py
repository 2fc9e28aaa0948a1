"""The one polling-driver base (DESIGN §4, drivers): task, deadlines, comm loss, writes, flush, close.

Every protocol driver that polls its device (Modbus inverters and meters, the
Indevolt and HomeWizard HTTP devices) is a `PollingDriver`. The base owns:

- the task: `start()` opens the transport and starts it; `close()` cancels it
  and waits at most `close_timeout_s` (a driver that does not stop in time is
  logged and counted in `stats()["close_overruns"]`, never waited on forever);
- the schedule: one poll every `poll_s` on absolute deadlines (overruns skip
  the missed slots and are counted); `command()` wakes the task at once so a
  changed setpoint goes out without waiting for the next tick;
- cancellation always wins: a `CancelledError` that a library turned into an
  ordinary exception (or that `asyncio.wait_for` swallowed on Python 3.11) is
  re-raised wherever the base catches, see `raise_if_cancelling()`;
- one definition of "comm lost": the last `comm_lost_polls` polls in a row got
  no answer AND nothing was answered for `comm_lost_s` (from start or the last
  answer). The first answer of any kind clears it;
- `flush(timeout_s)`: write the pending command now and wait until the device
  acknowledged it (`_write()` returned True) or the timeout.

A subclass implements `_poll()` (True if the device answered, False if not;
decode/refusal problems are answers and raise their own issues), optionally
`_write(cmd, due)` (True once the device holds `cmd`), `_open()`, `_close()`.
"""
from __future__ import annotations

import abc
import asyncio
import logging

from .base import DeviceIssue, Driver

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 2.0


def cancelling() -> bool:
    """True if the current task has been asked to stop (even if a library swallowed the CancelledError)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def raise_if_cancelling() -> None:
    """Call in every `except` that might have caught a disguised cancellation."""
    if cancelling():
        raise asyncio.CancelledError()


async def cancel_and_wait(task: asyncio.Task | None, timeout_s: float, what: str) -> bool:
    """Cancel `task` and wait for it at most `timeout_s`; True if it ended in time (else logged)."""
    if task is None or task.done():
        return True
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if task in done:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: task ended with %r", what, task.exception())
        return True
    task.cancel()  # once more: a second request survives one swallowed CancelledError
    log.error("%s: did not stop within %.1f s of being cancelled; left behind", what, timeout_s)
    return False


class PollingDriver(Driver):
    """Base of every driver that polls a device in its own task (see the module docstring)."""

    comm_lost_code = "COMM_LOST"

    def __init__(self, clock, *, poll_s: float, comm_lost_s: float = 0.0, comm_lost_polls: int = 1,
                 close_timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        self.clock = clock
        self.poll_s = poll_s
        self.comm_lost_s = comm_lost_s
        self.comm_lost_polls = comm_lost_polls
        self.close_timeout_s = close_timeout_s
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()  # set after every write attempt
        self._issues: dict[str, DeviceIssue] = {}
        self._cmd = None
        self._cmd_seq = 0
        self._acked_seq = 0
        self._started_at = 0.0
        self._last_answer: float | None = None
        self._unanswered = 0
        self._last_comm_error = ""
        self._base_stats = {"polls": 0, "overruns": 0, "close_overruns": 0, "writes": 0, "write_failures": 0}

    # --- what a subclass implements ------------------------------------------------------
    @property
    @abc.abstractmethod
    def endpoint(self) -> str:
        """Where the device is, for messages."""

    @abc.abstractmethod
    async def _poll(self) -> bool:
        """One poll; call `_answered()` / `_no_answer(why)`. True if a pending command may be written now."""

    async def _write(self, cmd, due: bool) -> bool:
        """Write `cmd` if needed (`due`: a keep-alive tick, rewrite even if unchanged).
        True once the device holds `cmd` (for `flush`)."""
        return True

    async def _open(self) -> None:
        """Prepare the transport (must not raise when the device does not answer)."""

    async def _close(self) -> None:
        """Release the transport."""

    # --- Driver ------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            return
        self._started_at = self.clock.monotonic()
        await self._open()
        self._task = asyncio.create_task(self._run(), name=f"{self.kind} {self.endpoint}")

    async def close(self) -> None:
        task, self._task = self._task, None
        if not await cancel_and_wait(task, self.close_timeout_s, f"{self.kind} {self.endpoint}"):
            self._base_stats["close_overruns"] += 1
        try:
            async with asyncio.timeout(self.close_timeout_s):
                await self._close()
        except TimeoutError:
            self._base_stats["close_overruns"] += 1
            log.error("%s %s: releasing the transport took over %.1f s", self.kind, self.endpoint,
                      self.close_timeout_s)

    async def flush(self, timeout_s: float) -> bool:
        """Write the pending command now; True once the device acknowledged it within `timeout_s`."""
        if self._cmd is None or self._acked_seq >= self._cmd_seq:
            return True
        if self._task is None or self._task.done():
            return False
        seq = self._cmd_seq
        self._wake.set()
        try:
            async with asyncio.timeout(timeout_s):
                while self._acked_seq < seq:
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            return False
        return True

    def command(self, cmd) -> None:
        """Remember the command; the task writes it at once (non-blocking)."""
        if cmd != self._cmd:
            self._cmd = cmd
            self._cmd_seq += 1
        self._wake.set()

    def issues(self) -> list[DeviceIssue]:
        out = list(self._issues.values())
        if self.comm_lost:
            out.insert(0, DeviceIssue(self.comm_lost_code, self._comm_lost_text()))
        return out

    def stats(self) -> dict[str, float]:
        return dict(self._base_stats, unanswered=self._unanswered)

    # --- comm loss: one definition ----------------------------------------------------------
    @property
    def comm_lost(self) -> bool:
        if self._unanswered < self.comm_lost_polls:
            return False
        since = self._last_answer if self._last_answer is not None else self._started_at
        return self.clock.monotonic() - since >= self.comm_lost_s

    def _comm_lost_text(self) -> str:
        since = self._last_answer if self._last_answer is not None else self._started_at
        return (f"{self.kind} at {self.endpoint}: no answer to the last {self._unanswered} polls "
                f"({self.clock.monotonic() - since:.1f} s; {self._last_comm_error})")

    def _answered(self) -> None:
        if self.comm_lost:
            log.info("%s %s: communication restored", self.kind, self.endpoint)
        self._unanswered = 0
        self._last_answer = self.clock.monotonic()

    def _no_answer(self, why: str) -> None:
        was = self.comm_lost
        self._unanswered += 1
        self._last_comm_error = why
        if self.comm_lost and not was:
            log.warning("%s %s: communication lost (%s)", self.kind, self.endpoint, why)

    def _raise(self, code: str, text: str) -> None:
        if code not in self._issues:
            log.warning("%s: %s", code, text)
        self._issues[code] = DeviceIssue(code, text)

    def _clear(self, *codes: str) -> None:
        for c in codes:
            self._issues.pop(c, None)

    # --- the task -------------------------------------------------------------------------------
    async def _run(self) -> None:
        next_t = self.clock.monotonic()
        while True:
            raise_if_cancelling()
            await self._guarded(self._tick())
            next_t += self.poll_s
            now = self.clock.monotonic()
            if next_t < now:  # overran: skip the missed slots instead of bursting
                self._base_stats["overruns"] += 1
                next_t += self.poll_s * (int((now - next_t) / self.poll_s) + 1)
            while await self._sleep_until(next_t):  # woken by command(): write now, keep the schedule
                raise_if_cancelling()
                if self._last_answer is not None and self._unanswered == 0:  # the link answers
                    await self._guarded(self._write_pending(due=False))

    async def _tick(self) -> None:
        self._base_stats["polls"] += 1
        if await self._poll():
            await self._write_pending(due=True)

    async def _write_pending(self, due: bool) -> None:
        cmd, seq = self._cmd, self._cmd_seq
        if cmd is None:
            return
        try:
            if await self._write(cmd, due):
                self._acked_seq = max(self._acked_seq, seq)
        finally:
            self._progress.set()

    async def _guarded(self, step) -> None:
        try:
            await step
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not end the task silently; a disguised cancel must end it
            raise_if_cancelling()
            log.exception("%s %s: poll cycle failed", self.kind, self.endpoint)
            self._raise(self._internal_code(), f"{self.endpoint}: internal error: {type(exc).__name__}: {exc}")

    def _internal_code(self) -> str:
        return self.comm_lost_code

    async def _sleep_until(self, t: float) -> bool:
        """Sleep until `t`; True if `command()`/`flush()` woke us first."""
        if self._wake.is_set():
            self._wake.clear()
            return True
        sleeper = asyncio.ensure_future(self.clock.sleep_until(t))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            done, _ = await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
        if waker in done:
            self._wake.clear()
            return True
        return False
