"""One device's MQTT connection to the emulator: the IoT Hub device protocol, scoped to that device.

A device may publish only to
    devices/{me}/messages/events/{properties}      telemetry (stored, then PUBACK)
    $iothub/twin/GET/?$rid={rid}                    read the whole twin
    $iothub/twin/PATCH/properties/reported/?$rid=   patch its reported properties
    $iothub/methods/res/{status}/?$rid={rid}        answer a direct method
and subscribe only to
    devices/{me}/messages/devicebound/#, $iothub/twin/res/#, $iothub/twin/PATCH/properties/desired/#,
    $iothub/methods/POST/#
Anything else (another device's topics included) is refused: a bad subscription gets SUBACK 0x80,
a bad publish closes the connection, as IoT Hub does.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import urllib.parse

from .. import mqtt_packets as mp

log = logging.getLogger("hub-emulator")

_RID = re.compile(r"\$rid=([^&]+)")
CONNECT_TIMEOUT_S = 10.0


def _allowed_filters(device_id: str) -> tuple[str, ...]:
    return (f"devices/{device_id}/messages/devicebound/#", "$iothub/twin/res/#",
            "$iothub/twin/PATCH/properties/desired/#", "$iothub/methods/POST/#")


class DeviceSession:
    def __init__(self, hub, reader, writer, peer: str):
        self.hub, self.reader, self.writer, self.peer = hub, reader, writer, peer
        self.device_id: str | None = None
        self.subscriptions: set[str] = set()
        self.closed = asyncio.Event()

    def send(self, packet: bytes) -> None:
        if not self.closed.is_set():
            self.writer.write(packet)

    def publish(self, topic: str, payload: bytes) -> None:
        """Hub → device, QoS 0 (as IoT Hub sends twin responses), if the device subscribed to it."""
        prefix = next((f for f in self.subscriptions if topic.startswith(f[:-1])), None)
        if prefix is not None:
            self.send(mp.publish(topic, payload))

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self.writer.close()

    async def run(self) -> None:
        try:
            ptype, _, body = await asyncio.wait_for(mp.read_packet(self.reader), CONNECT_TIMEOUT_S)
            if ptype != mp.CONNECT or not await self._connect(mp.parse_connect(body)):
                return
            while not self.closed.is_set():
                ptype, flags, body = await asyncio.wait_for(mp.read_packet(self.reader), self._idle_s)
                if ptype == mp.DISCONNECT:
                    return
                self._handle(ptype, flags, body)
                await self.writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, OSError):
            pass
        except mp.ProtocolError as exc:
            log.warning("%s (%s): protocol error, closing: %s", self.device_id or "?", self.peer, exc)
        finally:
            self.hub.gone(self)
            self.close()

    async def _connect(self, connect: mp.Connect) -> bool:
        reason = self.hub.registry.authenticate(connect.client_id, connect.username, connect.password)
        if reason is not None:
            log.warning("refused %r from %s: %s", connect.client_id, self.peer, reason)
            self.send(mp.connack(mp.BAD_CREDENTIALS if connect.client_id in self.hub.registry.devices
                                 else mp.NOT_AUTHORIZED))
            await self.writer.drain()
            return False
        if connect.client_id in self.hub.cut_off:
            log.info("refused %r: its link is cut off (simulated outage)", connect.client_id)
            self.send(mp.connack(mp.UNAVAILABLE))
            await self.writer.drain()
            return False
        self.device_id = connect.client_id
        self._idle_s = max(connect.keepalive_s * 1.5, 5.0) if connect.keepalive_s else None
        self.hub.connected(self)
        self.send(mp.connack(mp.ACCEPTED))
        log.info("%s connected from %s", self.device_id, self.peer)
        return True

    def _handle(self, ptype: int, flags: int, body: bytes) -> None:
        if ptype == mp.PUBLISH:
            self._on_publish(mp.parse_publish(flags, body))
        elif ptype == mp.SUBSCRIBE:
            packet_id, filters = mp.parse_subscribe(body)
            allowed = _allowed_filters(self.device_id)
            codes = []
            for topic, qos in filters:
                if topic in allowed:
                    self.subscriptions.add(topic)
                    codes.append(min(qos, 1))
                else:
                    log.warning("%s: subscription to %r refused (not its topic)", self.device_id, topic)
                    codes.append(mp.SUBACK_FAILURE)
            self.send(mp.suback(packet_id, codes))
        elif ptype == mp.UNSUBSCRIBE:
            packet_id, topics = mp.parse_unsubscribe(body)
            self.subscriptions.difference_update(topics)
            self.send(mp.unsuback(packet_id))
        elif ptype == mp.PINGREQ:
            self.send(mp.pingresp())
        elif ptype == mp.PUBACK:
            pass  # the hub sends QoS 0 only
        else:
            raise mp.ProtocolError(f"unexpected packet type {ptype}")

    def _on_publish(self, msg: mp.Publish) -> None:
        me, topic = self.device_id, msg.topic
        events = f"devices/{me}/messages/events/"
        rid = _RID.search(topic)
        if topic.startswith(events):  # stored before it is acknowledged: at least once
            props = dict(urllib.parse.parse_qsl(topic[len(events):].rstrip("/")))
            self.hub.registry.store_message(me, props, msg.payload)
        elif not (rid and topic.startswith(("$iothub/twin/GET/", "$iothub/twin/PATCH/properties/reported/",
                                             "$iothub/methods/res/"))):
            log.warning("%s: publish to %r refused (not its topic): disconnected", me, topic)
            self.close()
            return
        if msg.qos:  # acknowledged before the answer, as IoT Hub does
            self.send(mp.puback(msg.packet_id))
        if topic.startswith("$iothub/twin/GET/"):
            twin = self.hub.registry.twin(me)
            self.publish(f"$iothub/twin/res/200/?$rid={rid[1]}", json.dumps(twin).encode())
        elif topic.startswith("$iothub/twin/PATCH/properties/reported/"):
            try:
                patch = json.loads(msg.payload or b"{}")
                assert isinstance(patch, dict)
            except (ValueError, AssertionError):
                self.publish(f"$iothub/twin/res/400/?$rid={rid[1]}", b"")
            else:
                version = self.hub.registry.patch(me, "reported", patch)
                self.publish(f"$iothub/twin/res/204/?$rid={rid[1]}&$version={version}", b"")
        elif topic.startswith("$iothub/methods/res/"):
            status = topic[len("$iothub/methods/res/"):].split("/")[0]
            self.hub.method_answered(me, rid[1], int(status) if status.isdigit() else 500, msg.payload)
