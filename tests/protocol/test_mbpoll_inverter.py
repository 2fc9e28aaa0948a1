"""A third-party Modbus client (Debian's `mbpoll`) reads and writes the simulated inverters.

This checks our simulator and profiles against a client that shares no code
with our engine: register addresses, word order, scaling and write validation.
`scripts/test` installs mbpoll; if it is missing these tests fail (never skip).
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import re
import shutil

import pytest

from sitecontroller.drivers.inverter.config import InverterConfig
from sitecontroller.sim.inverter import SimModbusInverter
from sitecontroller.sim.plant import Battery, Grid, Inverter, Load, Plant, Solar
from tests.util import free_tcp_port

UNIT = 7
def deci(x: float) -> int:
    """x in units of 0.1, rounded half up (as the simulator encodes)."""
    return math.floor(x * 10 + 0.5)


LINE = re.compile(r"^\[(\d+)\]:\s+(\S+)(?:\s+\((-?\d+)\))?", re.M)


@pytest.fixture(scope="module")
def mbpoll_path() -> str:
    path = shutil.which("mbpoll")
    if path is None:
        pytest.fail("Debian's 'mbpoll' is not installed: run `apt-get install mbpoll` (scripts/test installs it)")
    return path


@contextlib.asynccontextmanager
async def sim(model: str):
    plant = Plant(Battery(capacity_wh=10_000, soc=0.6), Inverter(rated_w=5000), Grid(), Solar(0.0), Load(500.0))
    plant.inverter.p_w, plant.inverter.q_var = -1234.0, 250.0
    plant.grid.freq_offset_hz = 0.07
    cfg = InverterConfig(model=model, host="127.0.0.1", port=free_tcp_port(), unit_id=UNIT, rated_w=5000)
    s = SimModbusInverter(plant, cfg)
    await s.start()
    try:
        yield s
    finally:
        await s.close()


async def mbpoll(path: str, s: SimModbusInverter, *args: str) -> tuple[int, str]:
    """Run mbpoll once against the simulator (0-based addresses); (exit code, stdout + stderr)."""
    cmd = [path, "-m", "tcp", "-a", str(UNIT), "-p", str(s.config.port), "-0", "-1", "-o", "2", *args]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"mbpoll did not finish: {' '.join(cmd)}") from None
    return proc.returncode, out.decode(errors="replace")


def values(out: str) -> dict[int, str]:
    """{reference: value} from mbpoll's output (the signed form where it prints one)."""
    return {int(m[1]): (m[3] if m[3] is not None else m[2]) for m in LINE.finditer(out)}


async def read(path, s, table: str, address: int, count: int = 1, *extra: str) -> dict[int, str]:
    rc, out = await mbpoll(path, s, "-t", table, "-r", str(address), "-c", str(count), *extra, "127.0.0.1")
    assert rc == 0, out
    got = values(out)
    assert len(got) == count, out
    return got


async def test_mbpoll_reads_the_sunspec_map(mbpoll_path):
    async with sim("sunspec") as s:
        p = s.profile.point
        got = await read(mbpoll_path, s, "4:hex", 40000, 4)
        assert [got[a] for a in range(40000, 40004)] == ["0x5375", "0x6E53", "0x0001", "0x0042"]  # 'SunS', 1, 66
        assert (await read(mbpoll_path, s, "4", 40070, 2))[40070] == "103"
        assert (await read(mbpoll_path, s, "4", p("W").address))[p("W").address] == "-1234"
        hz = int((await read(mbpoll_path, s, "4", p("Hz").address))[p("Hz").address])
        assert hz == math.floor(s.plant.grid.measured_hz * 100 + 0.5)  # Hz_SF = -2
        v = await read(mbpoll_path, s, "4", p("PhVphA").address, 3)
        assert [int(v[p(n).address]) for n in ("PhVphA", "PhVphB", "PhVphC")] == [
            deci(x) for x in s.plant.phase_v()]  # V_SF = -1
        assert int((await read(mbpoll_path, s, "4", p("Bat_SoC").address))[p("Bat_SoC").address]) == 600


async def test_mbpoll_reads_luxpower_input_registers_low_word_first(mbpoll_path):
    async with sim("luxpowertek") as s:
        got = await read(mbpoll_path, s, "3", 12, 4)
        assert [int(got[a]) for a in (12, 13, 14)] == [deci(x) for x in s.plant.phase_v()]
        assert int(got[15]) == math.floor(s.plant.grid.measured_hz * 100 + 0.5)
        prec = await read(mbpoll_path, s, "3", 16, 2)
        assert int(prec[16]) == 0 and int(prec[17]) == round(-s.plant.phase_split(-1234.0)[0])
        s.trip()  # GRID_FAULT -> E015 (bit 15) in the 32-bit fault code, low word first
        assert int((await read(mbpoll_path, s, "3:int", 60))[60]) == 1 << 15


async def test_mbpoll_reads_and_writes_pqstori_floats(mbpoll_path):
    async with sim("abb_pqstorl") as s:
        got = await read(mbpoll_path, s, "3:float", 810, 1, "-B")
        assert float(got[810]) == pytest.approx(-1.234, abs=1e-4)  # kW, high word first
        rc, out = await mbpoll(mbpoll_path, s, "-B", "-t", "4:float", "-r", "6200", "127.0.0.1", "2.5")
        assert rc == 0, out
        assert s.plant.inverter.setpoint_p_w == pytest.approx(2500.0)
        rc, out = await mbpoll(mbpoll_path, s, "-t", "4", "-r", "4610", "127.0.0.1", "1")  # start request
        assert rc == 0, out
        assert s.plant.inverter.run_requested


async def test_mbpoll_writes_outside_the_map_are_refused(mbpoll_path):
    async with sim("sunspec") as s:
        out_w = s.profile.point("OutWRte").address
        rc, out = await mbpoll(mbpoll_path, s, "-t", "4", "-r", str(out_w), "127.0.0.1", "15000")  # 150.00 %
        assert rc != 0 and "illegal data value" in out.lower(), out
        w = s.profile.point("W").address
        rc, out = await mbpoll(mbpoll_path, s, "-t", "4", "-r", str(w), "127.0.0.1", "5")  # a measurement
        assert rc != 0 and "illegal data address" in out.lower(), out
        rc, out = await mbpoll(mbpoll_path, s, "-t", "4", "-r", str(out_w), "127.0.0.1", "2000")  # 20.00 %
        assert rc == 0, out
        assert s.plant.inverter.setpoint_p_w == pytest.approx(1000.0)  # 20 % of WChaMax 5000 W
