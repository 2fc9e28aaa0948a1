"""Indevolt driver against the simulated Indevolt over real HTTP on loopback."""
from __future__ import annotations

import pytest

from sitecontroller.clock import RealClock
from sitecontroller.drivers.base import InverterCommand
from sitecontroller.drivers.inverter.config import InverterConfig
from sitecontroller.drivers.inverter.indevolt import IndevoltInverter, target_of
from sitecontroller.sim.indevolt import SimIndevolt
from sitecontroller.sim.plant import Battery, Grid, Inverter, Load, Plant, Solar
from tests.util import async_wait_until, free_tcp_port

RATED_W = 2400.0


def _codes(driver) -> set[str]:
    return {i.code for i in driver.issues()}


@pytest.fixture
async def rig():
    port = free_tcp_port()
    config = InverterConfig(model="indevolt", transport="http", host="127.0.0.1", port=port,
                            rated_w=RATED_W, poll_s=0.05, timeout_s=0.5)
    plant = Plant(Battery(capacity_wh=5000, soc=0.6), Inverter(rated_w=RATED_W), Grid(), Solar(0.0), Load(0.0))
    sim = SimIndevolt(plant, config)
    await sim.start()
    driver = IndevoltInverter(config, RealClock())
    await driver.start()
    try:
        yield plant, sim, driver
    finally:
        await driver.close()
        await sim.close()


async def test_readings_and_sign(rig):
    plant, sim, driver = rig
    plant.inverter.p_w = 1500.0  # discharging: the device reports 2275 = -1500 (positive = charging)
    r = await async_wait_until(lambda: (x := driver.latest()) is not None and x.p_w == 1500.0 and x, what="discharge")
    assert r.freq_hz == pytest.approx(plant.grid.measured_hz, abs=1e-3)
    assert r.phase_v == (230.0,)
    assert r.rated_w == RATED_W
    assert r.dc_v == pytest.approx(plant.battery.pack_v, abs=0.01)
    assert r.state == "standby" and not r.running and r.faults == frozenset()
    assert r.setpoint_p_w is None  # mode 1 (self-consumption): no real-time setpoint
    plant.inverter.p_w = -800.0
    await async_wait_until(lambda: driver.latest().p_w == -800.0, what="charge reading")
    assert driver.issues() == []
    assert driver.stats()["polls"] >= 2


async def test_discharge_setpoint_written_and_acknowledged(rig):
    plant, sim, driver = rig
    driver.command(InverterCommand(p_w=1200.0))
    await async_wait_until(lambda: plant.inverter.setpoint_p_w == 1200.0, what="setpoint in plant")
    assert plant.inverter.run_requested
    assert (sim.mode, sim.order, sim.power_w) == (4, 2, 1200)
    assert sim.writes[:2] == [(47005, [4]), (47015, [2, 1200, 5])]
    r = await async_wait_until(lambda: (x := driver.latest()).setpoint_p_w == 1200.0 and x, what="read back")
    assert r.running and r.state == "grid_discharging"
    assert driver.issues() == []
    n = len(sim.writes)
    for _ in range(5):  # the cycle repeats the same command: no new writes
        driver.command(InverterCommand(p_w=1200.0))
    await async_wait_until(lambda: driver.stats()["polls"] >= 6, what="more polls")
    assert len(sim.writes) == n


async def test_charge_setpoint_sign_and_rating_cap(rig):
    plant, sim, driver = rig
    driver.command(InverterCommand(p_w=-700.0))
    await async_wait_until(lambda: plant.inverter.setpoint_p_w == -700.0, what="charge setpoint")
    assert (sim.order, sim.power_w, sim.end_soc_pct) == (1, 700, 100)
    await async_wait_until(lambda: driver.latest().setpoint_p_w == -700.0, what="charge read back")
    driver.command(InverterCommand(p_w=-9000.0))  # above the rating: capped, never widened
    await async_wait_until(lambda: plant.inverter.setpoint_p_w == -RATED_W, what="capped setpoint")


async def test_stop(rig):
    plant, sim, driver = rig
    driver.command(InverterCommand(p_w=500.0))
    await async_wait_until(lambda: plant.inverter.run_requested, what="running")
    driver.command(InverterCommand(p_w=500.0, run=False))
    await async_wait_until(lambda: not plant.inverter.run_requested, what="stopped")
    assert plant.inverter.setpoint_p_w == 0.0 and sim.order == 0
    r = await async_wait_until(lambda: (x := driver.latest()).setpoint_p_w == 0.0 and x, what="standby read back")
    assert not r.running
    assert driver.issues() == []


async def test_device_leaving_realtime_mode_is_rewritten(rig):
    plant, sim, driver = rig
    driver.command(InverterCommand(p_w=900.0))
    await async_wait_until(lambda: plant.inverter.setpoint_p_w == 900.0, what="setpoint")
    assert sim.set_data({"f": 16, "t": 47005, "v": [1]})  # someone switches to self-consumption in the app
    await async_wait_until(lambda: sim.mode == 4 and plant.inverter.setpoint_p_w == 900.0, what="rewritten")


async def test_comm_loss_raises_and_clears(rig):
    plant, sim, driver = rig
    await async_wait_until(lambda: driver.latest() is not None, what="first reading")
    sim.silent = True
    await async_wait_until(lambda: "INV_COMM_LOST" in _codes(driver), what="INV_COMM_LOST")
    before = driver.latest().t
    sim.silent = False
    await async_wait_until(lambda: "INV_COMM_LOST" not in _codes(driver), what="comm back")
    await async_wait_until(lambda: driver.latest().t > before, what="fresh reading")


async def test_no_device_at_start(rig):
    plant, sim, driver = rig
    config = InverterConfig(model="indevolt", transport="http", host="127.0.0.1", port=free_tcp_port(),
                            rated_w=RATED_W, poll_s=0.05, timeout_s=0.5)
    lonely = IndevoltInverter(config, RealClock())
    await lonely.start()  # must not raise
    try:
        lonely.command(InverterCommand(p_w=100.0))
        await async_wait_until(lambda: "INV_COMM_LOST" in _codes(lonely), what="INV_COMM_LOST")
        assert lonely.latest() is None
        assert lonely.stats()["writes"] == 0  # nothing is written while nobody answers
    finally:
        await lonely.close()


async def test_rejected_write_is_an_issue(rig):
    plant, sim, driver = rig
    await async_wait_until(lambda: driver.latest() is not None, what="first reading")
    sim.reject_writes = True
    driver.command(InverterCommand(p_w=1000.0))
    issue = await async_wait_until(
        lambda: next((i for i in driver.issues() if i.code == "INV_WRITE_FAILED"), None), what="INV_WRITE_FAILED")
    assert "not accepted" in issue.text
    assert plant.inverter.setpoint_p_w == 0.0
    sim.reject_writes = False  # retried at the next poll, then acknowledged
    await async_wait_until(lambda: plant.inverter.setpoint_p_w == 1000.0, what="retry")
    await async_wait_until(lambda: "INV_WRITE_FAILED" not in _codes(driver), what="issue cleared")
    assert driver.stats()["write_failures"] >= 1


async def test_malformed_reply_is_an_issue_not_a_crash(rig):
    plant, sim, driver = rig
    await async_wait_until(lambda: driver.latest() is not None, what="first reading")
    sim.malformed = True
    issue = await async_wait_until(
        lambda: next((i for i in driver.issues() if i.code == "INV_DECODE"), None), what="INV_DECODE")
    assert "not JSON" in issue.text
    driver.command(InverterCommand(p_w=300.0))  # a write against garbage fails cleanly too
    sim.malformed = False
    plant.inverter.p_w = 321.0
    await async_wait_until(lambda: driver.latest().p_w == 321.0, what="readings resume")
    await async_wait_until(lambda: not driver.issues(), what="issues cleared")
    await async_wait_until(lambda: plant.inverter.setpoint_p_w == 300.0, what="write after recovery")


async def test_slow_device_within_timeout(rig):
    plant, sim, driver = rig
    sim.delay_s = 0.1
    plant.inverter.p_w = 50.0
    await async_wait_until(lambda: driver.stats()["rtt_s"] >= 0.1 and driver.latest().p_w == 50.0, what="slow reply")
    assert "INV_COMM_LOST" not in _codes(driver)


async def test_inverter_fault_is_an_issue(rig):
    plant, sim, driver = rig
    plant.inverter.trip("GRID_FAULT")
    issue = await async_wait_until(
        lambda: next((i for i in driver.issues() if i.code == "INV_FAULT"), None), what="INV_FAULT")
    assert "grid disconnected" in issue.text
    assert driver.latest().state == "fault" and not driver.latest().running
    plant.inverter.reset()
    await async_wait_until(lambda: "INV_FAULT" not in _codes(driver), what="fault cleared")


@pytest.mark.parametrize("cmd,expected", [
    (InverterCommand(p_w=1000.4), (2, 1000, 5)),
    (InverterCommand(p_w=-250.6), (1, 251, 100)),
    (InverterCommand(p_w=0.3), (0, 0, 0)),
    (InverterCommand(p_w=800.0, run=False), (0, 0, 0)),
    (InverterCommand(p_w=float("nan")), (0, 0, 0)),
    (InverterCommand(p_w=5000.0), (2, 2400, 5)),
])
def test_target_mapping(cmd, expected):
    assert target_of(cmd, RATED_W) == expected


async def test_flush_puts_the_stop_on_the_device_before_it_returns(rig):
    plant, sim, driver = rig
    await async_wait_until(lambda: driver.latest() is not None, what="first reading")
    driver.command(InverterCommand(p_w=1000.0))
    assert await driver.flush(2.0) and plant.inverter.setpoint_p_w == 1000.0
    driver.command(InverterCommand(p_w=0.0, run=False))
    assert await driver.flush(2.0)
    assert sim.order == 0 and not plant.inverter.run_requested
    sim.silent = True
    driver.command(InverterCommand(p_w=500.0))
    assert not await driver.flush(0.3)
    sim.silent = False
