"""Cluster power split: one pure function, called by the Raft leader every cycle.

``dispatch(target_w, nodes, params, prev)`` turns the cluster target into one setpoint per
node. Signs as everywhere (DESIGN §2): positive = discharge, negative = charge, watts.
No I/O, no clock: the only memory is ``prev``, the previous cycle's result.

1. **Eligibility.** A node may receive power only if it is online, in state ``"run"``, and
   every number it reports is finite (soc, usable_wh > 0, limits, p_w). Everything else
   gets exactly 0 and a reason ("offline", "state error", "non-finite soc", ...). A
   non-finite target gives every node 0 ("non-finite target"); target 0 gives all 0.
   Limits below 0 are read as 0 (safety narrows); a finite SOC outside 0..1 is clamped.

2. **One direction.** All setpoints have the sign of the target (no node charges another).
   Each eligible node's cap is its ``discharge_w`` (target > 0) or ``charge_w`` (< 0).
   If the caps of the running nodes cannot cover |target|, every running node gets its cap
   and the remainder is reported as ``unplaced_w = target_w - placed_w``.

3. **SOC balancing by water-filling.** Let ``x`` be what a node has to give in this
   direction: its SOC when discharging, its empty room ``1 - SOC`` when charging. Each
   node's share is ``clip(usable_wh * (x - L) / H, 0, cap)`` with ``H`` the balancing
   horizon (``balance_horizon_s``) and one common level ``L`` chosen so that the shares
   add up to |target| exactly. Uncapped, this is "bring every node to one common SOC
   within H": a node's share is its capacity-proportional share of the target plus
   ``usable_wh * (x - x_mean) / H``, so fuller nodes discharge more, emptier ones charge
   more, and a node whose ``x`` is below the level gets nothing (reason "soc balancing").
   The shares are a piecewise-linear, continuous function of target, SOCs and limits (L
   is found exactly on the breakpoints), so setpoints never jump from cycle to cycle.
   A large ``H`` tends to a plain split by capacity, a small one to "fullest node first".

4. **Consolidation (sleep).** Below an efficient load per running node
   (``min_efficient_w``) fewer nodes run. With k nodes awake: one more sleeps while
   |target| < k * min_efficient_w; one wakes while |target| > (k + 1) * min_efficient_w
   * (1 + wake_hysteresis). The lowest-priority nodes sleep (priority: has a cap, then
   the largest ``x``); a node is put to sleep only if the awake caps still cover
   |target| * sleep_headroom. Between two consolidation changes at least
   ``min_dwell_cycles`` cycles pass (counted in ``Dispatch.sleep_hold_cycles``); when the
   count does not change, a sleeping node whose ``x`` beats the worst awake node by
   ``swap_margin`` swaps in (so balancing continues after the direction turns). A wake
   needed to keep a feasible target feasible happens at once, dwell or not. At target 0
   or a non-finite target the sleeping set is kept as it was (a non-finite target reports
   placed_w = unplaced_w = 0: no NaN leaves this function except target_w as given).

Results do not depend on the order of ``nodes`` (nodes are processed sorted by id, ties
broken by id). A node id given twice is ineligible ("duplicate node_id").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

RUN_STATE = "run"

REASON_NONFINITE_TARGET = "non-finite target"
REASON_OFFLINE = "offline"
REASON_SLEEPING = "sleeping"
REASON_BALANCING = "soc balancing"
REASON_DUPLICATE = "duplicate node_id"
REASON_AT_CHARGE_LIMIT = "at charge limit"
REASON_AT_DISCHARGE_LIMIT = "at discharge limit"


@dataclass(frozen=True, slots=True)
class NodeView:
    node_id: str
    online: bool          # status fresh
    state: str            # only "run" may receive power
    soc: float            # 0..1
    usable_wh: float      # capacity x SOH, > 0
    charge_w: float       # >= 0: the node's charge limit right now
    discharge_w: float    # >= 0: the node's discharge limit right now
    p_w: float = 0.0      # its actual power (reporting only)
    q_max_var: float = 0.0  # reactive power it can give now, either sign (0: its inverter cannot be told)


@dataclass(frozen=True, slots=True)
class DispatchParams:
    # SOC balancing: the horizon over which SOC differences would be evened out (smaller = stronger)
    balance_horizon_s: float = 7200.0
    # consolidation
    sleep_enabled: bool = True
    min_efficient_w: float = 1000.0   # a running node should carry at least this much
    wake_hysteresis: float = 0.2      # wake one more only when each would carry > min_efficient_w * 1.2
    sleep_headroom: float = 1.5       # sleep a node only if the awake caps cover |target| * 1.5
    min_dwell_cycles: int = 50        # cycles between two consolidation changes (5 s at 100 ms)
    swap_margin: float = 0.015        # SOC advantage for a sleeping node to swap in for an awake one

    def __post_init__(self) -> None:
        checks = (
            ("balance_horizon_s", self.balance_horizon_s, 0.0, False),
            ("min_efficient_w", self.min_efficient_w, 0.0, True),
            ("wake_hysteresis", self.wake_hysteresis, 0.0, True),
            ("sleep_headroom", self.sleep_headroom, 1.0, True),
            ("min_dwell_cycles", self.min_dwell_cycles, 0, True),
            ("swap_margin", self.swap_margin, 0.0, True),
        )
        for name, value, low, inclusive in checks:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < low or (value == low and not inclusive):
                bound = f">= {low}" if inclusive else f"> {low}"
                raise ValueError(f"DispatchParams.{name} must be a finite number {bound}, got {value!r}")


@dataclass(frozen=True, slots=True)
class Dispatch:
    target_w: float
    setpoints: dict[str, float]   # every node of the input, 0.0 for those that get nothing
    placed_w: float               # sum of setpoints
    unplaced_w: float             # target - placed (0 when feasible)
    sleeping: frozenset[str]      # nodes parked by consolidation (not errors)
    reasons: dict[str, str]       # why a node got nothing / was capped
    sleep_hold_cycles: int = 0    # cycles since the sleeping set last changed (consolidation dwell)


@dataclass(slots=True)
class _Eligible:
    node_id: str
    x: float      # what the node has to give in the target's direction: soc or 1 - soc
    w: float      # W per unit of x above the level (usable_wh / horizon)
    cap: float    # its limit in the target's direction, W >= 0


_HOLD_MAX = 1_000_000_000


def dispatch(target_w: float, nodes: Sequence[NodeView], params: DispatchParams = DispatchParams(),
             prev: Dispatch | None = None) -> Dispatch:
    ordered = sorted(nodes, key=lambda n: str(n.node_id))
    ids = [n.node_id for n in ordered]
    setpoints = {i: 0.0 for i in ids}
    reasons: dict[str, str] = {}
    prev_sleeping = prev.sleeping if prev is not None else frozenset()
    hold = min(prev.sleep_hold_cycles + 1, _HOLD_MAX) if prev is not None else params.min_dwell_cycles

    target = _as_float(target_w)
    if target is None or not math.isfinite(target):
        kept = frozenset(i for i in prev_sleeping if i in setpoints)
        for i in ids:
            reasons[i] = REASON_NONFINITE_TARGET
        return Dispatch(target_w=target_w, setpoints=setpoints, placed_w=0.0, unplaced_w=0.0,
                        sleeping=kept, reasons=reasons, sleep_hold_cycles=hold)

    discharging = target > 0
    amount = abs(target)
    eligible: list[_Eligible] = []
    counts: dict[str, int] = {}
    for n in ordered:
        counts[n.node_id] = counts.get(n.node_id, 0) + 1
    for n in ordered:
        if counts[n.node_id] > 1:
            reasons[n.node_id] = REASON_DUPLICATE
            continue
        why, soc, usable, charge, discharge = _check(n)
        if why is not None:
            reasons[n.node_id] = why
            continue
        x = soc if discharging else 1.0 - soc
        cap = discharge if discharging else charge
        eligible.append(_Eligible(n.node_id, x, usable * 3600.0 / params.balance_horizon_s, cap))

    if target == 0.0:
        sleeping = frozenset(e.node_id for e in eligible if e.node_id in prev_sleeping)
    else:
        sleeping, changed = _consolidate(amount, eligible, prev_sleeping, prev is None or
                                         hold >= params.min_dwell_cycles, params)
        if changed:
            hold = 0

    awake = [e for e in eligible if e.node_id not in sleeping]
    for e in eligible:
        if e.node_id in sleeping:
            reasons[e.node_id] = REASON_SLEEPING

    if amount > 0.0:
        shares = _fill(amount, [e for e in awake if e.cap > 0.0])
        limit_reason = REASON_AT_DISCHARGE_LIMIT if discharging else REASON_AT_CHARGE_LIMIT
        for e in awake:
            a = shares.get(e.node_id, 0.0)
            if a > 0.0:
                setpoints[e.node_id] = a if discharging else -a
            if a >= e.cap:
                reasons[e.node_id] = limit_reason
            elif a <= 0.0:
                reasons[e.node_id] = REASON_BALANCING

    placed = math.fsum(setpoints[i] for i in ids)
    return Dispatch(target_w=target_w, setpoints=setpoints, placed_w=placed, unplaced_w=target - placed,
                    sleeping=sleeping, reasons=reasons, sleep_hold_cycles=hold)


def _as_float(v: object) -> float | None:
    if isinstance(v, bool):
        return None
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _check(n: NodeView) -> tuple[str | None, float, float, float, float]:
    """(reason it may not run or None, soc, usable_wh, charge cap, discharge cap)."""
    if n.online is not True:
        return REASON_OFFLINE, 0.0, 0.0, 0.0, 0.0
    if n.state != RUN_STATE:
        return f"state {n.state}", 0.0, 0.0, 0.0, 0.0
    values = {}
    for name in ("soc", "usable_wh", "charge_w", "discharge_w", "p_w"):
        v = _as_float(getattr(n, name))
        if v is None:
            return f"invalid {name}", 0.0, 0.0, 0.0, 0.0
        if not math.isfinite(v):
            return f"non-finite {name}", 0.0, 0.0, 0.0, 0.0
        values[name] = v
    if values["usable_wh"] <= 0.0:
        return "invalid usable_wh", 0.0, 0.0, 0.0, 0.0
    soc = min(1.0, max(0.0, values["soc"]))
    return None, soc, values["usable_wh"], max(0.0, values["charge_w"]), max(0.0, values["discharge_w"])


def _priority(e: _Eligible) -> tuple[bool, float]:
    return (e.cap > 0.0, e.x)


def _consolidate(amount: float, eligible: list[_Eligible], prev_sleeping: frozenset[str],
                 may_change: bool, params: DispatchParams) -> tuple[frozenset[str], bool]:
    """The sleeping set for this cycle and whether consolidation changed it (restarts the dwell).

    ``eligible`` is sorted by id; sorts below are stable, so ties are broken by id."""
    asleep = {e.node_id for e in eligible if e.node_id in prev_sleeping}
    if not params.sleep_enabled or params.min_efficient_w <= 0.0:
        return frozenset(), bool(asleep)  # waking everyone is never held back
    by_id = {e.node_id: e for e in eligible}
    changed = False

    def awake_cap(excluding: str | None = None) -> float:
        return math.fsum(e.cap for e in eligible if e.node_id not in asleep and e.node_id != excluding)

    if may_change:
        k = len(eligible) - len(asleep)
        want = max(k, 1)
        while want > 1 and amount < want * params.min_efficient_w:
            want -= 1
        while want < len(eligible) and amount > (want + 1) * params.min_efficient_w * (1.0 + params.wake_hysteresis):
            want += 1
        if want < k:
            # sleep the least useful first, only while the rest still covers the target with headroom
            for e in sorted((e for e in eligible if e.node_id not in asleep), key=_priority):
                if k <= want:
                    break
                if awake_cap(excluding=e.node_id) >= amount * params.sleep_headroom:
                    asleep.add(e.node_id)
                    k -= 1
                    changed = True
        elif want > k:
            for e in sorted((by_id[i] for i in asleep), key=_priority, reverse=True)[: want - k]:
                asleep.discard(e.node_id)
                changed = True
        elif asleep:
            best = max((by_id[i] for i in sorted(asleep)), key=_priority)
            worst = min((e for e in eligible if e.node_id not in asleep), key=_priority)
            better = best.cap > 0.0 and (worst.cap <= 0.0 or best.x > worst.x + params.swap_margin)
            if better and awake_cap(excluding=worst.node_id) + best.cap >= amount * params.sleep_headroom:
                asleep.discard(best.node_id)
                asleep.add(worst.node_id)
                changed = True

    # never let sleep make a feasible target infeasible: wake at once, dwell or not
    while asleep and awake_cap() < amount:
        e = max((by_id[i] for i in sorted(asleep)), key=_priority)
        asleep.discard(e.node_id)
        changed = True
    return frozenset(asleep), changed


def _share(e: _Eligible, level: float) -> float:
    return min(e.cap, max(0.0, e.w * (e.x - level)))


def _fill(amount: float, parts: list[_Eligible]) -> dict[str, float]:
    """Shares clip(w * (x - L), 0, cap) adding up to ``amount`` (or every cap, if they cannot)."""
    if not parts or amount <= 0.0:
        return {}
    if amount >= math.fsum(e.cap for e in parts):
        return {e.node_id: e.cap for e in parts}
    # sum(L) is continuous, piecewise linear and non-increasing in L; its breakpoints are where a
    # node starts (L = x) or saturates (L = x - cap / w). Walk down from the highest and interpolate.
    points = sorted({e.x for e in parts} | {e.x - e.cap / e.w for e in parts}, reverse=True)
    hi, s_hi = points[0], 0.0
    level = points[-1]
    for b in points[1:]:
        s_b = math.fsum(_share(e, b) for e in parts)
        if s_b >= amount:
            level = hi + (amount - s_hi) * (b - hi) / (s_b - s_hi)
            break
        hi, s_hi = b, s_b
    shares = {e.node_id: _share(e, level) for e in parts}
    # rounding: put the last few ulps on a running node with the most room (never past a limit)
    running = [e for e in parts if shares[e.node_id] > 0.0] or parts
    for _ in range(4):
        rest = amount - math.fsum(shares.values())
        if rest == 0.0:
            break
        if rest > 0.0:
            e = max(running, key=lambda p: p.cap - shares[p.node_id])
            shares[e.node_id] = min(e.cap, shares[e.node_id] + rest)
        else:
            e = max(parts, key=lambda p: shares[p.node_id])
            shares[e.node_id] = max(0.0, shares[e.node_id] + rest)
    return shares


def dispatch_reactive(target_var: float, nodes: Sequence[NodeView]) -> tuple[dict[str, float], float]:
    """Reactive power over the running nodes in proportion to what each can give now (`q_max_var`,
    the apparent power its inverter has left beside its active power), each within it. Returns
    (setpoints for every node, 0.0 for those that get nothing; the unplaced var)."""
    caps = {}
    for n in nodes:
        cap = _as_float(n.q_max_var)
        ok = n.online is True and n.state == RUN_STATE and cap is not None and math.isfinite(cap)
        caps[n.node_id] = max(0.0, cap) if ok else 0.0
    total = math.fsum(caps.values())
    if not target_var or not math.isfinite(target_var) or total <= 0.0:
        return {n.node_id: 0.0 for n in nodes}, target_var if math.isfinite(target_var) else 0.0
    placed = math.copysign(min(abs(target_var), total), target_var)
    return {node_id: placed * cap / total for node_id, cap in caps.items()}, target_var - placed
