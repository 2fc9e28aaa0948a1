"""The IoT Hub emulator: device endpoints (MQTT/TLS on 8883, MQTT over WSS on 443) and an operator API.

    hub = HubEmulator(state_dir, host="127.0.0.7")   # creates its CA and server certificate
    hub.registry.add_device("node1")                 # writes state_dir/node1.cs
    await hub.start()
    status, payload = await hub.invoke("node1", "GoToState_Running", {}, timeout_s=30)
    await hub.set_desired("node1", {"parameters": {...}})
    await hub.stop()

Why not a general MQTT broker: IoT Hub is not a pub/sub relay. Its `$iothub/...` topics are the
same for every device and mean "this connection", the hub itself answers twin requests and sends
method requests to one connection, and devices never receive each other's messages. Per-connection
addressing is what a broker's topic routing does not offer, so the emulator is a small MQTT 3.1.1
server (`mqtt_packets.py`) with the hub's behaviour (`session.py`).
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import ssl
from pathlib import Path

from aiohttp import WSMsgType, web

from .certs import ensure_certificates
from .registry import Registry
from .session import DeviceSession

log = logging.getLogger("hub-emulator")

METHOD_TIMEOUT_S = 30.0


class _WsWriter:
    """The writer half of a WebSocket as a stream: packets go out in order, from one sender task."""

    def __init__(self, ws: web.WebSocketResponse):
        self.ws, self._out = ws, asyncio.Queue()
        self._sender = asyncio.create_task(self._send())

    def write(self, data: bytes) -> None:
        self._out.put_nowait(data)

    async def drain(self) -> None:
        pass

    async def _send(self) -> None:
        while True:
            data = await self._out.get()
            if data is None or self.ws.closed:
                return
            await self.ws.send_bytes(data)

    def close(self) -> None:
        self._out.put_nowait(None)
        if not self.ws.closed:
            asyncio.ensure_future(self.ws.close())


class HubEmulator:
    def __init__(self, state_dir, host: str = "127.0.0.1", *, mqtt_port: int = 8883, wss_port: int | None = 443,
                 admin_port: int = 0, hostname: str | None = None):
        self.dir = Path(state_dir)
        self.host, self.mqtt_port, self.wss_port, self.admin_port = host, mqtt_port, wss_port, admin_port
        self.registry = Registry(self.dir, hostname or host)
        self.ca_file, cert, key = ensure_certificates(self.dir, [host, self.registry.hostname, "localhost", "127.0.0.1"])
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(cert, key)
        self.sessions: dict[str, DeviceSession] = {}
        self.cut_off: set[str] = set()  # devices whose link is cut (a simulated outage of their internet)
        self._pending: dict[tuple[str, str], asyncio.Future] = {}
        self._mqtt: asyncio.AbstractServer | None = None
        self._runners: list[web.AppRunner] = []

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._mqtt = await asyncio.start_server(self._on_tcp, self.host, self.mqtt_port, ssl=self._tls)
        if self.wss_port is not None:
            app = web.Application()
            app.router.add_get("/$iothub/websocket", self._on_ws)
            try:
                await self._serve(app, self.wss_port, self._tls)
            except OSError as exc:  # 443 needs root or CAP_NET_BIND_SERVICE
                log.warning("no MQTT over WSS: cannot listen on %s:%d (%s); MQTT/TLS only", self.host,
                            self.wss_port, exc.strerror or exc)
                self.wss_port = None
        from .admin import admin_app  # the operator API (invoke, desired, twin, telemetry)

        self.admin_port = await self._serve(admin_app(self), self.admin_port, None)
        (self.dir / "admin.json").write_text(json.dumps({"url": f"http://{self.host}:{self.admin_port}"}))
        log.info("IoT Hub emulator on %s: MQTT/TLS %d, WSS %s, operator API %d; CA %s", self.host, self.mqtt_port,
                 self.wss_port, self.admin_port, self.ca_file)

    async def _serve(self, app: web.Application, port: int, tls) -> int:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, port, ssl_context=tls)
        await site.start()
        self._runners.append(runner)
        return runner.addresses[0][1]

    async def stop(self) -> None:
        if self._mqtt is not None:
            self._mqtt.close()
        for session in list(self.sessions.values()):
            session.close()
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        if self._mqtt is not None:
            await self._mqtt.wait_closed()
        for fut in self._pending.values():
            fut.cancel()

    # --- connections -----------------------------------------------------------------------
    async def _on_tcp(self, reader, writer) -> None:
        peer = writer.get_extra_info("peername")
        await DeviceSession(self, reader, writer, f"{peer[0]}:{peer[1]} tls").run()

    async def _on_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("mqtt",))
        await ws.prepare(request)
        reader = asyncio.StreamReader()
        session = DeviceSession(self, reader, _WsWriter(ws), f"{request.remote} wss")
        task = asyncio.create_task(session.run())
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                reader.feed_data(msg.data)
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
        reader.feed_eof()
        await task
        return ws

    def connected(self, session: DeviceSession) -> None:
        old = self.sessions.get(session.device_id)
        if old is not None:  # IoT Hub keeps the newest connection of a device
            log.info("%s connected again: closing its older connection", session.device_id)
            old.close()
        self.sessions[session.device_id] = session

    def gone(self, session: DeviceSession) -> None:
        if session.device_id and self.sessions.get(session.device_id) is session:
            del self.sessions[session.device_id]
            log.info("%s disconnected", session.device_id)

    # --- operator side -----------------------------------------------------------------------
    async def invoke(self, device_id: str, method: str, payload, timeout_s: float = METHOD_TIMEOUT_S):
        """(status, payload) as the service API answers: 404 device unknown or offline, 504 no answer in time."""
        if device_id not in self.registry.devices:
            return 404, {"message": f"device {device_id!r} is not registered"}
        session = self.sessions.get(device_id)
        if session is None or "$iothub/methods/POST/#" not in session.subscriptions:
            return 404, {"message": f"device {device_id!r} is not online (or does not listen for methods)"}
        rid = secrets.token_hex(8)
        fut = asyncio.get_running_loop().create_future()
        self._pending[(device_id, rid)] = fut
        session.publish(f"$iothub/methods/POST/{method}/?$rid={rid}", json.dumps(payload).encode())
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            return 504, {"message": f"the device did not answer {method} within {timeout_s:g} s"}
        finally:
            self._pending.pop((device_id, rid), None)

    def method_answered(self, device_id: str, rid: str, status: int, body: bytes) -> None:
        fut = self._pending.get((device_id, rid))  # keyed by device: nobody answers another's method
        if fut is None or fut.done():
            log.warning("%s answered method request %s that is not pending for it", device_id, rid)
            return
        try:
            fut.set_result((status, json.loads(body) if body else None))
        except ValueError:
            fut.set_result((status, body.decode("utf-8", "replace")))

    def cut_link(self, device_id: str, cut: bool) -> None:
        """Simulate an outage of one device's link: its connection is closed and refused until restored."""
        if cut:
            self.cut_off.add(device_id)
            if device_id in self.sessions:
                self.sessions[device_id].close()
        else:
            self.cut_off.discard(device_id)

    async def set_desired(self, device_id: str, patch: dict) -> int:
        version = self.registry.patch(device_id, "desired", patch)
        session = self.sessions.get(device_id)
        if session is not None:
            body = dict(patch, **{"$version": version})
            session.publish(f"$iothub/twin/PATCH/properties/desired/?$version={version}", json.dumps(body).encode())
        return version
