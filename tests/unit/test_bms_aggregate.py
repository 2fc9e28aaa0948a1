"""Aggregating racks into the node's battery reading (pure)."""
import math

import pytest

from sitecontroller.drivers.bms.rack import RackValues, aggregate


def rack(**kw):
    base = dict(t=1.0, pack_v=52.0, pack_a=10.0, soc=0.5, soh=1.0, cell_v_min_v=3.28, cell_v_max_v=3.30,
                cell_v_avg_v=3.29, cell_t_min_c=20.0, cell_t_max_c=25.0, charge_limit_a=100.0,
                discharge_limit_a=100.0, contactor_closed=True, capacity_wh=5000.0)
    return RackValues(**(base | kw))


def test_the_weakest_rack_bounds_the_node_current_limits():
    r = aggregate({0: rack(), 1: rack(charge_limit_a=20.0, discharge_limit_a=60.0), 2: rack()}, racks_total=3)
    # parallel racks share current about evenly: 3 x the weakest, never the sum (220 A / 260 A)
    assert r.charge_limit_a == pytest.approx(60.0)
    assert r.discharge_limit_a == pytest.approx(180.0)


def test_currents_add_and_extremes_are_taken_across_racks():
    r = aggregate({0: rack(pack_a=10.0, cell_v_max_v=3.31, cell_t_max_c=30.0),
                   1: rack(pack_a=12.0, cell_v_min_v=3.20, contactor_closed=False)}, racks_total=2)
    assert r.pack_a == pytest.approx(22.0)
    assert (r.cell_v_min_v, r.cell_v_max_v, r.cell_t_max_c) == (3.20, 3.31, 30.0)
    assert r.contactor_closed is False  # closed only if every online rack is closed
    assert (r.racks_online, r.racks_total) == (2, 2)


def test_no_rack_online_is_no_reading():
    assert aggregate({}, racks_total=2) is None


NAN = float("nan")


def test_soc_extremes_come_from_the_emptiest_and_the_fullest_rack():
    r = aggregate({0: rack(soc=0.05), 1: rack(soc=0.35)}, racks_total=2)
    assert r.soc == pytest.approx(0.20)  # the mean is kept for status and dispatch
    assert (r.soc_min, r.soc_max) == (0.05, 0.35)
    single = aggregate({0: rack(soc=0.42)}, racks_total=1)
    assert single.soc_min == single.soc_max == single.soc == 0.42


def test_an_offline_rack_has_no_share_of_the_limits_but_keeps_its_last_soc_in_the_window():
    online = {0: rack(soc=0.50, discharge_limit_a=100.0), 2: rack(soc=0.60, discharge_limit_a=80.0)}
    r = aggregate(online, racks_total=3, offline={1: rack(soc=0.07, discharge_limit_a=100.0)})
    assert (r.racks_online, r.racks_total) == (2, 3)
    assert r.discharge_limit_a == pytest.approx(160.0)  # 2 online racks x the weakest online one; rack 1 adds 0
    assert r.soc_min == 0.07 and r.soc_max == 0.60  # rack 1 may still be connected: never drain it blind
    assert r.soc == pytest.approx(0.55)  # the offline rack's data enters nothing else


@pytest.mark.parametrize("field", ["cell_t_max_c", "cell_t_min_c", "cell_v_max_v", "cell_v_min_v",
                                   "charge_limit_a", "discharge_limit_a", "soc", "soh", "pack_v", "pack_a"])
@pytest.mark.parametrize("which", [0, 1])
def test_nan_in_any_rack_stays_nan_whatever_its_position(field, which):
    racks = {0: rack(), 1: rack()}
    racks[which] = rack(**{field: NAN})
    r = aggregate(racks, racks_total=2)
    assert math.isnan(getattr(r, field)), (field, which)
    if field == "soc":
        assert math.isnan(r.soc_min) and math.isnan(r.soc_max)


def test_negative_limits_are_passed_on_not_hidden_as_zero():
    r = aggregate({0: rack(charge_limit_a=-5.0), 1: rack()}, racks_total=2)
    assert r.charge_limit_a == pytest.approx(-10.0)  # the node's protection flags it (BMS_DATA_INVALID)


def test_voltage_limits_enables_and_force_charge_across_racks():
    r = aggregate({0: rack(charge_v_max_v=56.8, discharge_v_min_v=44.8),
                   1: rack(charge_v_max_v=56.0, discharge_v_min_v=46.0, charge_enabled=False, force_charge=True)},
                  racks_total=2)
    assert (r.charge_v_max_v, r.discharge_v_min_v) == (56.0, 46.0)  # the tighter of each
    assert (r.charge_enabled, r.discharge_enabled, r.force_charge) == (False, True, True)
    plain = aggregate({0: rack(), 1: rack()}, racks_total=2)
    assert (plain.charge_v_max_v, plain.discharge_v_min_v) == (None, None)  # the protocol does not send them
    assert (plain.charge_enabled, plain.discharge_enabled, plain.force_charge) == (True, True, False)
    nan = aggregate({0: rack(charge_v_max_v=NAN), 1: rack(charge_v_max_v=56.0)}, racks_total=2)
    assert math.isnan(nan.charge_v_max_v)
