"""NodeRuntime: the node's cycle plus its pluggable services (DESIGN §3).

One object wires a running node, for the app and for the tests alike: the
devices (drivers), the node and its deadline-scheduled cycle, and services that
live beside it (the control endpoint today; cluster, cloud, SCADA and UI
later). A service is anything with `async start()` and `async close()`; it is
built from the node by a factory, so it can read status and submit commands.

    runtime = NodeRuntime(params, clock, devices, services=[lambda n: ControlServer(ep, n)])
    await runtime.start()
    ...
    await runtime.stop()   # orderly: ramp to 0 W, inverter off, contactors open, flush, close

Services start after the devices and the cycle, and close in reverse order
before the devices, so no service can submit into a node that has stopped.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from . import orderly_stop
from .cycle import aligned_start, run_cycles
from .drivers.factory import Devices
from .node import Node
from .run_marker import RunMarker
from .writer import BackgroundWriter

log = logging.getLogger("sitecontroller")

STOP_BUDGET_S = 1.5  # SIGTERM to exit must stay within 2 s
CLOSE_BUDGET_S = 1.0  # a service or driver that does not close in this long is abandoned (logged)
FLUSH_BUDGET_S = 0.5  # the audit log's and the error file's last writes


class Service(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...


class NodeRuntime:
    def __init__(self, params, clock, devices: Devices, *,
                 services: Iterable[Callable[[Node], Service]] = (), persist: bool = True, responses=()):
        self.params = params
        self.clock = clock
        self.devices = devices
        self.writer = BackgroundWriter(name=f"writer-{params.identity.node_id}") if persist else None
        self.node = Node(params, clock, devices, persist=persist, responses=responses, writer=self.writer)
        self.marker = RunMarker(params.data_dir) if persist else None
        self._factories = list(services)
        self.services: list[Service] = []
        self.stopping = asyncio.Event()  # set: the cycle task ends at its next deadline
        self._cycles: asyncio.Task | None = None
        self._watch: asyncio.Task | None = None
        self.exited = asyncio.Event()  # set once stop() has finished

    async def start(self) -> None:
        self.node.commands.bind_loop()  # edges on other threads submit through this loop
        if self.marker is not None:
            unclean = self.marker.start()
            self.node.errors.sync("run_marker", {"UNCLEAN_EXIT": unclean} if unclean else {})
        await self.devices.start()
        period = self.params.cycle.period_s
        t0 = aligned_start(self.clock, period)  # a cluster's members cycle in step, its dispatch just before
        self._cycles = asyncio.create_task(
            run_cycles(self.clock, period, self.node.step, self.stopping, self.node.stats, t0), name="cycle")
        self._watch = asyncio.create_task(self._watch_exit(), name="exit-watch")
        for factory in self._factories:
            service = factory(self.node)
            await service.start()
            self.services.append(service)

    async def stop(self, budget_s: float = STOP_BUDGET_S) -> int:
        """The orderly stop; returns the process exit status (0, or restart/reboot codes)."""
        self.stopping.set()
        stopped = self._cycles is None  # a node that never cycled has nothing to stop
        try:
            if self._cycles is not None:
                await asyncio.gather(self._cycles, return_exceptions=True)  # ends at its next deadline
                await orderly_stop.drive(self.node, self.clock, budget_s)
                stopped = True
        finally:
            if self._watch is not None:
                self._watch.cancel()
            for service in reversed(self.services):
                await _bounded_close(service, type(service).__name__)
            await asyncio.gather(*(_bounded_close(d, f"{d.kind} driver") for d in self.devices.all()))
            self.node.commands.close(FLUSH_BUDGET_S)  # anything still queued: failed, interrupted
            self.node.errors.close(FLUSH_BUDGET_S)
            if self.writer is not None and not self.writer.close(CLOSE_BUDGET_S):
                log.error("state files: writes still pending after %.1f s were lost", CLOSE_BUDGET_S)
            if self.marker is not None and stopped:
                self.marker.clean_exit()  # last: only a stop that got this far is clean
            elif self.marker is not None:
                log.error("the orderly stop did not finish: the next start reports UNCLEAN_EXIT")
            self.exited.set()
        return self.node.exit_requested or 0

    async def wait_exit_request(self) -> None:
        """Returns once the node asks to exit (restart/reboot command)."""
        await self._watch

    async def _watch_exit(self) -> None:
        while self.node.exit_requested is None:
            await asyncio.sleep(self.params.cycle.period_s)
        log.info("%s requested: stopping", self.node.states.state)


async def _bounded_close(thing, what: str) -> None:
    """Close `thing` within CLOSE_BUDGET_S; past that it is cancelled and abandoned, never
    awaited again (a close that swallows its cancellation cannot hold the exit)."""
    task = asyncio.ensure_future(thing.close())
    done, _ = await asyncio.wait({task}, timeout=CLOSE_BUDGET_S)
    if not done:
        task.cancel()
        log.error("%s did not close within %.1f s: abandoned", what, CLOSE_BUDGET_S)
    elif not task.cancelled() and task.exception() is not None:
        log.error("%s failed to close: %r", what, task.exception(), exc_info=task.exception())
