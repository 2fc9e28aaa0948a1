"""Direct methods → Commands (DESIGN §2.5), answered with IoT Hub's HTTP-like status codes.

    GoToState_Idling / GoToState_Running    set_state sleep / run
    Restart_Device                          restart ({"reboot": true}: reboot)
    Setup_Device                            a (partial) site-parameter document, applied as a twin patch is
    GoToMode_SelfConsumption … GridForming  cluster_mode with that mode's parameters (Raft log; or a cluster of one)
    Update_Device, Receive_Artifact         501: not available in this version

Reserved payload keys, taken out before the rest is validated:
    request_id   the operator's id: a repeated one is answered from the command book, never run twice
    issued_at    when the operator sent it (ISO-8601 or Unix seconds): older than `method_ttl_s` → 408, as is
                 a time more than `method_ttl_s` ahead of the node's clock (else it could be replayed later);
                 required (400 without it) with `cloud.method_require_issued_at` — IoT Hub itself does not
                 tell the device when a request was issued

Answers: 200 {"status": "done"|"accepted", "command_id", "detail"}; 400 naming the JSON path of the bad
field; 404 unknown method; 408 too old; 409 the node's state forbids it (with the reason); 429 rate
limit; 501 not in this version; 503 valid but it could not be carried out. A command not finished
within ANSWER_WITHIN_S is answered `accepted`; its final status follows as an SC_command_event.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import defaultdict, deque

from ..commands import DONE, FAILED, REJECTED, parse_command

log = logging.getLogger("sitecontroller.cloud")

ANSWER_WITHIN_S = 5.0  # well within the hub's method timeout (30 s by default)
FINAL_WAIT_S = 600.0  # how long a slow command is followed for its SC_command_event

STATE_METHODS = {"GoToState_Idling": "sleep", "GoToState_Running": "run"}
MODE_METHODS = {
    "GoToMode_SelfConsumption": "self_consumption", "GoToMode_LoadMatching": "load_matching",
    "GoToMode_ExternalControl": "external_control", "GoToMode_CostSaving": "cost_saving",
    "GoToMode_ChargeOnly": "charge_only", "GoToMode_GridForming": "grid_forming",
}
NOT_YET = ("Update_Device", "Receive_Artifact")
METHODS = (*STATE_METHODS, "Restart_Device", "Setup_Device", *MODE_METHODS, *NOT_YET)


class BadPayload(ValueError):
    pass


def _issued_at(value) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    raise BadPayload(f"$.issued_at: found {value!r}; allowed: ISO-8601 UTC time or Unix seconds")


def _as_path(problem: str) -> str:
    """`target: found ...` (commands.py) → `$.target: found ...`."""
    return problem if problem.startswith("$") else "$." + problem


def command_for(name: str, payload: dict, command_id: str) -> dict:
    """The raw command a method asks for; BadPayload names the field."""
    base = {"id": command_id, "source": "cloud"}
    if name in STATE_METHODS:
        if payload:
            raise BadPayload(f"$.{sorted(payload)[0]}: found an unknown key; allowed: no payload")
        return {**base, "type": "set_state", "target": STATE_METHODS[name]}
    if name == "Restart_Device":
        extra = sorted(set(payload) - {"reboot"})
        if extra:
            raise BadPayload(f"$.{extra[0]}: found an unknown key; allowed: reboot")
        if not isinstance(payload.get("reboot", False), bool):
            raise BadPayload(f"$.reboot: found {payload['reboot']!r}; allowed: true or false")
        return {**base, "type": "restart", "reboot": payload.get("reboot", False)}
    from mastercontroller.control import parse_params  # the one validation of a mode's parameters

    mode = MODE_METHODS[name]
    try:
        parse_params(mode, payload)
    except ValueError as exc:
        raise BadPayload("$." + str(exc).split(": ", 1)[1] if ": " in str(exc) else str(exc)) from None
    return {**base, "type": "cluster_mode", "mode": mode, "params": payload}


class MethodRouter:
    def __init__(self, node, cloud_params, apply_parameters, command_event):
        self.node = node
        self.ttl_s = cloud_params.method_ttl_s
        self.require_issued_at = cloud_params.method_require_issued_at
        self.rate_per_min = cloud_params.method_rate_per_min
        self._apply_parameters = apply_parameters  # async (doc, origin) -> (status, detail)
        self._command_event = command_event  # (ack) -> None: queue an SC_command_event
        self._calls: dict[str, deque[float]] = defaultdict(deque)
        self._followed: set[asyncio.Task] = set()

    async def answer(self, name: str, payload, rid: str) -> tuple[int, dict]:
        try:
            return await self._answer(name, payload, rid)
        except BadPayload as exc:
            return 400, {"status": "rejected", "detail": str(exc)}
        except Exception as exc:  # a bug: answered, logged, the node runs on
            log.exception("direct method %s failed", name)
            return 500, {"status": "failed", "detail": f"internal error: {exc}"}

    async def _answer(self, name: str, payload, rid: str) -> tuple[int, dict]:
        if name not in METHODS:
            return 404, {"status": "rejected", "detail": f"unknown method {name!r}; known: {', '.join(METHODS)}"}
        if name in NOT_YET:
            return 501, {"status": "rejected", "detail": f"{name} is not available in this version"}
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise BadPayload(f"$: found {type(payload).__name__}; allowed: a JSON object")
        payload = dict(payload)
        request_id = payload.pop("request_id", None)
        if request_id is not None and (not isinstance(request_id, str) or not 1 <= len(request_id) <= 100):
            raise BadPayload(f"$.request_id: found {request_id!r}; allowed: text of 1 to 100 characters")
        if "issued_at" in payload:
            age = self.node.clock.wall() - _issued_at(payload.pop("issued_at"))
            if age > self.ttl_s:
                return 408, {"status": "rejected", "detail": f"issued {age:.0f} s ago: older than "
                                                             f"method_ttl_s ({self.ttl_s:g} s), not carried out"}
            if age < -self.ttl_s:
                return 408, {"status": "rejected", "detail": f"issued {-age:.0f} s in the future (clocks apart by more "
                                                             f"than method_ttl_s, {self.ttl_s:g} s): not carried out"}
        elif self.require_issued_at:
            raise BadPayload("$.issued_at: missing; required (cloud.method_require_issued_at): ISO-8601 UTC time "
                             "or Unix seconds")
        command_id = f"cloud-{request_id or rid}"
        earlier = self.node.commands.ack_of(command_id)
        if earlier is None and not self._within_rate(name):
            return 429, {"status": "rejected", "detail": f"more than {self.rate_per_min} {name} per minute"}
        if name == "Setup_Device":
            status, detail = await self._apply_parameters(payload, f"Setup_Device {command_id}")
            code = 400 if status == "rejected" else 200
            return code, {"status": "done" if code == 200 else "rejected", "command_id": command_id,
                          "parameters_status": status, "detail": detail}
        raw = command_for(name, payload, command_id)
        if earlier is None:
            try:
                parse_command(raw)  # the schema check (commands.py) before anything is queued
            except ValueError as exc:
                raise BadPayload(_as_path(str(exc))) from None
        ack = self.node.commands.submit(raw)
        if not ack.final:
            ack = await self.node.commands.wait_final(ack.id, ANSWER_WITHIN_S)
        if not ack.final:
            self._follow(ack.id)
        elif earlier is None:
            self._command_event(ack)
        return self._reply(ack, duplicate=earlier is not None)

    def _within_rate(self, name: str) -> bool:
        now, calls = self.node.clock.monotonic(), self._calls[name]
        while calls and now - calls[0] > 60.0:
            calls.popleft()
        if len(calls) >= self.rate_per_min:
            return False
        calls.append(now)
        return True

    def _follow(self, command_id: str) -> None:
        async def follow():
            ack = await self.node.commands.wait_final(command_id, FINAL_WAIT_S)
            self._command_event(ack)
        task = asyncio.create_task(follow())
        self._followed.add(task)
        task.add_done_callback(self._followed.discard)

    @staticmethod
    def _reply(ack, duplicate: bool) -> tuple[int, dict]:
        body = {"status": ack.status, "command_id": ack.id,
                "detail": ("duplicate request: " if duplicate else "") + ack.detail}
        if ack.status == REJECTED:
            return 409, body
        if ack.status == FAILED:
            return 503, body
        return 200, {**body, "status": DONE if ack.status == DONE else "accepted"}

    def close(self) -> None:
        for task in list(self._followed):
            task.cancel()
