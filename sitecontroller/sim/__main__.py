"""Run the simulated devices of a parameter file on their own (no node).

    python -m sitecontroller.sim --params site_parameters/sim_node2_pylontech_lux_p1.json

so that a driver, `mbpoll` or another third-party client can be pointed at
them. Runs until Ctrl-C / SIGTERM.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from ..clock import RealClock
from ..params import ParamsError, load
from .site import SimulatedSite


async def _main(params) -> None:
    site = SimulatedSite(params, RealClock())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await site.start()
    if not site.sims:
        logging.warning("every device of this parameter file is 'inproc': there is nothing to serve")
    for kind, sim in site.sims.items():
        cfg = getattr(params.devices, kind)
        where = f"CAN {cfg.can.interface}:{cfg.can.channel}" if kind == "bms" else f"{cfg.transport} {cfg.host}:{cfg.port}"
        logging.info("serving simulated %s (%s) on %s", kind, cfg.model, where)
    try:
        await stop.wait()
    finally:
        await site.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sitecontroller.sim", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", required=True, help="site parameter file whose devices to simulate")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        params = load(args.params)
    except ParamsError as exc:
        for line in exc.problems:
            print(f"{exc.source}: {line}", file=sys.stderr)
        return 2
    asyncio.run(_main(params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
