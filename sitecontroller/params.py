"""Site parameters: load a node's parameter file and report every problem clearly.

A parameter file is JSON. It is validated completely against the schema
(`params_schema.py`) before anything starts; each problem is reported as one
line naming the JSON path, the value found and what is allowed (DESIGN §2.9).
Unknown keys are errors: a typo must never silently fall back to a default.
"""
from __future__ import annotations

import difflib
import json
import os
import re
import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from .cloud.config import anchor as anchor_cloud
from .params_ports import port_clashes
from .params_schema import (  # noqa: F401  (the schema is part of this module's interface)
    DEFAULT_ENDPOINT,
    ID_PATTERN,
    BatteryParams,
    ControlParams,
    CycleParams,
    DevicesParams,
    Features,
    Identity,
    PidGains,
    PidParams,
    SafetyParams,
    SimulationParams,
    SiteParams,
    StalenessParams,
    StorageParams,
    TelemetryParams,
)


class ParamsError(Exception):
    """A parameter file that cannot be used; `problems` holds one line each."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def report(self) -> None:
        """Every problem on its own line of stderr, prefixed with the file."""
        for line in self.problems:
            print(f"{self.source}: {line}", file=sys.stderr)


# ---------------------------------------------------------------------------
# Error formatting: one line per problem, "<JSON path>: found <value>; allowed: <rule>".
# The rule is derived from the schema itself (type, range, pattern, choices), so it
# cannot drift from what the validator enforces.

_TOP_LEVEL_RULE = "a JSON object with at least the sections identity, battery, devices"
_MAX_FOUND = 80
# Patterns in words; the pattern itself is still quoted after them.
_PATTERN_WORDS = {
    ID_PATTERN: 'text of 1 to 64 letters, digits, "_", "." or "-", starting with a letter or digit',
    r"^(tcp://[^:]+:\d{1,5}|ipc://.+)$": 'text "tcp://HOST:PORT" or "ipc://PATH"',
}


def _path(loc: tuple[Any, ...]) -> str:
    """`("devices", "inverter", "port")` -> `$.devices.inverter.port` (odd keys are quoted)."""
    out = "$"
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            out += f".{part}"
        else:
            out += f"[{json.dumps(str(part), ensure_ascii=False)}]"
    return out


def _num(x: Any) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return str(x)


def _json(value: Any, limit: int = _MAX_FOUND) -> str:
    """The value as the technician wrote it (JSON), shortened if long."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        text = f"({_kind(value)})"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: Any) -> str:
    """The JSON name of a value's type, for "found X (a string)"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, True); anything else -> (it, False)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = get_args(annotation)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0], len(rest) < len(args)
    return annotation, False


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model of a section: `Model`, `Model | None`, or the items of `list[Model]`."""
    base, _ = _unwrap(annotation)
    if get_origin(base) is list:
        base = get_args(base)[0]
    return base if isinstance(base, type) and issubclass(base, BaseModel) else None


def _resolve(loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """The model owning the last key of `loc` and that key's field (None if not in the schema)."""
    owner: type[BaseModel] | None = SiteParams
    field: FieldInfo | None = None
    loc = tuple(part for part in loc if not isinstance(part, int))  # list items: the item's model
    for i, part in enumerate(loc):
        if owner is None or not isinstance(part, str) or part not in owner.model_fields:
            return None, None
        field = owner.model_fields[part]
        if i < len(loc) - 1:
            owner = _model_of(field.annotation)
    return owner, field


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    if not loc:
        return SiteParams
    _, field = _resolve(loc)
    return _model_of(field.annotation) if field is not None else None


def _constraint(field: FieldInfo, name: str) -> Any:
    for meta in field.metadata:
        value = getattr(meta, name, None)
        if value is not None:
            return value
    return None


def _object_rule(model: type[BaseModel]) -> str:
    required = [k for k, f in model.model_fields.items() if f.is_required()]
    if not required:
        return "a JSON object (every key in it is optional)"
    return f"a JSON object with the key{'s' if len(required) > 1 else ''} {', '.join(required)}"


def _rule(field: FieldInfo) -> str:
    """What a field accepts, in words: 'a number > 0 and <= 100000000', 'one of "a", "b"', ..."""
    base, nullable = _unwrap(field.annotation)
    if get_origin(base) is Literal:
        choices = [_json(c, 1000) for c in get_args(base)]
        text = choices[0] if len(choices) == 1 else "one of " + ", ".join(choices)
    elif base is bool:
        text = "true or false"
    elif base in (int, float):
        text = "a whole number" if base is int else "a number"
        lo = [(op, _constraint(field, name)) for op, name in ((">=", "ge"), (">", "gt"))]
        hi = [(op, _constraint(field, name)) for op, name in (("<=", "le"), ("<", "lt"))]
        lo = [(op, v) for op, v in lo if v is not None]
        hi = [(op, v) for op, v in hi if v is not None]
        if lo and hi and lo[0][0] == ">=" and hi[0][0] == "<=":
            text += f" from {_num(lo[0][1])} to {_num(hi[0][1])}"
        else:
            bounds = [f"{op} {_num(v)}" for op, v in lo + hi]
            if bounds:
                text += " " + " and ".join(bounds)
    elif base is str:
        text = "text"
        lo, hi = _constraint(field, "min_length"), _constraint(field, "max_length")
        if lo:
            text += f" of at least {lo} character{'s' if lo != 1 else ''}"
        if hi:
            text += f"{' and' if lo else ''} of at most {hi} characters"
        pattern = _constraint(field, "pattern")
        if pattern in _PATTERN_WORDS:
            text = f"{_PATTERN_WORDS[pattern]} (pattern {pattern})"
        elif pattern:
            text += f" matching {pattern}"
    elif (model := _model_of(base)) is not None:
        text = _object_rule(model)
    else:
        text = str(base)
    return text + (", or null" if nullable else "")


def _field_line(err: dict[str, Any], loc: tuple[Any, ...]) -> str:
    path, value = _path(loc), err.get("input")
    _, field = _resolve(loc)
    rule = _rule(field) if field is not None else err["msg"]
    if err["type"] in ("value_error", "assertion_error"):  # a field validator's own words say it best
        rule = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if err["type"] == "finite_number":
        rule = "a finite number" + rule.removeprefix("a number")
    found = _json(value)
    wrong_type = err["type"].endswith(("_type", "_parsing", "_from_float"))
    if err["type"] == "literal_error" and field is not None:  # "1" where the choices are 1, 2
        choices = get_args(_unwrap(field.annotation)[0])
        wrong_type = not any(type(value) is type(c) for c in choices)
    if value is not None and wrong_type:
        found += f" ({_kind(value)})"
    return f"{path}: found {found}; allowed: {rule}"


def _unknown_key_line(err: dict[str, Any], loc: tuple[Any, ...]) -> str:
    key = loc[-1] if loc else "?"
    parent = _model_at(loc[:-1])
    line = f"{_path(loc)}: found unknown key {_json(str(key))} (value {_json(err.get('input'), 40)})"
    if parent is None:
        return line + "; allowed: only the keys listed in site_parameters/README.md"
    keys = list(parent.model_fields)
    lowered = {k.lower(): k for k in keys}  # keys are case-sensitive: "backup" is not "BACKUP"
    close = difflib.get_close_matches(str(key).lower(), list(lowered), n=1, cutoff=0.6)
    if close:
        line += f" - did you mean {_json(lowered[close[0]])}?"
    return line + f"; allowed: only the key{'s' if len(keys) > 1 else ''} {', '.join(keys)}"


def _missing_line(loc: tuple[Any, ...]) -> str:
    _, field = _resolve(loc)
    rule = _rule(field) if field is not None else "a value"
    return f"{_path(loc)}: found nothing (this required key is missing); allowed: {rule}"


def _model_lines(err: dict[str, Any], loc: tuple[Any, ...]) -> list[str]:
    """A cross-field rule broke: name the keys the rule mentions and their values, not the whole object."""
    message = err["msg"].removeprefix("Value error, ")
    model = _model_at(loc)
    data = err.get("input") if isinstance(err.get("input"), dict) else {}
    lines = []
    for part in message.split("; "):
        found = []
        for key, field in (model.model_fields.items() if model is not None else ()):
            if not re.search(rf"(?<![A-Za-z0-9_]){re.escape(key)}(?![A-Za-z0-9_])", part):
                continue
            if key in data:
                found.append(f"{key} = {_json(data[key], 40)}")
            elif not field.is_required():
                found.append(f"{key} not set (default {_json(field.get_default(call_default_factory=True), 40)})")
            else:
                found.append(f"{key} not set")
        lines.append(f"{_path(loc)}: found {', '.join(found) if found else _json(data)}; allowed: {part}")
    return lines


def _describe(errors: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for err in errors:
        loc = tuple(
            p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "json-or-python")))
        )
        kind = err["type"]
        if kind == "extra_forbidden":
            lines.append(_unknown_key_line(err, loc))
        elif kind == "missing":
            lines.append(_missing_line(loc))
        elif kind in ("value_error", "assertion_error") and _model_at(loc) is not None and isinstance(
            err.get("input"), dict
        ):
            lines.extend(_model_lines(err, loc))
        else:
            lines.append(_field_line(err, loc))
    return lines


def parse(data: Any, source: str = "<params>") -> SiteParams:
    """Validate already-decoded JSON. Types are strict: "5" is not a number and 1 is not true."""
    if not isinstance(data, dict):
        found = _json(data) + ("" if data is None else f" ({_kind(data)})")
        raise ParamsError(source, [f"$: found {found}; allowed: {_TOP_LEVEL_RULE}"])
    try:
        params = SiteParams.model_validate(data, strict=True)
    except ValidationError as exc:
        raise ParamsError(source, _describe(exc.errors())) from None
    problems = port_clashes(params)  # the schema checks each section; this checks them together
    if problems:
        raise ParamsError(source, problems)
    return params


class _Object(dict):
    """A decoded JSON object that remembers keys it saw more than once."""

    duplicates: list[str]


def _object_pairs(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object()
    obj.duplicates = []
    for key, value in pairs:
        if key in obj:
            obj.duplicates.append(key)
        obj[key] = value
    return obj


def _duplicates(data: Any) -> list[str]:
    """One line per key written twice in one object (plain JSON keeps the last one silently).

    Iterative on purpose: a pathologically nested file must not overflow the stack here.
    """
    problems: list[str] = []
    stack: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    while stack:
        node, loc = stack.pop()
        if isinstance(node, dict):
            for key in getattr(node, "duplicates", ()):
                problems.append(
                    f"{_path(loc + (key,))}: found this key more than once; allowed: each key once "
                    f"(otherwise the last one would silently win)"
                )
            stack.extend((v, loc + (k,)) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((v, loc + (i,)) for i, v in reversed(list(enumerate(node))))
    return problems


def _decode(text: str, source: str) -> Any:
    if not text.strip():
        what = "an empty file" if not text else "a file with only whitespace"
        raise ParamsError(source, [f"$: found {what}; allowed: {_TOP_LEVEL_RULE}"])
    try:
        data = json.loads(text, object_pairs_hook=_object_pairs)
    except json.JSONDecodeError as exc:
        lines = text.splitlines() or [""]
        line = lines[exc.lineno - 1] if exc.lineno <= len(lines) else ""
        near = line[max(0, exc.colno - 50) : exc.colno + 20].strip() or "(end of file)"
        raise ParamsError(
            source,
            [
                f"$: not valid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}); "
                f"found: {near}; allowed: {_TOP_LEVEL_RULE}, written as strict JSON "
                f"(keys and strings in double quotes, no trailing commas, no comments)"
            ],
        ) from None
    except RecursionError:
        raise ParamsError(source, [f"$: found JSON nested too deeply; allowed: {_TOP_LEVEL_RULE}"]) from None
    except ValueError as exc:  # e.g. an integer with thousands of digits
        reason = str(exc).split(":")[0]
        raise ParamsError(source, [f"$: found a value that cannot be read ({reason}); allowed: {_TOP_LEVEL_RULE}"]) from None
    problems = _duplicates(data)
    if problems:
        try:
            parse(data, source)
        except ParamsError as exc:
            problems += exc.problems
        raise ParamsError(source, problems)
    return data


def load(path: str | Path) -> SiteParams:
    """Read and validate a parameter file. Raises ParamsError, never anything else."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is harmless
    except FileNotFoundError:
        raise ParamsError(str(path), ["found no such file; allowed: the path of a JSON parameter file"]) from None
    except UnicodeDecodeError as exc:
        raise ParamsError(
            str(path), [f"found bytes that are not UTF-8 text (at byte {exc.start}); allowed: a UTF-8 JSON file"]
        ) from None
    except OSError as exc:
        raise ParamsError(
            str(path), [f"found a path that cannot be read ({exc.strerror or exc}); allowed: a readable JSON file"]
        ) from None
    return _anchor_data_dir(parse(_decode(text, str(path)), str(path)), path)


def _anchor_data_dir(params: SiteParams, path: Path) -> SiteParams:
    """A relative `storage.data_dir` (and the cloud's files) is relative to the parameter file, not to where
    the node is started."""
    if params.cloud is not None:
        params = params.model_copy(update={"cloud": anchor_cloud(params.cloud, path.resolve().parent)})
    if Path(params.storage.data_dir).is_absolute():
        return params
    anchored = os.path.normpath(path.resolve().parent / params.storage.data_dir)
    return params.model_copy(update={"storage": params.storage.model_copy(update={"data_dir": anchored})})
