"""MQTT 3.1.1 packets: the few the IoT Hub device protocol uses, read from and written to a stream.

The emulator's server side only (the node uses the SDK's paho client). Packet layout per the
MQTT 3.1.1 specification: a fixed header (type << 4 | flags, remaining length as a varint), then
the variable header and the payload. Strings are 2-byte length prefixed UTF-8.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14

# CONNACK return codes
ACCEPTED, BAD_PROTOCOL, ID_REJECTED, UNAVAILABLE, BAD_CREDENTIALS, NOT_AUTHORIZED = range(6)
SUBACK_FAILURE = 0x80
MAX_PACKET = 256 * 1024 + 4096  # IoT Hub's largest device-to-cloud message plus its topic


class ProtocolError(Exception):
    """The peer sent something that is not MQTT 3.1.1: the connection is closed."""


@dataclass(frozen=True)
class Connect:
    client_id: str
    username: str | None
    password: str | None
    keepalive_s: int
    clean: bool


@dataclass(frozen=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    packet_id: int | None


async def read_packet(reader) -> tuple[int, int, bytes]:
    """(type, flags, body) of the next packet; raises asyncio.IncompleteReadError at EOF."""
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    for _ in range(4):
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    else:
        raise ProtocolError("remaining length longer than 4 bytes")
    if length > MAX_PACKET:
        raise ProtocolError(f"packet of {length} bytes is over the {MAX_PACKET} byte limit")
    return first >> 4, first & 0x0F, await reader.readexactly(length)


def _string(body: bytes, at: int) -> tuple[str, int]:
    if at + 2 > len(body):
        raise ProtocolError("truncated string")
    (n,) = struct.unpack_from("!H", body, at)
    if at + 2 + n > len(body):
        raise ProtocolError("truncated string")
    try:
        return body[at + 2:at + 2 + n].decode("utf-8"), at + 2 + n
    except UnicodeDecodeError:
        raise ProtocolError("a string that is not UTF-8") from None


def parse_connect(body: bytes) -> Connect:
    name, at = _string(body, 0)
    if name != "MQTT" or len(body) < at + 4 or body[at] != 4:
        raise ProtocolError(f"not MQTT 3.1.1 (protocol {name!r})")
    flags = body[at + 1]
    (keepalive,) = struct.unpack_from("!H", body, at + 2)
    at += 4
    client_id, at = _string(body, at)
    if flags & 0x04:  # will: topic and message, unused by IoT Hub
        _, at = _string(body, at)
        _, at = _string(body, at)
    username = password = None
    if flags & 0x80:
        username, at = _string(body, at)
    if flags & 0x40:
        password, at = _string(body, at)
    return Connect(client_id, username, password, keepalive, bool(flags & 0x02))


def parse_publish(flags: int, body: bytes) -> Publish:
    topic, at = _string(body, 0)
    qos = (flags >> 1) & 0x03
    packet_id = None
    if qos:
        (packet_id,) = struct.unpack_from("!H", body, at)
        at += 2
    return Publish(topic, body[at:], qos, packet_id)


def parse_subscribe(body: bytes) -> tuple[int, list[tuple[str, int]]]:
    (packet_id,) = struct.unpack_from("!H", body, 0)
    at, filters = 2, []
    while at < len(body):
        topic, at = _string(body, at)
        if at >= len(body):
            raise ProtocolError("subscription without its QoS byte")
        filters.append((topic, body[at] & 0x03))
        at += 1
    return packet_id, filters


def parse_unsubscribe(body: bytes) -> tuple[int, list[str]]:
    (packet_id,) = struct.unpack_from("!H", body, 0)
    at, topics = 2, []
    while at < len(body):
        topic, at = _string(body, at)
        topics.append(topic)
    return packet_id, topics


def parse_packet_id(body: bytes) -> int:
    return struct.unpack_from("!H", body, 0)[0]


def _packet(ptype: int, flags: int, body: bytes) -> bytes:
    head, n = bytearray([ptype << 4 | flags]), len(body)
    while True:
        byte, n = n & 0x7F, n >> 7
        head.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(head) + body


def _encode_string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("!H", len(raw)) + raw


def connack(code: int) -> bytes:
    return _packet(CONNACK, 0, bytes([0, code]))


def publish(topic: str, payload: bytes, qos: int = 0, packet_id: int = 0) -> bytes:
    body = _encode_string(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return _packet(PUBLISH, qos << 1, body)


def puback(packet_id: int) -> bytes:
    return _packet(PUBACK, 0, struct.pack("!H", packet_id))


def suback(packet_id: int, codes: list[int]) -> bytes:
    return _packet(SUBACK, 0, struct.pack("!H", packet_id) + bytes(codes))


def unsuback(packet_id: int) -> bytes:
    return _packet(UNSUBACK, 0, struct.pack("!H", packet_id))


def pingresp() -> bytes:
    return _packet(PINGRESP, 0, b"")
