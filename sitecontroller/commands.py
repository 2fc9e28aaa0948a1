"""Every input is a validated command (DESIGN §2.5).

A request from any edge (local CLI, later IoT Hub methods, twin patches,
SCADA writes) becomes one typed `Command`: validated once against its schema,
deduplicated by id, queued for the next control cycle, executed there, and
acknowledged with a final status. Every status change is appended to a JSONL
audit log.

Statuses: `accepted` (valid, queued), `rejected` (invalid or not allowed now,
with the reason), `done` (carried out; the detail says if it was clamped),
`failed` (valid but could not be carried out, with the reason).
"""
from __future__ import annotations

import json
import logging
import os
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, TypeAdapter, ValidationError

from .schema_base import Strict

log = logging.getLogger("sitecontroller.commands")

ACCEPTED, REJECTED, DONE, FAILED = "accepted", "rejected", "done", "failed"
FINAL = frozenset({REJECTED, DONE, FAILED})
MAX_POWER_W = 10_000_000


class _Base(Strict):
    id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=128)
    source: Literal["cli", "cloud", "scada", "ui", "cluster", "test"] = "cli"


class SetPower(_Base):
    """A local power request, positive = discharge. Expires after `hold_s`."""

    type: Literal["set_power"]
    p_w: float = Field(..., ge=-MAX_POWER_W, le=MAX_POWER_W, allow_inf_nan=False)
    hold_s: float | None = Field(None, gt=0, le=86_400, description="default: staleness.setpoint_s")


class SetState(_Base):
    type: Literal["set_state"]
    target: Literal["run", "sleep", "maintenance"]


class AckError(_Base):
    type: Literal["ack_error"]
    code: str = Field(..., min_length=1, max_length=64)


class EStop(_Base):
    type: Literal["estop"]
    engaged: bool


class Restart(_Base):
    type: Literal["restart"]
    reboot: bool = False


Command = Annotated[Union[SetPower, SetState, AckError, EStop, Restart], Field(discriminator="type")]
_ADAPTER: TypeAdapter = TypeAdapter(Command)
COMMAND_TYPES = ("set_power", "set_state", "ack_error", "estop", "restart")


@dataclass
class Ack:
    id: str
    status: str
    detail: str = ""
    type: str = ""
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "status": self.status, "detail": self.detail, "result": self.result}


def parse_command(raw: Any) -> Command:
    """Validate a raw request; raises ValueError with one line per problem."""
    if not isinstance(raw, dict):
        raise ValueError(f"a command is a JSON object, found {type(raw).__name__}")
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"][1:] or err["loc"])
            if err["type"] == "union_tag_invalid" or err["type"] == "union_tag_not_found":
                problems.append(f"type: found {raw.get('type')!r}; allowed: {', '.join(COMMAND_TYPES)}")
            else:
                found = "(missing)" if err["type"] == "missing" else repr(err.get("input"))
                problems.append(f"{loc}: found {found}; {err['msg']}")
        raise ValueError("; ".join(problems)) from None


class CommandBook:
    """Dedup, queue, acknowledgement and audit of commands."""

    def __init__(self, clock, audit_path: Path | None = None, remember: int = 1000):
        self._clock = clock
        self._audit_path = Path(audit_path) if audit_path else None
        self._acks: OrderedDict[str, Ack] = OrderedDict()
        self._remember = remember
        self._queue: deque[Command] = deque()
        if self._audit_path:
            self._audit_path.parent.mkdir(parents=True, exist_ok=True)
            self._restore_recent()
            self._audit = open(self._audit_path, "a", encoding="utf-8")
        else:
            self._audit = None

    def submit(self, raw: Any) -> Ack:
        """Validate and queue a raw request. A repeated id gets the earlier ack back."""
        raw_id = raw.get("id") if isinstance(raw, dict) else None
        raw_id = raw_id if isinstance(raw_id, str) else None
        if raw_id is not None and raw_id in self._acks:
            log.info("command %s is a duplicate: answering with its earlier acknowledgement", raw_id)
            return self._acks[raw_id]
        try:
            cmd = parse_command(raw)
        except ValueError as exc:
            ack = Ack(raw_id or uuid.uuid4().hex, REJECTED, str(exc), str(raw.get("type", "")) if isinstance(raw, dict) else "")
            self._record(ack, raw)
            return ack
        ack = Ack(cmd.id, ACCEPTED, type=cmd.type)
        self._record(ack, cmd.model_dump())
        self._queue.append(cmd)
        return ack

    def take(self) -> list[Command]:
        """The queued commands, oldest first (the cycle executes them)."""
        out = list(self._queue)
        self._queue.clear()
        return out

    def finish(self, cmd: Command, status: str, detail: str = "", **result: Any) -> Ack:
        assert status in FINAL, status
        ack = Ack(cmd.id, status, detail, cmd.type, result)
        self._record(ack, cmd.model_dump())
        return ack

    def ack_of(self, cmd_id: str) -> Ack | None:
        return self._acks.get(cmd_id)

    def close(self) -> None:
        if self._audit:
            self._audit.close()
            self._audit = None

    def _record(self, ack: Ack, payload: dict[str, Any]) -> None:
        self._acks[ack.id] = ack
        self._acks.move_to_end(ack.id)
        while len(self._acks) > self._remember:
            self._acks.popitem(last=False)
        level = logging.WARNING if ack.status in (REJECTED, FAILED) else logging.INFO
        log.log(level, "command %s %s %s%s", ack.id, ack.type or "?", ack.status, f": {ack.detail}" if ack.detail else "")
        if self._audit:
            line = {"wall": round(self._clock.wall(), 3), **ack.to_dict(), "payload": payload}
            try:
                self._audit.write(json.dumps(line, default=str) + "\n")
                self._audit.flush()
                os.fsync(self._audit.fileno())
            except OSError as exc:  # a full disk must not stop the node: the log above still has it
                log.error("cannot append to the audit log %s: %s", self._audit_path, exc)

    def _restore_recent(self) -> None:
        """Remember the ids of recent commands across a restart (dedup survives it)."""
        if not self._audit_path.exists():
            return
        with open(self._audit_path, encoding="utf-8", errors="replace") as f:
            tail = deque(f, maxlen=self._remember * 3)
        for line in tail:
            try:
                d = json.loads(line)
                ack = Ack(d["id"], d["status"], d.get("detail", ""), d.get("type", ""), d.get("result") or {})
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line after a crash
            self._acks[ack.id] = ack
            self._acks.move_to_end(ack.id)
        while len(self._acks) > self._remember:
            self._acks.popitem(last=False)
        for ack in self._acks.values():
            if not ack.final:  # queued when the node stopped: it was never carried out
                ack.status, ack.detail = FAILED, "interrupted: the node restarted before carrying it out"
