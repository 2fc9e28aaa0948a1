"""SCADA read latency under a 1 kHz poll load, and the node's cycle with and without that load.

    .venv/bin/python bench/scada.py [--seconds 20] [--rate 1000] [--connections 4]

One simulated node (in-process plant, `sim_node1_inproc.json`, 100 ms cycle) runs in this process
with its SCADA server; the clients run in a second process (raw Modbus TCP frames on loopback,
`--connections` connections sharing `--rate` requests per second in total, each paced on an
absolute schedule), reading model 802 (62 registers) and the vendor model (49) in turn.

Phases, in one run: quiet (no client) -> load -> quiet again. Printed: read latency p50/p99/max
(request sent -> whole answer received, in the client process), the node's cycle period
p50/p99/max and overruns per phase, and the ratios. Figures, not a pass/fail test (DESIGN §7).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sitecontroller.cycle import nearest_rank  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# --- the client process ------------------------------------------------------------------------
async def _client(port: int, rate: float, seconds: float, conn: int, connections: int, blocks) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    per_conn = rate / connections
    t0 = time.perf_counter() + conn / rate  # the connections' schedules interleave
    out, i = [], 0
    while (due := t0 + i / per_conn) < t0 + seconds:
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        address, count = blocks[i % len(blocks)]
        tid = i & 0xFFFF
        t = time.perf_counter()
        writer.write(struct.pack(">HHHBBHH", tid, 0, 6, 1, 3, address, count))
        head = await reader.readexactly(7)
        body = await reader.readexactly(struct.unpack(">H", head[4:6])[0] - 1)
        out.append(time.perf_counter() - t)
        if body[0] != 3 or struct.unpack(">H", head[:2])[0] != tid:
            raise RuntimeError(f"bad answer: {head + body!r}")
        i += 1
    writer.close()
    return out


def client_main(port: int, rate: float, seconds: float, connections: int, blocks) -> None:
    async def run():
        parts = await asyncio.gather(*(_client(port, rate, seconds, c, connections, blocks)
                                       for c in range(connections)))
        return [x for p in parts for x in p]
    print(json.dumps(asyncio.run(run())))


# --- the node ----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _params(workdir: Path):
    from sitecontroller.params import load

    data = json.loads((REPO / "site_parameters" / "sim_node1_inproc.json").read_text())
    data["control"] = {"endpoint": f"tcp://127.0.0.1:{_free_port()}"}
    data["storage"] = {"data_dir": str(workdir / "{node_id}")}
    data["scada"] = {"enabled": True, "port": _free_port()}
    path = workdir / "params.json"
    path.write_text(json.dumps(data))
    return load(path)


def _ms(values, q):
    return nearest_rank(values, q) * 1000


async def bench(seconds: float, rate: float, connections: int) -> None:
    from sitecontroller.clock import RealClock
    from sitecontroller.drivers.factory import make_devices
    from sitecontroller.runtime import NodeRuntime
    from sitecontroller.scada.service import ScadaService, load_map
    from sitecontroller.sim.modbus_server import ProfileServer
    from sitecontroller.sim.site import SimulatedSite

    with tempfile.TemporaryDirectory() as tmp:
        params = _params(Path(tmp))
        clock = RealClock()
        site = SimulatedSite(params, clock)
        await site.start()
        runtime = NodeRuntime(params, clock, make_devices(params, clock, plant=site.plant),
                              services=[ScadaService], persist=False)
        await runtime.start()
        stats = runtime.node.stats
        served = ProfileServer(load_map(), port=1).profile  # the addresses the node serves
        blocks = [(served.point("Bat_WHRtg").address - 1, 62), (served.point("MapVer").address, 49)]  # 802, 64900
        try:
            await asyncio.sleep(3)  # past the start
            phases = {}
            for name, load in (("quiet", False), ("load", True), ("quiet again", False)):
                c0 = stats.cycles
                over0 = stats.overruns
                latencies = None
                if load:
                    proc = await asyncio.create_subprocess_exec(
                        sys.executable, __file__, "--client", str(params.scada.port), str(rate), str(seconds),
                        str(connections), json.dumps(blocks), stdout=asyncio.subprocess.PIPE)
                    out, _ = await proc.communicate()
                    latencies = json.loads(out)
                else:
                    await asyncio.sleep(seconds)
                n = stats.cycles - c0
                periods = list(stats.periods_s)[-n:]
                phases[name] = (periods, stats.overruns - over0, latencies)
        finally:
            await runtime.stop()
            await site.close()
    print(f"SCADA bench: {rate:g} reads/s over {connections} connections for {seconds:g} s; cycle 100 ms")
    lat = phases["load"][2]
    print(f"  read latency     n {len(lat)}  p50 {_ms(lat, 50):.2f} ms  p99 {_ms(lat, 99):.2f} ms  "
          f"max {max(lat) * 1000:.2f} ms  (achieved {len(lat) / seconds:.0f} reads/s)")
    for name, (periods, overruns, _) in phases.items():
        print(f"  cycle {name:<11} n {len(periods)}  p50 {_ms(periods, 50):.2f} ms  p99 {_ms(periods, 99):.2f} ms  "
              f"max {max(periods) * 1000:.2f} ms  overruns {overruns}")
    quiet = phases["quiet"][0] + phases["quiet again"][0]
    d99 = _ms(phases["load"][0], 99) - _ms(quiet, 99)
    print(f"  cycle p99 with load - without: {d99:+.2f} ms (ratio {_ms(phases['load'][0], 99) / _ms(quiet, 99):.3f})")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        port, rate, seconds, connections, blocks = sys.argv[2:7]
        client_main(int(port), float(rate), float(seconds), int(connections), json.loads(blocks))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    ap.add_argument("--rate", type=float, default=1000.0, help="reads per second, all connections together")
    ap.add_argument("--connections", type=int, default=4)
    args = ap.parse_args()
    asyncio.run(bench(args.seconds, args.rate, args.connections))


if __name__ == "__main__":
    main()
