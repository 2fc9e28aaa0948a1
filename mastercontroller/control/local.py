"""``local``: follow the cluster's local request (CLI/SCADA) while it is refreshed; else ``fallback_w``.

The request is ``image.request_w`` (+ = discharge) with ``image.request_wall``, the UTC epoch
seconds of its last set or refresh. While ``image.wall - request_wall <= heartbeat_s`` the
target is ``request_w``; a missing, non-finite or expired request gives ``fallback_w``, and so
does a request stamped more than ``heartbeat_s`` in the future (clock trouble).
"""
from __future__ import annotations

import math

from pydantic import Field

from .base import MAX_W, ClusterImage, ModeParams, ModeResult

NAME = "local"



class Params(ModeParams):
    heartbeat_s: float = Field(60.0, ge=1.0, le=3600.0)   # a request older than this is absent
    fallback_w: float = Field(0.0, ge=-MAX_W, le=MAX_W)   # the target without a fresh request


def start(image: ClusterImage, params: Params) -> None:
    return None


def _fallback(params: Params, why: str) -> ModeResult:
    return ModeResult(params.fallback_w, None,
                      f"no local request within heartbeat_s: fallback {params.fallback_w:.0f} W ({why})")


def step(image: ClusterImage, params: Params, memory: None) -> ModeResult:
    request, stamped = image.request_w, image.request_wall
    if request is None or stamped is None:
        return _fallback(params, "none set")
    if not (math.isfinite(request) and math.isfinite(stamped) and math.isfinite(image.wall)):
        return _fallback(params, "request or clock not a finite number")
    age = image.wall - stamped
    if age < -params.heartbeat_s:
        return _fallback(params, f"request stamped {-age:.0f} s in the future, "
                                 f"more than heartbeat_s {params.heartbeat_s:g} s: clock trouble, ignored")
    if age > params.heartbeat_s:
        return _fallback(params, f"last refreshed {age:.0f} s ago, heartbeat_s {params.heartbeat_s:g} s")
    when = f"refreshed {age:.0f} s ago" if age >= 0 else f"stamped {-age:.0f} s ahead of this clock"
    return ModeResult(request, None, f"local request {request:.0f} W ({when})")
