"""The DBC files and the frame codec, without a bus: layouts, rack offsets, range checks, sentinels,
and what the profiles make of the decoded values."""
from __future__ import annotations

import math
from importlib import resources

import pytest

from sitecontroller.drivers.base import BmsCommand
from sitecontroller.drivers.bms.codec import DBC_DIR, FrameCodec, FrameError, dbc_path, load_dbc
from sitecontroller.drivers.bms.config import BmsConfig
from sitecontroller.drivers.bms.profiles import BessSimProfile, PylontechProfile
from sitecontroller.drivers.bms.rack import RackTracker
from tests.util import REPO


@pytest.mark.parametrize("model", ["bess_sim", "pylontech"])
def test_dbc_loads_and_sixteen_racks_have_distinct_ids(model):
    path = dbc_path(model)
    assert path.is_file() and path.name == f"{model}.dbc"
    codec = FrameCodec(load_dbc(path), racks=16)  # raises on any id collision
    assert codec.stride == 16


def test_dbc_files_are_package_data_read_with_importlib_resources():
    packaged = resources.files("sitecontroller.drivers.bms") / "dbc"
    assert str(DBC_DIR) == str(packaged)
    assert {p.name for p in packaged.iterdir() if p.name.endswith(".dbc")} == {"bess_sim.dbc", "pylontech.dbc"}
    assert not (REPO / "dbc").exists()  # one copy only, inside the package
    assert load_dbc(dbc_path("pylontech", str(REPO / "sitecontroller/drivers/bms/dbc/pylontech.dbc"))).messages


def test_pylontech_sample_frames_from_public_captures_decode():
    """Frames captured from real Pylontech batteries (published with the protocol description)."""
    codec = FrameCodec(load_dbc(dbc_path("pylontech")), racks=1)
    _, name, v = codec.decode(0x351, bytes.fromhex("1402740E740ECC01"))
    assert name == "BatteryLimits"
    assert v["ChargeVoltage"] == pytest.approx(53.2) and v["DischargeVoltage"] == pytest.approx(46.0)
    assert v["ChargeCurrentLimit"] == pytest.approx(370.0) and v["DischargeCurrentLimit"] == pytest.approx(370.0)
    _, _, v = codec.decode(0x355, bytes.fromhex("1A006400"))
    assert (v["SOC"], v["SOH"]) == (26, 100)
    _, _, v = codec.decode(0x356, bytes.fromhex("7A13F2FE6B01"))
    assert v["Voltage"] == pytest.approx(49.86) and v["Current"] == pytest.approx(-27.0)
    assert v["Temperature"] == pytest.approx(36.3)
    _, _, v = codec.decode(0x359, bytes.fromhex("00000000065" "04E"))
    assert v["ModuleCount"] == 6 and v["ManufacturerTag"] == 0x4E50
    _, _, v = codec.decode(0x35C, bytes.fromhex("C000"))
    assert v["ChargeEnable"] == 1 and v["DischargeEnable"] == 1


def test_rack_offset_and_global_frames():
    codec = FrameCodec(load_dbc(dbc_path("bess_sim")), racks=3)
    msg = codec.encode("RackStatus", {"PackVoltage": 52.0, "SOC": 50.0, "SOH": 99.0, "ContactorState": 1}, rack=2)
    assert msg.arbitration_id == 0x400 + 2 * 0x10
    rack, name, v = codec.decode(msg.arbitration_id, msg.data)
    assert (rack, name) == (2, "RackStatus") and v["SOC"] == pytest.approx(50.0)
    assert codec.decode(0x400 + 3 * 0x10, msg.data) is None  # a 4th rack is not configured: ignored
    assert codec.decode(0x123, b"\x00" * 8) is None
    frames = BessSimProfile().command_frames(BmsCommand(contactor_closed=False, sleep=True), counter=7)
    cmd = codec.encode(*frames[0])
    assert cmd.arbitration_id == 0x3F0
    rack, name, v = codec.decode(cmd.arbitration_id, cmd.data)
    assert rack is None and name == "ControllerCommand"
    assert (v["TargetRack"], v["ContactorCmd"], v["BalancingCmd"], v["SleepCmd"], v["CmdCounter"]) == (255, 1, 1, 2, 7)


def test_bad_payloads_raise_frame_error():
    codec = FrameCodec(load_dbc(dbc_path("bess_sim")), racks=1)
    with pytest.raises(FrameError, match="RackStatus"):
        codec.decode(0x400, b"\x01\x02\x03")  # too short
    assert codec.encode("RackStatus", {"SOC": 250.0}).data == codec.encode("RackStatus", {"SOC": 100.0}).data


def test_out_of_range_values_are_returned_as_they_are_and_named():
    codec = FrameCodec(load_dbc(dbc_path("bess_sim")), racks=1)
    raw = codec.encode_raw("RackStatus", {"SOC": 1023, "SOH": 990})  # 102.3 %
    rack, name, v = codec.decode(raw.arbitration_id, raw.data)
    assert v["SOC"] == pytest.approx(102.3)  # not clamped, not dropped
    assert codec.out_of_range(name, v) == "RackStatus.SOC=102.3 outside [0, 100]"
    ok = codec.encode("RackStatus", {"SOC": 50.0, "SOH": 99.0})
    assert codec.out_of_range("RackStatus", codec.decode(ok.arbitration_id, ok.data)[2]) is None


@pytest.mark.parametrize("model,frame,signal,raw", [
    ("pylontech", "BatteryLimits", "ChargeCurrentLimit", -0x8000),
    ("pylontech", "BatteryLimits", "DischargeCurrentLimit", -0x8000),
    ("pylontech", "BatteryLimits", "ChargeVoltage", 0xFFFF),
    ("pylontech", "BatterySocSoh", "SOC", 0xFFFF),
    ("pylontech", "BatteryActual", "Current", -0x8000),
    ("pylontech", "ExtCellStats", "MaxCellVoltage", 0xFFFF),
    ("bess_sim", "RackLimits", "ChargeCurrentLimit", 0xFFFF),
    ("bess_sim", "RackCellVoltage", "CellVMax", 0xFFFF),
    ("bess_sim", "RackCellTemp", "CellTMax", -0x8000),
])
def test_not_available_sentinel_decodes_to_nan(model, frame, signal, raw):
    codec = FrameCodec(load_dbc(dbc_path(model)), racks=1)
    msg = codec.encode_raw(frame, {signal: raw})
    _, _, v = codec.decode(msg.arbitration_id, msg.data)
    assert math.isnan(v[signal])
    assert codec.out_of_range(frame, v) is None or signal not in codec.out_of_range(frame, v)


def _pylontech_rack(raw: dict[str, dict[str, int]], cells_in_series=None, extension=False):
    """Decode one rack's standard Pylontech frames (healthy values, then `raw` overrides) through the profile."""
    codec = FrameCodec(load_dbc(dbc_path("pylontech")), racks=1)
    good = {
        "BatteryLimits": {"ChargeVoltage": 532, "ChargeCurrentLimit": 740, "DischargeCurrentLimit": 740,
                          "DischargeVoltage": 460},
        "BatterySocSoh": {"SOC": 60, "SOH": 100},
        "BatteryActual": {"Voltage": 5040, "Current": -100, "Temperature": 250},
        "BatteryProtectAlarm": {},
        "BatteryRequest": {"ChargeEnable": 1, "DischargeEnable": 1},
    }
    if extension:
        good["ExtCellStats"] = {"MinCellVoltage": 3300, "MaxCellVoltage": 3310, "MinCellTemp": 298, "MaxCellTemp": 299}
    tracker = RackTracker(0)
    for name, values in good.items():
        msg = codec.encode_raw(name, {**values, **raw.get(name, {})})
        _, decoded_name, decoded = codec.decode(msg.arbitration_id, msg.data)
        tracker.update(decoded_name, decoded, 1.0)
    extra = {} if cells_in_series is None else {"cells_in_series": cells_in_series}
    config = BmsConfig(model="pylontech", can={"interface": "virtual", "channel": "x"}, **extra)
    return tracker.values(PylontechProfile(config).rack_values)


def test_pylontech_defaults_to_15_cells_in_series():
    v = _pylontech_rack({"BatteryActual": {"Voltage": 5700}})  # 57.0 V, no cell frame
    assert v.cells_derived and v.cell_v_max_v == pytest.approx(3.80)  # 16 cells would hide it (3.5625 V)
    assert _pylontech_rack({"BatteryActual": {"Voltage": 5700}}, cells_in_series=16).cell_v_max_v == pytest.approx(3.5625)


def test_pylontech_limits_are_used_as_sent_never_as_absolute_values():
    v = _pylontech_rack({"BatteryLimits": {"ChargeCurrentLimit": -0x8000, "DischargeCurrentLimit": -0x8000}})
    assert math.isnan(v.charge_limit_a) and math.isnan(v.discharge_limit_a)  # not 3276.8 A
    v = _pylontech_rack({"BatteryLimits": {"DischargeCurrentLimit": -250}})
    assert v.discharge_limit_a == pytest.approx(-25.0)  # not 25 A
    assert _pylontech_rack({"BatterySocSoh": {"SOC": 101}}).soc == pytest.approx(1.01)  # not clamped to 1


def test_pylontech_voltage_limits_enable_flags_and_force_charge():
    v = _pylontech_rack({})
    assert (v.charge_v_max_v, v.discharge_v_min_v) == (pytest.approx(53.2), pytest.approx(46.0))
    assert (v.charge_enabled, v.discharge_enabled, v.force_charge, v.contactor_closed) == (True, True, False, True)
    v = _pylontech_rack({"BatteryRequest": {"ChargeEnable": 0, "DischargeEnable": 1, "ForceChargeRequestII": 1}})
    assert (v.charge_enabled, v.discharge_enabled, v.force_charge, v.contactor_closed) == (False, True, True, True)
    v = _pylontech_rack({"BatteryRequest": {"ChargeEnable": 0, "DischargeEnable": 0}})
    assert not v.contactor_closed


def test_stride_that_collides_is_refused():
    with pytest.raises(ValueError, match="collides"):
        # rack 2 would send BatteryLimits at 0x351 + 2 * 0x11 = 0x373, the id of rack 0's ExtCellStats
        FrameCodec(load_dbc(dbc_path("pylontech")), racks=3, stride=0x11)


def test_missing_dbc_names_the_folder_and_the_shipped_files():
    with pytest.raises(FileNotFoundError, match=r"nope\.dbc.*dbc folder.*bess_sim\.dbc, pylontech\.dbc"):
        dbc_path("bess_sim", "nope.dbc")
    with pytest.raises(FileNotFoundError, match="/nowhere/x.dbc"):
        dbc_path("bess_sim", "/nowhere/x.dbc")


def test_pylontech_profile_flags_unsupported_commands():
    p = PylontechProfile()
    assert p.unsupported(BmsCommand(contactor_closed=True)) is None
    assert "contactor open" in p.unsupported(BmsCommand(contactor_closed=False))
    assert "sleep" in p.unsupported(BmsCommand(contactor_closed=True, sleep=True))
