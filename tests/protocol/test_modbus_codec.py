"""The Modbus engine's pure parts: register codec, profile loading/checking, read planning, setpoints."""
from __future__ import annotations

import math
import textwrap
from dataclasses import replace

import pytest

from sitecontroller.drivers.inverter.config import InverterConfig
from sitecontroller.drivers.modbus import (
    CodecError,
    ProfileError,
    decode_command,
    decode_point,
    encode_command,
    encode_point,
    load_profile,
    plan_reads,
    sunspec_layout,
)
from sitecontroller.drivers.modbus.codec import merge_masked
from sitecontroller.drivers.modbus.layout import resolve_sunspec
from sitecontroller.drivers.modbus.profile import Point

MODELS = InverterConfig.MODBUS_MODELS


def pt(**kw) -> Point:
    """A point like the loader builds (canonical type, register count from the type)."""
    counts = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "float32": 2}
    kw.setdefault("type", "uint16")
    kw.setdefault("count", counts.get(kw["type"], 1))
    return Point(name=kw.pop("name", "x"), address=kw.pop("address", 0), **kw)


# --- codec: one row per case: (point, registers, sf, engineering value) -------------------
CASES = [
    ("uint16", pt(), [65535], None, 65535),
    ("int16 negative", pt(type="int16"), [0xFB2E], None, -1234),
    ("int16 scaled 0.1", pt(type="int16", scale=0.1), [0xFFF6], None, -1.0),
    ("uint16 SunSpec sf -2", pt(sf="sf"), [5001], -2, 50.01),
    ("int16 sf +1", pt(type="int16", sf="sf"), [123], 1, 1230),
    ("sign -1 (device counts charge positive)", pt(type="int16", sign=-1), [500], None, -500),
    ("add offset", pt(add=-40.0), [65], None, 25.0),
    ("uint32 high word first", pt(type="uint32"), [0x0001, 0x0002], None, 65538),
    ("uint32 low word first", pt(type="uint32", word_order="little"), [0x0002, 0x0001], None, 65538),
    ("int32 low word first (EM24)", pt(type="int32", word_order="little", scale=0.1), [0xFFF6, 0xFFFF], None, -1.0),
    ("int32 high word first", pt(type="int32"), [0xFFFF, 0xFB2E], None, -1234),
    ("float32 big", pt(type="float32"), [0x4049, 0x0FDB], None, 3.1415927),
    ("float32 little", pt(type="float32", word_order="little"), [0x0FDB, 0x4049], None, 3.1415927),
    ("float32 kW -> W", pt(type="float32", scale=1000), [0x4020, 0x0000], None, 2500.0),
    ("low byte (LuxPower SOC)", pt(mask=0x00FF), [0x6257], None, 0x57),
    ("high byte (LuxPower SOH)", pt(mask=0xFF00, shift=8), [0x6257], None, 0x62),
    ("one bit", pt(mask=1 << 9, shift=9), [0x0250], None, 1),
]


@pytest.mark.parametrize("what,point,regs,sf,value", CASES, ids=[c[0] for c in CASES])
def test_decode_and_encode_round_trip(what, point, regs, sf, value):
    got = decode_point(point, regs, sf)
    assert got == pytest.approx(value, rel=1e-6)
    back = encode_point(point, value, sf)
    if point.mask is None:
        assert back == regs
    else:  # a masked point encodes only its bits
        assert merge_masked(point, regs, back) == regs


def test_strings_pad_with_nul_and_strip():
    p = pt(type="string", count=4)
    regs = encode_point(p, "SunS!")
    assert regs == [0x5375, 0x6E53, 0x2100, 0x0000]
    assert decode_point(p, regs) == "SunS!"
    with pytest.raises(CodecError):
        encode_point(p, "much too long for four registers")


NA = [
    ("uint16", [0xFFFF]),
    ("int16", [0x8000]),
    ("uint32", [0xFFFF, 0xFFFF]),
    ("int32", [0x8000, 0x0000]),
]


@pytest.mark.parametrize("typ,regs", NA)
def test_sunspec_not_implemented_reads_as_none(typ, regs):
    from sitecontroller.drivers.modbus.codec import SUNSPEC_NA

    assert decode_point(pt(type=typ, na=frozenset(SUNSPEC_NA[typ])), regs) is None


def test_value_with_unavailable_scale_factor_is_none():
    assert decode_point(pt(sf="W_SF"), [100], None) is None
    assert math.isnan(float("nan")) and decode_point(pt(type="float32"), [0x7FC0, 0x0000]) is None


@pytest.mark.parametrize(
    "point,value",
    [(pt(), -1), (pt(), 65536), (pt(type="int16"), 40000), (pt(type="int16", scale=0.1), 3276.8),
     (pt(mask=0x00FF), 256)],
)
def test_values_that_do_not_fit_raise(point, value):
    with pytest.raises(CodecError):
        encode_point(point, value)


def test_merge_masked_keeps_other_bits():
    flag = pt(mask=1 << 10, shift=10)
    assert merge_masked(flag, [0x0050], encode_point(flag, 1)) == [0x0450]
    assert merge_masked(flag, [0x0450], encode_point(flag, 0)) == [0x0050]


# --- profiles -------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_every_inverter_profile_loads_and_is_complete(model):
    p = load_profile(model)
    assert p.kind == "inverter"
    for key in ("p_w", "state", "faults", "phase_v", "freq_hz"):
        assert p.reading_points(key), f"{model}: [reading].{key} missing"
    assert p.writes, f"{model}: no control writes"
    assert any(w.source == "run" for w in p.writes)
    assert any(w.source in ("p_w", "p_pct", "window_out_pct", "discharge_pct", "discharge_w") for w in p.writes)
    with open(p.path) as fh:
        head = fh.readline()
    assert head.startswith("#"), f"{model}: the profile must start with a comment citing its source"
    # every point the simulator serves can be encoded with its scale factor
    for point in p.points.values():
        assert point.sf is None or p.point(point.sf).sim_value is not None


def test_abb_esi_and_trumpf_follow_the_sunspec_profile():
    base = load_profile("sunspec")
    for model in ("abb_esi", "trumpf_ac3025"):
        p = load_profile(model)
        assert p.is_sunspec and set(p.points) == set(base.points) and p.writes == base.writes
        assert p.device_name != base.device_name


def test_sunspec_standard_layout():
    p = load_profile("sunspec")
    starts = sunspec_layout(p)
    assert starts == {1: 40002, 103: 40070, 123: 40122, 124: 40148, 802: 40174, 704: 40238}
    r = resolve_sunspec(p, starts)
    assert r.point("W").address == 40070 + 2 + 12
    assert r.point("St").address == 40070 + 2 + 36
    assert r.point("OutWRte").address == 40148 + 2 + 10
    assert r.point("Conn").address == 40122 + 2 + 2
    assert r.point("Bat_SoC").address == 40174 + 2 + 9
    with pytest.raises(ProfileError, match="model 124"):
        resolve_sunspec(p, {m: a for m, a in starts.items() if m != 124})


def test_read_plan_batches_contiguous_points_within_limits():
    p = load_profile("luxpowertek")
    blocks = plan_reads(p, p.poll_points() + ["SOC"])
    tables = {b.table for b in blocks}
    assert tables == {"input", "holding"}
    for b in blocks:
        assert b.count <= p.max_read
        for n in b.points:
            q = p.point(n)
            assert b.start <= q.address and q.end <= b.start + b.count
    first = next(b for b in blocks if b.table == "input" and b.start == 0)
    assert {"State", "Vbat", "SOC", "Fac", "Pinv_R", "Prec_R", "IinvRMS_R"} <= set(first.points)
    tight = replace(p, max_gap=0, max_read=2)
    assert all(b.count <= 2 for b in plan_reads(tight, p.poll_points()))


def test_dependencies_pull_in_scale_factors_and_sum_terms():
    sun = load_profile("sunspec")
    deps = sun.dependencies(["W"])
    assert deps.index("W_SF") < deps.index("W")
    lux = load_profile("luxpowertek")
    assert {"Pinv_R", "Prec_T"} <= set(lux.dependencies(["P_ac"]))


def test_unknown_bits_are_named_never_dropped():
    p = load_profile("sunspec")
    assert p.bit_names("Evt1", (1 << 4) | (1 << 20)) == {"grid_disconnect", "Evt1.bit20"}
    assert p.bit_names("Evt1", 0) == frozenset()
    assert p.state_name("St", 4) == "running" and p.state_name("St", 42) is None


BAD = [
    ("type", '[points.a]\naddress = 0\ntype = "int24"\n', "unknown register type"),
    ("sf", '[points.a]\naddress = 0\nsf = "nope"\n', "scale factor point 'nope'"),
    ("key", '[points.a]\naddress = 0\nscael = 2\n', "unknown key"),
    ("input rw", '[points.a]\naddress = 0\ntable = "input"\naccess = "rw"\n', "read-only"),
    ("no address", '[points.a]\ntype = "uint16"\n', "needs 'address'"),
    ("reading", '[points.a]\naddress = 0\n[reading]\np_w = "b"\n', "[reading].p_w"),
    ("write ro", '[points.a]\naddress = 0\n[[control.write]]\npoint = "a"\nvalue = 1\n', "not writable"),
    ("source", '[points.a]\naddress = 0\naccess = "rw"\n[[control.write]]\npoint = "a"\nsource = "x"\n', "source"),
    ("word order", '[device]\nword_order = "middle"\n', "word_order"),
    ("toml", "[points.a\n", "not valid TOML"),
]


@pytest.mark.parametrize("what,body,message", BAD, ids=[b[0] for b in BAD])
def test_bad_profiles_are_rejected_with_the_field_named(tmp_path, what, body, message):
    f = tmp_path / "bad.toml"
    f.write_text('# test\n[device]\nkind = "inverter"\n' + body if not body.startswith("[device]") else body)
    with pytest.raises(ProfileError) as exc:
        load_profile(str(f))
    assert message in str(exc.value) and "bad.toml" in str(exc.value)


def test_extends_overrides_only_what_it_names(tmp_path):
    f = tmp_path / "child.toml"
    f.write_text(textwrap.dedent("""\
        # a SunSpec device with a slower keep-alive
        [device]
        extends = "sunspec"
        kind = "inverter"
        [control]
        keepalive_s = 9.0
    """))
    p = load_profile(str(f))
    assert p.keepalive_s == 9.0 and p.ref_w == "WChaMax" and p.point("W").sf == "W_SF"


# --- setpoints ------------------------------------------------------------------------------
SETPOINTS = [(2500.0, 0.0, True), (-1500.0, 400.0, True), (0.0, 0.0, True), (3000.0, -200.0, False)]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("p_w,q_var,run", SETPOINTS)
def test_command_encodes_and_decodes_back(model, p_w, q_var, run):
    prof = load_profile(model)
    values = encode_command(prof, p_w, q_var, run, 5000.0)
    assert list(values) == list(dict.fromkeys(w.point for w in prof.writes))
    sp = decode_command(prof, values, 5000.0)
    assert sp.run == run
    assert sp.p_w == pytest.approx(p_w if run else 0.0, abs=1e-6)
    if any(w.source in ("q_var", "q_pct") for w in prof.writes):
        assert sp.q_var == pytest.approx(q_var if run else 0.0, abs=1e-6)


def test_sunspec_window_collapses_onto_the_setpoint():
    prof = load_profile("sunspec")
    v = encode_command(prof, -1500.0, 0.0, True, 5000.0)
    assert v["InWRte"] == 30.0 and v["OutWRte"] == -30.0 and v["StorCtl_Mod"] == 3 and v["Conn"] == 1


def test_setpoints_are_clamped_into_the_point_range():
    prof = load_profile("luxpowertek")
    v = encode_command(prof, 9000.0, 0.0, True, 5000.0)
    assert v["ForcedDischgPwr"] == 100.0 and v["ForcedDischgEn"] == 1 and v["ACChargeEn"] == 0
