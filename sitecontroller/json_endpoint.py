"""One JSON object per request and per reply over a ZeroMQ ROUTER socket: the transport
of the node's control endpoint and of the simulator's endpoint (loopback, local tools).

`JsonEndpoint` serves: each request is answered by `handle(request) -> dict`, concurrently
(a command that waits for its acknowledgement does not hold up a status request);
every request gets an answer, a bad one `{"ok": false, "error": "..."}`. `ask()` is the
blocking client the CLI uses.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import zmq
import zmq.asyncio

MAX_REQUEST_BYTES = 64 * 1024


class JsonEndpoint:
    """Subclasses set `what` (for messages) and implement `handle`."""

    what = "endpoint"
    listen_hint = ""  # appended to "cannot listen" messages
    user_errors: tuple[type[Exception], ...] = ()  # answered with their message, not logged as a bug

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.log = logging.getLogger(f"sitecontroller.{self.what.replace(' ', '_')}")
        self._ctx = zmq.asyncio.Context.instance()
        self._sock = None
        self._task: asyncio.Task | None = None
        self._handlers: set[asyncio.Task] = set()

    async def handle(self, request: Any) -> dict[str, Any]:
        raise NotImplementedError

    async def start(self) -> None:
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        try:
            sock.bind(self.endpoint)
        except zmq.ZMQError as exc:
            sock.close()
            raise OSError(f"cannot listen on {self.what} {self.endpoint}: {exc}{self.listen_hint}") from None
        self._sock = sock
        self._task = asyncio.create_task(self._serve(), name=self.what)
        self.log.info("%s listening on %s", self.what, self.endpoint)

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._handlers) if t]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    async def _serve(self) -> None:
        while True:
            frames = await self._sock.recv_multipart()
            task = asyncio.create_task(self._answer(frames[0], frames[-1]))
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
            except self.user_errors as exc:
                reply = {"ok": False, "error": str(exc)}
            except Exception as exc:  # every request gets an answer
                self.log.exception("%s request failed", self.what)
                reply = {"ok": False, "error": f"internal error: {exc}"}
        await self._sock.send_multipart([ident, b"", json.dumps(reply, default=str).encode()])


def ask(endpoint: str, payload: dict[str, Any], timeout_s: float, unreachable: type[Exception],
        silent_hint: str) -> dict[str, Any]:
    """Send one request and return the reply (blocking). Raises `unreachable` with one line
    (`silent_hint` says who did not answer, e.g. "node at tcp://… … (is it running?)")."""
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            raise unreachable(f"cannot use endpoint {endpoint!r}: {exc} (expected tcp://HOST:PORT or ipc://PATH)") from None
        sock.send(json.dumps(payload).encode())
        if not sock.poll(int(timeout_s * 1000)):
            raise unreachable(silent_hint.format(endpoint=endpoint, timeout_s=timeout_s))
        return json.loads(sock.recv())
    finally:
        sock.close(linger=0)
