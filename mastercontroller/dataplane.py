"""The cluster data plane: node status and leader dispatch over ZeroMQ PUB/SUB with CurveZMQ.

Each node binds one PUB socket at its member `data` address and publishes on it:
its own status every cycle (`status` topic) and, while it leads, the dispatch
(`dispatch` topic). It subscribes to every other member's PUB. So a status or a
dispatch travels one hop, and a dead node costs nothing but its silence.

CurveZMQ: the PUB is a CURVE server; ZAP lets in only subscribers whose public key
is a member's (`allowed.AllowedKeys`: a refused key is counted and logged once per key).
A SUB is a CURVE client that accepts only the member's own server key, so a
stranger can neither listen nor pose as a member. Messages are JSON validated by
`messages.decode`; anything that does not validate is dropped and counted.

Runs on the node's asyncio loop (`zmq.asyncio`), with its own ZeroMQ context and
authenticator, apart from the Raft transport's thread.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from .allowed import AllowedKeys
from .messages import DISPATCH, STATUS, DispatchMessage, StatusMessage, decode

log = logging.getLogger("mastercontroller.dataplane")

REDIAL_S = 2.0  # a member silent this long is dialled again


@dataclass(frozen=True, slots=True)
class Peer:
    node_id: str
    data: str  # "host:port" of its PUB
    public_key: str  # Z85


def tcp(address: str) -> str:
    return address if "://" in address else f"tcp://{address}"


class DataPlane:
    def __init__(self, self_id: str, bind: str, peers: list[Peer], *, public_key: str, secret_key: str,
                 on_status: Callable[[StatusMessage], None], on_dispatch: Callable[[DispatchMessage], None]):
        self.self_id = self_id
        self.bind = bind
        self.peers = {p.node_id: p for p in peers if p.node_id != self_id}
        self._public, self._secret = public_key.encode(), secret_key.encode()
        self.on_status, self.on_dispatch = on_status, on_dispatch
        self.allowed = AllowedKeys("data plane", {p.public_key: p.node_id for p in peers})
        self.dropped: Counter[str] = Counter()
        self.redials: Counter[str] = Counter()
        self._ctx: zmq.asyncio.Context | None = None
        self._auth: AsyncioAuthenticator | None = None
        self._pub: zmq.asyncio.Socket | None = None
        self._subs: dict[str, zmq.asyncio.Socket] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._closing: set[asyncio.Task] = set()  # receivers of members that left, until they have ended

    async def start(self) -> None:
        self._ctx = zmq.asyncio.Context()
        self._auth = AsyncioAuthenticator(self._ctx)
        self._auth.start()
        self._auth.configure_curve_callback("*", credentials_provider=self.allowed)
        pub = self._ctx.socket(zmq.PUB)
        pub.curve_server, pub.curve_publickey, pub.curve_secretkey = True, self._public, self._secret
        pub.linger, pub.sndhwm = 0, 100
        pub.bind(tcp(self.bind))
        self._pub = pub
        for peer in self.peers.values():
            self.connect(peer)

    def connect(self, peer: Peer) -> None:
        sub = self._ctx.socket(zmq.SUB)
        sub.curve_serverkey = peer.public_key.encode()
        sub.curve_publickey, sub.curve_secretkey = self._public, self._secret
        sub.linger, sub.rcvhwm, sub.reconnect_ivl, sub.reconnect_ivl_max = 0, 100, 100, 1000
        sub.setsockopt(zmq.SUBSCRIBE, STATUS)
        sub.setsockopt(zmq.SUBSCRIBE, DISPATCH)
        sub.connect(tcp(peer.data))
        self.allowed.allow(peer.public_key, peer.node_id)  # it may subscribe to us too
        self.peers[peer.node_id] = peer
        self._subs[peer.node_id] = sub
        self._tasks[peer.node_id] = asyncio.create_task(self._receive(peer.node_id, sub), name=f"sub-{peer.node_id}")

    async def disconnect(self, node_id: str) -> None:
        """Stop listening to a member that left; new subscriptions with its key are refused
        (one already open is not cut: it only hears what every member hears).

        The caller (the cluster's cycle) never waits on the receiver: its socket is closed
        once the cancelled task has ended, however long that takes."""
        task, sub = self._tasks.pop(node_id, None), self._subs.pop(node_id, None)
        peer = self.peers.pop(node_id, None)
        if peer is not None:
            self.allowed.disallow(peer.public_key, node_id)
        if task is not None:
            task.cancel()
            if sub is not None:
                task.add_done_callback(lambda _: sub.close(0))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        elif sub is not None:
            sub.close(0)

    def publish(self, msg: StatusMessage | DispatchMessage) -> None:
        """Never blocks: a full queue (a slow subscriber) drops the message."""
        if self._pub is None:
            return
        topic = STATUS if isinstance(msg, StatusMessage) else DISPATCH
        try:
            self._pub.send_multipart([topic, msg.encode()], flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped["send queue full"] += 1

    async def _receive(self, node_id: str, sub: zmq.asyncio.Socket) -> None:
        address = tcp(self.peers[node_id].data)
        while True:
            try:
                frames = await asyncio.wait_for(sub.recv_multipart(), REDIAL_S)
            except asyncio.TimeoutError:
                # Silent: it is down, or it refused our key (libzmq gives up after a refused
                # handshake; e.g. we were not yet a member when we first dialled): dial again.
                sub.disconnect(address)
                sub.connect(address)
                self.redials[node_id] += 1
                continue
            try:
                if len(frames) != 2:
                    raise ValueError(f"{len(frames)} frames")
                msg = decode(frames[0], frames[1])
            except ValueError as exc:
                if not self.dropped[f"invalid from {node_id}"]:
                    log.warning("data plane: dropping an invalid message from %s: %s", node_id, exc)
                self.dropped[f"invalid from {node_id}"] += 1
                continue
            sender = msg.node_id if isinstance(msg, StatusMessage) else msg.leader
            if sender != node_id:  # a member speaks only for itself
                self.dropped[f"{node_id} spoke for {sender}"] += 1
            elif isinstance(msg, StatusMessage):
                self.on_status(msg)
            else:
                self.on_dispatch(msg)

    async def close(self) -> None:
        for node_id in list(self._subs):
            await self.disconnect(node_id)
        if self._closing:
            _, pending = await asyncio.wait(set(self._closing), timeout=2.0)
            if pending:
                log.warning("data plane: %d receiver(s) did not stop within 2 s", len(pending))
        if self._pub is not None:
            self._pub.close(0)
            self._pub = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def stats(self) -> dict:
        return {"refused_keys": sum(self.allowed.refused.values()), "dropped": dict(self.dropped),
                "redials": dict(self.redials)}
