"""Every input is a validated command (DESIGN §2.5).

A request from any edge (local CLI, IoT Hub methods, twin patches,
SCADA writes) becomes one typed `Command`: validated once against its schema,
deduplicated by id, queued for the next control cycle, executed there, and
acknowledged with a final status. Every status change is appended to a JSONL
audit log.

Statuses: `accepted` (valid, queued), `rejected` (invalid or not allowed now,
with the reason), `done` (carried out; the detail says if it was clamped),
`failed` (valid but could not be carried out, with the reason). Every
command gets exactly one final acknowledgement.

Edges on the event loop await the final acknowledgement (`wait_final`); edges
that call back from their own threads (pysyncobj, the IoT SDK) use
`submit_threadsafe`, which hands the request to the loop. Each command type
has a `scope`: "node" (carried out by this node's executor) or "cluster"
(goes through the cluster's replicated log).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args

from pydantic import Field, TypeAdapter, ValidationError, field_validator

from .audit import read_recent
from .schema_base import ID_PATTERN, ClusterMember, Strict
from .writer import FileWriter, SyncWriter

log = logging.getLogger("sitecontroller.commands")

ACCEPTED, REJECTED, DONE, FAILED = "accepted", "rejected", "done", "failed"
FINAL = frozenset({REJECTED, DONE, FAILED})
MAX_POWER_W = 10_000_000


NODE_SCOPE, CLUSTER_SCOPE = "node", "cluster"


class _Base(Strict):
    scope: ClassVar[Literal["node", "cluster"]] = NODE_SCOPE  # who carries it out; set per command type
    id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=128)
    source: Literal["cli", "cloud", "scada", "ui", "cluster", "test"] = "cli"


class SetPower(_Base):
    """A local power request, positive = discharge. Expires after `hold_s`."""

    type: Literal["set_power"]
    p_w: float = Field(..., ge=-MAX_POWER_W, le=MAX_POWER_W, allow_inf_nan=False)
    hold_s: float | None = Field(None, ge=1, le=86_400, description="at least 1 s (10 cycles); default: staleness.setpoint_s")


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


class ApplyParameters(_Base):
    """Put run-time site parameters (`live_params.RUNTIME_KEYS`) in effect, whole, between two cycles,
    checked with the parameters in effect as one document."""

    type: Literal["apply_parameters"]
    parameters: dict = Field(..., description="a partial site-parameter document of run-time keys only")
    origin: str = Field("", max_length=200, description="what asked for it (a twin version, a method)")

    @field_validator("parameters")
    @classmethod
    def _runtime_only(cls, v: dict) -> dict:
        from .live_params import runtime_only  # (live_params imports this module)
        return runtime_only(v)


class ClusterSetpoint(_Base):
    """A local request for the cluster's power, positive = discharge; through the Raft log, from
    any node. It puts the cluster in mode ``local``, which follows it for ``hold_s`` unless it is
    sent again (a heartbeat), then falls back to 0 W."""

    scope: ClassVar[Literal["node", "cluster"]] = CLUSTER_SCOPE
    type: Literal["cluster_setpoint"]
    target_w: float = Field(..., ge=-MAX_POWER_W, le=MAX_POWER_W, allow_inf_nan=False)
    hold_s: float = Field(600.0, ge=1, le=3600, allow_inf_nan=False)


class ClusterMode(_Base):
    """Switch the cluster's operating mode (with its parameters; defaults for those not given),
    through the Raft log. The parameters are checked against the mode before anything is proposed."""

    scope: ClassVar[Literal["node", "cluster"]] = CLUSTER_SCOPE
    type: Literal["cluster_mode"]
    mode: str = Field(..., min_length=1, max_length=64)
    params: dict = Field(default_factory=dict)


class ClusterService(_Base):
    """Hold a grid service (a contracted frequency reserve) in the cluster, or end it
    (`capacity_w` 0), through the Raft log. The parameters are checked against the service, and
    the capacity against what the running nodes can hold, before anything is proposed."""

    scope: ClassVar[Literal["node", "cluster"]] = CLUSTER_SCOPE
    type: Literal["cluster_service"]
    service: str = Field(..., min_length=1, max_length=64)
    capacity_w: float = Field(..., ge=0, le=MAX_POWER_W, allow_inf_nan=False)
    params: dict = Field(default_factory=dict)


class ClusterAddMember(_Base):
    """Add a node to the running cluster (a Raft membership change). The node runs already, with
    every member (itself too) in its parameter file; until it is added the members refuse its key."""

    scope: ClassVar[Literal["node", "cluster"]] = CLUSTER_SCOPE
    type: Literal["cluster_add_member"]
    member: ClusterMember


class ClusterRemoveMember(_Base):
    """Remove a node from the running cluster; it gets no more setpoints and is no longer heard."""

    scope: ClassVar[Literal["node", "cluster"]] = CLUSTER_SCOPE
    type: Literal["cluster_remove_member"]
    node_id: str = Field(..., pattern=ID_PATTERN)


_TYPES = (SetPower, SetState, AckError, EStop, Restart, ApplyParameters, ClusterSetpoint, ClusterMode, ClusterService,
          ClusterAddMember, ClusterRemoveMember)
Command = Annotated[Union[_TYPES], Field(discriminator="type")]
_ADAPTER: TypeAdapter = TypeAdapter(Command)
COMMAND_TYPES = tuple(get_args(cls.model_fields["type"].annotation)[0] for cls in _TYPES)
SCOPES: dict[str, str] = {name: cls.scope for name, cls in zip(COMMAND_TYPES, _TYPES)}


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
    """Dedup, queue, acknowledgement and audit of commands.

    Everything except `submit_threadsafe` runs on the node's event loop thread
    (or, in tests, the one thread that drives the node). `writer` does the
    audit appends (default: at once, in the caller).
    """

    def __init__(self, clock, audit_path: Path | None = None, remember: int = 1000, *,
                 writer: FileWriter | None = None):
        self._clock = clock
        self._audit_path = Path(audit_path) if audit_path else None
        self._owns_writer = writer is None
        self._writer: FileWriter = writer if writer is not None else SyncWriter()
        self._acks: OrderedDict[str, Ack] = OrderedDict()
        self._remember = remember
        self._queue: deque[Command] = deque()
        self._waiters: dict[str, list[Callable[[Ack], None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        if self._audit_path:
            self._restore_recent()

    # --- the node's side ------------------------------------------------------------
    def submit(self, raw: Any) -> Ack:
        """Validate and queue a raw request. A repeated id gets the earlier ack back."""
        raw_id = raw.get("id") if isinstance(raw, dict) else None
        raw_id = raw_id if isinstance(raw_id, str) else None
        if raw_id is not None and raw_id in self._acks:
            log.info("command %s is a duplicate: answering with its earlier acknowledgement", raw_id)
            return self._acks[raw_id]
        raw_type = str(raw.get("type", "")) if isinstance(raw, dict) else ""
        try:
            cmd = parse_command(raw)
        except ValueError as exc:
            ack = Ack(raw_id or uuid.uuid4().hex, REJECTED, str(exc), raw_type)
            self._record(ack, raw)
            return ack
        if self._closed:  # nobody would carry it out
            ack = Ack(cmd.id, REJECTED, "the node is stopping: commands are no longer carried out", cmd.type)
            self._record(ack, cmd.model_dump())
            return ack
        ack = Ack(cmd.id, ACCEPTED, type=cmd.type)
        self._record(ack, cmd.model_dump())
        self._queue.append(cmd)
        return ack

    def take(self) -> list[Command]:
        """The queued commands, oldest first (the executor routes them by `cmd.scope`)."""
        out = list(self._queue)
        self._queue.clear()
        return out

    def finish(self, cmd: Command, status: str, detail: str = "", **result: Any) -> Ack:
        """The final acknowledgement of `cmd`; wakes whoever waits for it. A second one is refused."""
        assert status in FINAL, status
        earlier = self._acks.get(cmd.id)
        if earlier is not None and earlier.final:
            log.error("command %s already has its final acknowledgement (%s): %s %s ignored",
                      cmd.id, earlier.status, status, detail)
            return earlier
        ack = Ack(cmd.id, status, detail, cmd.type, result)
        self._record(ack, cmd.model_dump())
        return ack

    def ack_of(self, cmd_id: str) -> Ack | None:
        return self._acks.get(cmd_id)

    # --- edges: awaiting the final acknowledgement ------------------------------------
    def bind_loop(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """The event loop that runs the node (default: the running one), for `submit_threadsafe`."""
        self._loop = loop or asyncio.get_running_loop()

    async def wait_final(self, cmd_id: str, timeout_s: float) -> Ack:
        """The final ack of `cmd_id` as soon as there is one; after `timeout_s`, the current ack
        (not final) with a detail that says so."""
        if self._loop is None:
            self.bind_loop()
        ack = self._acks.get(cmd_id)
        if ack is None:
            raise KeyError(f"no command {cmd_id!r} is known")
        if ack.final:
            return ack
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        resolve = _resolver(future)
        self._waiters.setdefault(cmd_id, []).append(resolve)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            current = self._acks.get(cmd_id, ack)
            if current.final:  # finished in the same instant
                return current
            return replace(current, detail=f"not carried out within {timeout_s:g} s: still {current.status} "
                                           "(it will be; ask again with its id for the final acknowledgement)")
        finally:
            waiters = self._waiters.get(cmd_id)
            if waiters and resolve in waiters:
                waiters.remove(resolve)
                if not waiters:
                    del self._waiters[cmd_id]

    def submit_threadsafe(self, raw: Any) -> concurrent.futures.Future:
        """Submit from any thread; the future resolves with the command's final Ack.

        The request is handed to the node's loop (see `bind_loop`), validated and
        queued there like `submit`; a rejected or duplicate-of-finished command
        resolves at once.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            raise RuntimeError("the command book is not bound to a running event loop (call bind_loop first)")
        result: concurrent.futures.Future = concurrent.futures.Future()

        def on_loop() -> None:
            if not result.set_running_or_notify_cancel():
                return  # the caller gave up before the loop got to it
            try:
                ack = self.submit(raw)
            except Exception as exc:  # a bug must reach the caller, not vanish in the loop
                result.set_exception(exc)
                return
            if ack.final:
                result.set_result(ack)
            else:
                self._waiters.setdefault(ack.id, []).append(_resolver(result))

        loop.call_soon_threadsafe(on_loop)
        return result

    # --- closing ---------------------------------------------------------------------
    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every audit line so far is on disk (False on timeout)."""
        return self._writer.flush(timeout_s)

    def close(self, timeout_s: float = 5.0) -> bool:
        """Fail what is still queued (each command gets its final ack), refuse later ones, flush,
        close an own writer."""
        self._closed = True
        for cmd in self.take():
            self.finish(cmd, FAILED, "interrupted: the node stopped before carrying it out")
        done = self._writer.flush(timeout_s)
        if self._owns_writer:
            done = self._writer.close(timeout_s) and done
        return done

    # --- internals -------------------------------------------------------------------
    def _record(self, ack: Ack, payload: Any) -> None:
        self._remember_ack(ack)
        level = logging.WARNING if ack.status in (REJECTED, FAILED) else logging.INFO
        log.log(level, "command %s %s %s%s", ack.id, ack.type or "?", ack.status, f": {ack.detail}" if ack.detail else "")
        self._audit(ack, payload)
        if ack.final:
            for resolve in self._waiters.pop(ack.id, []):
                resolve(ack)

    def _remember_ack(self, ack: Ack) -> None:
        self._acks[ack.id] = ack
        self._acks.move_to_end(ack.id)
        while len(self._acks) > self._remember:
            self._acks.popitem(last=False)

    def _audit(self, ack: Ack, payload: Any) -> None:
        if self._audit_path is None:
            return
        line = {"wall": round(self._clock.wall(), 3), **ack.to_dict(), "payload": payload}
        self._writer.append(self._audit_path, json.dumps(line, default=str))

    def _restore_recent(self) -> None:
        """Remember the ids of recent commands across a restart (dedup survives it); a command
        that was queued when the node stopped was never carried out: it gets its final
        `failed: interrupted` line now."""
        payloads: dict[str, Any] = {}
        for line in read_recent(self._audit_path, self._remember * 3):
            self._remember_ack(Ack(line.id, line.status, line.detail, line.type, line.result))
            if line.status == ACCEPTED:
                payloads[line.id] = line.payload
        interrupted = [ack for ack in self._acks.values() if not ack.final]
        for ack in interrupted:
            final = Ack(ack.id, FAILED, "interrupted: the node restarted before carrying it out", ack.type)
            self._acks[ack.id] = final
            self._audit(final, payloads.get(ack.id))
        if interrupted:
            log.warning("%d command(s) queued when the node stopped were never carried out: failed as interrupted (%s)",
                        len(interrupted), ", ".join(a.id for a in interrupted))


def _resolver(future) -> Callable[[Ack], None]:
    """Resolve an asyncio or concurrent future with an Ack, once, whoever calls first."""
    def resolve(ack: Ack) -> None:
        if isinstance(future, asyncio.Future):
            loop = future.get_loop()
            try:
                on_its_loop = asyncio.get_running_loop() is loop
            except RuntimeError:
                on_its_loop = False
            if on_its_loop:
                _set(future, ack)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(_set, future, ack)
            return
        try:
            future.set_result(ack)
        except concurrent.futures.InvalidStateError:  # cancelled by the caller meanwhile
            pass
    return resolve


def _set(future: asyncio.Future, ack: Ack) -> None:
    if not future.done():
        future.set_result(ack)
