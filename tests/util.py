"""Helpers shared by the tests: free ports and polling with a deadline (never bare sleeps)."""
from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout_s: float = 5.0, interval_s: float = 0.02, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


async def async_wait_until(predicate, timeout_s: float = 5.0, interval_s: float = 0.02, what: str = "condition"):
    """Like wait_until, inside an asyncio test (predicate is a plain function)."""
    clock = asyncio.get_running_loop().time  # the same as monotonic, or virtual under `vtime`
    deadline = clock() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if clock() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(interval_s)


def isolated_example(example: str, workdir: Path, **overrides) -> dict:
    """An example parameter file's data with its own free ports, endpoint, CAN channel and data dir,
    so that tests never collide; `overrides` update whole sections."""
    data = json.loads((REPO / "site_parameters" / example).read_text())
    data["control"] = {"endpoint": f"tcp://127.0.0.1:{free_tcp_port()}"}
    data["storage"] = {"data_dir": str(Path(workdir) / "{node_id}")}
    for dev in ("inverter", "meter"):
        cfg = data["devices"].get(dev)
        if cfg and cfg.get("port"):
            cfg["port"] = free_tcp_port()
    can = data["devices"]["bms"].get("can")
    if can and can.get("interface") == "virtual":
        can["channel"] = f"test-{free_tcp_port()}"
    if can and can.get("interface") == "slcan":
        can["channel"] = f"socket://127.0.0.1:{free_tcp_port()}"
    if data.get("simulation"):
        data["simulation"]["endpoint"] = f"tcp://127.0.0.1:{free_tcp_port()}"
    for section, values in overrides.items():
        data[section].update(values)
    return data
