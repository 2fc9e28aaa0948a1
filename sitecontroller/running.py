"""Which nodes run on this machine, so that `sitecontroller status` finds one with no flags.

A running node leaves a small JSON file (pid, node id, control endpoint, parameter
file) in a per-user run directory and removes it when it stops; an entry whose
process is gone (kill -9) is ignored and cleaned up. The run directory is
$SITECONTROLLER_RUN_DIR, else $XDG_RUNTIME_DIR/sitecontroller, else
/tmp/sitecontroller-<uid>. Nothing here may stop a node: a run directory that
cannot be written only means the CLI needs --params or --endpoint.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


def run_dir() -> Path:
    if os.environ.get("SITECONTROLLER_RUN_DIR"):
        return Path(os.environ["SITECONTROLLER_RUN_DIR"])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "sitecontroller"
    return Path(tempfile.gettempdir()) / f"sitecontroller-{os.getuid()}"


def _started_at(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), to tell a reused pid from the node that wrote
    an entry. Read from /proc as psutil computes it (the same float, so entries written with psutil still
    match): a node need not load psutil (~0.6 MB RSS) to announce itself. Elsewhere: psutil."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            ticks = f.read().rsplit(b")", 1)[1].split()[19]  # field 22, starttime: clock ticks since boot
        with open("/proc/stat", "rb") as f:
            btime = next(line.split()[1] for line in f if line.startswith(b"btime"))
        return float(ticks) / os.sysconf("SC_CLK_TCK") + float(btime)
    except FileNotFoundError:  # no such process (or no /proc)
        if os.path.isdir("/proc/self"):
            return None
    except (OSError, IndexError, StopIteration, ValueError):
        pass
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:
        return None


@contextlib.contextmanager
def announce(node_id: str, endpoint: str, params_file: str):
    """Record this process as a running node for as long as the block runs."""
    entry = run_dir() / f"{os.getpid()}-{node_id}.json"
    data = {"pid": os.getpid(), "started_at": _started_at(os.getpid()), "node_id": node_id,
            "endpoint": endpoint, "params": str(Path(params_file).resolve())}
    try:
        entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        entry.write_text(json.dumps(data))
    except OSError:
        entry = None
    try:
        yield
    finally:
        if entry is not None:
            with contextlib.suppress(OSError):
                entry.unlink()


def _alive(entry: dict) -> bool:
    pid = entry.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = entry.get("started_at")
    return started is None or _started_at(pid) in (None, started)  # a reused pid is another process


def running_nodes() -> list[dict]:
    """The nodes that run now (node_id, endpoint, params, pid), oldest entries first."""
    nodes = []
    try:
        files = sorted(run_dir().glob("*.json"), key=lambda p: p.stat().st_mtime)
    except OSError:
        return []
    for path in files:
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(entry, dict) and isinstance(entry.get("endpoint"), str) and _alive(entry):
            nodes.append(entry)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return nodes


def describe(nodes: list[dict]) -> str:
    return ", ".join(f"{n.get('node_id')} (--endpoint {n['endpoint']}, --params {n.get('params')})" for n in nodes)
