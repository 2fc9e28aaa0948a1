"""Run the simulated devices of a parameter file in their own process (no node).

    python -m sitecontroller.sim --params site_parameters/sim_node1.json [--soc 0.3]
    python -m sitecontroller.sim --params node1.json --params node2.json --params node3.json


serves the file's devices over their real protocols (the BMS over SLCAN on TCP
when its bus is `slcan` with a `socket://` channel, or python-can `virtual`),
so that a node in another process, `mbpoll` or any other client can talk to
them. The simulator's endpoint (`simulation.endpoint`, loopback) takes fault
knobs: `sitecontroller sim faults` / `sitecontroller sim fault ...`.
`scripts/run-sim` starts this process and then the node.

With several --params (one file per node) it simulates a site: ONE grid
connection point with one load, one PV field and one meter (the first file's;
every other file names the same meter or none; load, PV and seed come from the
first file's `simulation` section), and per node its own battery, BMS and
inverter on the ports its file names. The meter measures load - PV - the sum of
every node's inverter power. The endpoint is the first file's
`simulation.endpoint`; `sitecontroller sim ... --node ID` reaches one node's knobs.
`scripts/run-sim --nodes N` starts this and N nodes.

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


async def _main(params_list, params_files, socs: list[float]) -> int:
    log = logging.getLogger("sitecontroller.sim")
    params = params_list[0]
    endpoint = params.simulation.endpoint if params.simulation else None
    site = SimulatedSite(params_list[0] if len(params_list) == 1 else params_list, RealClock())
    for plant, soc in zip(site.plants.values(), socs if len(socs) > 1 else socs * len(site.plants)):
        plant.battery.soc = soc
    server = (SimControlServer(endpoint, site, params_files[0] if len(params_files) == 1 else params_files)
              if endpoint else None)
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
    for label, kind, node_params in site.served():
        log.info("serving simulated %s (%s) on %s", label, getattr(node_params.devices, kind).model,
                 _where(kind, node_params))
    socs_text = ", ".join(f"{plant.battery.soc * 100:.1f} %" for plant in site.plants.values())
    nodes = f" for {len(site.plants)} nodes ({', '.join(site.node_ids)}) behind one meter" if site.site_plant else ""
    log.info("simulator ready%s: battery SOC %s, fault knobs on %s", nodes, socs_text, endpoint or "(no endpoint)")
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
    ap.add_argument("--params", required=True, action="append", metavar="FILE",
                    help="site parameter file whose devices to simulate; several: one per node of a site "
                         "behind one grid meter")
    ap.add_argument("--soc", type=fraction, action="append", metavar="FRACTION",
                    help="battery SOC to start from, 0..1 (default: simulation.initial_soc of the file); "
                         "with several --params: once for every node, or once per file in their order")
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    socs = args.soc or []
    if len(socs) > 1 and len(socs) != len(args.params):
        ap.error(f"--soc: found {len(socs)} values for {len(args.params)} parameter files; "
                 "allowed: one for every node, or one per --params")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("can", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    params_list = []
    for file in args.params:
        try:
            params_list.append(load(file))
        except ParamsError as exc:
            exc.report()
            return 2
    try:
        return asyncio.run(_main(params_list, args.params, socs))
    except ValueError as exc:  # a device the simulator cannot serve, e.g. slcan on a serial port
        print(f"sitecontroller.sim: cannot start: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
