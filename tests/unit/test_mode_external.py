"""external_control: one row per cycle (wall -> target, var, note); validation; lookup against a brute force."""
import json
import math
import random
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from mastercontroller.control import external_control as ext
from mastercontroller.control.base import ClusterImage
from mastercontroller.dispatch import NodeView

NODES = (NodeView("a", True, "run", 0.5, 10_000.0, 5000.0, 5000.0),)


def wall(iso):
    return datetime.fromisoformat(iso).timestamp()


def image(at):
    return ClusterImage(t=5.0, wall=at if isinstance(at, float) else wall(at), dt_s=1.0, nodes=NODES)


# given unsorted; [2] starts where [0] ends (back-to-back); a gap 09:00..10:00; [1] given in +02:00
SCHEDULE = [
    {"start": "2024-06-01T10:00:00Z", "end": "2024-06-01T11:00:00Z", "p_w": 1000.0},
    {"start": "2024-06-01T10:00:00+02:00", "end": "2024-06-01T11:00:00+02:00", "p_w": -2000.0, "q_var": 500.0},
    {"start": "2024-06-01T11:00:00Z", "end": "2024-06-01T12:00:00Z", "p_w": 3000.0, "q_var": -100.0},
]
PARAMS = ext.Params.model_validate({"schedule": SCHEDULE, "fallback_w": 123.0})

# wall -> target_w, target_var, note fragment
ROWS = [
    ("2024-06-01T07:59:59Z", 123.0, 0.0, "no schedule entry: fallback 123 W"),
    ("2024-06-01T08:00:00Z", -2000.0, 500.0, "schedule[1]: -2000 W, 500 var until 2024-06-01T09:00:00Z"),
    ("2024-06-01T08:59:59.900Z", -2000.0, 500.0, "schedule[1]"),
    ("2024-06-01T09:00:00Z", 123.0, 0.0, "no schedule entry"),      # end is exclusive: the gap starts
    ("2024-06-01T09:30:00Z", 123.0, 0.0, "fallback 123 W"),
    ("2024-06-01T10:00:00Z", 1000.0, 0.0, "schedule[0]: 1000 W"),
    ("2024-06-01T10:59:59Z", 1000.0, 0.0, "until 2024-06-01T11:00:00Z"),
    ("2024-06-01T11:00:00Z", 3000.0, -100.0, "schedule[2]"),        # back-to-back: the next entry
    ("2024-06-01T13:59:59+02:00", 3000.0, -100.0, "schedule[2]"),
    ("2024-06-01T12:00:00Z", 123.0, 0.0, "no schedule entry"),
    ("2025-01-01T00:00:00Z", 123.0, 0.0, "no schedule entry"),
]


@pytest.mark.parametrize("at,target,var,note", ROWS)
def test_step(at, target, var, note):
    r = ext.step(image(at), PARAMS, ext.start(image(at), PARAMS))
    assert r.target_w == pytest.approx(target)
    assert r.target_var == pytest.approx(var)
    assert note in r.note
    assert r.memory is None and not r.node_limits


def test_empty_schedule_and_default_fallback():
    r = ext.step(image("2024-06-01T10:00:00Z"), ext.Params(), None)
    assert (r.target_w, r.target_var) == (0.0, 0.0)
    assert r.note == "no schedule entry: fallback 0 W"


def test_non_finite_wall_falls_back():
    assert ext.step(image(math.nan), PARAMS, None).target_w == 123.0


def test_stored_as_utc_and_json_round_trip():
    entry = PARAMS.schedule[1]
    assert entry.start == datetime(2024, 6, 1, 8, tzinfo=timezone.utc)
    assert entry.start.utcoffset() == timedelta(0)
    data = PARAMS.model_dump(mode="json")
    json.dumps(data)
    assert data["schedule"][1] == {"start": "2024-06-01T08:00:00Z", "end": "2024-06-01T09:00:00Z",
                                   "p_w": -2000.0, "q_var": 500.0}
    again = ext.Params.model_validate(json.loads(json.dumps(data)))
    assert again == PARAMS
    assert ext.step(image("2024-06-01T08:30:00Z"), again, None).target_w == -2000.0


def test_datetime_objects_accepted():
    tz = timezone(timedelta(hours=1))
    p = ext.Params(schedule=[{"start": datetime(2024, 1, 1, 12, tzinfo=tz),
                              "end": datetime(2024, 1, 1, 13, tzinfo=tz), "p_w": 50.0}])
    assert ext.step(image("2024-01-01T11:30:00Z"), p, None).target_w == 50.0


def entry(start, end, p_w=0.0, **kw):
    return {"start": start, "end": end, "p_w": p_w, **kw}


# raw params -> fragments the error must contain
BAD = [
    pytest.param({"schedule": [entry("2024-06-01T10:00:00", "2024-06-01T11:00:00Z")]},
                 ["schedule.0.start", "has no timezone"], id="naive-start"),
    pytest.param({"schedule": [entry("2024-06-01T10:00:00Z", "2024-06-01T11:00:00")]},
                 ["schedule.0.end", "has no timezone"], id="naive-end"),
    pytest.param({"schedule": [entry(1717236000, "2024-06-01T11:00:00Z")]},
                 ["schedule.0.start", "ISO 8601", "got int"], id="epoch-number"),
    pytest.param({"schedule": [entry("June 1st", "2024-06-01T11:00:00Z")]},
                 ["schedule.0.start", "datetime"], id="garbage"),
    pytest.param({"schedule": [entry("2024-06-01T11:00:00Z", "2024-06-01T11:00:00Z")]},
                 ["schedule.0", "end (2024-06-01T11:00:00Z) must be after start"], id="empty-entry"),
    pytest.param({"schedule": [entry("2024-06-01T11:00:00Z", "2024-06-01T12:00:00+02:00")]},
                 ["schedule.0", "must be after start"], id="end-before-start-offsets"),
    pytest.param({"schedule": [entry("2024-06-01T10:00:00Z", "2024-06-01T11:00:00Z"),
                               entry("2024-06-01T12:00:00Z", "2024-06-01T13:00:00Z"),
                               entry("2024-06-01T14:00:00Z", "2024-06-01T15:00:00Z"),
                               entry("2024-06-01T10:30:00Z", "2024-06-01T11:30:00Z")]},
                 ["schedule", "schedule[3] overlaps schedule[0] (2024-06-01T10:30:00Z..2024-06-01T11:30:00Z"],
                 id="overlap"),
    pytest.param({"schedule": [entry("2024-06-01T10:00:00Z", "2024-06-01T18:00:00Z"),
                               entry("2024-06-01T12:00:00+02:00", "2024-06-01T13:00:00+02:00")]},
                 ["schedule[1] overlaps schedule[0]"], id="contained-via-offset"),
    pytest.param({"schedule": [entry("2024-06-01T10:00:00Z", "2024-06-01T11:00:00Z")] * 2},
                 ["schedule[1] overlaps schedule[0]"], id="duplicate"),
    pytest.param({"schedule": [entry("2024-06-01T10:00:00Z", "2024-06-01T11:00:00Z", 2e7)]},
                 ["schedule.0.p_w", "less than or equal to 10000000"], id="p-high"),
    pytest.param({"schedule": [entry("2024-06-01T10:00:00Z", "2024-06-01T11:00:00Z", -2e7)]},
                 ["schedule.0.p_w", "greater than or equal to -10000000"], id="p-low"),
    pytest.param({"schedule": [entry("2024-06-01T10:00:00Z", "2024-06-01T11:00:00Z", math.inf)]},
                 ["schedule.0.p_w", "finite"], id="p-inf"),
    pytest.param({"schedule": [entry("2024-06-01T10:00:00Z", "2024-06-01T11:00:00Z", q_var=1e8)]},
                 ["schedule.0.q_var", "less than or equal to 10000000"], id="q-high"),
    pytest.param({"schedule": [{"start": "2024-06-01T10:00:00Z", "end": "2024-06-01T11:00:00Z"}]},
                 ["schedule.0.p_w", "required"], id="p-missing"),
    pytest.param({"schedule": [entry("2024-06-01T10:00:00Z", "2024-06-01T11:00:00Z", power=5)]},
                 ["schedule.0.power", "Extra inputs are not permitted"], id="entry-extra"),
    pytest.param({"fallback_w": 1e8}, ["fallback_w", "less than or equal to 10000000"], id="fallback-high"),
    pytest.param({"fallback": 0}, ["fallback", "Extra inputs are not permitted"], id="unknown-key"),
    pytest.param({"schedule": [entry(f"2024-06-01T00:00:{i % 60:02d}Z", "2024-06-02T00:00:00Z") for i in range(501)]},
                 ["schedule", "at most 500"], id="too-many"),
]


@pytest.mark.parametrize("raw,fragments", BAD)
def test_rejected(raw, fragments):
    with pytest.raises(ValidationError) as exc:
        ext.Params.model_validate(raw)
    for fragment in fragments:
        assert fragment in str(exc.value)


def test_lookup_matches_brute_force():
    rng = random.Random(7)
    t0 = datetime(2024, 6, 1, tzinfo=timezone.utc)
    entries, t = [], t0
    for i in range(500):
        t += timedelta(seconds=rng.choice([0, 0, 60, 900]))      # back-to-back or a gap
        end = t + timedelta(seconds=rng.choice([1, 300, 900, 3600]))
        entries.append(entry(t.isoformat(), end.isoformat(), float(i)))
        t = end
    rng.shuffle(entries)
    p = ext.Params.model_validate({"schedule": entries, "fallback_w": -1.0})
    lo, hi = t0.timestamp() - 100, t.timestamp() + 100
    walls = [rng.uniform(lo, hi) for _ in range(2000)]
    walls += [datetime.fromisoformat(e["start"]).timestamp() for e in entries]
    walls += [datetime.fromisoformat(e["end"]).timestamp() for e in entries]
    for w in walls:
        hits = [i for i, e in enumerate(p.schedule) if e.start.timestamp() <= w < e.end.timestamp()]
        assert len(hits) <= 1
        r = ext.step(image(w), p, None)
        if hits:
            assert r.target_w == p.schedule[hits[0]].p_w and f"schedule[{hits[0]}]" in r.note
        else:
            assert r.target_w == -1.0 and "no schedule entry" in r.note
