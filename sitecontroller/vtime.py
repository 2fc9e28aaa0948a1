"""Virtual time for asyncio: an event loop whose clock jumps to the next timer.

`VirtualTimeLoop` is a selector event loop whose `time()` is a virtual clock.
Whenever the loop would block waiting for its next timer, it first polls the
selector a few times with a zero timeout (so that data one coroutine wrote to a
loopback socket is read by its peer at the same virtual instant), waits in real
time while a registered *busy check* reports work in flight on another thread,
and then sets the virtual clock to the earliest timer instead of sleeping.
A whole node with its drivers and simulators therefore runs as fast as the CPU
allows, and two runs of the same scenario see the same sequence of events.

What is virtual (advances only with the loop's clock):
- everything scheduled on the loop: `asyncio.sleep`, `wait_for`/`timeout`,
  `call_later`/`call_at`, and every `Clock` built with `VirtualClock`;
- socket I/O between coroutines of this loop (loopback TCP/UDP, aiohttp,
  pymodbus): it takes zero virtual time.

What is not virtual:
- `time.monotonic()`/`time.time()` read directly (use the injected clock);
- other threads: they run in real time. Executor jobs (`run_in_executor`,
  `asyncio.to_thread`) are waited for in real time and take zero virtual time.
  Other threads that hand work to the loop (python-can's Notifier reader
  threads) must register a busy check (`add_busy_check`), or the clock may
  jump before their callback arrives; `sitecontroller.vtime_can` does this
  for python-can's `virtual` interface;
- other processes and real devices: their replies come in real time, while
  virtual time races ahead, so timeouts towards them fire early. Keep such
  tests on the real clock.
"""
from __future__ import annotations

import asyncio
import logging
import selectors
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger("sitecontroller.vtime")

T = TypeVar("T")

START_MONO_S = 1000.0
START_WALL_S = 1_780_000_000.0


class _VirtualSelector:
    """Wraps a real selector; `select(timeout > 0)` advances virtual time instead of blocking."""

    def __init__(self, loop_ref: "VirtualTimeLoop", real: selectors.BaseSelector):
        self._loop = loop_ref
        self._real = real

    def __getattr__(self, name):  # register, unregister, modify, get_key, get_map, close
        return getattr(self._real, name)

    def select(self, timeout: float | None = None):
        if timeout is not None and timeout <= 0:
            return self._real.select(0)
        loop = self._loop
        for _ in range(loop.zero_polls):
            events = self._real.select(0)
            if events:
                return events
        waited_since = None
        while loop._busy():
            events = self._real.select(loop.busy_poll_s)
            if events:
                return events
            if waited_since is None:
                waited_since = time.monotonic()
            elif time.monotonic() - waited_since > loop.busy_limit_s:
                raise RuntimeError(
                    f"virtual time stuck: a thread stayed busy for more than {loop.busy_limit_s} s "
                    f"(busy checks: {loop._busy_names()})")
        if timeout is None:
            # no timer at all: only another thread, process or signal can wake the loop
            return self._real.select(None)
        loop._jump()
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop on virtual time (see the module docstring).

    `zero_polls`: zero-timeout selector polls before each jump (loopback data
    written in the previous step is normally readable on the first).
    `busy_poll_s`: real-time select timeout while a busy check holds the clock.
    `busy_limit_s`: a thread busy for longer than this (real time) is an error.
    """

    def __init__(self, start_mono: float = START_MONO_S, start_wall: float = START_WALL_S,
                 zero_polls: int = 3, busy_poll_s: float = 0.0005, busy_limit_s: float = 10.0):
        self._vtime = float(start_mono)
        self._wall_offset = start_wall - start_mono
        self.zero_polls = zero_polls
        self.busy_poll_s = busy_poll_s
        self.busy_limit_s = busy_limit_s
        self._busy_checks: dict[str, Callable[[], bool]] = {}
        self._executor_jobs = 0
        self._on_close: list[Callable[[], None]] = []
        self.jumps = 0
        super().__init__(selectors.DefaultSelector())
        self._selector = _VirtualSelector(self, self._selector)
        self._clock_resolution = 1e-9

    # --- the virtual clock ---------------------------------------------------
    def time(self) -> float:
        return self._vtime

    def wall(self) -> float:
        """Unix time that moves with the virtual clock."""
        return self._vtime + self._wall_offset

    def _jump(self) -> None:
        """Set the clock to the earliest scheduled timer (the loop removed cancelled heads)."""
        if self._scheduled:
            when = self._scheduled[0]._when
            if when > self._vtime:
                self._vtime = when
                self.jumps += 1

    def call_on_close(self, callback: Callable[[], None]) -> None:
        """Run `callback` when the loop closes (undo what was installed for it)."""
        self._on_close.append(callback)

    def close(self) -> None:
        try:
            super().close()
        finally:
            while self._on_close:
                self._on_close.pop()()

    # --- threads that feed the loop --------------------------------------------
    def add_busy_check(self, name: str, check: Callable[[], bool]) -> None:
        """While `check()` is true the clock does not jump: another thread has work for the loop."""
        self._busy_checks[name] = check

    def remove_busy_check(self, name: str) -> None:
        self._busy_checks.pop(name, None)

    def _busy(self) -> bool:
        return self._executor_jobs > 0 or any(check() for check in list(self._busy_checks.values()))

    def _busy_names(self) -> list[str]:
        names = [n for n, c in self._busy_checks.items() if c()]
        return names + (["executor"] if self._executor_jobs else [])

    def run_in_executor(self, executor, func, *args):
        """Executor jobs run in real time; the clock waits for them (zero virtual time)."""
        fut = super().run_in_executor(executor, func, *args)
        self._executor_jobs += 1

        def done(_):
            self._executor_jobs -= 1

        fut.add_done_callback(done)
        return fut


class VirtualClock:
    """A `sitecontroller.clock.Clock` that reads the virtual time of the running loop.

    Bound to `loop` when given, otherwise to the running loop at each call
    (which must be a `VirtualTimeLoop`).
    """

    def __init__(self, loop: VirtualTimeLoop | None = None):
        self._bound = loop

    @property
    def loop(self) -> VirtualTimeLoop:
        loop = self._bound or asyncio.get_running_loop()
        if not isinstance(loop, VirtualTimeLoop):
            raise RuntimeError("VirtualClock needs a VirtualTimeLoop (use vtime.run or the vtime test marker)")
        return loop

    def monotonic(self) -> float:
        return self.loop.time()

    def wall(self) -> float:
        return self.loop.wall()

    async def sleep_until(self, t_mono: float) -> None:
        """Return at virtual time `t_mono` exactly (a timer at that instant, no rounding)."""
        loop = self.loop
        if t_mono <= loop.time():
            await asyncio.sleep(0)
            return
        fut = loop.create_future()
        handle = loop.call_at(t_mono, lambda: fut.done() or fut.set_result(None))
        try:
            await fut
        finally:
            handle.cancel()


def new_loop(can: bool = True, **kwargs) -> VirtualTimeLoop:
    """A fresh VirtualTimeLoop (a `loop_factory` for asyncio.Runner and pytest-asyncio).

    With `can`, python-can's `virtual` interface is made virtual-time safe while
    the loop lives (see `sitecontroller.vtime_can`).
    """
    loop = VirtualTimeLoop(**kwargs)
    if can:
        from . import vtime_can

        vtime_can.attach(loop)
    return loop


def run(main: Awaitable[T] | Callable[[], Awaitable[T]], can: bool = True, **loop_kwargs) -> T:
    """Run a coroutine (or a coroutine function) to completion on a fresh VirtualTimeLoop."""
    with asyncio.Runner(loop_factory=lambda: new_loop(can, **loop_kwargs)) as runner:
        coro = main() if callable(main) else main
        return runner.run(coro)
