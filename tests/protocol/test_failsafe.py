"""Device-side fail-safes (issue 6, 1.5): what each simulated inverter does when the node stops writing.

The driver writes a setpoint and is closed (the node is gone); the simulated device must then
fall back by itself: SunSpec (and the SunSpec-layout models) revert to 0 W after the revert
time written to 704 WSetRvrtTms; the ABB PQstorI stops when the heartbeat stops changing; the
LuxPower and Indevolt stop at the SOC limits taken from the node's soc_reserve / soc_max.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace

import pytest

from sitecontroller.clock import RealClock
from sitecontroller.drivers.base import InverterCommand
from sitecontroller.drivers.inverter.config import InverterConfig
from sitecontroller.drivers.inverter.indevolt import IndevoltInverter
from sitecontroller.drivers.inverter.modbus_inverter import ModbusInverter
from sitecontroller.drivers.modbus import load_profile
from sitecontroller.sim.indevolt import SimIndevolt
from sitecontroller.sim.inverter import SimModbusInverter
from sitecontroller.sim.plant import Battery, Grid, Inverter, Load, Plant, Solar
from tests.util import async_wait_until, free_tcp_port

RATED_W = 5000.0


def make_plant(soc: float = 0.6) -> Plant:
    return Plant(Battery(capacity_wh=10_000, soc=soc), Inverter(rated_w=RATED_W), Grid(), Solar(0.0), Load(500.0))


def config(model: str, **kw) -> InverterConfig:
    transport = "http" if model == "indevolt" else "tcp"
    return InverterConfig(model=model, transport=transport, host="127.0.0.1", port=free_tcp_port(),
                          rated_w=RATED_W, poll_s=0.05, timeout_s=0.3, **kw)


async def held_then_reverted(plant, sim, fired: str, failsafe_s: float, since: float) -> float:
    """The setpoint holds until `failsafe_s` after `since` (checked at every sample), then the
    device drops it to 0 W by itself within WATCH_S (+ margin); returns the time it took."""
    def done():
        inv = plant.inverter
        return inv.setpoint_p_w == 0.0 and (fired != "heartbeat" or not inv.run_requested)

    while not done():
        elapsed = time.monotonic() - since
        assert elapsed < failsafe_s + 0.5, f"no fail-safe {elapsed:.2f} s after the last write"
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - since
    assert sim.failsafe_fired == fired
    assert elapsed >= failsafe_s - 0.05, f"the device gave up after {elapsed:.2f} s, before its {failsafe_s} s"
    return elapsed


@pytest.mark.parametrize("model", ["sunspec", "abb_esi", "trumpf_ac3025"])
async def test_revert_timer_brings_a_sunspec_inverter_to_0_w(model):
    prof = replace(load_profile(model), failsafe_s=1.0, keepalive_s=0.2)
    plant, cfg = make_plant(), config(model)
    sim = SimModbusInverter(plant, cfg)
    await sim.start()
    drv = ModbusInverter(cfg, RealClock(), prof)
    try:
        await drv.start()
        drv.command(InverterCommand(p_w=3000.0))
        await async_wait_until(lambda: plant.inverter.setpoint_p_w == pytest.approx(3000.0, abs=5), what="3000 W")
        assert sim.server.values(["WSetRvrtTms"])["WSetRvrtTms"] == 1.0
        await async_wait_until(lambda: sim.revert_remaining_s() > 0, what="the timer running")
        assert await drv.flush(1.0)
        await drv.close()  # the node is gone: nobody rewrites
        since = sim.last_write_t
        await held_then_reverted(plant, sim, "revert", 1.0, since)
        assert sim.server.values(["WSet"])["WSet"] == 0  # the device shows the reverted setpoint
    finally:
        await drv.close()
        await sim.close()


async def test_a_keep_alive_holds_the_revert_timer_off():
    prof = replace(load_profile("sunspec"), failsafe_s=1.0, keepalive_s=0.2)
    plant, cfg = make_plant(), config("sunspec")
    sim = SimModbusInverter(plant, cfg)
    await sim.start()
    drv = ModbusInverter(cfg, RealClock(), prof)
    try:
        await drv.start()
        drv.command(InverterCommand(p_w=2000.0))
        await async_wait_until(lambda: plant.inverter.setpoint_p_w == pytest.approx(2000.0, abs=5), what="2000 W")
        t_end = time.monotonic() + 2.5
        while time.monotonic() < t_end:  # never reverts while the node lives: every sample
            assert sim.failsafe_fired is None and plant.inverter.setpoint_p_w == pytest.approx(2000.0, abs=5)
            await asyncio.sleep(0.02)
    finally:
        await drv.close()
        await sim.close()


async def test_abb_stops_when_the_heartbeat_stops():
    prof = replace(load_profile("abb_pqstorl"), failsafe_s=1.0, keepalive_s=0.2)
    plant, cfg = make_plant(), config("abb_pqstorl")
    sim = SimModbusInverter(plant, cfg, prof)
    await sim.start()
    drv = ModbusInverter(cfg, RealClock(), prof)
    try:
        await drv.start()
        drv.command(InverterCommand(p_w=3000.0))
        await async_wait_until(lambda: plant.inverter.run_requested and plant.inverter.setpoint_p_w > 2990,
                               what="running at 3000 W")
        await drv.close()
        since = sim.last_beat_t
        await held_then_reverted(plant, sim, "heartbeat", 1.0, since)
        assert not plant.inverter.run_requested
    finally:
        await drv.close()
        await sim.close()


def test_failsafe_s_is_refused_where_the_device_has_no_timer_to_set():
    for model in ("abb_pqstorl", "luxpowertek"):
        with pytest.raises(ValueError, match="devices.inverter.failsafe_s"):
            ModbusInverter(config(model, failsafe_s=30), RealClock())
    drv = ModbusInverter(config("sunspec", failsafe_s=30), RealClock())
    assert drv.failsafe.revert_s == 30 and drv.keepalive_s == 5.0
    drv = ModbusInverter(config("sunspec", failsafe_s=6), RealClock())
    assert drv.keepalive_s == pytest.approx(2.0)  # rewritten well within the revert time


@contextlib.asynccontextmanager
async def device(model: str, soc_window: tuple[float, float]):
    """A simulated LuxPower or Indevolt inverter on a plant at 60 % SOC and our driver for it, started."""
    plant, cfg = make_plant(soc=0.6), config(model)
    sim = SimIndevolt(plant, cfg) if model == "indevolt" else SimModbusInverter(plant, cfg)
    await sim.start()
    drv = (IndevoltInverter if model == "indevolt" else ModbusInverter)(cfg, RealClock(), soc_window=soc_window)
    try:
        await drv.start()
        yield plant, sim, drv
    finally:
        await drv.close()
        await sim.close()


async def test_luxpower_0_w_closes_both_battery_power_caps_and_soc_limits_stop_it():
    async with device("luxpowertek", (0.5, 0.9)) as (plant, sim, drv):
        drv.command(InverterCommand(p_w=1234.0))
        await async_wait_until(lambda: plant.inverter.setpoint_p_w == pytest.approx(1234.0, abs=3), what="discharge")
        v = sim.server.values(["DischgRate", "ChargeRate", "ForcedDischgSocLimit", "ACChgSocLimit"])
        assert v == {"DischgRate": 25, "ChargeRate": 0, "ForcedDischgSocLimit": 50, "ACChgSocLimit": 90}
        drv.command(InverterCommand(p_w=0.0))
        await async_wait_until(lambda: sim.server.values(["DischgRate"])["DischgRate"] == 0, what="0 W")
        assert sim.server.values(["ChargeRate"])["ChargeRate"] == 0  # no self-consumption either way
        drv.command(InverterCommand(p_w=1500.0))
        await async_wait_until(lambda: plant.inverter.setpoint_p_w == pytest.approx(1500.0, abs=3), what="1500 W")
        await drv.close()  # the node dies while discharging: the device's SOC stop ends it
        plant.battery.soc = 0.495
        await async_wait_until(lambda: plant.inverter.setpoint_p_w == 0.0, timeout_s=1.0, what="SOC stop")
        assert sim.failsafe_fired == "soc_low"


async def test_indevolt_soc_limit_comes_from_the_node_and_stops_the_device():
    async with device("indevolt", (0.2, 0.85)) as (plant, sim, drv):
        drv.command(InverterCommand(p_w=-800.0))
        await async_wait_until(lambda: plant.inverter.setpoint_p_w == -800.0, what="charging")
        assert sim.end_soc_pct == 85
        drv.command(InverterCommand(p_w=900.0))
        await async_wait_until(lambda: plant.inverter.setpoint_p_w == 900.0, what="discharging")
        assert sim.end_soc_pct == 20
        await drv.close()
        plant.battery.soc = 0.199
        await async_wait_until(lambda: plant.inverter.setpoint_p_w == 0.0, timeout_s=1.0, what="SOC stop")
        assert sim.failsafe_fired == "soc" and sim.order == 0


async def test_a_soc_window_changed_at_run_time_is_written_with_the_next_command():
    """The node's soc_reserve / soc_max changed at run time (live_params): the device-side SOC stops
    follow with the next command, the same command as before (no new setpoint needed)."""
    async with device("luxpowertek", (0.5, 0.9)) as (plant, sim, drv):
        drv.command(InverterCommand(p_w=1234.0))
        await async_wait_until(lambda: sim.server.values(["ForcedDischgSocLimit"])["ForcedDischgSocLimit"] == 50,
                               what="the first window")
        drv.set_soc_window(0.55, 0.8)
        drv.command(InverterCommand(p_w=1234.0))
        await async_wait_until(lambda: sim.server.values(["ForcedDischgSocLimit", "ACChgSocLimit"]) ==
                               {"ForcedDischgSocLimit": 55, "ACChgSocLimit": 80}, what="the new window")
    async with device("indevolt", (0.2, 0.85)) as (plant, sim, drv):
        drv.command(InverterCommand(p_w=900.0))
        await async_wait_until(lambda: plant.inverter.setpoint_p_w == 900.0 and sim.end_soc_pct == 20,
                               what="discharging")
        drv.set_soc_window(0.3, 0.85)
        drv.command(InverterCommand(p_w=900.0))
        await async_wait_until(lambda: sim.end_soc_pct == 30, what="the new discharge stop")
