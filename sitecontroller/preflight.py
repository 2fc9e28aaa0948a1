"""Checks before a node starts, each failing with ONE line that says what to do.

* the data directory (`storage.data_dir`): it exists or can be created, it is a
  directory, a file can be written and fsynced in it, and its disk has room;
* the ports the process will listen on are free; if one is taken, the line names
  the port, what it is for, and the process that holds it (pid and command, where
  the operating system lets us see it).

`run_preflight(params, simulate=...)` runs them all and returns the problems
(an empty list: go). Nothing here changes anything but the data directory.
"""
from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .params_ports import sockets

MIN_FREE_BYTES = 1_000_000  # the log rotates; errors.json and the audit log are small, but must fit


@dataclass(frozen=True)
class Listener:
    """A socket this process will listen on: `what` names it as the parameter file does."""

    what: str
    host: str
    port: int


def check_data_dir(path: str | Path, min_free_bytes: int = MIN_FREE_BYTES) -> str | None:
    """None if the node can keep its errors, audit log and log file in `path`, else why not."""
    path = Path(path)
    where = f"data directory {path} (storage.data_dir)"
    if path.exists() and not path.is_dir():
        return f"{where} is not a directory; allowed: a writable directory"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create {where}: {_reason(exc)}"
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".preflight-") as probe:
            probe.write(b"x" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        return f"cannot write in {where}: {_reason(exc)}"
    free = shutil.disk_usage(path).free
    if free < min_free_bytes:
        return (f"{where} is on a full disk: {free // 1000} kB free, at least {min_free_bytes // 1000} kB needed; "
                f"free some space or choose another directory")
    return None


def _reason(exc: OSError) -> str:
    hints = {
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied (run as the user that owns it, or choose another directory)",
        errno.EPERM: "permission denied (run as the user that owns it, or choose another directory)",
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is used up",
        errno.ENOTDIR: "a part of the path is a file, not a directory",
    }
    return hints.get(exc.errno, exc.strerror or str(exc))


def listeners(params, control: bool = True, devices: bool = False) -> list[Listener]:
    """The TCP sockets a process listens on: the node's control endpoint, and/or the simulated devices."""
    out = []
    for sock in sockets(params):
        if sock.path in ("$.control.endpoint", "$.scada.port"):  # the node's own listeners
            if control:
                out.append(Listener(sock.path.removeprefix("$."), sock.host, sock.port))
        elif devices:
            out.append(Listener(f"{sock.path.removeprefix('$.')}, simulated", sock.host, sock.port))
    return out


def port_in_use(host: str, port: int) -> bool:
    """True if something listens on host:port (a bind like the servers' own would fail)."""
    host = "127.0.0.1" if host == "localhost" else host
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def port_holder(port: int) -> str:
    """'pid 1234 (sitecontroller run --params ...)', or a plain phrase where we may not look."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                try:
                    proc = psutil.Process(conn.pid)
                    command = " ".join(proc.cmdline()) or proc.name()
                except psutil.Error:
                    command = "?"
                if len(command) > 100:
                    command = command[:97] + "..."
                return f"pid {conn.pid} ({command})"
    except Exception:  # psutil missing, or not allowed to list sockets here: say less, never fail
        pass
    return "another process (not allowed to see which)"


def ipc_in_use(path: str) -> bool:
    """True if a process accepts connections on the unix socket `path` (ZeroMQ would silently take it over)."""
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return False
    return True


def check_ports(items: list[Listener]) -> list[str]:
    """One line per process that holds some of these ports (starting the same node twice: one line)."""
    held: dict[str, list[Listener]] = {}
    for item in items:
        if port_in_use(item.host, item.port):
            held.setdefault(port_holder(item.port), []).append(item)
    problems = []
    for holder, taken in held.items():
        names = ", ".join(f"{t.host}:{t.port} ({t.what})" for t in taken)
        problems.append(
            f"port{'s' if len(taken) > 1 else ''} {names} {'are' if len(taken) > 1 else 'is'} in use by {holder}; "
            f"is this node already running? Stop it, or give this node other ports"
        )
    return problems


def run_preflight(params, simulate: bool = False) -> list[str]:
    """Every problem that stops this node from starting, one line each (empty: go)."""
    problems = []
    data_dir_problem = check_data_dir(params.data_dir)
    if data_dir_problem:
        problems.append(data_dir_problem)
    problems += check_ports(listeners(params, control=True, devices=simulate))
    problems += cluster_key_problems(params)
    endpoint = params.control.endpoint
    if endpoint.startswith("ipc://") and ipc_in_use(endpoint[len("ipc://"):]):
        problems.append(f"{endpoint} (control.endpoint) is in use by another process; "
                        f"is this node already running? Stop it, or give this node another endpoint")
    return problems


def cluster_key_problems(params) -> list[str]:
    """A cluster member needs its key pair in its data directory, and the member list must carry
    its public key (one line each, naming the JSON path or the file)."""
    if not params.features.CLUSTER:
        return []
    from mastercontroller import keys

    hint = f"create them with: sitecontroller cluster keygen --params FILE (data directory {params.data_dir})"
    try:
        public, _ = keys.load(params.data_dir)
    except (KeyError, ValueError, OSError) as exc:
        return [f"cluster keys: {str(exc).strip(chr(39))}; {hint}"]
    for i, member in enumerate(params.cluster.members):
        if member.node_id == params.identity.node_id and member.public_key != public:
            return [f"$.cluster.members[{i}].public_key: found {member.public_key!r}; allowed: this node's public key "
                    f"{public!r} (from {params.data_dir / keys.PUBLIC_FILE})"]
    return []
