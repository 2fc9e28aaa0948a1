"""The SCADA register map as data: REGISTERS.md is generated from it, the SunSpec chain is sound,
the served values keep our units and signs, the parameters name the bad field."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from sitecontroller.scada import docs
from sitecontroller.scada.config import ScadaParams
from sitecontroller.scada.service import load_map
from sitecontroller.scada.values import MAP_VERSION, error_code, live_values
from sitecontroller.sim.modbus_server import ProfileServer

SERVED = ProfileServer(load_map(), port=1)


def test_registers_md_is_what_the_code_says():
    assert docs.OUT.read_text() == docs.render(), "run: python -m sitecontroller.scada.docs"


def test_the_sunspec_chain_is_sound_and_no_two_points_overlap():
    regs = dict(SERVED._fixed)
    assert (regs[40000], regs[40001]) == (0x5375, 0x6E53)
    addr, seen = 40002, []
    while regs[addr] != 0xFFFF:
        seen.append(regs[addr])
        addr += 2 + regs[addr + 1]
    assert seen == [1, 103, 123, 124, 802, 704, 64900] and regs[addr + 1] == 0
    points = sorted((p for p in SERVED.profile.points.values() if p.address is not None), key=lambda p: p.address)
    for a, b in zip(points, points[1:]):
        assert a.end <= b.address, f"{a.name} overlaps {b.name}"
    for p in points:  # every point inside its model, never on an ID/L header
        assert p.address >= 40004 and p.offset + p.count <= dict(SERVED.profile.sunspec_models)[p.model]


def test_every_writable_point_has_a_range():
    for p in SERVED.profile.points.values():
        if p.writable:
            assert p.min is not None and p.max is not None, p.name


def test_error_codes_are_distinct_and_stable():
    codes = [error_code(e) for e in docs.error_ids()]
    assert len(set(codes)) == len(codes) and 0 not in codes
    assert error_code("BMS_STALE") == error_code("BMS_STALE")


STATUS = {
    "node_id": "node7", "state": "run", "control_mode": "local", "role": "alone", "term": None,
    "soc": 0.523, "p_w": -1500.0, "limits": {"charge_w": 4000.0, "discharge_w": 5000.0, "reasons": []},
    "battery": {"pack_v": 52.1, "pack_a": -28.8, "soh": 0.97, "cell_v_min_v": 3.28, "cell_v_max_v": 3.31,
                "cell_t_max_c": 24.5, "cell_t_min_c": 21.0, "contactor_closed": True, "racks_online": 2,
                "racks_total": 2},
    "errors": [{"id": "METER_STALE", "severity": "warning", "active": True},
               {"id": "BMS_FAULT", "severity": "critical", "active": True},
               {"id": "CELL_OVERTEMP", "severity": "critical", "active": False}],  # latched, no longer present
}


def test_live_values_keep_our_signs_and_convert_fractions_to_percent():
    v = live_values(STATUS, None, rated_w=5000, capacity_wh=10000)
    assert v["soc_pct"] == pytest.approx(52.3) and v["soh_pct"] == pytest.approx(97)
    assert v["p_w"] == -1500 and v["dc_a_signed"] == -28.8 and v["dc_a"] == 28.8  # charging: negative
    assert (v["charge_limit_w"], v["discharge_limit_w"]) == (4000, 5000)  # magnitudes
    assert v["error_codes"][:3] == [error_code("BMS_FAULT"), error_code("CELL_OVERTEMP"),
                                    error_code("METER_STALE")]  # most severe first
    assert v["bat_events"] == {"OTHER_ALARM"}  # 802 Evt1: the BMS fault, not the overtemperature that is over
    assert (v["cell_t_min_c"], v["cell_t_max_c"]) == (21.0, 24.5)
    assert v["map_version"] == MAP_VERSION and v["node_id"] == "node7"
    assert "cluster_soc_pct" not in v and "leader_id" not in v


def test_absent_values_are_left_out_so_they_read_as_not_implemented():
    v = live_values({**STATUS, "soc": None, "p_w": None, "battery": None, "limits": None}, None,
                    rated_w=5000, capacity_wh=10000)
    assert not {"soc_pct", "p_w", "dc_v", "cell_v_max_v", "charge_limit_w"} & set(v)


def test_cluster_values_are_over_the_online_members():
    cluster = {"leader": "node2", "term": 4, "mode": "local", "actual_w": 2500.0, "target_w": 3000.0,
               "unplaced_w": 500.0, "request_w": 3000.0, "members": [
                   {"online": True, "soc": 0.4, "limits": {"charge_w": 1000.0, "discharge_w": 2000.0}},
                   {"online": True, "soc": 0.6, "limits": {"charge_w": 1000.0, "discharge_w": 2000.0}},
                   {"online": False, "soc": 0.9, "limits": {"charge_w": 1000.0, "discharge_w": 2000.0}}]}
    v = live_values(STATUS, cluster, rated_w=5000, capacity_wh=10000)
    assert v["cluster_soc_pct"] == pytest.approx(50) and v["cluster_discharge_w"] == 4000
    assert (v["leader_id"], v["term"], v["cluster_mode"], v["cluster_unplaced_w"]) == ("node2", 4, "local", 500)


@pytest.mark.parametrize("bad, field", [
    ({"allow_write_from": ["10.0.0.0/33"]}, "allow_write_from"),
    ({"host": "scada.local"}, "host"),
    ({"meter_unit_id": 1}, "meter_unit_id"),
    ({"fallback": "keep_going"}, "fallback"),
    ({"heartbeat_timeout_s": 0}, "heartbeat_timeout_s"),
])
def test_bad_scada_parameters_name_the_field(bad, field):
    with pytest.raises(ValidationError) as exc:
        ScadaParams(**bad)
    assert field in str(exc.value)
