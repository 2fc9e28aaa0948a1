"""A third-party Modbus client (Debian's `mbpoll`) reads the simulated Carlo Gavazzi meters.

This checks the simulator (and so the profiles' register map) against a
client we did not write: addresses, scaling, sign and the 32-bit word order.
Carlo Gavazzi sends INT32 values least significant word first; mbpoll's
default 32-bit order is the same ("little endian"), and `-B` (high word
first) must give a different number.

mbpoll is a Debian package (`apt-get install mbpoll`); the test command
installs it in CI. Without it these tests fail with that instruction.
"""
from __future__ import annotations

import asyncio
import re
import shutil

import pytest

from sitecontroller.drivers.meter.config import MeterConfig
from sitecontroller.sim.meter import SimModbusMeter, meter_values
from tests.protocol.test_meters import make_plant
from tests.util import free_tcp_port

LINE = re.compile(r"^\[(\d+)\]:\s+(-?\d+)(?:\s+\(-?\d+\))?\s*$", re.MULTILINE)  # 16-bit: "unsigned (signed)"


def mbpoll_path() -> str:
    path = shutil.which("mbpoll")
    if path is None:
        pytest.fail("mbpoll is not installed: run `apt-get install -y mbpoll` (the test command does this in CI)")
    return path


async def mbpoll(port: int, unit: int, ref: int, count: int = 1, kind: str = "4:int", *extra: str) -> dict[int, int]:
    """Run mbpoll once (0-based references) and return {reference: value}."""
    args = [mbpoll_path(), "-m", "tcp", "-p", str(port), "-a", str(unit), "-0", "-1", "-o", "2",
            "-r", str(ref), "-c", str(count), "-t", kind, *extra, "127.0.0.1"]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=10)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"mbpoll did not finish: {' '.join(args)}") from None
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"mbpoll failed ({proc.returncode}):\n{text}"
    values = {int(r): int(v) for r, v in LINE.findall(text)}
    assert len(values) == count, f"expected {count} values from mbpoll:\n{text}"
    return values


@pytest.fixture
async def em_sim(request):
    model, unit = request.param
    plant = make_plant()
    config = MeterConfig(model=model, transport="tcp", host="127.0.0.1", port=free_tcp_port(), unit_id=unit)
    sim = SimModbusMeter(plant, config)
    await sim.start()
    try:
        yield plant, sim, config
    finally:
        await sim.close()


METERS = pytest.mark.parametrize("em_sim", [("em24", 1), ("em340", 5)], indirect=True, ids=["em24", "em340"])


@METERS
async def test_mbpoll_reads_instantaneous_variables(em_sim):
    plant, sim, config = em_sim
    for inverter_w in (-15_000.0, 15_000.0):  # charging: import (W > 0); discharging at noon: export (W < 0)
        plant.inverter.p_w = inverter_w
        want = meter_values(plant)
        # 0000h..0017h: V L-N x3, V L-L x3, A x3, W x3, each INT32 (LSW first)
        regs = await mbpoll(config.port, config.unit_id, 0x0000, 12)
        assert [regs[a] for a in (0, 2, 4)] == pytest.approx([v * 10 for v in want["phase_v"]], abs=1)
        assert [regs[a] for a in (6, 8, 10)] == pytest.approx([v * 10 for v in want["line_v"]], abs=1)
        assert [regs[a] for a in (12, 14, 16)] == pytest.approx([abs(a) * 1000 for a in want["phase_a"]], abs=1)
        assert [regs[a] for a in (18, 20, 22)] == pytest.approx([w * 10 for w in want["phase_p_w"]], abs=1)
        # 0028h: W sys INT32 in 0.1 W, positive = import
        w_sys = (await mbpoll(config.port, config.unit_id, 0x0028))[0x28]
        assert w_sys == pytest.approx(want["p_w"] * 10, abs=1)
        assert (w_sys > 0) == (inverter_w < 0)
        # 0033h: Hz INT16 in 0.1 Hz
        hz = (await mbpoll(config.port, config.unit_id, 0x0033, 1, "4"))[0x33]
        assert hz == round(want["freq_hz"] * 10)


@METERS
async def test_mbpoll_word_order_is_low_word_first(em_sim):
    plant, sim, config = em_sim
    plant.inverter.p_w = 15_000.0  # export: a negative total that needs both words
    want = round(meter_values(plant)["p_w"] * 10)
    assert want < -0x10000
    words = await mbpoll(config.port, config.unit_id, 0x0028, 2, "4")  # the two raw 16-bit registers
    lo, hi = words[0x28], words[0x29]
    joined = (hi << 16) | lo
    assert joined - (1 << 32) == want, "INT32 must be sent least significant word first"
    big_first = (await mbpoll(config.port, config.unit_id, 0x0028, 1, "4:int", "-B"))[0x28]
    little_first = (await mbpoll(config.port, config.unit_id, 0x0028, 1, "4:int"))[0x28]
    assert little_first == want and big_first != want


@METERS
async def test_mbpoll_wrong_unit_gets_no_data(em_sim):
    plant, sim, config = em_sim
    args = [mbpoll_path(), "-m", "tcp", "-p", str(config.port), "-a", str(config.unit_id + 1), "-0", "-1",
            "-o", "0.5", "-r", "40", "-t", "4:int", "127.0.0.1"]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=10)
    assert not LINE.search(out.decode(errors="replace")), "another unit id must not answer with the meter's data"
