"""Load and check a Modbus device profile (a TOML data file, see PROFILES.md).

`load_profile(name, kind)` returns a frozen `Profile`: its points, the SunSpec
layout (if any), the reading map, the control writes and simulator hints.
Every mistake in a file is a `ProfileError` that names the file and field.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from .codec import SUNSPEC_NA, TYPES, CodecError, canonical_type

DRIVERS_DIR = Path(__file__).resolve().parent.parent
TABLES = ("holding", "input")
ACCESS = ("r", "rw", "w")
SOURCES = (
    "p_w", "p_pct", "discharge_w", "charge_w", "discharge_pct", "charge_pct", "discharge_on",
    "charge_on", "window_out_pct", "window_in_pct", "q_var", "q_pct", "run", "stop", "heartbeat",
    "p_enable", "revert_s", "discharge_limit_pct", "charge_limit_pct", "soc_low_pct", "soc_high_pct", "grid_forming",
)
FAILSAFES = ("revert", "heartbeat", "none")
POINT_KEYS = {
    "address", "model", "offset", "table", "type", "length", "word_order", "scale", "sf", "add",
    "sign", "unit", "access", "min", "max", "mask", "shift", "bit", "na", "sum", "states", "bits",
    "description", "sim", "sim_clip", "sim_value",
}


class ProfileError(ValueError):
    """A profile file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Point:
    name: str
    type: str = "uint16"  # canonical type
    count: int = 1  # registers
    table: str = "holding"
    address: int | None = None  # absolute 0-based address (None: SunSpec, resolved later, or derived)
    model: int | None = None
    offset: int | None = None
    word_order: str = "big"
    scale: float = 1.0
    sf: str | None = None
    add: float = 0.0
    sign: int = 1
    unit: str = ""
    access: str = "r"
    min: float | None = None
    max: float | None = None
    mask: int | None = None
    shift: int = 0
    na: frozenset[int] = frozenset()
    sum: tuple[tuple[str, float], ...] = ()
    states: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    bits: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    description: str = ""
    sim: str | None = None
    sim_clip: str | None = None
    sim_value: object = None

    @property
    def signed(self) -> bool:
        return TYPES[self.type][1]

    @property
    def is_enum(self) -> bool:
        return bool(self.states) or bool(self.bits)

    @property
    def derived(self) -> bool:
        return bool(self.sum)

    @property
    def writable(self) -> bool:
        return self.access in ("rw", "w")

    @property
    def end(self) -> int:
        return self.address + self.count


@dataclass(frozen=True)
class ControlWrite:
    point: str
    source: str | None = None
    value: float | None = None


@dataclass(frozen=True)
class Profile:
    name: str
    kind: str
    path: str
    device_name: str = ""
    table: str = "holding"
    word_order: str = "big"
    max_read: int = 100
    max_gap: int = 8
    write_function: int = 16
    points: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    sunspec_bases: tuple[int, ...] = ()
    sunspec_models: tuple[tuple[int, int], ...] = ()  # (id, length) in served order
    reading: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    ref_w: str = "rated"
    keepalive_s: float = 5.0
    writes: tuple[ControlWrite, ...] = ()
    failsafe: str = "none"  # what the device does when the writes stop: FAILSAFES
    failsafe_s: float = 0.0  # after how long (revert: the default written to the timer; heartbeat: fixed)
    sim_faults: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    sim_states: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))

    # --- lookups ---------------------------------------------------------------
    @property
    def is_sunspec(self) -> bool:
        return bool(self.sunspec_bases)

    def point(self, name: str) -> Point:
        try:
            return self.points[name]
        except KeyError:
            raise KeyError(f"profile {self.name!r} has no point {name!r}") from None

    def reading_points(self, key: str) -> tuple[str, ...]:
        """The point names a [reading] key refers to ((), if the key is absent)."""
        v = self.reading.get(key)
        if v is None:
            return ()
        return (v,) if isinstance(v, str) else tuple(v)

    def reading_states(self, key: str) -> frozenset[str]:
        return frozenset(self.reading.get(key, ()))

    def control_points(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(w.point for w in self.writes))

    def dependencies(self, names) -> list[str]:
        """`names` plus everything needed to compute them (scale factors, sum terms), in order."""
        out: dict[str, None] = {}

        def add(n: str) -> None:
            if n in out:
                return
            p = self.point(n)
            for term, _ in p.sum:
                add(term)
            if p.sf:
                add(p.sf)
            out[n] = None

        for n in names:
            add(n)
        return list(out)

    def poll_points(self) -> list[str]:
        """Every point the reading map and the control writes refer to (plus the ref point)."""
        names: list[str] = []
        for key, v in self.reading.items():
            if not key.endswith("_states"):
                names.extend((v,) if isinstance(v, str) else v)
        names.extend(self.control_points())
        if self.ref_w != "rated":
            names.append(self.ref_w)
        return self.dependencies(dict.fromkeys(names))

    def state_name(self, point: str, raw) -> str | None:
        """An enumeration's state name; None if `raw` is None or not listed."""
        if raw is None:
            return None
        return self.point(point).states.get(int(raw))

    def bit_names(self, point: str, raw) -> frozenset[str]:
        """Names of the set bits of a bit field; an unlisted bit is `<point>.bit<N>`."""
        if not raw:
            return frozenset()
        p = self.point(point)
        raw = int(raw)
        return frozenset(p.bits.get(b, f"{point}.bit{b}") for b in range(32) if raw >> b & 1)

    def reading_values(self, values: dict) -> dict:
        """Apply the reading map: {key: value or tuple of values} for every point key."""
        out = {}
        for key, v in self.reading.items():
            if key.endswith("_states"):
                continue
            out[key] = values.get(v) if isinstance(v, str) else tuple(values.get(n) for n in v)
        return out

    def with_addresses(self, addresses: dict[str, int]) -> "Profile":
        """A copy whose SunSpec points have their resolved absolute addresses."""
        pts = {n: (replace(p, address=addresses[n]) if n in addresses else p) for n, p in self.points.items()}
        return replace(self, points=MappingProxyType(pts))


# --- loading -------------------------------------------------------------------
def profile_path(name: str, kind: str) -> Path:
    if name.endswith(".toml") or "/" in name:
        return Path(name)
    return DRIVERS_DIR / kind / "profiles" / f"{name}.toml"


def load_profile(name: str, kind: str = "inverter") -> Profile:
    """Load `<kind>/profiles/<name>.toml` (or a path) and check it; raises ProfileError."""
    path = profile_path(name, kind)
    data = _read(path)
    return _build(path, data, kind)


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path in seen:
        raise ProfileError(f"{path}: 'extends' loops back to itself")
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ProfileError(f"no profile file {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None
    base_name = data.get("device", {}).get("extends")
    if not base_name:
        return data
    kind = data.get("device", {}).get("kind", path.parent.parent.name)
    base = _read(profile_path(base_name, kind), seen + (path,))
    return _merge(base, data)


def _merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`: tables merge, other values replace; `append_KEY = [...]` adds to
    the base's list `KEY` (an extension adds a model or a control write without restating the rest)."""
    out = dict(base)
    for k, v in over.items():
        if k.startswith("append_") and isinstance(v, list):
            out[k[len("append_"):]] = list(out.get(k[len("append_"):], [])) + v
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _need(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ProfileError(f"{where}: {msg}")


def _build(path: Path, data: dict, kind: str) -> Profile:
    where = str(path)
    dev = data.get("device", {})
    unknown = set(data) - {"device", "sunspec", "points", "reading", "control", "sim"}
    _need(not unknown, where, f"unknown section(s) {sorted(unknown)}")
    kind = dev.get("kind", kind)
    _need(kind in ("inverter", "meter"), f"{where} [device].kind", f"{kind!r} is not 'inverter' or 'meter'")
    table = dev.get("table", "holding")
    _need(table in TABLES, f"{where} [device].table", f"{table!r} is not one of {TABLES}")
    word_order = dev.get("word_order", "big")
    _need(word_order in ("big", "little"), f"{where} [device].word_order", "must be 'big' or 'little'")
    na_mode = dev.get("na", "none")
    _need(na_mode in ("none", "sunspec"), f"{where} [device].na", "must be 'none' or 'sunspec'")
    max_read = int(dev.get("max_read", 100))
    _need(1 <= max_read <= 125, f"{where} [device].max_read", "must be 1..125")
    write_function = int(dev.get("write_function", 16))
    _need(write_function in (6, 16), f"{where} [device].write_function", "must be 6 or 16")

    ss = data.get("sunspec")
    bases: tuple[int, ...] = ()
    models: tuple[tuple[int, int], ...] = ()
    if ss is not None:
        bases = tuple(int(b) for b in ss.get("bases", [40000, 0, 50000]))
        models = tuple((int(m["id"]), int(m["length"])) for m in ss.get("models", []))
        _need(bases and models, f"{where} [sunspec]", "needs 'bases' and 'models'")

    points = {}
    for name, spec in data.get("points", {}).items():
        points[name] = _point(f"{where} [points.{name}]", name, spec, table, word_order, na_mode, models)
    for name, p in points.items():
        pw = f"{where} [points.{name}]"
        if p.sf is not None:
            _need(p.sf in points, pw, f"scale factor point {p.sf!r} is not defined")
        for term, _ in p.sum:
            _need(term in points, pw, f"sum term {term!r} is not defined")

    reading = data.get("reading", {})
    for key, v in reading.items():
        names = (v,) if isinstance(v, str) else tuple(v)
        if key.endswith("_states"):
            continue
        for n in names:
            _need(n in points, f"{where} [reading].{key}", f"point {n!r} is not defined")

    ctl = data.get("control", {})
    ref_w = ctl.get("ref_w", "rated")
    _need(ref_w == "rated" or ref_w in points, f"{where} [control].ref_w", f"{ref_w!r} is not 'rated' or a point")
    writes = []
    for i, w in enumerate(ctl.get("write", [])):
        ww = f"{where} [[control.write]] #{i + 1}"
        _need(w.get("point") in points, ww, f"point {w.get('point')!r} is not defined")
        _need(points[w["point"]].writable, ww, f"point {w['point']!r} is not writable (access)")
        _need(("source" in w) != ("value" in w), ww, "needs exactly one of 'source' or 'value'")
        if "source" in w:
            _need(w["source"] in SOURCES, ww, f"source {w['source']!r} is not one of {SOURCES}")
        writes.append(ControlWrite(w["point"], w.get("source"), w.get("value")))
    keepalive_s = float(ctl.get("keepalive_s", 5.0))
    _need(keepalive_s > 0, f"{where} [control].keepalive_s", "must be > 0")
    failsafe = ctl.get("failsafe", "none")
    _need(failsafe in FAILSAFES, f"{where} [control].failsafe", f"{failsafe!r} is not one of {FAILSAFES}")
    failsafe_s = float(ctl.get("failsafe_s", 0.0))
    sources = {w.source for w in writes}
    if failsafe != "none":
        _need(failsafe_s > keepalive_s, f"{where} [control].failsafe_s", f"must be above keepalive_s ({keepalive_s})")
        need = "revert_s" if failsafe == "revert" else "heartbeat"
        _need(need in sources, f"{where} [control].failsafe", f"{failsafe!r} needs a write with source {need!r}")

    sim = data.get("sim", {})
    return Profile(
        name=path.stem,
        kind=kind,
        path=where,
        device_name=dev.get("name", path.stem),
        table=table,
        word_order=word_order,
        max_read=max_read,
        max_gap=int(dev.get("max_gap", 8)),
        write_function=write_function,
        points=MappingProxyType(points),
        sunspec_bases=bases,
        sunspec_models=models,
        reading=MappingProxyType(dict(reading)),
        ref_w=ref_w,
        keepalive_s=keepalive_s,
        writes=tuple(writes),
        failsafe=failsafe,
        failsafe_s=failsafe_s,
        sim_faults=MappingProxyType(dict(sim.get("faults", {}))),
        sim_states=MappingProxyType(dict(sim.get("states", {}))),
    )


def _point(where: str, name: str, spec: dict, table: str, word_order: str, na_mode: str, models) -> Point:
    unknown = set(spec) - POINT_KEYS
    _need(not unknown, where, f"unknown key(s) {sorted(unknown)}")
    if "sum" in spec:
        terms = tuple((str(k), float(v)) for k, v in spec["sum"].items())
        _need(terms, where, "'sum' is empty")
        return Point(name=name, type="float32", count=0, address=None, sum=terms,
                     unit=spec.get("unit", ""), description=spec.get("description", ""))
    try:
        typ = canonical_type(spec.get("type", "uint16"))
    except CodecError as exc:
        raise ProfileError(f"{where}: {exc}") from None
    count = TYPES[typ][0]
    if typ == "string":
        count = int(spec.get("length", 0))
        _need(count > 0, where, "a string needs 'length' (registers)")
    address = spec.get("address")
    model, offset = spec.get("model"), spec.get("offset")
    if address is None:
        _need(model is not None and offset is not None, where, "needs 'address', or 'model' and 'offset'")
        _need(any(m == model for m, _ in models), where, f"model {model} is not in [sunspec].models")
        length = dict(models)[model]
        _need(0 <= offset and offset + count <= length, where, f"offset {offset} is outside model {model}")
    else:
        _need(0 <= int(address) and int(address) + count <= 65536, where, f"address {address} out of range")
    tbl = spec.get("table", table)
    _need(tbl in TABLES, where, f"table {tbl!r} is not one of {TABLES}")
    access = spec.get("access", "r")
    _need(access in ACCESS, where, f"access {access!r} is not one of {ACCESS}")
    _need(not (tbl == "input" and access != "r"), where, "input registers are read-only")
    mask, shift = spec.get("mask"), int(spec.get("shift", 0))
    if "bit" in spec:
        _need(mask is None, where, "use either 'bit' or 'mask'")
        shift = int(spec["bit"])
        mask = 1 << shift
    if mask is not None:
        _need(typ in ("uint16", "int16", "uint32", "int32"), where, "mask/bit need an integer type")
        _need(0 < mask < (1 << (16 * count)) and shift >= 0 and (mask >> shift) << shift == mask,
              where, "mask must be non-zero, fit the type, and have no bits below 'shift'")
    wo = spec.get("word_order", word_order)
    _need(wo in ("big", "little"), where, "word_order must be 'big' or 'little'")
    sign = int(spec.get("sign", 1))
    _need(sign in (1, -1), where, "sign must be 1 or -1")
    na = set(int(x) for x in spec.get("na", []))
    if na_mode == "sunspec" and mask is None:
        na.update(SUNSPEC_NA.get(typ, ()))
    scale = float(spec.get("scale", 1.0))
    _need(scale != 0, where, "scale must not be 0")
    states = {int(k): str(v) for k, v in spec.get("states", {}).items()}
    bits = {int(k): str(v) for k, v in spec.get("bits", {}).items()}
    _need(all(0 <= b < 16 * count for b in bits), where, "a bit number is outside the register(s)")
    clip = spec.get("sim_clip")
    _need(clip in (None, "pos", "neg"), where, "sim_clip must be 'pos' or 'neg'")
    return Point(
        name=name, type=typ, count=count, table=tbl,
        address=None if address is None else int(address), model=model, offset=offset,
        word_order=wo, scale=scale, sf=spec.get("sf"), add=float(spec.get("add", 0.0)), sign=sign,
        unit=spec.get("unit", ""), access=access,
        min=None if "min" not in spec else float(spec["min"]),
        max=None if "max" not in spec else float(spec["max"]),
        mask=mask, shift=shift, na=frozenset(na),
        states=MappingProxyType(states), bits=MappingProxyType(bits),
        description=spec.get("description", ""), sim=spec.get("sim"), sim_clip=clip,
        sim_value=spec.get("sim_value"),
    )
