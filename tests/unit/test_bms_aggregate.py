"""Aggregating racks into the node's battery reading (pure)."""
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
