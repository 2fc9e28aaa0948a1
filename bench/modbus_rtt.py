"""Modbus read round trip of our client against the simulated inverter (loopback TCP).

    python -m bench.modbus_rtt [n] [model ...]

Prints, per inverter model, the median and p99 of
- one read request (the largest block of the model's poll plan), and
- one full driver poll (every reading and control point, scale factors included),
plus the number of requests a poll needs. Figures, not a pass/fail test (DESIGN §7).
"""
from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sitecontroller.drivers.inverter.config import InverterConfig  # noqa: E402
from sitecontroller.drivers.modbus import ModbusClient, ModbusDevice, plan_reads  # noqa: E402
from sitecontroller.sim.inverter import SimModbusInverter  # noqa: E402
from sitecontroller.sim.plant import Battery, Grid, Inverter, Load, Plant, Solar  # noqa: E402


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


async def _measure(n: int, model: str) -> dict[str, float]:
    plant = Plant(Battery(capacity_wh=10_000), Inverter(rated_w=5000), Grid(), Solar(0.0), Load(500.0))
    cfg = InverterConfig(model=model, host="127.0.0.1", port=_free_port(), rated_w=5000, timeout_s=1.0)
    sim = SimModbusInverter(plant, cfg)
    await sim.start()
    client = ModbusClient.from_config(cfg)
    device = ModbusDevice(sim.profile if not sim.profile.is_sunspec else _standard(model), client)
    try:
        profile = await device.discover()
        names = profile.poll_points()
        blocks = plan_reads(profile, profile.dependencies(names))
        first = max(blocks, key=lambda b: b.count)  # the biggest request of a poll
        for _ in range(20):  # warm up
            await client.read(first.table, first.start, first.count)
        reads, polls = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            await client.read(first.table, first.start, first.count)
            reads.append(time.perf_counter() - t0)
        for _ in range(max(10, n // 5)):
            t0 = time.perf_counter()
            await device.read_points(names)
            polls.append(time.perf_counter() - t0)
        return {
            "read_p50_ms": 1000 * statistics.median(reads),
            "read_p99_ms": 1000 * _pct(reads, 0.99),
            "read_registers": first.count,
            "poll_p50_ms": 1000 * statistics.median(polls),
            "poll_p99_ms": 1000 * _pct(polls, 0.99),
            "requests_per_poll": len(blocks),
        }
    finally:
        await device.close()
        await sim.close()


def _standard(model: str):
    from sitecontroller.drivers.modbus import load_profile

    return load_profile(model)


def measure(n: int = 1000, model: str = "sunspec") -> dict[str, float]:
    """Round-trip figures (milliseconds) of `n` reads against a fresh simulator."""
    return asyncio.run(_measure(n, model))


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    models = sys.argv[2:] or list(InverterConfig.MODBUS_MODELS)
    print(f"Modbus TCP loopback, our client vs the simulated inverter, n={count}")
    for m in models:
        r = measure(count, m)
        print(
            f"  {m:14s} read {r['read_registers']:3d} regs: p50 {r['read_p50_ms']:.3f} ms  p99 {r['read_p99_ms']:.3f} ms"
            f" | full poll ({r['requests_per_poll']} requests): p50 {r['poll_p50_ms']:.3f} ms"
            f"  p99 {r['poll_p99_ms']:.3f} ms"
        )
