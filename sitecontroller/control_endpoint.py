"""The node's local control endpoint: status and commands over ZeroMQ (JSON).

Requests: {"op": "status"} or {"op": "command", "command": {...}, "wait_s": 2}.
Replies: {"ok": true, "status": {...}} or {"ok": true, "ack": {...}}, or
{"ok": false, "error": "..."}. A command reply carries its final
acknowledgement as soon as the node has carried it out; if that takes longer
than `wait_s`, the reply carries the current acknowledgement (`accepted`) with
a detail saying so.

The endpoint listens on loopback by default (site parameters: control.endpoint).
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import zmq
import zmq.asyncio

log = logging.getLogger("sitecontroller.endpoint")

MAX_REQUEST_BYTES = 64 * 1024


class ControlServer:
    def __init__(self, endpoint: str, node):
        self.endpoint = endpoint
        self.node = node
        self._ctx = zmq.asyncio.Context.instance()
        self._sock = None
        self._task: asyncio.Task | None = None
        self._handlers: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        try:
            self._sock.bind(self.endpoint)
        except zmq.ZMQError as exc:
            self._sock.close()
            raise OSError(f"cannot listen on control endpoint {self.endpoint}: {exc} (is another node running?)") from None
        self._task = asyncio.create_task(self._serve(), name="control-endpoint")
        log.info("control endpoint listening on %s", self.endpoint)

    async def close(self) -> None:
        for t in [self._task, *self._handlers]:
            if t:
                t.cancel()
        await asyncio.gather(*(t for t in [self._task, *self._handlers] if t), return_exceptions=True)
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    async def _serve(self) -> None:
        while True:
            frames = await self._sock.recv_multipart()
            ident, body = frames[0], frames[-1]
            task = asyncio.create_task(self._answer(ident, body))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    async def _answer(self, ident: bytes, body: bytes) -> None:
        try:
            request = json.loads(body)
        except ValueError as exc:
            reply = {"ok": False, "error": f"request is not valid JSON: {exc}"}
        else:
            try:
                reply = await self.handle(request)
            except Exception as exc:  # every request gets an answer
                log.exception("control request failed")
                reply = {"ok": False, "error": f"internal error: {exc}"}
        await self._sock.send_multipart([ident, b"", json.dumps(reply, default=str).encode()])

    async def handle(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            return {"ok": False, "error": "request must be a JSON object"}
        op = request.get("op")
        if op == "status":
            return {"ok": True, "status": self.node.status()}
        if op == "command":
            wait_s = request.get("wait_s", 2.0)
            if isinstance(wait_s, bool) or not isinstance(wait_s, (int, float)) or not 0 <= wait_s <= 10:
                return {"ok": False, "error": f"wait_s: found {wait_s!r}; allowed: a number of seconds 0..10"}
            commands = self.node.commands
            ack = commands.submit(request.get("command"))
            if not ack.final and wait_s > 0:
                ack = await commands.wait_final(ack.id, wait_s)  # woken by the executor's finish()
            return {"ok": True, "ack": ack.to_dict()}
        return {"ok": False, "error": f"unknown op {op!r}; allowed: status, command"}


class NodeUnreachable(Exception):
    pass


def request(endpoint: str, payload: dict[str, Any], timeout_s: float = 2.0) -> dict[str, Any]:
    """Send one request to a node and return its reply (blocking, for the CLI)."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            raise NodeUnreachable(f"cannot use endpoint {endpoint!r}: {exc} (expected tcp://HOST:PORT or ipc://PATH)") from None
        sock.send(json.dumps(payload).encode())
        if not sock.poll(int(timeout_s * 1000)):
            raise NodeUnreachable(f"node at {endpoint} did not answer within {timeout_s:g} s (is it running?)")
        return json.loads(sock.recv())
    finally:
        sock.close(linger=0)
