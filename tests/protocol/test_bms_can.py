"""The CAN BMS driver against the simulated BMS over a python-can virtual bus (one channel per test)."""
from __future__ import annotations

import can
import pytest

from sitecontroller.clock import RealClock
from sitecontroller.drivers.base import BmsCommand
from sitecontroller.drivers.bms import ISSUE_CODES, make_bms
from sitecontroller.drivers.bms.config import BmsConfig
from sitecontroller.sim.bms import SimBms
from tests.protocol.bms_rig import rig_factory  # noqa: F401  (the fixture)
from tests.util import async_wait_until


async def test_decode_and_scaling_match_the_plant(rig_factory):
    rig = await rig_factory("bess_sim", racks=1)
    b = rig.plant.battery
    r = rig.drv.latest()
    cells, temps = b.cell_v(0), b.cell_t(0)
    charge, discharge = b.limits_a()
    assert r.soc == pytest.approx(b.soc, abs=0.001)  # 0.1 % resolution
    assert r.soh == pytest.approx(b.soh, abs=0.001)
    assert r.pack_v == pytest.approx(sum(cells), abs=0.02)
    assert r.pack_a == pytest.approx(b.pack_a, abs=0.1) and r.pack_a > 0  # + = discharge end to end
    assert r.cell_v_min_v == pytest.approx(min(cells), abs=0.001)
    assert r.cell_v_max_v == pytest.approx(max(cells), abs=0.001)
    assert r.cell_v_avg_v == pytest.approx(sum(cells) / len(cells), abs=0.001)
    assert r.cell_v_min_idx == cells.index(min(cells)) + 1
    assert r.cell_v_max_idx == cells.index(max(cells)) + 1
    assert r.cell_t_min_c == pytest.approx(min(temps), abs=0.1)
    assert r.cell_t_max_c == pytest.approx(max(temps), abs=0.1)
    assert r.charge_limit_a == pytest.approx(charge, abs=0.1)
    assert r.discharge_limit_a == pytest.approx(discharge, abs=0.1)
    assert r.contactor_closed is True
    assert r.charge_v_max_v == pytest.approx(16 * SimBms.CHARGE_V_PER_CELL, abs=0.02)  # RackLimits voltages
    assert r.discharge_v_min_v == pytest.approx(16 * SimBms.DISCHARGE_V_PER_CELL, abs=0.02)
    assert (r.charge_enabled, r.discharge_enabled, r.force_charge) == (True, True, False)
    assert r.soc_min == r.soc_max == r.soc
    assert (r.racks_online, r.racks_total) == (1, 1)
    assert r.alarms == frozenset() and r.faults == frozenset()
    await async_wait_until(lambda: rig.drv.latest().capacity_wh is not None, what="RackInfo frame")
    assert rig.drv.latest().capacity_wh == pytest.approx(b.capacity_wh, abs=10)
    assert rig.drv.issues() == []


async def test_three_racks_are_aggregated(rig_factory):
    rig = await rig_factory("bess_sim", racks=3)
    b = rig.plant.battery
    b.cell_spread[2][5] -= 0.2  # rack 2, cell 6: clearly the lowest cell
    b.cell_spread[1][9] += 0.3  # rack 1, cell 10: clearly the highest
    b.cell_t_spread[2][0] += 3.0  # rack 2, sensor 1: the hottest
    await async_wait_until(lambda: rig.drv.latest().cell_v_min_idx == 2006, what="new lowest cell reported")
    r = rig.drv.latest()
    assert (r.racks_online, r.racks_total) == (3, 3)
    assert r.pack_a == pytest.approx(b.pack_a, abs=0.3)  # sum of three racks
    assert r.pack_v == pytest.approx(sum(sum(b.cell_v(k)) for k in range(3)) / 3, abs=0.02)  # mean
    assert r.cell_v_min_v == pytest.approx(b.cell_v(2)[5], abs=0.001)
    assert r.cell_v_max_v == pytest.approx(b.cell_v(1)[9], abs=0.001)
    assert r.cell_v_max_idx == 1010
    assert r.cell_v_avg_v == pytest.approx(sum(sum(b.cell_v(k)) for k in range(3)) / 48, abs=0.001)
    assert r.cell_t_max_c == pytest.approx(b.cell_t(2)[0], abs=0.1)
    charge, discharge = b.limits_a()
    assert r.charge_limit_a == pytest.approx(charge, abs=0.3)  # sum of the racks' shares
    assert r.discharge_limit_a == pytest.approx(discharge, abs=0.3)
    assert r.soc == pytest.approx(b.soc, abs=0.001)


async def test_commands_reach_the_plant_and_are_read_back(rig_factory):
    rig = await rig_factory("bess_sim", racks=2)
    b = rig.plant.battery
    rig.drv.command(BmsCommand(contactor_closed=False))
    await async_wait_until(lambda: not b.contactor_closed, what="contactor opened in the plant")
    await async_wait_until(lambda: not rig.drv.latest().contactor_closed, what="open contactor reported back")
    assert rig.sim.last_command["TargetRack"] == 255
    rig.drv.command(BmsCommand(contactor_closed=True, balancing=True))
    await async_wait_until(lambda: b.contactor_closed and b.balancing, what="contactor closed, balancing on")
    await async_wait_until(lambda: rig.drv.latest().contactor_closed, what="closed contactor reported back")
    rig.drv.command(BmsCommand(contactor_closed=True, sleep=True))
    await async_wait_until(lambda: b.sleeping and not b.balancing, what="sleep")
    sent = rig.sim.commands_received
    await async_wait_until(lambda: rig.sim.commands_received >= sent + 2, what="command repeated periodically")
    assert "BMS_CMD_NOT_APPLIED" not in rig.codes()


@pytest.mark.slow
async def test_command_not_carried_out_is_an_issue(rig_factory):
    rig = await rig_factory("bess_sim", racks=1)
    rig.sim.ignore_commands = True
    rig.drv.command(BmsCommand(contactor_closed=False))
    issue = await async_wait_until(lambda: rig.issue("BMS_CMD_NOT_APPLIED"), what="BMS_CMD_NOT_APPLIED")
    assert "contactor open" in issue.text
    rig.sim.ignore_commands = False
    await async_wait_until(lambda: "BMS_CMD_NOT_APPLIED" not in rig.codes(), what="issue cleared")


async def test_silent_rack_times_out_and_comes_back(rig_factory):
    rig = await rig_factory("bess_sim", racks=3)
    rig.sim.drop(rack=1)
    issue = await async_wait_until(lambda: rig.issue("BMS_RACK_TIMEOUT"), what="BMS_RACK_TIMEOUT")
    assert "1" in issue.text
    r = rig.drv.latest()
    assert (r.racks_online, r.racks_total) == (2, 3)
    assert "BMS_TIMEOUT" not in rig.codes()
    rig.sim.drop()  # every rack
    await async_wait_until(lambda: rig.drv.latest() is None, what="no rack online")
    assert {"BMS_TIMEOUT", "BMS_RACK_TIMEOUT"} <= rig.codes()
    rig.sim.resume()
    await async_wait_until(lambda: (r := rig.drv.latest()) is not None and r.racks_online == 3, what="racks back")
    await async_wait_until(lambda: not rig.codes() & {"BMS_TIMEOUT", "BMS_RACK_TIMEOUT"}, what="timeouts cleared")


async def test_delayed_frames_leave_a_gap_then_flow_again(rig_factory):
    rig = await rig_factory("bess_sim", racks=1)
    rig.sim.delay_s = 0.8  # longer than timeout_s: nothing arrives for 0.8 s, then every frame 0.8 s late
    await async_wait_until(lambda: rig.drv.latest() is None, what="gap seen as a timeout")
    await async_wait_until(lambda: rig.drv.latest() is not None, what="late frames arrive")
    assert "BMS_DECODE_ERRORS" not in rig.codes()


async def test_stuck_alive_counter_takes_the_rack_out(rig_factory):
    rig = await rig_factory("bess_sim", racks=2)
    rig.sim.freeze_alive(rack=0)
    issue = await async_wait_until(lambda: rig.issue("BMS_ALIVE_STUCK"), what="BMS_ALIVE_STUCK")
    assert "0" in issue.text
    assert rig.drv.latest().racks_online == 1
    rig.sim.freeze_alive(rack=1)
    await async_wait_until(lambda: rig.drv.latest() is None, what="both racks stuck")
    assert "BMS_TIMEOUT" in rig.codes()
    rig.sim.freeze_alive(frozen=False)
    await async_wait_until(lambda: "BMS_ALIVE_STUCK" not in rig.codes(), what="alive moving again")
    assert rig.drv.latest().racks_online == 2


async def test_corrupt_frames_are_counted_not_fatal(rig_factory):
    rig = await rig_factory("bess_sim", racks=1)
    rig.sim.send_corrupt_frame(kind="short")
    await async_wait_until(lambda: rig.drv.stats()["decode_errors"] >= 1, what="decode error counted")
    issue = rig.issue("BMS_DECODE_ERRORS")
    assert issue is not None and "RackStatus" in issue.text
    rig.sim.send_corrupt_frame(kind="short")
    await async_wait_until(lambda: rig.drv.stats()["decode_errors"] >= 2, what="second decode error")
    assert rig.issue("BMS_DECODE_ERRORS").text == issue.text  # stable while the episode lasts
    assert rig.drv.latest().soc == pytest.approx(rig.plant.battery.soc, abs=0.001)  # the short frame was dropped
    before = rig.drv.stats()["frames_decoded"]
    await async_wait_until(lambda: rig.drv.stats()["frames_decoded"] > before + 10, what="decoding goes on")


async def test_value_outside_the_dbc_range_is_passed_on_and_reported(rig_factory):
    rig = await rig_factory("bess_sim", racks=1)
    seen = []
    rig.drv._on_frame = _spy(rig.drv._on_frame, lambda: seen.append(rig.drv.latest().soc))
    rig.sim.send_corrupt_frame(kind="range")  # SOC 100.1 %: never clamped to 100 % nor dropped
    issue = await async_wait_until(lambda: rig.issue("BMS_VALUE_OUT_OF_RANGE"), what="BMS_VALUE_OUT_OF_RANGE")
    assert "RackStatus.SOC=100.1 outside [0, 100]" in issue.text
    assert ISSUE_CODES["BMS_VALUE_OUT_OF_RANGE"][0] == "critical"
    assert rig.drv.stats()["values_out_of_range"] == 1 and rig.drv.stats()["decode_errors"] == 0
    assert any(soc > 1.0 for soc in seen)  # the node saw the impossible SOC until the next frame


async def test_error_frames_and_send_failures_are_bus_errors(rig_factory, monkeypatch):
    rig = await rig_factory("bess_sim", racks=1)
    rig.sim.send_error_frame()
    issue = await async_wait_until(lambda: rig.issue("BMS_BUS_ERROR"), what="BMS_BUS_ERROR from an error frame")
    assert "error frame" in issue.text
    assert rig.drv.stats()["error_frames"] == 1

    def broken_send(msg, timeout=None):
        raise can.CanOperationError("transmit buffer full")

    monkeypatch.setattr(rig.drv._bus, "send", broken_send)
    rig.drv.command(BmsCommand(contactor_closed=False))
    await async_wait_until(lambda: rig.drv.stats()["tx_errors"] >= 1, what="send failure counted")
    assert "transmit buffer full" in rig.issue("BMS_BUS_ERROR").text
    assert rig.plant.battery.contactor_closed  # the command never left


async def test_receive_failure_reopens_the_bus(rig_factory, monkeypatch):
    rig = await rig_factory("bess_sim", racks=1)
    rig.drv.REOPEN_S = 0.1

    def broken_recv(timeout=None):
        raise can.CanOperationError("network is down")

    monkeypatch.setattr(rig.drv._bus, "recv", broken_recv)
    issue = await async_wait_until(lambda: rig.issue("BMS_BUS_ERROR"), what="BMS_BUS_ERROR from a receive failure")
    assert "network is down" in issue.text
    await async_wait_until(lambda: rig.drv.stats()["bus_opens"] == 2, what="bus reopened")
    before = rig.drv.stats()["frames_decoded"]
    await async_wait_until(lambda: rig.drv.stats()["frames_decoded"] > before + 10, what="frames again")
    assert rig.drv.latest() is not None


async def test_bus_that_cannot_open_is_an_issue_not_an_exception():
    config = BmsConfig(model="bess_sim", can={"interface": "socketcan", "channel": "nosuchcan9"}, timeout_s=0.2)
    drv = make_bms(config, RealClock())
    await drv.start()
    try:
        assert drv.latest() is None
        issue = next(i for i in drv.issues() if i.code == "BMS_BUS_ERROR")
        assert "nosuchcan9" in issue.text
        await async_wait_until(lambda: "BMS_TIMEOUT" in {i.code for i in drv.issues()}, what="BMS_TIMEOUT")
    finally:
        await drv.close()


async def test_plant_faults_arrive_as_bms_faults(rig_factory):
    rig = await rig_factory("bess_sim", racks=2)
    b = rig.plant.battery
    b.cell_v_fault_v = 0.5  # one cell of rack 0 far above 3.65 V
    await async_wait_until(lambda: "CELL_OV" in rig.drv.latest().faults, what="CELL_OV fault")
    r = rig.drv.latest()
    assert r.cell_v_max_v > SimBms.CELL_OV_FAULT_V and r.cell_v_max_idx == 4  # rack 0, cell 4
    assert "CELL_IMBALANCE" in r.alarms
    b.cell_v_fault_v = 0.0
    b.temp_fault_c = SimBms.OVER_TEMP_WARN_C + 2 - min(b.temp_c)  # above the warning, below the fault
    await async_wait_until(lambda: "OVER_TEMP" in rig.drv.latest().alarms and not rig.drv.latest().faults,
                           what="OVER_TEMP warning only")
    rig.sim.internal_fault = True
    await async_wait_until(lambda: "INTERNAL" in rig.drv.latest().faults, what="INTERNAL fault")


async def test_pylontech_end_to_end(rig_factory):
    rig = await rig_factory("pylontech", racks=2)
    b = rig.plant.battery
    r = rig.drv.latest()
    charge, discharge = b.limits_a()
    assert r.soc == pytest.approx(b.soc, abs=0.005)  # 1 % resolution
    assert r.soh == pytest.approx(b.soh, abs=0.005)
    assert r.pack_a == pytest.approx(b.pack_a, abs=0.2) and r.pack_a > 0  # Pylontech's + = charge was flipped
    assert r.charge_limit_a == pytest.approx(charge, abs=0.2)
    assert r.discharge_limit_a == pytest.approx(discharge, abs=0.2)
    assert r.cell_v_max_v == pytest.approx(max(max(b.cell_v(k)) for k in range(2)), abs=0.001)  # 0x373 extension
    assert r.cell_t_max_c == pytest.approx(max(max(b.cell_t(k)) for k in range(2)), abs=0.6)  # kelvin, 1 K steps
    assert r.contactor_closed and r.capacity_wh is None
    assert r.charge_v_max_v == pytest.approx(15 * SimBms.CHARGE_V_PER_CELL, abs=0.1)  # 0x351, 0.1 V steps
    assert r.discharge_v_min_v == pytest.approx(15 * SimBms.DISCHARGE_V_PER_CELL, abs=0.1)
    assert (r.charge_enabled, r.discharge_enabled, r.force_charge) == (True, True, False)  # 0x35C
    await async_wait_until(lambda: rig.sim.keepalives_received >= 1, what="0x305 keep-alive")
    assert rig.drv.issues() == []
    # no commands in this protocol: an open request is reported, not silently dropped
    rig.drv.command(BmsCommand(contactor_closed=False))
    assert "BMS_CMD_UNSUPPORTED" in rig.codes()
    rig.drv.command(BmsCommand(contactor_closed=True))
    assert "BMS_CMD_UNSUPPORTED" not in rig.codes()
    # without the extension frame, cell data is derived and says so
    rig.sim.pylontech_extension = False
    await async_wait_until(lambda: "BMS_CELL_DATA_DERIVED" in rig.codes(), what="BMS_CELL_DATA_DERIVED")
    r = rig.drv.latest()
    assert r.cell_v_min_v == r.cell_v_max_v == pytest.approx(r.pack_v / 15, abs=0.001)  # US series: 15 cells
    b.temp_fault_c = 70.0
    await async_wait_until(lambda: "OVER_TEMP" in rig.drv.latest().faults, what="protection flag as fault")
    assert not rig.drv.latest().contactor_closed  # charge and discharge disabled by the protection


async def test_pylontech_rack_timeout_and_corrupt_frame(rig_factory):
    rig = await rig_factory("pylontech", racks=2, rack_id_stride=0x20)
    rig.sim.drop(rack=0)
    issue = await async_wait_until(lambda: rig.issue("BMS_RACK_TIMEOUT"), what="BMS_RACK_TIMEOUT")
    assert "cannot isolate" in issue.text  # no per-rack command in the Pylontech protocol: said, not hidden
    assert rig.drv.latest().racks_online == 1
    rig.sim.send_corrupt_frame(rack=1, kind="short")
    await async_wait_until(lambda: "BMS_DECODE_ERRORS" in rig.codes(), what="BMS_DECODE_ERRORS")
    assert "BMS_ALIVE_STUCK" not in rig.codes()  # Pylontech has no alive counter


def _spy(fn, after):
    def wrapped(*args):
        fn(*args)
        after()
    return wrapped


def test_issue_codes_are_registered_with_a_severity():
    assert set(ISSUE_CODES) >= {"BMS_TIMEOUT", "BMS_RACK_TIMEOUT", "BMS_ALIVE_STUCK", "BMS_BUS_ERROR", "BMS_DECODE_ERRORS",
                                "BMS_VALUE_OUT_OF_RANGE"}
    assert ISSUE_CODES["BMS_RACK_TIMEOUT"][0] == "error"  # a silent configured rack is not just a warning
    for severity, text in ISSUE_CODES.values():
        assert severity in ("warning", "error", "critical") and text


def test_make_bms_rejects_non_can_models():
    with pytest.raises(ValueError, match="inproc"):
        make_bms(BmsConfig(model="inproc"), RealClock())
