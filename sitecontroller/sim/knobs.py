"""Fault knobs of the simulated devices: one registry that lists, sets and clears them.

A simulated device declares its knobs in a class attribute `KNOBS`, a dict
knob name -> help text (the knob is the device's attribute of that name) or
knob name -> (target, help text), where target is

    "attr.path"       a value: true/false, a number, a text (or none), or a set
                      of rack numbers ("all", "none", "0,1");
    "method()"        an action, done each time it is set; a VALUE is passed as
                      the first argument, "method(kw)" passes it as keyword kw;
    "on()/off()"      a switch: true calls on(), false calls off().

Every field of a dataclass attribute `faults` is a knob too, with its help
taken from the dataclass docstring ("name: text"), unless a KNOBS entry already
targets it. Methods may be coroutines. `clear()` puts every value knob back to
the value it had when the device was registered and turns every switch off.

Knobs added to a device's KNOBS show up in `sitecontroller sim faults` and can
be set with `sitecontroller sim fault DEVICE KNOB [VALUE]`: nothing else to wire.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import re
from dataclasses import dataclass
from typing import Any

TRUE = {"true", "on", "1", "yes"}
FALSE = {"false", "off", "0", "no"}
NONE = {"none", "null", "off", ""}

# Knobs of the plant's physics (sim/plant.py), registered by the simulated site.
BATTERY_KNOBS = {
    "cell_v_fault_v": "volts added to one cell of rack 0: 0.5 makes it ~3.8 V, a cell over-voltage the BMS "
                      "reports as a fault; negative: an under-voltage",
    "temp_fault_c": "degrees C added to every cell temperature (30: over-temperature warning and fault)",
}
GRID_KNOBS = {
    "freq_offset_hz": "added to the grid frequency every meter and inverter measures (a frequency event)",
}
SITE_GRID_KNOBS = {  # a site of several nodes models a grid loss (sim/site_plant.py)
    **GRID_KNOBS,
    "lost": "the grid at the connection point is gone (a blackout): the meter reads 0 W, inverters report "
            "islanded operation and those told to form the grid carry the site; false: the grid is back",
}
INVERTER_PLANT_KNOBS = {
    "tripped": ("plant.inverter.trip()/plant.inverter.reset()",
                "the inverter trips (stops at once, reports GRID_FAULT); false resets it"),
}


class KnobError(ValueError):
    """A knob that does not exist or a value it cannot take; the text names both."""


@dataclass
class Knob:
    device: str
    name: str
    help: str
    kind: str  # "value", "action" or "switch"
    target: str  # attribute path, method path, or "on/off" method paths
    default: Any = None
    keyword: str | None = None  # actions: pass the value as this keyword
    state: bool = False  # switches: on or off

    def describe(self, obj) -> dict:
        if self.kind == "value":
            value = _jsonable(_get(obj, self.target))
            return {"device": self.device, "knob": self.name, "kind": self.kind, "type": _type_name(self.default),
                    "value": value, "default": _jsonable(self.default), "help": self.help}
        if self.kind == "switch":
            return {"device": self.device, "knob": self.name, "kind": self.kind, "type": "true/false",
                    "value": self.state, "default": False, "help": self.help}
        return {"device": self.device, "knob": self.name, "kind": self.kind, "type": "action",
                "value": None, "default": None, "help": self.help}


def _get(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _set(obj, path: str, value) -> None:
    *head, last = path.split(".")
    for part in head:
        obj = getattr(obj, part)
    setattr(obj, last, value)


def _jsonable(v):
    if isinstance(v, (set, frozenset)):
        return sorted(v)
    return v


def _type_name(default) -> str:
    if isinstance(default, bool):
        return "true/false"
    if isinstance(default, int):
        return "whole number"
    if isinstance(default, float):
        return "number"
    if isinstance(default, (set, frozenset)):
        return "racks: all, none or numbers like 0,1"
    if default is None:
        return "text or none"
    return "text"


def _doc_fields(cls) -> dict[str, str]:
    """`name: text` paragraphs of a dataclass docstring (continuation lines indented deeper)."""
    out: dict[str, str] = {}
    current = None
    for line in inspect.cleandoc(cls.__doc__ or "").splitlines():
        m = re.match(r"^(\w+):\s+(.*)$", line)
        if m:
            current = m[1]
            out[current] = m[2].strip()
        elif current and line.startswith(" ") and line.strip():
            out[current] += " " + line.strip()
        else:
            current = None
    return {k: v.rstrip(" ;,.") for k, v in out.items()}


def _coerce(knob: Knob, obj, raw) -> Any:
    """The value `raw` (from the CLI: text or None; from JSON: anything) as the knob's type."""
    default = knob.default
    text = None if raw is None else str(raw).strip().lower()
    where = f"{knob.device} {knob.name}"
    if isinstance(default, bool) or knob.kind == "switch":
        if raw is None or raw is True or text in TRUE:
            return True
        if raw is False or text in FALSE:
            return False
        raise KnobError(f"{where}: found {raw!r}; allowed: true or false (on/off, 1/0)")
    if raw is None and not isinstance(default, (set, frozenset)) and default is not None:
        raise KnobError(f"{where}: a value is needed ({_type_name(default)})")
    if isinstance(default, (int, float)):
        try:
            value = int(text) if isinstance(default, int) else float(text)
        except ValueError:
            raise KnobError(f"{where}: found {raw!r}; allowed: {_type_name(default)}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise KnobError(f"{where}: found {raw!r}; allowed: a finite number")
        if where.endswith("_s") and value < 0:
            raise KnobError(f"{where}: found {raw!r}; allowed: seconds >= 0")
        return value
    if isinstance(default, (set, frozenset)):
        racks = int(getattr(obj, "racks", 1))
        if raw is None or text == "all":
            return set(range(racks))
        if text in NONE:
            return set()
        try:
            chosen = {int(x) for x in text.replace(" ", "").split(",")}
        except ValueError:
            chosen = None
        if not chosen or not all(0 <= r < racks for r in chosen):
            raise KnobError(f"{where}: found {raw!r}; allowed: all, none, or rack numbers 0..{racks - 1} like 0,1")
        return chosen
    if default is None:
        return None if text in NONE else str(raw)
    return str(raw)


def _action_arg(raw):
    if raw is None:
        return None
    for conv in (int, float):
        try:
            return conv(raw)
        except (TypeError, ValueError):
            pass
    return raw


async def _call(fn, *args, **kw):
    result = fn(*args, **kw)
    if inspect.isawaitable(result):
        result = await result
    return result


class KnobRegistry:
    """Every knob of every registered device, by device name and knob name."""

    def __init__(self) -> None:
        self._devices: dict[str, tuple[object, dict[str, Knob]]] = {}

    def add(self, device: str, obj, knobs: dict | None = None, extra: dict | None = None) -> None:
        """Register `obj` as `device` with `knobs` (default: its class's KNOBS) plus `extra`."""
        specs = dict(getattr(type(obj), "KNOBS", {}) if knobs is None else knobs)
        specs.update(extra or {})
        table: dict[str, Knob] = {}
        for name, spec in specs.items():
            target, help_text = (name, spec) if isinstance(spec, str) else spec
            try:
                table[name] = self._knob(device, obj, name, target, help_text)
            except AttributeError as exc:
                raise AttributeError(f"{type(obj).__name__}.KNOBS[{name!r}]: target {target!r}: {exc}") from None
        faults = getattr(obj, "faults", None)
        if dataclasses.is_dataclass(faults) and not isinstance(faults, type):
            targeted = {k.target for k in table.values()}
            helps = _doc_fields(type(faults))
            for f in dataclasses.fields(faults):
                path = f"faults.{f.name}"
                if path not in targeted and f.name not in table:
                    table[f.name] = self._knob(device, obj, f.name, path, helps.get(f.name, f"see {type(faults).__name__}"))
        self._devices[device] = (obj, table)

    @staticmethod
    def _knob(device: str, obj, name: str, target: str, help_text: str) -> Knob:
        if "/" in target:
            on, off = (t.strip().removesuffix("()") for t in target.split("/", 1))
            _get(obj, on), _get(obj, off)  # fail now if a method is missing
            return Knob(device, name, help_text, "switch", f"{on}/{off}")
        m = re.fullmatch(r"([\w.]+)\((\w*)\)", target)
        if m:
            _get(obj, m[1])
            return Knob(device, name, help_text, "action", m[1], keyword=m[2] or None)
        return Knob(device, name, help_text, "value", target, default=copy.deepcopy(_get(obj, target)))

    # --- queries -----------------------------------------------------------------------------
    @property
    def devices(self) -> list[str]:
        return list(self._devices)

    def describe(self) -> list[dict]:
        return [k.describe(obj) for obj, table in self._devices.values() for k in table.values()]

    def _find(self, device: str, name: str) -> tuple[object, Knob]:
        if device not in self._devices:
            raise KnobError(f"no simulated device {device!r}; devices: {', '.join(self._devices) or 'none'}")
        obj, table = self._devices[device]
        if name not in table:
            raise KnobError(f"{device} has no knob {name!r}; its knobs: {', '.join(table)}")
        return obj, table[name]

    # --- changes -----------------------------------------------------------------------------
    async def set(self, device: str, name: str, raw=None) -> dict:
        """Set one knob (an action: do it once); returns its description afterwards."""
        obj, knob = self._find(device, name)
        if knob.kind == "action":
            fn = _get(obj, knob.target)
            arg = _action_arg(raw)
            if arg is None:
                await _call(fn)
            elif knob.keyword:
                await _call(fn, **{knob.keyword: arg})
            else:
                await _call(fn, arg)
        elif knob.kind == "switch":
            on = _coerce(knob, obj, raw)
            on_path, off_path = knob.target.split("/")
            await _call(_get(obj, on_path if on else off_path))
            knob.state = on
        else:
            _set(obj, knob.target, _coerce(knob, obj, raw))
        return knob.describe(obj)

    async def clear(self) -> list[str]:
        """Every value knob back to its registered value, every switch off; returns what changed."""
        changed = []
        for device, (obj, table) in self._devices.items():
            for knob in table.values():
                if knob.kind == "switch" and knob.state:
                    await _call(_get(obj, knob.target.split("/")[1]))
                    knob.state = False
                    changed.append(f"{device} {knob.name}")
                elif knob.kind == "value" and _get(obj, knob.target) != knob.default:
                    _set(obj, knob.target, copy.deepcopy(knob.default))
                    changed.append(f"{device} {knob.name}")
        return changed
