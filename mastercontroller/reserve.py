"""The leader's allocation of the cluster's frequency reserve over its nodes (DESIGN §2.8).

The contracted capacity of each grid service lives in the replicated state (`cluster service
NAME --capacity-w W`). Every cycle the leader splits each service over the running nodes in
proportion to what each can hold for it: its power headroom in the service's direction
(discharge for "up", charge for "down", both for "both") and the energy that headroom needs
for the service's endurance, between SOC_FLOOR and SOC_CEIL. Services are placed one after
the other (ORDER); what one takes, the next cannot. The headroom placed is kept from the base
dispatch (`held`): the mode and dispatch see each node's caps less its reserve.

Pure: the same image and services give the same allocation. The nodes run the responses
themselves on their own frequency measurement (`sitecontroller/control/services/`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

from sitecontroller.control.services import SERVICES, parse_params

from .dispatch import RUN_STATE, NodeView

SOC_FLOOR, SOC_CEIL = 0.10, 0.95  # the energy a reserve may count on lies between these SOCs
ORDER = ("ffr", "fcr_d_up", "fcr_d_down", "fcr_n", "droop", "aem")


@dataclass(frozen=True)
class Reserve:
    per_node: dict[str, dict[str, float]] = field(default_factory=dict)  # node -> service -> W
    unplaced: dict[str, float] = field(default_factory=dict)  # service -> W that found no node
    held: dict[str, tuple[float, float]] = field(default_factory=dict)  # node -> (charge W, discharge W) held
    params: dict[str, dict] = field(default_factory=dict)  # service -> its parameters (to the nodes)


def allocate(services: dict | None, nodes: Sequence[NodeView]) -> Reserve:
    if not services:
        return Reserve()
    running = [n for n in nodes if n.online is True and n.state == RUN_STATE
               and all(math.isfinite(v) for v in (n.soc, n.usable_wh, n.charge_w, n.discharge_w))]
    room = {n.node_id: [max(0.0, n.charge_w), max(0.0, n.discharge_w)] for n in running}  # [down, up] W
    energy = {n.node_id: [max(0.0, SOC_CEIL - n.soc) * n.usable_wh * 3600.0,  # J it can take, give
                          max(0.0, n.soc - SOC_FLOOR) * n.usable_wh * 3600.0] for n in running}
    per_node: dict[str, dict[str, float]] = {n.node_id: {} for n in nodes}
    unplaced, params = {}, {}
    for name in sorted(services, key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER)):
        svc = SERVICES.get(name)
        try:
            p = parse_params(name, services[name].get("params", {}))
        except ValueError:  # not a service this version runs: nothing placed, the whole capacity unplaced
            unplaced[name] = services[name].get("capacity_w", 0.0)
            continue
        params[name] = p.model_dump(mode="json")
        sides = {"up": (1,), "down": (0,), "both": (0, 1)}[svc.direction]
        endurance = p.endurance_s

        def can(node_id: str) -> float:
            return min(min(room[node_id][s], energy[node_id][s] / endurance if endurance > 0 else math.inf)
                       for s in sides)

        caps = {node_id: max(0.0, can(node_id)) for node_id in room}
        total = math.fsum(caps.values())
        placed = min(services[name]["capacity_w"], total)
        unplaced[name] = services[name]["capacity_w"] - placed
        for node_id, cap in caps.items():
            share = placed * cap / total if total > 0 else 0.0
            if share <= 0:
                continue
            per_node[node_id][name] = share
            for s in sides:
                room[node_id][s] -= share
                energy[node_id][s] -= share * endurance
    held = {}
    for n in running:
        down, up = room[n.node_id]
        held[n.node_id] = (max(0.0, n.charge_w) - down, max(0.0, n.discharge_w) - up)
    return Reserve(per_node, unplaced, held, params)


def without_reserve(nodes: Sequence[NodeView], reserve: Reserve) -> tuple[NodeView, ...]:
    """The nodes as the base dispatch may use them: each one's caps less the headroom it holds."""
    out = []
    for n in nodes:
        charge, discharge = reserve.held.get(n.node_id, (0.0, 0.0))
        if charge or discharge:
            n = replace(n, charge_w=max(0.0, n.charge_w - charge), discharge_w=max(0.0, n.discharge_w - discharge))
        out.append(n)
    return tuple(out)


def refusal(name: str, capacity_w: float, params: dict, services: dict | None, nodes: Sequence[NodeView]) -> str | None:
    """Why the cluster cannot hold `capacity_w` of `name` now, beside the services it holds (None: it can)."""
    others = {k: v for k, v in (services or {}).items() if k != name}
    before = allocate(others, nodes).unplaced
    after = allocate({**others, name: {"capacity_w": capacity_w, "params": params}}, nodes)
    short = {k: v for k, v in after.unplaced.items() if v > before.get(k, 0.0) + 1.0}
    if not short:
        return None
    probe = allocate({**others, name: {"capacity_w": math.inf, "params": params}}, nodes)
    room = math.fsum(per.get(name, 0.0) for per in probe.per_node.values())
    holding = ", ".join(f"{k} {v['capacity_w']:.0f} W" for k, v in others.items())
    besides = f" beside {holding}" if holding else ""
    return (f"capacity_w: {capacity_w:.0f} W of {name} is above what the running nodes can hold now{besides}: "
            f"about {room:.0f} W (power headroom and energy for its endurance)")
