"""The cluster's replicated state (DESIGN §5): what it holds and how a change applies.

Every change goes through the Raft log (consensus.py ``propose``; in a cluster of one, solo.py) and is validated by
``validate_change`` the same way on every node: a change sets values (mode, mode
parameters, the local request and its time, cluster limits, one grid service's contracted
capacity and parameters), so applying it twice is harmless. The checks here are structural only, so that every node, whatever version of the
modes it runs, applies the log alike; a mode's own parameters are checked at the command
edge before anything is proposed (``service.py``), and again by the leader that runs them
(``control/runner.py``: what it cannot run, it does not run: passive, 0 W, logged).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace

class ConsensusError(RuntimeError):
    """A cluster operation failed (no leader, timeout, refused)."""


_CHANGE_KEYS = ("mode", "mode_params", "target_w", "target_wall", "limits", "service")


@dataclass(frozen=True)
class ClusterState:
    mode: str = "passive"
    mode_params: dict = field(default_factory=dict)
    target_w: float = 0.0          # the local request (mode ``local``), + = discharge
    target_wall: float | None = None  # UTC epoch s it was set or refreshed (its heartbeat)
    limits: dict | None = None     # {"charge_w": float, "discharge_w": float} or None
    version: int = 0
    # grid services held: {name: {"capacity_w": W, "params": {...}}}; None: none (a class default, so a
    # state pickled before services existed reads as none)
    services: dict | None = None

    def copy(self) -> "ClusterState":
        return replace(self, mode_params=json.loads(json.dumps(self.mode_params)),
                       limits=dict(self.limits) if self.limits is not None else None,
                       services=json.loads(json.dumps(self.services)) if self.services else None)


def _finite(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: expected a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be finite, got {value}")
    return value


def validate_change(change) -> dict:
    """Check a proposed change; return its normalized copy or raise ValueError naming the field."""
    if not isinstance(change, dict) or not change:
        raise ValueError(f"change: expected a non-empty dict with keys among {', '.join(_CHANGE_KEYS)}")
    unknown = sorted(set(change) - set(_CHANGE_KEYS))
    if unknown:
        raise ValueError(f"change: unknown key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(_CHANGE_KEYS)}")
    out = {}
    if "mode" in change:
        mode = change["mode"]
        if not isinstance(mode, str) or not mode.strip() or len(mode) > 64:
            raise ValueError("mode: expected a non-empty string of at most 64 characters")
        out["mode"] = mode
    if "target_w" in change:
        out["target_w"] = _finite(change["target_w"], "target_w")
    if "target_wall" in change:  # None: no local request
        wall = change["target_wall"]
        out["target_wall"] = None if wall is None else _finite(wall, "target_wall")
    if "limits" in change:
        limits = change["limits"]
        if limits is None:
            out["limits"] = None
        else:
            if not isinstance(limits, dict) or set(limits) != {"charge_w", "discharge_w"}:
                raise ValueError("limits: expected null or {\"charge_w\": W, \"discharge_w\": W}")
            lim = {}
            for k in ("charge_w", "discharge_w"):
                v = _finite(limits[k], f"limits.{k}")
                if v < 0:
                    raise ValueError(f"limits.{k}: must be >= 0 W, got {v}")
                lim[k] = v
            out["limits"] = lim
    if "mode_params" in change:
        out["mode_params"] = _json_dict(change["mode_params"], "mode_params")
    if "service" in change:
        out["service"] = _service(change["service"])
    return out


def _json_dict(params, name: str) -> dict:
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise ValueError(f"{name}: expected a dict with string keys")
    try:
        text = json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: must be JSON data with finite numbers ({e})") from None
    if len(text) > 64 * 1024:
        raise ValueError(f"{name}: larger than 64 KiB")
    return json.loads(text)


def _service(svc) -> dict:
    """{"name", "capacity_w" (0: off), "params"}: one service set (structure only; the service's
    own rules are checked at the command edge)."""
    if not isinstance(svc, dict) or set(svc) != {"name", "capacity_w", "params"}:
        raise ValueError('service: expected {"name": NAME, "capacity_w": W, "params": {...}}')
    name = svc["name"]
    if not isinstance(name, str) or not name.strip() or len(name) > 64:
        raise ValueError("service.name: expected a non-empty string of at most 64 characters")
    capacity = _finite(svc["capacity_w"], "service.capacity_w")
    if capacity < 0:
        raise ValueError(f"service.capacity_w: must be >= 0 W, got {capacity}")
    return {"name": name, "capacity_w": capacity, "params": _json_dict(svc["params"], "service.params")}


def apply(state: ClusterState, change: dict) -> ClusterState:
    """The state after a validated change (one version later); a service with 0 W ends."""
    change = dict(change)
    svc = change.pop("service", None)
    if svc is not None:
        services = dict(state.services or {})
        if svc["capacity_w"] > 0:
            services[svc["name"]] = {"capacity_w": svc["capacity_w"], "params": svc["params"]}
        else:
            services.pop(svc["name"], None)
        change["services"] = services or None
    return replace(state, **change, version=state.version + 1)
