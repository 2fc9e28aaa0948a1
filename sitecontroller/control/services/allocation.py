"""The node's share of the cluster's frequency reserve, and the responses it makes of it.

The leader allocates each node a capacity per service (`mastercontroller/reserve.py`) and sends
it with every dispatch, stamped with its Raft term. The node keeps the newest allocation (a
higher term replaces it; an older one is ignored) for `valid_s` after it last heard it — minutes,
so a leader failover never interrupts a response — and drops it when that runs out (the reserve
is then the new leader's to place). Each allocated service becomes an additive response: its
controller's fraction of the allocated capacity, on the node's own frequency measurement.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from . import SERVICES, frequency_hz, parse_params

log = logging.getLogger("sitecontroller.services")


@dataclass
class ServiceResponse:
    """One allocated service as a `decide` response: capacity x its controller's fraction."""

    name: str
    capacity_w: float
    controller: object
    controller_params: object
    params_key: str
    last_w: float = 0.0

    def term_w(self, image) -> float:
        soc = image.bms.soc if image.bms is not None else None
        self.last_w = self.capacity_w * self.controller.step(image.t, frequency_hz(image), soc)
        return self.last_w


class GridServices:
    def __init__(self):
        self.term: int | None = None
        self.valid_until: float | None = None
        self.heard: float | None = None  # when a leader last sent it
        self.active: dict[str, ServiceResponse] = {}
        self.rejected: dict[str, str] = {}  # service -> why this node cannot run what it was given

    def allocate(self, allocation: dict[str, float], params: dict[str, dict], term: int, now: float,
                 valid_s: float) -> None:
        """The leader's allocation for this node ({service: W}) with every service's parameters."""
        if self.term is not None and term < self.term:
            return
        self.term, self.valid_until, self.heard = term, now + valid_s, now
        keep = {}
        for name, capacity in allocation.items():
            if capacity <= 0 or name not in SERVICES:
                continue
            raw = params.get(name, {})
            key = json.dumps(raw, sort_keys=True)
            current = self.active.get(name)
            if current is not None and current.params_key == key:  # same service: keep its state (an event)
                current.capacity_w = capacity
                keep[name] = current
                continue
            try:
                parsed = parse_params(name, raw)
                controller = SERVICES[name].Controller(parsed)
            except ValueError as exc:  # a leader of another version: say it, run the rest
                if self.rejected.get(name) != str(exc):
                    log.error("grid service %s not run: %s", name, exc)
                self.rejected[name] = str(exc)
                continue
            self.rejected.pop(name, None)
            keep[name] = ServiceResponse(name, capacity, controller, parsed, key)
        for name in set(self.active) - set(keep):
            log.info("grid service %s: no allocation any more", name)
        for name in set(keep) - set(self.active):
            log.info("grid service %s: %.0f W allocated (term %d)", name, keep[name].capacity_w, term)
        self.active = keep

    def responses(self, now: float) -> tuple[ServiceResponse, ...]:
        if self.valid_until is not None and now >= self.valid_until:
            if self.active:
                log.warning("grid services: the allocation of term %s expired (no leader heard): reserve released",
                            self.term)
            self.active, self.valid_until = {}, None
        return tuple(self.active.values())

    def problems(self, now: float, soc: float | None, usable_wh: float, soc_floor: float, soc_ceil: float,
                 stale_after_s: float = 5.0) -> dict[str, str]:
        """The node's warnings about its reserve (error id -> text): an allocation no leader has
        refreshed lately, and services whose endurance the battery's energy cannot cover."""
        out = {}
        if self.active and self.heard is not None and now - self.heard >= stale_after_s:
            out["RESERVE_STALE"] = (f"allocation of term {self.term} last refreshed {now - self.heard:.0f} s ago; "
                                    f"held for {max(0.0, self.valid_until - now):.0f} s more")
        for r in self.active.values():
            if getattr(r.controller, "alert", False):
                out["GRID_ALERT"] = (f"alert state: the {r.controller_params.window_s:.0f} s mean frequency is "
                                     f"{r.controller.average_hz:.3f} Hz (AEM manages the SOC)")
        if soc is not None and self.active:
            need = {"up": 0.0, "down": 0.0}
            for r in self.active.values():
                if r.name == "aem":  # energy management moves energy; it holds no reserve of its own
                    continue
                direction = SERVICES[r.name].direction
                for side in ("up", "down"):
                    if direction in (side, "both"):
                        need[side] += r.capacity_w * r.controller_params.endurance_s / 3600.0
            have = {"up": max(0.0, soc - soc_floor) * usable_wh, "down": max(0.0, soc_ceil - soc) * usable_wh}
            short = [f"{side}: {need[side]:.0f} Wh needed, {have[side]:.0f} Wh available"
                     for side in ("up", "down") if need[side] > have[side] + 1e-6]
            if short:
                out["RESERVE_ENDURANCE"] = "; ".join(short) + " (the leader moves the reserve to nodes that have it)"
        return out

    def status(self, now: float) -> dict:
        return {
            "term": self.term,
            "expires_in_s": None if self.valid_until is None else round(max(0.0, self.valid_until - now), 1),
            "services": {n: {"capacity_w": r.capacity_w, "response_w": round(r.last_w, 1)}
                         for n, r in self.active.items()},
            "rejected": dict(self.rejected),
        }
