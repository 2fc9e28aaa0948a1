"""The DBC files and the frame codec, without a bus: layouts, rack offsets, range checks."""
from __future__ import annotations

import pytest

from sitecontroller.drivers.base import BmsCommand
from sitecontroller.drivers.bms.codec import DBC_DIR, FrameCodec, FrameError, dbc_path, load_dbc
from sitecontroller.drivers.bms.profiles import BessSimProfile, PylontechProfile


@pytest.mark.parametrize("model", ["bess_sim", "pylontech"])
def test_dbc_loads_and_sixteen_racks_have_distinct_ids(model):
    path = dbc_path(model)
    assert path.parent == DBC_DIR and path.is_file()
    codec = FrameCodec(load_dbc(path), racks=16)  # raises on any id collision
    assert codec.stride == 16


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
    raw = codec.encode_raw("RackStatus", {"SOC": 1023})  # 102.3 %
    with pytest.raises(FrameError, match="SOC"):
        codec.decode(raw.arbitration_id, raw.data)
    assert codec.encode("RackStatus", {"SOC": 250.0}).data == codec.encode("RackStatus", {"SOC": 100.0}).data


def test_stride_that_collides_is_refused():
    with pytest.raises(ValueError, match="collides"):
        # rack 2 would send BatteryLimits at 0x351 + 2 * 0x11 = 0x373, the id of rack 0's ExtCellStats
        FrameCodec(load_dbc(dbc_path("pylontech")), racks=3, stride=0x11)


def test_missing_dbc_names_the_folder():
    with pytest.raises(FileNotFoundError, match="dbc"):
        dbc_path("bess_sim", "nope.dbc")


def test_pylontech_profile_flags_unsupported_commands():
    p = PylontechProfile()
    assert p.unsupported(BmsCommand(contactor_closed=True)) is None
    assert "contactor open" in p.unsupported(BmsCommand(contactor_closed=False))
    assert "sleep" in p.unsupported(BmsCommand(contactor_closed=True, sleep=True))
