"""Run the simulated devices of a parameter file in their own process (no node).

    python -m sitecontroller.sim --params site_parameters/sim_node1.json [--soc 0.3]

serves the file's devices over their real protocols (the BMS over SLCAN on TCP
when its bus is `slcan` with a `socket://` channel, or python-can `virtual`),
so that a node in another process, `mbpoll` or any other client can talk to
them. The simulator's endpoint (`simulation.endpoint`, loopback) takes fault
knobs: `sitecontroller sim faults` / `sitecontroller sim fault ...`.
`scripts/run-sim` starts this process and then the node.

Runs until SIGTERM (or Ctrl-C, unless SIGINT was ignored when it started:
scripts/run-sim stops it itself, after the node's orderly stop). Exit status
0 after a stop, 1 when a port is taken, 2 for a bad parameter file or option.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from ..clock import RealClock
from ..params import ParamsError, load
from .endpoint import SimControlServer, SimUnreachable, sim_request
from .run_sim import fraction
from .site import SimulatedSite


def _where(kind: str, params) -> str:
    cfg = getattr(params.devices, kind)
    if kind == "bms":
        return f"CAN {cfg.can.interface}:{cfg.can.channel}"
    return f"{cfg.transport} {cfg.host}:{cfg.port}"


def _already_running(endpoint: str) -> str | None:
    """A line about the simulator that already answers on `endpoint`, if one does."""
    try:
        reply = sim_request(endpoint, {"op": "ping"}, timeout_s=0.3)
    except SimUnreachable:
        return None
    return (f"a simulator (pid {reply.get('pid')}, {reply.get('params') or 'unknown file'}) already answers "
            f"on {endpoint}: stop it first, or give this file other ports")


async def _main(params, params_file: str, soc: float | None) -> int:
    log = logging.getLogger("sitecontroller.sim")
    endpoint = params.simulation.endpoint if params.simulation else None
    site = SimulatedSite(params, RealClock())
    if soc is not None:
        site.plant.battery.soc = soc
    server = SimControlServer(endpoint, site, params_file) if endpoint else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = [signal.SIGTERM] + ([] if signal.getsignal(signal.SIGINT) == signal.SIG_IGN else [signal.SIGINT])
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        if server:
            await server.start()
        await site.start()
        if server:
            server.ready = True
    except OSError as exc:
        if server:
            await server.close()
        await site.close()
        line = (_already_running(endpoint) if endpoint else None) or str(exc)
        print(f"sitecontroller.sim: cannot start: {line}", file=sys.stderr)
        return 1
    if not site.sims:
        log.warning("every device of this parameter file is 'inproc': there is nothing to serve")
    for kind in ("bms", "inverter", "meter"):
        if kind in site.sims:
            log.info("serving simulated %s (%s) on %s", kind, getattr(params.devices, kind).model, _where(kind, params))
    log.info("simulator ready: battery SOC %.1f %%, fault knobs on %s", site.plant.battery.soc * 100,
             endpoint or "(no endpoint)")
    try:
        await stop.wait()
    finally:
        if server:
            await server.close()
        await site.close()
    log.info("simulator stopped")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m sitecontroller.sim", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", required=True, metavar="FILE", help="site parameter file whose devices to simulate")
    ap.add_argument("--soc", type=fraction, metavar="FRACTION",
                    help="battery SOC to start from, 0..1 (default: simulation.initial_soc of the file)")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("can", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        params = load(args.params)
    except ParamsError as exc:
        for line in exc.problems:
            print(f"{exc.source}: {line}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(params, args.params, args.soc))
    except ValueError as exc:  # a device the simulator cannot serve, e.g. slcan on a serial port
        print(f"sitecontroller.sim: cannot start: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
