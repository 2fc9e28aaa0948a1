"""charge_only: one row per cycle (params, nodes, wall -> target, note, node limits); validation; never discharge."""
import math
import random
from datetime import datetime, timedelta

import pytest
from pydantic import ValidationError

from mastercontroller.control import charge_only
from mastercontroller.control.base import ClusterImage
from mastercontroller.dispatch import NodeView


def node(node_id, soc, charge_w=5000.0, discharge_w=5000.0, usable_wh=10_000.0, online=True, state="run"):
    return NodeView(node_id, online, state, soc, usable_wh, charge_w, discharge_w)


def wall(iso):
    return datetime.fromisoformat(iso).timestamp()


def image(nodes, at="2024-06-15T12:00:00+00:00"):
    return ClusterImage(t=100.0, wall=wall(at), dt_s=1.0, nodes=tuple(nodes))


def run(params, nodes, at="2024-06-15T12:00:00+00:00"):
    p = charge_only.Params.model_validate(params)
    img = image(nodes, at)
    return charge_only.step(img, p, charge_only.start(img, p))


TWO = [node("a", 0.5), node("b", 0.5)]
NIGHT = {"windows": [{"start": "22:00", "end": "06:00"}]}
STHLM = {"windows": [{"start": "22:00", "end": "06:00"}], "tz": "Europe/Stockholm"}

# params, nodes, wall (ISO) -> target_w, note fragment
ROWS = [
    pytest.param({}, TWO, "2024-06-15T12:00:00+00:00", -10_000.0, "charging to 90 %", id="default-always"),
    pytest.param({"max_charge_w": 3000}, TWO, "2024-06-15T12:00:00+00:00", -3000.0, "charging", id="max-charge"),
    pytest.param({"max_charge_w": 30_000}, TWO, "2024-06-15T12:00:00+00:00", -10_000.0, "charging", id="max-above-caps"),
    pytest.param({"target_soc": 0.8}, TWO, "2024-06-15T12:00:00+00:00", -10_000.0, "charging to 80 %", id="target-80"),
    pytest.param({}, [node("a", 0.89), node("b", 0.89)], "2024-06-15T12:00:00+00:00", -5000.0, "tapering", id="taper-half"),
    pytest.param({}, [node("a", 0.88), node("b", 0.88)], "2024-06-15T12:00:00+00:00", -10_000.0, "charging", id="taper-start"),
    pytest.param({}, [node("a", 0.9), node("b", 0.9)], "2024-06-15T12:00:00+00:00", 0.0, "at target SOC", id="soc-at-target"),
    pytest.param({}, [node("a", 0.97), node("b", 1.0)], "2024-06-15T12:00:00+00:00", 0.0, "at target SOC", id="soc-above"),
    pytest.param({"target_soc": 0.0}, [node("a", 0.0)], "2024-06-15T12:00:00+00:00", 0.0, "at target SOC", id="target-0"),
    # a full node gets no charge: only the other one's cap counts
    pytest.param({}, [node("a", 0.95), node("b", 0.5)], "2024-06-15T12:00:00+00:00", -5000.0, "charging", id="one-full"),
    pytest.param({}, [node("a", 0.5, charge_w=0.0), node("b", 0.5, charge_w=0.0)], "2024-06-15T12:00:00+00:00",
                 0.0, "0 W", id="caps-zero"),
    pytest.param({}, [node("a", 0.5, charge_w=-10.0)], "2024-06-15T12:00:00+00:00", 0.0, "0 W", id="cap-negative"),
    pytest.param({}, [], "2024-06-15T12:00:00+00:00", 0.0, "no running nodes", id="no-nodes"),
    pytest.param({}, [node("a", 0.5, online=False), node("b", 0.5, state="sleep")], "2024-06-15T12:00:00+00:00",
                 0.0, "no running nodes", id="none-running"),
    pytest.param({}, [node("a", 0.5), node("b", math.nan)], "2024-06-15T12:00:00+00:00", -5000.0, "charging", id="nan-node"),
    # a window wrapping midnight, UTC
    pytest.param(NIGHT, TWO, "2024-06-15T21:59:59+00:00", 0.0, "outside the charge windows", id="wrap-before"),
    pytest.param(NIGHT, TWO, "2024-06-15T22:00:00+00:00", -10_000.0, "charging", id="wrap-start"),
    pytest.param(NIGHT, TWO, "2024-06-15T23:59:59+00:00", -10_000.0, "charging", id="wrap-late"),
    pytest.param(NIGHT, TWO, "2024-06-16T00:00:00+00:00", -10_000.0, "charging", id="wrap-midnight"),
    pytest.param(NIGHT, TWO, "2024-06-16T05:59:59+00:00", -10_000.0, "charging", id="wrap-last-second"),
    pytest.param(NIGHT, TWO, "2024-06-16T06:00:00+00:00", 0.0, "outside", id="wrap-end-exclusive"),
    pytest.param(NIGHT, TWO, "2024-06-16T12:00:00+00:00", 0.0, "outside", id="wrap-noon"),
    pytest.param({**NIGHT, "target_soc": 0.5}, TWO, "2024-06-15T23:00:00+00:00", 0.0, "at target", id="wrap-at-target"),
    pytest.param({"windows": [{"start": "01:00", "end": "03:00"}, {"start": "13:00", "end": "15:00"}]}, TWO,
                 "2024-06-15T14:00:00+00:00", -10_000.0, "charging", id="two-windows-in"),
    pytest.param({"windows": [{"start": "01:00", "end": "03:00"}, {"start": "13:00", "end": "15:00"}]}, TWO,
                 "2024-06-15T10:00:00+00:00", 0.0, "outside", id="two-windows-out"),
    # Europe/Stockholm: summer UTC+2, winter UTC+1
    pytest.param(STHLM, TWO, "2024-06-15T20:30:00+00:00", -10_000.0, "charging", id="sthlm-summer-22:30"),
    pytest.param(STHLM, TWO, "2024-06-15T19:30:00+00:00", 0.0, "outside", id="sthlm-summer-21:30"),
    pytest.param(STHLM, TWO, "2024-06-16T03:59:00+00:00", -10_000.0, "charging", id="sthlm-summer-05:59"),
    pytest.param(STHLM, TWO, "2024-06-16T04:00:00+00:00", 0.0, "outside", id="sthlm-summer-06:00"),
    pytest.param(STHLM, TWO, "2024-01-15T21:30:00+00:00", -10_000.0, "charging", id="sthlm-winter-22:30"),
    pytest.param(STHLM, TWO, "2024-01-15T20:30:00+00:00", 0.0, "outside", id="sthlm-winter-21:30"),
    pytest.param(STHLM, TWO, "2024-01-16T04:30:00+00:00", -10_000.0, "charging", id="sthlm-winter-05:30"),
    pytest.param(STHLM, TWO, "2024-01-16T05:00:00+00:00", 0.0, "outside", id="sthlm-winter-06:00"),
]


@pytest.mark.parametrize("params,nodes,at,target,note", ROWS)
def test_step(params, nodes, at, target, note):
    r = charge_only.step(image(nodes, at), charge_only.Params.model_validate(params), None)
    assert r.target_w == pytest.approx(target)
    assert note in r.note
    assert r.memory is None
    running = image(nodes, at).running()
    assert set(r.node_limits) == {n.node_id for n in running}
    for n in running:
        charge, discharge = r.node_limits[n.node_id]
        assert discharge == 0.0
        assert charge == (max(0.0, n.charge_w) if n.soc < charge_only.Params.model_validate(params).target_soc else 0.0)


def test_node_limits_per_node():
    r = run({}, [node("a", 0.95), node("b", 0.5, charge_w=3000.0), node("c", 0.5, online=False)])
    assert dict(r.node_limits) == {"a": (0.0, 0.0), "b": (3000.0, 0.0)}


def test_non_finite_wall_is_outside():
    p = charge_only.Params.model_validate(NIGHT)
    r = charge_only.step(ClusterImage(t=0.0, wall=math.nan, dt_s=1.0, nodes=tuple(TWO)), p, None)
    assert r.target_w == 0.0 and "wall clock" in r.note


def _active_minutes(params, day):
    p = charge_only.Params.model_validate(params)
    t0 = datetime.fromisoformat(day)
    return [m for m in range(24 * 60)
            if charge_only.step(image(TWO, (t0 + timedelta(minutes=m)).isoformat()), p, None).target_w < 0]


def test_dst_spring_forward_skips_the_missing_hour():
    # 2024-03-31 Stockholm: 02:00 CET jumps to 03:00 CEST; a 02:00-03:00 window never opens
    assert _active_minutes({"windows": [{"start": "02:00", "end": "03:00"}], "tz": "Europe/Stockholm"},
                           "2024-03-30T23:00:00+00:00") == []


def test_dst_fall_back_repeats_the_hour():
    # 2024-10-27 Stockholm: 02:00-03:00 local happens twice (00:00-01:00Z CEST, 01:00-02:00Z CET)
    active = _active_minutes({"windows": [{"start": "02:00", "end": "03:00"}], "tz": "Europe/Stockholm"},
                             "2024-10-27T00:00:00+00:00")
    assert active == list(range(0, 120))


def test_dump_round_trip():
    p = charge_only.Params.model_validate({**STHLM, "max_charge_w": 4000, "target_soc": 0.85})
    data = p.model_dump(mode="json")
    assert data == {"target_soc": 0.85, "max_charge_w": 4000.0, "tz": "Europe/Stockholm",
                    "windows": [{"start": "22:00", "end": "06:00"}]}
    assert charge_only.Params.model_validate(data) == p


# raw params -> fragments the error must contain (field location and range / reason)
BAD = [
    pytest.param({"target_soc": 1.5}, ["target_soc", "less than or equal to 1"], id="soc-high"),
    pytest.param({"target_soc": -0.1}, ["target_soc", "greater than or equal to 0"], id="soc-low"),
    pytest.param({"target_soc": math.nan}, ["target_soc", "finite"], id="soc-nan"),
    pytest.param({"max_charge_w": 0}, ["max_charge_w", "greater than 0"], id="max-zero"),
    pytest.param({"max_charge_w": 2e7}, ["max_charge_w", "less than or equal to 10000000"], id="max-high"),
    pytest.param({"windows": [{"start": "25:00", "end": "06:00"}]}, ["windows.0.start", "00:00 to 23:59"], id="hour-25"),
    pytest.param({"windows": [{"start": "7:00", "end": "08:00"}]}, ["windows.0.start", "HH:MM"], id="one-digit"),
    pytest.param({"windows": [{"start": "07:00", "end": "08:60"}]}, ["windows.0.end", "HH:MM"], id="minute-60"),
    pytest.param({"windows": [{"start": "07:00", "end": "07:00"}]}, ["windows.0", "must differ"], id="empty-window"),
    pytest.param({"windows": [{"start": "07:00"}]}, ["windows.0.end", "required"], id="missing-end"),
    pytest.param({"windows": [{"start": "07:00", "end": "08:00", "days": "mon"}]}, ["windows.0.days", "Extra"],
                 id="window-extra"),
    pytest.param({"windows": [{"start": "00:00", "end": "00:30"}] * 49}, ["windows", "at most 48"], id="too-many"),
    pytest.param({"tz": "Mars/Olympus"}, ["tz", "unknown time zone 'Mars/Olympus'"], id="tz-unknown"),
    pytest.param({"tz": "../etc/passwd"}, ["tz", "unknown time zone"], id="tz-path"),
    pytest.param({"tz": ""}, ["tz", "at least 1"], id="tz-empty"),
    pytest.param({"target": 0.9}, ["target", "Extra inputs are not permitted"], id="unknown-key"),
]


@pytest.mark.parametrize("raw,fragments", BAD)
def test_rejected(raw, fragments):
    with pytest.raises(ValidationError) as exc:
        charge_only.Params.model_validate(raw)
    for fragment in fragments:
        assert fragment in str(exc.value)


def test_never_discharges_on_random_images():
    rng = random.Random(20240615)
    zones = ["UTC", "Europe/Stockholm", "America/New_York", "Asia/Kolkata"]
    for _ in range(400):
        windows = [{"start": f"{rng.randrange(24):02d}:{rng.randrange(60):02d}",
                    "end": f"{rng.randrange(24):02d}:{rng.randrange(60):02d}"} for _ in range(rng.randrange(3))]
        windows = [w for w in windows if w["start"] != w["end"]]
        params = charge_only.Params.model_validate({
            "target_soc": rng.random(), "windows": windows, "tz": rng.choice(zones),
            "max_charge_w": rng.choice([None, rng.uniform(1.0, 50_000.0)])})
        nodes = [NodeView(f"n{i}", rng.random() < 0.9, rng.choice(["run", "run", "run", "sleep", "error"]),
                          rng.choice([rng.random(), rng.random(), 0.0, 1.0, math.nan]),
                          rng.uniform(1.0, 20_000.0), rng.choice([rng.uniform(0.0, 10_000.0), 0.0, -5.0]),
                          rng.uniform(0.0, 10_000.0), rng.uniform(-10_000.0, 10_000.0))
                 for i in range(rng.randrange(6))]
        img = ClusterImage(t=rng.uniform(0, 1e6), wall=rng.uniform(1.5e9, 2.0e9), dt_s=1.0, nodes=tuple(nodes))
        r = charge_only.step(img, params, charge_only.start(img, params))
        assert math.isfinite(r.target_w) and r.target_w <= 0.0
        assert r.target_w >= -img.charge_cap_w - 1e-6
        if params.max_charge_w is not None:
            assert r.target_w >= -params.max_charge_w - 1e-6
        for charge, discharge in r.node_limits.values():
            assert discharge == 0.0 and charge >= 0.0
