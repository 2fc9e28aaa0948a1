"""Which TCP sockets a parameter file names, and which of them clash.

The control endpoint, the inverter, the meter, a BMS bus reached over TCP
(python-can `slcan` with a `socket://HOST:PORT` channel) and this node's own
cluster sockets (Raft, data plane) each need their own host:port. Used by `params.load` (check-params reports a clash) and by the
preflight checks (which of them this process will listen on).
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Socket:
    """`path` is the JSON path of the key that names it; `unit_id` only for Modbus TCP devices."""

    path: str
    host: str
    port: int
    unit_id: int | None = None


def _host(host: str) -> str:
    return "127.0.0.1" if host == "localhost" else host


def sockets(params) -> list[Socket]:
    """Every TCP socket the node listens on (control endpoint) or talks to (devices)."""
    out = []
    m = re.fullmatch(r"tcp://([^:/]+):(\d{1,5})", params.control.endpoint)
    if m:
        out.append(Socket("$.control.endpoint", _host(m[1]), int(m[2])))
    for name in ("inverter", "meter"):
        dev = getattr(params.devices, name)
        if dev is not None and dev.transport in ("tcp", "http") and dev.host and dev.port:
            unit = dev.unit_id if dev.transport == "tcp" else None
            out.append(Socket(f"$.devices.{name}.port", _host(dev.host), dev.port, unit))
    can = params.devices.bms.can
    m = re.fullmatch(r"socket://([^:/]+):(\d{1,5})", can.channel) if can is not None else None
    if m:
        out.append(Socket("$.devices.bms.can.channel", _host(m[1]), int(m[2])))
    if params.scada.enabled:
        out.append(Socket("$.scada.port", _host(params.scada.host), params.scada.port))
    for i, member in enumerate(params.cluster.members):  # this node's own cluster sockets
        if member.node_id == params.identity.node_id:
            for key in ("raft", "data"):
                host, port = getattr(member, key).rsplit(":", 1)
                out.append(Socket(f"$.cluster.members[{i}].{key}", _host(host), int(port)))
    return out


def port_clashes(params) -> list[str]:
    """One line per device or endpoint that uses the host:port of another one.

    Two Modbus TCP devices behind one gateway share its host:port with distinct unit ids: that is allowed.
    """
    problems = []
    seen: list[Socket] = []
    for sock in sockets(params):
        for other in seen:
            if (sock.host, sock.port) != (other.host, other.port):
                continue
            if sock.unit_id is not None and other.unit_id is not None and sock.unit_id != other.unit_id:
                continue  # one Modbus TCP gateway, two unit ids
            problems.append(
                f"{sock.path}: found {sock.host}:{sock.port}, already used by {other.path}; allowed: a host:port "
                f"that no other device or endpoint of this node uses (two Modbus devices behind one gateway: "
                f"distinct unit_id)"
            )
            break
        seen.append(sock)
    return problems
