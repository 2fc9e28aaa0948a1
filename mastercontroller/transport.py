"""A pysyncobj Transport over ZeroMQ, authenticated and encrypted with CurveZMQ.

Sockets
    * one ROUTER bound at this node's address (CURVE server): every message from every peer
      arrives here; the routing identity is the sender's node id;
    * one DEALER per peer (CURVE client, the peer's public key as server key,
      ``zmq.IDENTITY`` = our node id): everything we send to that peer;
    * one REP bound at ``inproc://zeromq.zap.01`` in our own context: the ZAP handler. It allows
      exactly the public keys of the current members (``addNode``/``dropNode`` keep the set up to
      date) and answers with the member's node id as ZAP User-Id. A peer with any other key fails
      the CURVE handshake, so nothing it sends reaches pysyncobj (nor ``pickle``); it is counted
      (``allowed.refused``) and logged once per key (``allowed.AllowedKeys``).

Threads
    Every socket is created, used and closed on pysyncobj's own autoTick thread
    (``tryGetReady``/tick callbacks/poller callbacks/``send``/``destroy`` all run there), so no
    ZMQ socket is ever touched from two threads. The constructor (caller's thread) only records
    the configuration. Reading ``allowed.refused``/``connected`` etc. from other threads reads plain
    Python values.

Wake-ups
    The ``zmq.FD`` of the ROUTER, of the ZAP socket and of each DEALER's monitor socket is
    registered with pysyncobj's poller (``syncObj._poller.subscribe``), so the tick thread wakes
    as soon as something arrives. That FD is edge-triggered and is also reset by our own sends,
    so every wake-up drains *all* sockets until each says EAGAIN, and a tick callback drains
    again right before the poller sleeps: a message is never left behind a consumed edge.

Links
    ZMQ reconnects by itself (``RECONNECT_IVL`` 100 ms, no back-off) and ZMTP heartbeats
    (100 ms interval, 400 ms timeout) detect a silent peer. A DEALER's monitor reports
    ``HANDSHAKE_SUCCEEDED`` (-> pysyncobj ``_onNodeConnected``) and ``DISCONNECTED``/
    ``HANDSHAKE_FAILED_*`` (-> ``_onNodeDisconnected``): a peer is "connected" only once CURVE
    authenticated it. ``IMMEDIATE`` keeps messages from queueing for a peer that is not
    connected, ``SNDHWM`` bounds what a stalled peer can hold, ``LINGER`` 0 makes close instant.

Lease guard (lease.py)
    Every Raft message passes ``LeaseGuard``: heartbeats carry their send time and replies
    echo it (the lease anchor), and a follower drops vote requests while it hears a leader.
"""
from __future__ import annotations

import logging
import pickle
import threading
import time

import zmq
from pysyncobj.node import Node
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.transport import Transport, TransportNotReadyError
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from mastercontroller.allowed import AllowedKeys
from mastercontroller.lease import LeaseGuard

log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = b"bess-cluster"
RECONNECT_IVL_MS = 100
HEARTBEAT_IVL_MS = 100
HEARTBEAT_TIMEOUT_MS = 400
SNDHWM = 1000               # messages queued per peer at most (a dead peer cannot fill memory)
RCVHWM = 10000
MAX_MSG_BYTES = 64 << 20    # pysyncobj sends snapshots in chunks far below this
REDIAL_AFTER_AUTH_FAIL_S = 0.5  # libzmq stops reconnecting after the server refused our key
MAX_PER_DRAIN = 2000        # messages per socket per drain pass (the tick drains the rest)
_MONITOR_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
                   | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                   | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


class ZmqNode(Node):
    """A cluster member: id = node id; address "host:port" of its ROUTER; its Z85 public key;
    `data` "host:port" of its data-plane publisher (not used here: it travels with the node
    through the Raft log, so every member learns where an added member publishes)."""

    def __init__(self, id, address=None, public_key=None, data=None, **kwargs):  # noqa: A002 - pysyncobj's name
        super().__init__(id, address=address, public_key=public_key, data=data, **kwargs)

    def __repr__(self):
        return f"ZmqNode({self.id!r}, {self.address!r})"


class ZmqTransport(Transport):
    """pysyncobj Transport over ZMQ ROUTER/DEALER with CURVE + ZAP. Build it through
    ``functools.partial(ZmqTransport, secret_key=..., public_key=...)`` as ``transportClass``."""

    def __init__(self, syncObj, selfNode, otherNodes, *, secret_key: str, public_key: str,
                 stick_s: float = 0.0):
        super().__init__(syncObj, selfNode, otherNodes)
        if selfNode is None or not isinstance(selfNode, ZmqNode):
            raise ValueError("ZmqTransport needs a ZmqNode as self node (read-only nodes are not supported)")
        self._syncObj = syncObj
        self._self = selfNode
        self._secret = secret_key.encode("ascii")
        self._public = public_key.encode("ascii")
        self.lease = LeaseGuard(stick_s)
        self._nodes: dict[str, ZmqNode] = {}          # node id -> node (the peers)
        self.allowed = AllowedKeys("cluster transport", {public_key: self._self.id})  # peers + self
        self._ctx = None
        self._router = None
        self._zap = None
        self._dealers: dict[str, zmq.Socket] = {}
        self._monitors: dict[str, zmq.Socket] = {}
        self._fds: dict[int, zmq.Socket] = {}
        self._connected: set[str] = set()
        self._redial: dict[str, float] = {}          # node id -> monotonic time to re-create its DEALER
        self.auth_failures = 0                       # our handshakes a peer refused
        self._ready = False
        self._bind_error: str | None = None
        self._ready_event = threading.Event()
        self._draining = False
        self._closed = False
        # counters, readable from any thread
        self.dropped = 0                             # authenticated but unusable messages
        self._dropped_logged: set = set()
        for node in otherNodes:
            self.addNode(node)
        syncObj.addOnTickCallback(self._onTick)

    # ---------------------------------------------------------------- readiness
    def tryGetReady(self):
        if self._ready or self._closed:
            return
        try:
            self._open()
        except zmq.ZMQError as e:
            self._bind_error = f"cannot bind {self._self.address}: {e}"
            self._close_sockets()
            self._ready_event.set()
            # not raised: pysyncobj's tick thread would end on the first failure; it calls us
            # again each tick (sleeping autoTickPeriod between), and ClusterConsensus.start()
            # reports the error to the caller.
            return
        self._ready = True
        self._bind_error = None
        self._ready_event.set()

    @property
    def ready(self):
        return self._ready

    @property
    def bind_error(self) -> str | None:
        return self._bind_error

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait (any thread) until the first bind attempt finished; True if bound."""
        self._ready_event.wait(timeout_s)
        return self._ready

    def waitReady(self):
        self._ready_event.wait()
        if not self._ready:
            raise TransportNotReadyError(self._bind_error)

    def _open(self):
        self._ctx = zmq.Context()
        zap = self._ctx.socket(zmq.REP)
        zap.linger = 0
        zap.bind(ZAP_ENDPOINT)
        self._zap = zap
        self._watch(zap)
        r = self._ctx.socket(zmq.ROUTER)
        r.linger = 0
        r.curve_server = True
        r.curve_secretkey = self._secret
        r.zap_domain = ZAP_DOMAIN
        r.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted peer takes over its identity at once
        r.rcvhwm = RCVHWM
        r.maxmsgsize = MAX_MSG_BYTES
        r.heartbeat_ivl = HEARTBEAT_IVL_MS
        r.heartbeat_timeout = HEARTBEAT_TIMEOUT_MS
        r.heartbeat_ttl = HEARTBEAT_TIMEOUT_MS
        self._router = r
        r.bind(f"tcp://{self._self.address}")
        self._watch(r)
        for node in list(self._nodes.values()):
            self._open_dealer(node)

    def _watch(self, sock):
        fd = sock.getsockopt(zmq.FD)
        self._fds[fd] = sock
        self._syncObj._poller.subscribe(fd, self._onFdEvent, POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR)

    def _unwatch(self, sock):
        for fd, s in list(self._fds.items()):
            if s is sock:
                self._syncObj._poller.unsubscribe(fd)
                del self._fds[fd]

    def _open_dealer(self, node: ZmqNode):
        if node.id in self._dealers or self._ctx is None:
            return
        d = self._ctx.socket(zmq.DEALER)
        d.linger = 0
        d.setsockopt(zmq.IDENTITY, self._self.id.encode())
        d.curve_secretkey = self._secret
        d.curve_publickey = self._public
        d.curve_serverkey = node.public_key.encode("ascii")
        d.sndhwm = SNDHWM
        d.immediate = True
        d.reconnect_ivl = RECONNECT_IVL_MS
        d.reconnect_ivl_max = 0
        d.heartbeat_ivl = HEARTBEAT_IVL_MS
        d.heartbeat_timeout = HEARTBEAT_TIMEOUT_MS
        d.heartbeat_ttl = HEARTBEAT_TIMEOUT_MS
        mon = d.get_monitor_socket(_MONITOR_EVENTS)
        self._dealers[node.id] = d
        self._monitors[node.id] = mon
        self._watch(mon)
        d.connect(f"tcp://{node.address}")

    def _close_dealer(self, node_id: str):
        if node_id not in self._nodes:  # dropped for good: no redial either
            self._redial.pop(node_id, None)
        d = self._dealers.pop(node_id, None)
        mon = self._monitors.pop(node_id, None)
        if mon is not None:
            self._unwatch(mon)
        if d is not None:
            try:
                d.disable_monitor()
            except zmq.ZMQError:
                pass
            d.close(0)
        if mon is not None:
            mon.close(0)

    # ---------------------------------------------------------------- membership
    def addNode(self, node):
        if not isinstance(node, ZmqNode) or not node.address or not node.public_key:
            raise ValueError(f"ZmqTransport: {node!r} needs an address and a public key")
        self._nodes[node.id] = node
        self.allowed.allow(node.public_key, node.id)
        if self._ready:
            self._open_dealer(node)

    def dropNode(self, node):
        node = self._nodes.pop(node.id, None)
        if node is None:
            return
        self.allowed.disallow(node.public_key, node.id)
        self._close_dealer(node.id)
        if node.id in self._connected:
            self._connected.discard(node.id)
            self._onNodeDisconnected(node)
        self.lease.forget(node.id)

    # ---------------------------------------------------------------- sending
    def send(self, node, message):
        d = self._dealers.get(node.id)
        if d is None or node.id not in self._connected:
            return False
        message = self.lease.stamp(node.id, message)
        try:
            d.send(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL), zmq.NOBLOCK)
        except zmq.Again:
            return False
        except zmq.ZMQError as e:
            log.debug("send to %s failed: %s", node.id, e)
            return False
        return True

    # ---------------------------------------------------------------- receiving
    def _onFdEvent(self, descr, event):
        self._drain()

    def _onTick(self):
        if not self._ready:
            return
        if self._redial:
            now = time.monotonic()
            for node_id, due in list(self._redial.items()):
                if due <= now:
                    del self._redial[node_id]
                    node = self._nodes.get(node_id)
                    if node is not None:
                        self._close_dealer(node_id)
                        self._open_dealer(node)
        self._drain()

    def _drain(self):
        if self._draining or self._closed or not self._ready:
            return
        self._draining = True
        try:
            for _ in range(50):
                busy = self._drain_zap()
                busy |= self._drain_monitors()
                busy |= self._drain_router()
                if not busy:
                    break
        finally:
            self._draining = False

    def _drain_zap(self) -> bool:
        busy = False
        for _ in range(MAX_PER_DRAIN):
            if self._zap is None:
                break
            try:
                frames = self._zap.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            busy = True
            self._zap.send_multipart(self._zap_reply(frames))
        return busy

    def _zap_reply(self, frames):
        # ZAP request: version, request id, domain, address, identity, mechanism, credentials...
        if len(frames) < 6:
            return [b"1.0", b"", b"500", b"bad ZAP request", b"", b""]
        version, request_id, domain, address, _identity, mechanism = frames[:6]
        creds = frames[6:]
        if mechanism == b"CURVE" and creds and len(creds[0]) == 32:
            who = z85.encode(creds[0]).decode("ascii")
            node_id = self.allowed.node_of(who)
            if node_id is not None:
                return [version, request_id, b"200", b"OK", node_id.encode(), b""]
        else:
            who = f"{mechanism.decode(errors='replace')} (no CURVE key)"
        self.allowed.refuse(who, address.decode(errors="replace"))
        return [version, request_id, b"400", b"key not allowed", b"", b""]

    def _drain_monitors(self) -> bool:
        busy = False
        for node_id, mon in list(self._monitors.items()):
            for _ in range(MAX_PER_DRAIN):
                if self._monitors.get(node_id) is not mon:
                    break
                try:
                    frames = mon.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                busy = True
                try:
                    event = parse_monitor_message(frames)["event"]
                except Exception:  # noqa: BLE001 - a malformed monitor frame is ignored
                    continue
                node = self._nodes.get(node_id)
                if node is None:
                    continue
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self._redial.pop(node_id, None)
                    if node_id not in self._connected:
                        self._connected.add(node_id)
                        self._onNodeConnected(node)
                    continue
                if event & (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                    # after a refusal libzmq does not reconnect by itself: dial again later
                    # (the peer may not know our key yet, e.g. while we are being added)
                    if event & zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                        self.auth_failures += 1
                    self._redial.setdefault(node_id, time.monotonic() + REDIAL_AFTER_AUTH_FAIL_S)
                if node_id in self._connected:
                    self._connected.discard(node_id)
                    self._onNodeDisconnected(node)
        return busy

    def _drain_router(self) -> bool:
        busy = False
        r = self._router
        for _ in range(MAX_PER_DRAIN):
            if r is None or self._closed:
                break
            try:
                frames = r.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            busy = True
            self._deliver(frames)
        return busy

    def _drop(self, reason: str, key):
        self.dropped += 1
        if key not in self._dropped_logged and len(self._dropped_logged) < 100:
            self._dropped_logged.add(key)
            log.warning("cluster transport: dropped a message: %s", reason)

    def _deliver(self, frames):
        if len(frames) != 2:
            self._drop(f"{len(frames)} frames", ("frames", len(frames)))
            return
        ident, payload = frames
        try:
            user = payload.get("User-Id")
        except zmq.ZMQError:
            user = None
        node = self._nodes.get(user) if user else None
        if node is None:
            # authenticated, but not a current peer (e.g. a member removed a moment ago)
            self._drop(f"sender {user!r} is not a current member", ("user", user))
            return
        if ident.bytes != user.encode():
            self._drop(f"member {user} used identity {ident.bytes!r}", ("ident", user))
            return
        try:
            message = pickle.loads(payload.buffer)
        except Exception as e:  # noqa: BLE001 - a member sent garbage: drop, never crash the tick
            self._drop(f"undecodable message from {user}: {e}", ("pickle", user))
            return
        if not isinstance(message, dict) or "type" not in message:
            self._drop(f"not a pysyncobj message from {user}", ("type", user))
            return
        if not self.lease.admit(node.id, message, self._syncObj.raftCurrentTerm, self._syncObj._isLeader()):
            return
        self._onMessageReceived(node, message)

    # ---------------------------------------------------------------- queries (any thread)
    def newest_acks(self) -> list[float]:
        """Per current peer, the send time of the newest heartbeat it acknowledged: newest first."""
        return self.lease.newest_acks(set(self._nodes))

    @property
    def connected(self) -> list[str]:
        return sorted(self._connected)

    @property
    def peer_ids(self) -> list[str]:
        return sorted(self._nodes)

    # ---------------------------------------------------------------- shutdown
    def _close_sockets(self):
        for node_id in list(self._dealers):
            self._close_dealer(node_id)
        for sock in (self._router, self._zap):
            if sock is not None:
                self._unwatch(sock)
                sock.close(0)
        self._router = self._zap = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def destroy(self):
        self._closed = True
        self._syncObj.removeOnTickCallback(self._onTick)
        self.setOnMessageReceivedCallback(None)
        self.setOnNodeConnectedCallback(None)
        self.setOnNodeDisconnectedCallback(None)
        self._close_sockets()
        self._connected.clear()
        self._ready = False
