"""Wiring: parameters → simulated site (optional) → NodeRuntime with its services (DESIGN §3).

`run_node` runs one node until SIGTERM/SIGINT or a restart/reboot command,
then stops in order (`NodeRuntime.stop`): ramp to 0 W, stop the inverter, open
the contactors, close the services and devices, flush the logs. It returns the
process exit status.
"""
from __future__ import annotations

import asyncio
import logging
import signal

from .clock import RealClock
from .control_endpoint import ControlServer
from .drivers.factory import make_devices
from .logs import stop_logging
from .runtime import NodeRuntime

log = logging.getLogger("sitecontroller")


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
    services = [lambda node: ControlServer(params.control.endpoint, node)]
    if params.features.CLUSTER:
        from mastercontroller.service import ClusterService as cluster
    else:  # a cluster of one: the cluster's modes and grid services on this node alone
        from mastercontroller.solo import SoloService as cluster
    services.insert(0, cluster)  # before the endpoint answers for it
    if params.scada.enabled:
        from .scada.service import ScadaService

        services.append(ScadaService)
    if params.cloud is not None and params.cloud.enabled:
        from .cloud.service import CloudService

        services.append(CloudService)
    runtime = NodeRuntime(params, clock, devices, services=services)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    printer = None
    code = 0
    try:
        await runtime.start()
        log.info("node %s of site %s running (cycle %.0f ms)", params.identity.node_id, params.identity.site_id,
                 params.cycle.period_s * 1000)
        if summary:
            printer = asyncio.create_task(_print_summary(runtime.node))
        exit_request = asyncio.create_task(runtime.wait_exit_request())
        signalled = asyncio.create_task(stop.wait())
        await asyncio.wait({exit_request, signalled}, return_when=asyncio.FIRST_COMPLETED)
        for t in (exit_request, signalled, printer):
            if t:
                t.cancel()
        log.info("stopping: ramping to 0 W, then inverter off, then contactors open")
    finally:
        code = await runtime.stop()
        if site:
            await site.close()
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)
    log.info("node %s stopped (exit status %d)", params.identity.node_id, code)
    stop_logging()  # every queued record written out before the process exits
    return code


async def _print_summary(node) -> None:
    while True:
        await asyncio.sleep(1.0)
        try:
            print(summary_line(node.status()), flush=True)
        except (BrokenPipeError, ValueError):  # `run-sim | head` closed the pipe: the node runs on
            log.info("summary output closed: no more summary lines")
            return
