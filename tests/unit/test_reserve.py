"""The leader's reserve allocation (pure): who holds how much of each grid service."""
import pytest

from mastercontroller.dispatch import NodeView
from mastercontroller.reserve import SOC_FLOOR, allocate, refusal, without_reserve
from mastercontroller.state import ClusterState, apply, validate_change


def node(node_id, soc=0.6, charge=5000.0, discharge=5000.0, usable_wh=10_000.0, online=True, state="run"):
    return NodeView(node_id, online, state, soc, usable_wh, charge, discharge)


def test_split_by_headroom_and_kept_from_the_base_dispatch():
    nodes = [node("a", discharge=4000.0), node("b", discharge=2000.0), node("c", online=False)]
    r = allocate({"ffr": {"capacity_w": 3000.0, "params": {}}}, nodes)
    assert r.per_node == {"a": {"ffr": 2000.0}, "b": {"ffr": 1000.0}, "c": {}} and r.unplaced == {"ffr": 0.0}
    assert r.held == {"a": (0.0, 2000.0), "b": (0.0, 1000.0)}  # (charge, discharge) held
    base = without_reserve(nodes, r)
    assert [(n.charge_w, n.discharge_w) for n in base] == [(5000.0, 2000.0), (5000.0, 1000.0), (5000.0, 5000.0)]


def test_services_stack_in_order_and_both_ways_services_hold_both_ways():
    nodes = [node("a"), node("b")]
    r = allocate({"fcr_n": {"capacity_w": 4000.0, "params": {}}, "fcr_d_up": {"capacity_w": 8000.0, "params": {}}},
                 nodes)
    # FCR-D first (4000 W each of 5000 W up); FCR-N, both ways, only what is left up: 1000 W each
    assert r.per_node["a"] == pytest.approx({"fcr_d_up": 4000.0, "fcr_n": 1000.0})
    assert r.unplaced == pytest.approx({"fcr_d_up": 0.0, "fcr_n": 2000.0})
    assert r.held["a"] == pytest.approx((1000.0, 5000.0))


def test_energy_for_the_endurance_limits_a_node():
    # FCR-D: 20 min at full power; 0.2 of 10 kWh above the 10 % floor = 2 kWh -> 6 kW for 20 min
    low = node("low", soc=SOC_FLOOR + 0.2, discharge=9000.0)
    empty = node("empty", soc=SOC_FLOOR, discharge=9000.0)
    r = allocate({"fcr_d_up": {"capacity_w": 20_000.0, "params": {}}}, [low, empty])
    assert r.per_node["low"]["fcr_d_up"] == pytest.approx(6000.0) and r.per_node["empty"] == {}
    assert r.unplaced["fcr_d_up"] == pytest.approx(14_000.0)


def test_a_capacity_above_the_headroom_is_refused_with_the_figures():
    nodes = [node("a"), node("b")]
    assert refusal("ffr", 9000.0, {}, None, nodes) is None
    why = refusal("ffr", 11_000.0, {}, None, nodes)
    assert why.startswith("capacity_w: 11000 W of ffr is above what the running nodes can hold now") and "10000 W" in why
    held = {"fcr_d_up": {"capacity_w": 8000.0, "params": {}}}
    why = refusal("ffr", 3000.0, {}, held, nodes)  # FFR would take from FCR-D's headroom
    assert why is not None and "beside fcr_d_up 8000 W" in why


def test_the_replicated_state_sets_and_ends_a_service():
    s = apply(ClusterState(), validate_change({"service": {"name": "ffr", "capacity_w": 3000, "params": {"a": 1}}}))
    s = apply(s, validate_change({"service": {"name": "fcr_n", "capacity_w": 1000, "params": {}}}))
    assert s.services == {"ffr": {"capacity_w": 3000.0, "params": {"a": 1}}, "fcr_n": {"capacity_w": 1000.0, "params": {}}}
    s = apply(s, validate_change({"service": {"name": "ffr", "capacity_w": 0, "params": {}}}))
    assert s.services == {"fcr_n": {"capacity_w": 1000.0, "params": {}}} and s.version == 3
    assert apply(s, {"service": {"name": "fcr_n", "capacity_w": 0.0, "params": {}}}).services is None
    assert validate_change({"service": {"name": "ffr", "capacity_w": 0, "params": {}}})["service"]["capacity_w"] == 0.0
    for bad, says in [({"name": "ffr", "capacity_w": -1, "params": {}}, "must be >= 0"),
                      ({"name": "ffr", "capacity_w": 1}, "expected {"),
                      ({"name": "", "capacity_w": 1, "params": {}}, "service.name")]:
        with pytest.raises(ValueError, match=says):
            validate_change({"service": bad})
