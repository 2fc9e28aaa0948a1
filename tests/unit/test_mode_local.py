"""local: one row per cycle (request, its stamp, wall -> target, note); validation."""
import math

import pytest
from pydantic import ValidationError

from mastercontroller.control import local
from mastercontroller.control.base import ClusterImage
from mastercontroller.dispatch import NodeView

NODES = (NodeView("a", True, "run", 0.5, 10_000.0, 5000.0, 5000.0),)
NOW = 1_717_236_000.0   # 2024-06-01T10:00:00Z


def image(request_w, request_wall, wall=NOW):
    return ClusterImage(t=50.0, wall=wall, dt_s=1.0, nodes=NODES, request_w=request_w, request_wall=request_wall)


# params, request_w, request_wall, wall -> target_w, note fragment
ROWS = [
    pytest.param({}, 2000.0, NOW - 10, NOW, 2000.0, "local request 2000 W (refreshed 10 s ago)", id="fresh"),
    pytest.param({}, -3000.0, NOW, NOW, -3000.0, "local request -3000 W (refreshed 0 s ago)", id="charge-now"),
    pytest.param({}, 0.0, NOW - 5, NOW, 0.0, "local request 0 W", id="zero-request"),
    pytest.param({}, 2000.0, NOW - 60, NOW, 2000.0, "refreshed 60 s ago", id="age-at-heartbeat"),
    pytest.param({}, 2000.0, NOW - 60.001, NOW, 0.0, "no local request within heartbeat_s: fallback 0 W",
                 id="age-just-past"),
    pytest.param({}, 2000.0, NOW - 3600, NOW, 0.0, "last refreshed 3600 s ago", id="long-expired"),
    pytest.param({"fallback_w": -500}, 2000.0, NOW - 61, NOW, -500.0, "fallback -500 W", id="expired-fallback"),
    pytest.param({}, None, None, NOW, 0.0, "no local request within heartbeat_s: fallback 0 W (none set)",
                 id="none"),
    pytest.param({}, 2000.0, None, NOW, 0.0, "none set", id="no-stamp"),
    pytest.param({}, None, NOW, NOW, 0.0, "none set", id="no-value"),
    pytest.param({"fallback_w": 750}, None, None, NOW, 750.0, "fallback 750 W", id="none-fallback"),
    pytest.param({}, math.nan, NOW, NOW, 0.0, "not a finite number", id="nan-request"),
    pytest.param({}, 2000.0, math.inf, NOW, 0.0, "not a finite number", id="inf-stamp"),
    pytest.param({}, 2000.0, NOW + 30, NOW, 2000.0, "stamped 30 s ahead", id="future-within"),
    pytest.param({}, 2000.0, NOW + 60, NOW, 2000.0, "stamped 60 s ahead", id="future-at-heartbeat"),
    pytest.param({}, 2000.0, NOW + 61, NOW, 0.0, "clock trouble", id="future-beyond"),
    pytest.param({"heartbeat_s": 1}, 2000.0, NOW - 1, NOW, 2000.0, "refreshed 1 s ago", id="hb1-at"),
    pytest.param({"heartbeat_s": 1}, 2000.0, NOW - 1.5, NOW, 0.0, "heartbeat_s 1 s", id="hb1-past"),
    pytest.param({"heartbeat_s": 3600}, 2000.0, NOW - 3599, NOW, 2000.0, "local request", id="hb3600"),
]


@pytest.mark.parametrize("params,request_w,request_wall,at,target,note", ROWS)
def test_step(params, request_w, request_wall, at, target, note):
    p = local.Params.model_validate(params)
    img = image(request_w, request_wall, at)
    r = local.step(img, p, local.start(img, p))
    assert r.target_w == pytest.approx(target)
    assert note in r.note
    assert r.memory is None and not r.node_limits


def test_request_expires_cycle_by_cycle():
    """A request set once at NOW and never refreshed: followed for heartbeat_s, then the fallback."""
    p = local.Params(heartbeat_s=5, fallback_w=100.0)
    targets = [local.step(image(-4000.0, NOW, NOW + k), p, None).target_w for k in range(8)]
    assert targets == [-4000.0] * 6 + [100.0] * 2


# raw params -> fragments the error must contain
BAD = [
    pytest.param({"heartbeat_s": 0}, ["heartbeat_s", "greater than or equal to 1"], id="hb-zero"),
    pytest.param({"heartbeat_s": 3601}, ["heartbeat_s", "less than or equal to 3600"], id="hb-high"),
    pytest.param({"heartbeat_s": math.inf}, ["heartbeat_s", "finite"], id="hb-inf"),
    pytest.param({"heartbeat_s": "soon"}, ["heartbeat_s", "valid number"], id="hb-text"),
    pytest.param({"fallback_w": 2e7}, ["fallback_w", "less than or equal to 10000000"], id="fallback-high"),
    pytest.param({"fallback_w": -2e7}, ["fallback_w", "greater than or equal to -10000000"], id="fallback-low"),
    pytest.param({"fallback_w": math.nan}, ["fallback_w", "finite"], id="fallback-nan"),
    pytest.param({"heartbeat": 60}, ["heartbeat", "Extra inputs are not permitted"], id="unknown-key"),
]


@pytest.mark.parametrize("raw,fragments", BAD)
def test_rejected(raw, fragments):
    with pytest.raises(ValidationError) as exc:
        local.Params.model_validate(raw)
    for fragment in fragments:
        assert fragment in str(exc.value)


def test_defaults_and_dump():
    p = local.Params()
    assert p.model_dump(mode="json") == {"heartbeat_s": 60.0, "fallback_w": 0.0}
    assert local.NAME == "local"
