"""Wiring: parameters → drivers → cycle → control endpoint (DESIGN §3).

`run_node` runs one node until SIGTERM/SIGINT or a restart/reboot command,
then stops in order: ramp to 0 W, stop the inverter, open the contactors,
close the devices, flush the logs. It returns the process exit status.
"""
from __future__ import annotations

import asyncio
import logging
import signal

from .clock import RealClock
from .control_endpoint import ControlServer
from .cycle import run_cycles
from .drivers.factory import make_devices
from .logs import setup_logging  # noqa: F401  (moved to logs.py; kept importable from here)
from .node import Node

log = logging.getLogger("sitecontroller")

STOP_BUDGET_S = 1.5  # SIGTERM to exit must stay within 2 s


def summary_line(status: dict) -> str:
    def w(v):
        return "  n/a" if v is None else f"{v:6.0f}"

    soc = "n/a" if status["soc"] is None else f"{status['soc'] * 100:5.1f}%"
    lim = status["limits"] or {}
    errs = ",".join(e["id"] for e in status["errors"]) or "none"
    cyc = status["cycle"]
    p99 = "n/a" if cyc["period_ms_p99"] is None else f"{cyc['period_ms_p99']:.1f}"
    return (
        f"{status['node_id']} {status['state']:<11} soc {soc}  p {w(status['p_w'])} W  "
        f"grid {w(status['grid_p_w'])} W  setpoint {w(status['setpoint_w'])} W  "
        f"allowed -{lim.get('charge_w', 0):.0f}..+{lim.get('discharge_w', 0):.0f} W  "
        f"errors: {errs}  cycle p99 {p99} ms overruns {cyc['overruns']}"
    )


async def run_node(params, *, simulate: bool = False, summary: bool = False, clock=None) -> int:
    clock = clock or RealClock()
    site = None
    if simulate:
        from .sim.site import SimulatedSite

        site = SimulatedSite(params, clock)
        await site.start()
    devices = make_devices(params, clock, plant=site.plant if site else None)
    node = Node(params, clock, devices)
    server = ControlServer(params.control.endpoint, node)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await devices.start()
        await server.start()
        log.info("node %s of site %s running (cycle %.0f ms)", params.identity.node_id, params.identity.site_id,
                 params.cycle.period_s * 1000)
        cycles = asyncio.create_task(run_cycles(clock, params.cycle.period_s, node.step, stop, node.stats))
        watchers = [asyncio.create_task(_watch_exit(node, stop))]
        if summary:
            watchers.append(asyncio.create_task(_print_summary(node)))
        await stop.wait()
        for t in watchers:
            t.cancel()
        await _orderly_stop(node, clock, cycles, stop)
    finally:
        await server.close()
        await devices.close()
        node.commands.close()
        if site:
            await site.close()
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)
    code = node.exit_requested or 0
    log.info("node %s stopped (exit status %d)", params.identity.node_id, code)
    logging.shutdown()
    return code


async def _orderly_stop(node: Node, clock, cycles: asyncio.Task, stop: asyncio.Event) -> None:
    """Ramp to 0 W, then stop the inverter, then open the contactors (within STOP_BUDGET_S)."""
    log.info("stopping: ramping to 0 W, then inverter off, then contactors open")
    await asyncio.gather(cycles, return_exceptions=True)  # ends at its next deadline: `stop` is set
    node.begin_stop()
    period = node.params.cycle.period_s
    idle_w = max(50.0, 0.01 * node.params.devices.inverter.rated_w)
    ramp_until = clock.monotonic() + STOP_BUDGET_S - 0.4  # leave time for the two last steps
    while clock.monotonic() < ramp_until:
        node.step()
        inv = node.image.inverter if node.image else None
        if node.setpoint_w == 0.0 and (inv is None or abs(inv.p_w) < idle_w):
            break
        await clock.sleep_until(clock.monotonic() + period)
    for phase in ("off", "open"):
        node.stop_phase = phase
        node.step()
        await asyncio.sleep(0.15)  # let the drivers put the command on the wire


async def _watch_exit(node: Node, stop: asyncio.Event) -> None:
    while node.exit_requested is None:
        await asyncio.sleep(0.05)
    log.info("%s requested: stopping", node.states.state)
    stop.set()


async def _print_summary(node: Node) -> None:
    while True:
        await asyncio.sleep(1.0)
        print(summary_line(node.status()), flush=True)
