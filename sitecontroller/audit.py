"""The command audit log (audit.jsonl): one JSON object per acknowledgement, appended.

Reading it back at start (to keep deduplication across a restart) validates
every line against `AuditLine`; a damaged line (a torn last line after a
crash, a list where an id belongs, an unknown status) is skipped, and the
skipped lines are reported in one warning. Reading never raises.
"""
from __future__ import annotations

import logging
from collections import deque
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger("sitecontroller.commands")

_FIRST_PROBLEMS = 3  # named in the warning; the rest are counted


class AuditLine(BaseModel):
    """One line as the CommandBook writes it."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    wall: float
    id: str = Field(..., min_length=1, max_length=128)
    type: str = Field(..., max_length=64)
    status: Literal["accepted", "rejected", "done", "failed"]
    detail: str = ""
    result: dict[str, Any] = Field(default_factory=dict)
    payload: Any = None


def read_recent(path: Path, max_lines: int) -> list[AuditLine]:
    """The valid lines among the last `max_lines` of `path`, oldest first."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            tail = deque(enumerate(f, start=1), maxlen=max_lines)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        log.warning("cannot read the audit log %s (%s): earlier command ids are not remembered", path, exc)
        return []
    lines: list[AuditLine] = []
    problems: list[str] = []
    for number, text in tail:
        if not text.strip():
            continue
        try:
            lines.append(AuditLine.model_validate_json(text))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "line"
            problems.append(f"line {number}: {where}: {err['msg']}")
    if problems:
        shown = "; ".join(problems[:_FIRST_PROBLEMS])
        if len(problems) > _FIRST_PROBLEMS:
            shown += f"; and {len(problems) - _FIRST_PROBLEMS} more"
        log.warning("audit log %s: skipped %d damaged line(s) (%s)", path, len(problems), shown)
    return lines
