"""The persisted error file (errors.json): its entries, its schema, and reading a damaged one.

The file is validated with the same discipline as the site parameters: every
field is checked strictly (no "yes" for a boolean, no text for a timestamp,
no unknown keys). Reading never raises and never weakens an error:

- a valid entry is kept as it is;
- an entry with a usable id but damaged fields is kept with the damaged fields
  made strict: an unknown severity (`"CRITICAL"`, `"bogus"`) becomes critical,
  it is not acknowledged, a damaged timestamp becomes the time of reading;
- an entry without a usable id cannot be kept; its loss is reported;
- each problem is one line naming the entry, the field and the value found,
  for the ERRORS_FILE_DAMAGED error the registry raises.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

WARNING, ERROR, CRITICAL = "warning", "error", "critical"
SEVERITIES = (WARNING, ERROR, CRITICAL)
RANK = {WARNING: 0, ERROR: 1, CRITICAL: 2}
FILE_VERSION = 1
MAX_ID_LENGTH = 64
_MAX_FOUND = 60


@dataclass
class ErrorEntry:
    id: str
    severity: str
    source: str
    text: str
    first_wall: float
    last_wall: float
    active: bool = True
    acknowledged: bool = False
    count: int = 1

    @property
    def latched(self) -> bool:
        return self.severity != WARNING and not self.acknowledged

    @property
    def listed(self) -> bool:
        return self.active or self.latched


_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class StoredError(BaseModel):
    """One entry as written by the registry (`dataclasses.asdict(ErrorEntry)`)."""

    model_config = _STRICT
    id: str = Field(..., min_length=1, max_length=MAX_ID_LENGTH)
    severity: Literal["warning", "error", "critical"]
    source: str = Field(..., max_length=64)
    text: str = Field(..., max_length=2000)
    first_wall: float = Field(..., ge=0)
    last_wall: float = Field(..., ge=0)
    active: bool
    acknowledged: bool
    count: int = Field(..., ge=1)


class StoredFile(BaseModel):
    model_config = _STRICT
    version: Literal[1]
    errors: list[Any]


def parse_errors_file(
    text: str, now_wall: float, catalog: dict[str, tuple[str, str]]
) -> tuple[dict[str, ErrorEntry], list[str]]:
    """The entries that can be kept, and one line per problem (no problems: the file is sound)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        return {}, [f"not valid JSON ({exc}): every entry is lost"]
    if not isinstance(data, dict):
        return {}, [f"found {_found(data)} at the top; allowed: an object with 'version' and 'errors': every entry is lost"]
    problems: list[str] = []
    try:
        StoredFile.model_validate(data)
    except ValidationError as exc:
        problems += [_line("", err) for err in exc.errors()]
    raw_entries = data.get("errors")
    if not isinstance(raw_entries, list):
        return {}, problems + ["no list of errors: every entry is lost"]
    entries: dict[str, ErrorEntry] = {}
    for i, raw in enumerate(raw_entries):
        entry, entry_problems = _entry(raw, f"errors[{i}]", now_wall, catalog)
        problems += entry_problems
        if entry is None:
            continue
        earlier = entries.get(entry.id)
        if earlier is not None:
            problems.append(f"errors[{i}].id: {entry.id!r} appears twice (the stricter entry is kept)")
            entry = max(earlier, entry, key=_strictness)
        entries[entry.id] = entry
    return entries, problems


def _entry(raw: Any, where: str, now_wall: float, catalog) -> tuple[ErrorEntry | None, list[str]]:
    try:
        stored = StoredError.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
    else:
        entry = ErrorEntry(**stored.model_dump())
        entry.severity = _stricter(entry.severity, catalog.get(entry.id, (WARNING, ""))[0])
        return entry, []
    damaged = {str(err["loc"][0]) for err in errors if err["loc"]}
    lines = [_line(where, err) for err in errors]
    code = raw.get("id") if isinstance(raw, dict) else None
    if not isinstance(code, str) or not 0 < len(code) <= MAX_ID_LENGTH:
        id_lines = [_line(where, err) for err in errors if err["loc"][:1] == ("id",)]
        return None, [", ".join(id_lines or lines) + " (entry lost)"]
    known = catalog.get(code)

    def kept(field: str, replacement: Any) -> Any:
        return replacement if field in damaged else raw[field]

    source_ok = "source" not in damaged
    entry = ErrorEntry(
        id=code,
        severity=_stricter(CRITICAL if "severity" in damaged else raw["severity"], known[0] if known else WARNING),
        source=kept("source", "errors-file"),
        text=kept("text", known[1] if known else code),
        first_wall=kept("first_wall", now_wall),
        last_wall=kept("last_wall", now_wall),
        # Whoever raised it clears it by its source: an entry whose source is lost is kept
        # as a cleared but unacknowledged error (the live checks raise it again if present).
        active=kept("active", True) if source_ok else False,
        acknowledged=False,
        count=kept("count", 1),
    )
    return entry, [", ".join(lines) + f" ({code} kept as {entry.severity}, not acknowledged)"]


def _line(where: str, err: dict) -> str:
    path = where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
    path = path.lstrip(".") or "file"
    if err["type"] == "missing":
        return f"{path}: missing"
    if err["type"] == "extra_forbidden":
        return f"{path}: unknown key"
    return f"{path}: found {_found(err.get('input'))}; {err['msg']}"


def _found(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= _MAX_FOUND else text[: _MAX_FOUND - 3] + "..."


def _stricter(a: str, b: str) -> str:
    return a if RANK[a] >= RANK[b] else b


def _strictness(entry: ErrorEntry) -> tuple[int, bool, bool]:
    return RANK[entry.severity], not entry.acknowledged, entry.active
