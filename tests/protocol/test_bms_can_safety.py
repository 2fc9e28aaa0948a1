"""Issue 6, items 1.3 and 1.4 over the bus: what the BMS says reaches the limiter, impossible values are never
laundered into wide limits, and a silent rack loses its share, keeps its SOC in the window and is isolated."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest

from sitecontroller.control import protection
from sitecontroller.drivers.base import BmsCommand
from sitecontroller.drivers.bms import ISSUE_CODES
from sitecontroller.drivers.bms.profiles import BROADCAST, CMD_OFF, CMD_ON
from sitecontroller.limits import compute_limits
from sitecontroller.params import BatteryParams, SafetyParams
from sitecontroller.process_image import ProcessImage
from tests.protocol.bms_rig import rig_factory  # noqa: F401  (the fixture)
from tests.util import async_wait_until

SAFETY = SafetyParams()  # cell 2.9..3.6 V, soc reserve 0.10, max 0.95
BATTERY = BatteryParams(capacity_wh=30_000, max_charge_w=10_000, max_discharge_w=10_000)


def limits(reading):
    return compute_limits(reading, SAFETY, BATTERY, 10_000.0)


async def test_pylontech_15_cells_at_3v80_raise_cell_overvoltage(rig_factory):
    """US-series packs are 15 cells in series: 57.0 V is 3.80 V/cell, not 3.56 V (what 16 cells would say)."""
    rig = await rig_factory("pylontech", racks=1, soc=1.0)  # 3.55 V/cell at full
    rig.sim.pylontech_extension = False  # cell data derived from the pack voltage (plain Pylontech V1.2)
    rig.plant.battery.cell_v_fault_v = 15 * (3.80 - 3.55)  # one cell far up: the pack at about 57.0 V
    rig.plant.battery.pack_a = 0.0
    r = await async_wait_until(lambda: (r := rig.drv.latest()) and r.pack_v > 56.9 and r, what="pack at 57 V")
    await async_wait_until(lambda: "BMS_CELL_DATA_DERIVED" in rig.codes(), what="cells derived")
    r = rig.drv.latest()
    assert r.cell_v_max_v == pytest.approx(r.pack_v / 15) and r.cell_v_max_v > 3.78  # 16 cells: 3.56 V, blind
    image = ProcessImage(t=r.t, wall=0.0, bms=r, inverter=None, meter=None, meter_configured=False)
    assert "CELL_OVERVOLTAGE" in protection(image, SAFETY, grace_over=True)
    assert limits(r).charge_w == 0.0


async def test_pylontech_not_available_limits_arrive_as_nan_and_allow_nothing(rig_factory):
    rig = await rig_factory("pylontech", racks=1)
    rig.sim.set_raw("BatteryLimits", ChargeCurrentLimit=-0x8000, DischargeCurrentLimit=-0x8000)
    r = await async_wait_until(lambda: (r := rig.drv.latest()) and math.isnan(r.charge_limit_a) and r, what="NaN")
    assert math.isnan(r.discharge_limit_a)  # never abs(-3276.8) = 3276.8 A
    lim = limits(r)
    assert (lim.charge_w, lim.discharge_w) == (0.0, 0.0)


async def test_pylontech_negative_limit_and_soc_above_100_are_passed_on(rig_factory):
    rig = await rig_factory("pylontech", racks=1)
    rig.sim.set_raw("BatteryLimits", DischargeCurrentLimit=-500)  # -50.0 A
    rig.sim.set_raw("BatterySocSoh", SOC=101)
    r = await async_wait_until(lambda: (r := rig.drv.latest()) and r.soc > 1.0 and r.discharge_limit_a < 0 and r,
                               what="SOC 101 % and a negative limit in the reading")
    assert r.soc == pytest.approx(1.01) and r.discharge_limit_a == pytest.approx(-50.0)
    assert limits(r).discharge_w == 0.0
    issue = await async_wait_until(lambda: rig.issue("BMS_VALUE_OUT_OF_RANGE"), what="BMS_VALUE_OUT_OF_RANGE")
    assert "outside" in issue.text
    rig.sim.clear_raw()
    await async_wait_until(lambda: rig.drv.latest().soc <= 1.0, what="good values again")


async def test_pylontech_enable_flags_and_force_charge_narrow_the_limits(rig_factory):
    rig = await rig_factory("pylontech", racks=1)
    assert limits(rig.drv.latest()).charge_w > 0
    rig.sim.set_raw("BatteryRequest", ChargeEnable=0)
    r = await async_wait_until(lambda: (r := rig.drv.latest()) and not r.charge_enabled and r, what="charge disabled")
    lim = limits(r)
    assert lim.charge_w == 0.0 and lim.discharge_w > 0 and "BMS disables charging" in lim.charge_reason
    rig.sim.set_raw("BatteryRequest", ChargeEnable=1, DischargeEnable=0)
    r = await async_wait_until(lambda: (r := rig.drv.latest()) and not r.discharge_enabled and r, what="no discharge")
    lim = limits(r)
    assert lim.discharge_w == 0.0 and lim.charge_w > 0
    rig.sim.set_raw("BatteryRequest", DischargeEnable=1, ForceChargeRequestI=1)
    r = await async_wait_until(lambda: (r := rig.drv.latest()) and r.force_charge and r, what="force charge")
    lim = limits(r)
    assert lim.discharge_w == 0.0 and "force charge" in lim.discharge_reason
    assert limits(replace(r, force_charge=False)).discharge_w > 0  # the request alone stopped discharge


async def test_pylontech_charge_voltage_limit_stops_charging(rig_factory):
    rig = await rig_factory("pylontech", racks=1)
    r = rig.drv.latest()
    rig.sim.set_raw("BatteryLimits", ChargeVoltage=round(r.pack_v * 10) - 1)  # 0.1 V below the pack
    r = await async_wait_until(lambda: (r := rig.drv.latest()) and r.charge_v_max_v < r.pack_v and r, what="limit")
    lim = limits(r)
    assert lim.charge_w == 0.0 and "BMS charge voltage limit" in lim.charge_reason and lim.discharge_w > 0


async def test_racks_at_5_and_35_percent_allow_no_discharge(rig_factory):
    rig = await rig_factory("bess_sim", racks=2)
    rig.sim.rack_soc = {0: 0.05, 1: 0.35}
    r = await async_wait_until(lambda: (r := rig.drv.latest()) and r.soc_min < 0.06 and r, what="rack SOCs")
    assert r.soc == pytest.approx(0.20, abs=0.002)  # the mean would pass a 10 % reserve
    assert (r.soc_min, r.soc_max) == (pytest.approx(0.05, abs=0.001), pytest.approx(0.35, abs=0.001))
    lim = limits(r)
    assert lim.discharge_w == 0.0 and "emptiest rack" in lim.discharge_reason and lim.charge_w > 0


async def test_silent_rack_is_an_error_loses_its_share_keeps_its_soc_and_is_isolated(rig_factory):
    rig = await rig_factory("bess_sim", racks=2)
    rig.sim.rack_soc = {0: 0.50, 1: 0.08}
    rig.drv.command(BmsCommand(contactor_closed=True))
    await async_wait_until(lambda: rig.drv.latest().soc_min < 0.09, what="rack SOCs")
    full = rig.drv.latest()
    assert rig.sim.last_command["TargetRack"] == BROADCAST  # all racks online: one broadcast frame
    rig.sim.drop(rack=1)
    issue = await async_wait_until(lambda: rig.issue("BMS_RACK_TIMEOUT"), what="BMS_RACK_TIMEOUT")
    assert ISSUE_CODES["BMS_RACK_TIMEOUT"][0] == "error"
    assert "isolated" in issue.text
    r = rig.drv.latest()
    assert (r.racks_online, r.racks_total) == (1, 2)
    assert r.discharge_limit_a == pytest.approx(full.discharge_limit_a / 2, abs=0.2)  # its share is 0
    assert r.soc_min == pytest.approx(0.08, abs=0.001)  # last known: it may still be connected
    assert limits(r).discharge_w == 0.0
    # isolation: rack 1 commanded open, rack 0 kept closed (the command frame addresses racks)
    await async_wait_until(lambda: rig.sim.contactor == [True, False], what="rack 1 contactor opened")
    assert rig.plant.battery.contactor_closed  # the other rack carries on
    assert rig.sim.last_command["TargetRack"] in (0, 1)
    rig.sim.resume(rack=1)
    await async_wait_until(lambda: rig.drv.latest().racks_online == 2, what="rack back")
    await async_wait_until(lambda: rig.sim.contactor == [True, True], what="rack 1 rejoined")
    await async_wait_until(lambda: rig.sim.last_command["TargetRack"] == BROADCAST, what="broadcast again")
    assert "BMS_CMD_NOT_APPLIED" not in rig.codes()


async def test_isolation_frames_command_each_rack(rig_factory):
    rig = await rig_factory("bess_sim", racks=3)
    frames = rig.drv.profile.command_frames(BmsCommand(contactor_closed=True), 10, frozenset({2}))
    assert [(v["TargetRack"], v["ContactorCmd"], v["CmdCounter"]) for _, v in frames] == [
        (0, CMD_ON, 10), (1, CMD_ON, 11), (2, CMD_OFF, 12)]
    frames = rig.drv.profile.command_frames(BmsCommand(contactor_closed=False), 10, frozenset({2}))
    assert all(v["ContactorCmd"] == CMD_OFF for _, v in frames)

