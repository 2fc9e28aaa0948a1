"""Site parameters that change while the node runs (the device twin, Setup_Device, `apply_parameters`).

Invariant: **a parameter change takes effect whole, between two cycles, and the effective parameters
are what the status reports.** `node.params` is replaced by one assignment, together with every
object that keeps a copy of a run-time value (the table below says which), on the node's event-loop
thread and never while a cycle runs: a change carried by the `apply_parameters` command is made at
the very start of a cycle, before the process image is frozen, so that cycle and every later one
decide with the new parameters only, and the cycle before decided with the old ones only. The limiter,
the protection checks and the follow check read the new values from that cycle on: a change never
bypasses them, and a narrower limit cuts power at once. `status` shows the run-time values in effect
(`parameters`) and the last change (`parameters_changed`); the change is logged (one INFO line with
every key, old -> new) and, as a command, audited with its old and new values.

Only keys in RUNTIME_KEYS change at run time. Everything else is hardware or wiring (battery,
devices, identity, cycle period, endpoints, cluster members, storage, features, simulation, the cloud
connection): it needs a restart, and `swap` refuses it. A change is validated as a whole document
(`params.parse`: ranges, the order soc_min <= soc_reserve < soc_max, …) against the parameters in
effect, so whatever validates may be applied as a whole; if it does not validate, nothing changes.
Run-time changes are not written to the parameter file: the cloud keeps its desired overlay in its
cache (`cloud/twin.py`), which the next start lays over the file.
"""
from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any

from . import params as site_params
from .commands import DONE, FAILED, REJECTED

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("sitecontroller.node")

# The run-time keys (a section name stands for every key in it), and how each takes effect.
RUNTIME_KEYS: dict[str, str] = {
    "safety": "the limiter, protection and grid-service checks read node.params every cycle; follow_* are set "
              "on the follow monitor (its timers keep running); soc_reserve and soc_max also set the inverter's "
              "device-side SOC stop where its model has one (written with the driver's next command)",
    "staleness": "the image freeze and the start-up grace read node.params every cycle; setpoint_s is the "
                 "default hold of requests from then on (a request held already keeps the hold it was given)",
    "pid": "read by nothing (reserved: the cluster modes carry their own gains)",
    "telemetry": "read by nothing (the cloud's interval is cloud.telemetry_interval_s)",
    "cloud.telemetry_interval_s": "the cloud service's telemetry loop, woken at once (node.live listeners)",
}


def is_runtime(path: tuple[str, ...]) -> bool:
    dotted = ".".join(path)
    return any(dotted == key or dotted.startswith(key + ".") for key in RUNTIME_KEYS)


# --- partial documents (a twin patch, an overlay, a command's parameters) -----------------------
def merge(into: dict, patch: dict) -> dict:
    """A twin patch on a document: null deletes, objects merge, anything else replaces. Returns a copy."""
    out = json.loads(json.dumps(into))
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def leaves(doc: dict, prefix: tuple = ()) -> dict[tuple, Any]:
    """Every leaf of a document by its path (a list or an empty object is a leaf)."""
    out = {}
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            out.update(leaves(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


def get(doc, path):
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def document(values: dict[str, Any]) -> dict:
    """{"safety.soc_max": 0.9} -> {"safety": {"soc_max": 0.9}}."""
    out: dict = {}
    for dotted, value in values.items():
        *parents, last = dotted.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return out


def split(old, new) -> tuple[dict[str, tuple[Any, Any]], list[str]]:
    """What differs between two parameter sets: the run-time keys ({key: (old, new)}) and the keys that
    need a restart (the shortest differing paths, e.g. `simulation` rather than each of its keys). A
    run-time key whose section appears or disappears (the cloud section) goes with that section."""
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    differing = sorted(p for p in leaves(a).keys() | leaves(b).keys() if get(a, p) != get(b, p))
    live, staged = {}, set()
    for path in differing:
        before, after = get(a, path), get(b, path)
        if is_runtime(path) and before is not None and after is not None:
            live[".".join(path)] = (before, after)
        else:
            staged.add(".".join(path))
    shortest = sorted(k for k in staged if not any(k.startswith(other + ".") for other in staged))
    return live, shortest


def runtime_only(parameters: Any) -> dict:
    """The schema check of `apply_parameters`: a non-empty partial document of run-time keys with plain
    values (numbers, true/false). Ranges and orderings are checked against the parameters in effect."""
    if not isinstance(parameters, dict) or not parameters:
        raise ValueError("a non-empty JSON object of run-time site parameters, e.g. {\"safety\": {\"soc_max\": 0.9}}")
    for path, value in leaves(parameters).items():
        where = ".".join(path)
        if not is_runtime(path):
            raise ValueError(f"{where} is not a run-time key (it needs a restart); run-time: {', '.join(RUNTIME_KEYS)}")
        if len(path) < 2 or isinstance(value, (dict, list, str)) or value is None:
            raise ValueError(f"{where}: a number or true/false per key (nothing is deleted or replaced whole here)")
    return parameters


def runtime_view(params) -> dict:
    """The run-time keys of `params`, as a document (what `status` shows in `parameters`)."""
    doc = params.model_dump(mode="json")
    return document({key: get(doc, key.split(".")) for key in RUNTIME_KEYS if get(doc, key.split(".")) is not None})


def _show(changes: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{key} {old} -> {new}" for key, (old, new) in sorted(changes.items()))


class LiveParams:
    """One node's run-time parameter changes: the `apply_parameters` commands of a cycle, the swap,
    what status shows, and listeners (services that keep a run-time value: `fn(old, new)`, called
    after a change is in effect)."""

    def __init__(self, node: "Node"):
        self.node = node
        self.listeners: list = []
        self.in_effect = runtime_view(node.params)
        self.last_change: dict | None = None
        self._thread: int | None = None  # the thread that runs the cycle (the node's event loop)

    # --- in the cycle, before anything reads a parameter -------------------------------------
    def run(self, commands: list) -> list:
        """Carry out the `apply_parameters` commands among `commands` (each gets its final ack); the
        others are returned, in order, for the executor."""
        self._thread = threading.get_ident()
        rest = []
        for cmd in commands:
            if cmd.type != "apply_parameters":
                rest.append(cmd)
                continue
            try:
                status, detail, result = self._apply(cmd)
            except Exception as exc:  # a bug fails the command, not the node; nothing was swapped
                log.exception("command %s failed", cmd.id)
                status, detail, result = FAILED, f"internal error: {exc}: nothing applied", {}
            self.node.commands.finish(cmd, status, detail, **result)
        return rest

    def _apply(self, cmd) -> tuple[str, str, dict]:
        try:
            new = site_params.parse(merge(self.node.params.model_dump(mode="json"), cmd.parameters),
                                    f"apply_parameters {cmd.id}")
        except site_params.ParamsError as exc:
            return REJECTED, "; ".join(exc.problems) + ": nothing applied", {}
        try:
            changes = self.swap(new, cmd.origin or f"command {cmd.id} from {cmd.source}")
        except ValueError as exc:
            return REJECTED, f"{exc}: nothing applied", {}
        result = {"changed": {key: [old, value] for key, (old, value) in changes.items()}}
        if not changes:
            return DONE, "no change: these values are in effect already", result
        return DONE, f"in effect from this cycle: {_show(changes)}", result

    # --- the swap ----------------------------------------------------------------------------
    def swap(self, new, origin: str = "") -> dict[str, tuple[Any, Any]]:
        """Put `new` in effect between two cycles; returns the changed keys (old, new). Raises
        ValueError if `new` differs in a key that needs a restart (nothing changes then), and
        RuntimeError if called while a cycle runs or from another thread than the cycle's."""
        node = self.node
        if node.in_cycle:
            raise RuntimeError("site parameters change between two cycles, not during one")
        if self._thread is not None and threading.get_ident() != self._thread:
            raise RuntimeError("site parameters change on the node's event-loop thread only")
        old = node.params
        changes, staged = split(old, new)
        if staged:
            raise ValueError(f"{', '.join(staged)} cannot change at run time (needs a restart)")
        if not changes:
            return {}
        try:
            self._configure(new)
            node.params = new
        except Exception:
            self._configure(old)
            node.params = old
            raise
        self.in_effect = runtime_view(new)
        self.last_change = {"wall": node.clock.wall(), "origin": origin,
                            "keys": {key: [o, n] for key, (o, n) in changes.items()}}
        log.info("site parameters changed (%s): %s", origin or "no origin given", _show(changes))
        for listener in list(self.listeners):
            try:
                listener(old, new)
            except Exception:  # the change is in effect; a service that cannot follow says so
                log.exception("a service could not take the parameter change")
        return changes

    def _configure(self, params) -> None:
        """Every object that keeps a run-time value at construction (see RUNTIME_KEYS)."""
        node, s = self.node, params.safety
        follow = node.follow
        follow.tolerance_w, follow.tolerance_frac = s.follow_tolerance_w, s.follow_tolerance_frac
        follow.limit_s, follow.lag_s = s.follow_s, s.follow_lag_s
        for inbox in node.sources.inboxes.values():
            inbox.default_valid_s = params.staleness.setpoint_s
        node.devices.inverter.set_soc_window(s.soc_reserve, s.soc_max)
