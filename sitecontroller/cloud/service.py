"""The cloud service: this node as one Azure IoT Hub device (azure-iot-device aio client).

A runtime service (`async start/close`, built from the node). Three tasks on the node's loop:
- connection: connect; on every (re)connect read the whole twin (patches sent while offline are
  otherwise lost), apply it, report; then wait until the link is lost; retry with exponential backoff
  and jitter (1 s doubling to `cloud.reconnect_max_s`, 5 min by default). The SDK's own retry is off: it is this loop that reconnects, and
  a send that hangs (the SDK is known to lose connections silently) counts as a lost link.
- telemetry: every `telemetry_interval_s` an SC_Spot_10s, every second the events and reported
  properties that changed; all through the offline queue.
- sender: drains the offline queue in order while connected, batches in flight, removes what the
  hub acknowledged.
SDK callbacks (methods, desired patches, connection changes) arrive on the SDK's own threads/loop
and are handed to the node's loop. Without usable credentials the node runs without cloud and
says so in status (`cloud.problem`).
"""
from __future__ import annotations

import asyncio
import functools
import logging
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import telemetry as tm
from .config import CloudConfigError, read_credentials
from .methods import MethodRouter
from .offline_queue import OfflineQueue
from .twin import ParameterTwin

log = logging.getLogger("sitecontroller.cloud")

BACKOFF_FIRST_S = 1.0
SEND_TIMEOUT_S = 30.0  # a batch not acknowledged by then: the link is dead
BATCH = 100
EVENT_TICK_S = 1.0


@functools.cache
def _firmware_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bess-controller")
    except PackageNotFoundError:
        return "unknown"


def describe(exc: BaseException) -> str:
    from .sdk import ConnectionFailedError, CredentialError

    if isinstance(exc, CredentialError):
        return "authentication failed: the hub refused this device's key (check the connection string file)"
    if isinstance(exc, ConnectionFailedError):
        cause = exc.__cause__ or exc
        return f"cannot reach the hub ({type(cause).__name__}{': ' + str(cause) if str(cause) else ''})"
    if isinstance(exc, TimeoutError):
        return f"the hub did not answer within {SEND_TIMEOUT_S:g} s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class CloudService:
    def __init__(self, node):
        self.node = node
        self.cfg = node.params.cloud
        node.cloud = self
        self.connected = False
        self.last_connected: float | None = None
        self.sent = self.failed = 0
        self.problem: str | None = None
        self.interval_s = self.cfg.telemetry_interval_s
        data = Path(node.params.data_dir) / "cloud"
        self.queue = OfflineQueue(data / "outbox.sqlite", self.cfg.offline_queue.max_age_s,
                                  int(self.cfg.offline_queue.max_mb * 1024 * 1024), wall=node.clock.wall)
        self._queue_stats = self.queue.stats()
        self.twin = ParameterTwin(node)
        self.methods = MethodRouter(node, self.cfg, self._setup_device, self._command_event)
        self.events = tm.EventWatch()
        self._io = ThreadPoolExecutor(1, thread_name_prefix="cloud-queue")
        self._client = None
        self._lost = asyncio.Event()
        self._queued = asyncio.Event()
        self._interval_changed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._reported: dict = {}
        node.live.listeners.append(self._runtime_change)

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        logging.getLogger("azure.iot.device").setLevel(logging.WARNING)  # its INFO is one line per message
        self._tasks.append(asyncio.create_task(self._telemetry(), name="cloud-telemetry"))
        try:
            self.creds = read_credentials(self.cfg)
        except CloudConfigError as exc:
            self.problem = f"running without cloud: {exc}"
            log.error("%s", self.problem)
            return
        log.info("cloud: device %s on %s (%s)", self.creds.device_id, self.creds.hostname,
                 "MQTT over WSS 443" if self.cfg.websockets else "MQTT/TLS 8883")
        self._tasks += [asyncio.create_task(self._connection(), name="cloud-connection"),
                        asyncio.create_task(self._sender(), name="cloud-sender")]

    async def close(self) -> None:
        if self._runtime_change in self.node.live.listeners:
            self.node.live.listeners.remove(self._runtime_change)
        for task in self._tasks:
            task.cancel()
        self.methods.close()
        client, self._client = self._client, None
        if client is not None:  # on a daemon thread: the node's exit never waits for the SDK
            threading.Thread(target=_shutdown_in_thread, args=(client,), name="cloud-shutdown", daemon=True).start()
        await self.loop.run_in_executor(self._io, self.queue.close)
        self._io.shutdown(wait=False)

    def status(self) -> dict:
        s = self._queue_stats
        return {"enabled": True, "connected": self.connected,
                "last_connected": None if self.last_connected is None else tm.iso(self.last_connected),
                "queued": s["queued"], "oldest_queued_s": s["oldest_queued_s"], "dropped": s["dropped"],
                "sent": self.sent, "failed": self.failed, "problem": self.problem,
                "parameters_status": self.twin.status}

    # --- the queue ---------------------------------------------------------------------------
    async def _io_call(self, fn, *args):
        result = await self.loop.run_in_executor(self._io, fn, *args)
        self._queue_stats = await self.loop.run_in_executor(self._io, self.queue.stats)
        return result

    async def put(self, kind: str, body: dict) -> int:
        seq = await self._io_call(self.queue.put, kind, tm.properties(kind), body)
        self._queued.set()
        return seq

    def _command_event(self, ack) -> None:
        body = {"ts": tm.iso(self.node.clock.wall()), "node_id": self.node.params.identity.node_id,
                "command_id": ack.id, "type": ack.type, "status": ack.status, "detail": ack.detail}
        asyncio.ensure_future(self.put(tm.COMMAND, body))

    # --- connection --------------------------------------------------------------------------
    async def _connection(self) -> None:
        backoff = BACKOFF_FIRST_S
        while True:
            client = self._new_client()
            try:
                await asyncio.wait_for(client.connect(), SEND_TIMEOUT_S)  # a hub that never answers
                await self.loop.run_in_executor(None, self._set_handlers, client)  # the setters block
                self._client, self._lost = client, asyncio.Event()
                self.connected, self.last_connected, self.problem = True, self.node.clock.wall(), None
                log.info("cloud: connected to %s", self.creds.hostname)
                await self._read_twin(client)
                self._queued.set()
                backoff = BACKOFF_FIRST_S
                await self._lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.problem = describe(exc)
            self.connected, self._client = False, None
            await self.loop.run_in_executor(None, _shutdown_in_thread, client)
            wait = backoff * random.uniform(0.5, 1.5)
            log.warning("cloud: %s; next try in %.1f s", self.problem or "link lost", wait)
            await asyncio.sleep(wait)
            backoff = min(backoff * 2, self.cfg.reconnect_max_s)

    def _new_client(self):
        from .sdk import IoTHubDeviceClient

        return IoTHubDeviceClient.create_from_connection_string(
            self.creds.connection_string, server_verification_cert=self.creds.ca_pem, websockets=self.cfg.websockets,
            connection_retry=False, keep_alive=30)

    def _set_handlers(self, client) -> None:
        client.on_method_request_received = self._on_method
        client.on_twin_desired_properties_patch_received = self._on_desired_patch
        client.on_connection_state_change = self._on_connection_change

    def _lose(self, why: str) -> None:
        if self.connected:
            self.problem = why
        self._lost.set()

    async def _on_connection_change(self) -> None:  # on the SDK's handler loop
        client = self._client
        if client is not None and not client.connected:
            self.loop.call_soon_threadsafe(self._lose, "the hub closed the connection")

    # --- twin ----------------------------------------------------------------------------------
    async def _read_twin(self, client) -> None:
        twin = await asyncio.wait_for(client.get_twin(), SEND_TIMEOUT_S)
        await self.twin.desired_twin(twin.get("desired", {}))
        self._reported = {}  # report everything again after a connect
        await self._report()

    async def _on_desired_patch(self, patch: dict) -> None:  # on the SDK's handler loop
        asyncio.run_coroutine_threadsafe(self._desired_patch(patch), self.loop)

    async def _desired_patch(self, patch: dict) -> None:
        if await self.twin.desired_patch(patch) == "gap" and self._client is not None:
            log.info("desired patch version %s follows a gap: reading the whole twin", patch.get("$version"))
            await self._read_twin(self._client)
        await self._report()

    async def _setup_device(self, doc: dict, origin: str):
        outcome = await self.twin.setup_device(doc, origin)
        asyncio.ensure_future(self._report())
        return outcome

    def _runtime_change(self, old, new) -> None:
        """Run-time site parameters changed (`live_params`, on the node's loop, between two cycles):
        the telemetry loop takes a new interval at once."""
        if new.cloud is not None and new.cloud.telemetry_interval_s != self.interval_s:
            self.interval_s = new.cloud.telemetry_interval_s
            self._interval_changed.set()

    async def _report(self) -> None:
        status = self.node.status()
        want = {**self.twin.reported(), "firmware_version": _firmware_version(), "node_id": status["node_id"],
                "state": status["state"], "role": status["role"], "mode": tm.cluster_mode(self.node)}
        patch = {k: v for k, v in want.items() if self._reported.get(k) != v}
        client = self._client
        if not patch or client is None:
            return
        try:
            await asyncio.wait_for(client.patch_twin_reported_properties(patch), SEND_TIMEOUT_S)
            self._reported.update(patch)
        except Exception as exc:
            self._lose(f"reporting properties failed: {describe(exc)}")

    # --- methods -------------------------------------------------------------------------------
    async def _on_method(self, request) -> None:  # on the SDK's handler loop
        from .sdk import MethodResponse

        answer = asyncio.run_coroutine_threadsafe(
            self.methods.answer(request.name, request.payload, request.request_id), self.loop)
        status, body = await asyncio.wrap_future(answer)
        client = self._client
        if client is not None:
            await client.send_method_response(MethodResponse.create_from_method_request(request, status, body))

    # --- telemetry and sending -----------------------------------------------------------------
    async def _telemetry(self) -> None:
        next_spot = self.node.clock.monotonic()
        while True:
            status = self.node.status()
            for kind, body in self.events.events(self.node, status):
                await self.put(kind, body)
            if self.node.clock.monotonic() >= next_spot:
                await self.put(tm.SPOT, tm.spot(self.node, status))
                next_spot = self.node.clock.monotonic() + self.interval_s
            await self._report()
            self._interval_changed.clear()
            try:
                await asyncio.wait_for(self._interval_changed.wait(),
                                       max(0.05, min(EVENT_TICK_S, next_spot - self.node.clock.monotonic())))
                next_spot = min(next_spot, self.node.clock.monotonic() + self.interval_s)
            except TimeoutError:
                pass

    async def _sender(self) -> None:
        from .sdk import Message

        while True:
            await self._queued.wait()
            self._queued.clear()
            while self.connected and self._client is not None:
                rows = await self._io_call(self.queue.peek, BATCH)
                if not rows:
                    break
                client, msgs = self._client, []
                for row in rows:
                    msg = Message(row.body, content_encoding="utf-8", content_type="application/json")
                    msg.custom_properties.update(row.properties)
                    msgs.append(msg)
                done = []
                try:  # one at a time: the SDK runs concurrent sends on a thread pool, out of order
                    for row, msg in zip(rows, msgs):
                        await asyncio.wait_for(client.send_message(msg), SEND_TIMEOUT_S)
                        done.append(row.id)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.failed += 1
                    self._lose(f"sending failed: {describe(exc)}")
                finally:
                    if done:
                        await asyncio.shield(self._io_call(self.queue.remove, done))
                        self.sent += len(done)
                if len(done) < len(rows):
                    break


def _shutdown_in_thread(client) -> None:
    """Close an SDK client on a worker thread with its own loop (the node's loop never waits for it)."""
    try:
        asyncio.run(asyncio.wait_for(client.shutdown(), 5.0))
    except Exception as exc:  # a client that cannot even close is dropped
        log.debug("cloud: client shutdown: %r", exc)
