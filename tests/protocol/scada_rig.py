"""A node process with its SCADA server, and third-party Modbus clients to talk to it.

`ScadaNode(tmp_path, **scada)` starts a node (in-process plant, one process) with `scada.enabled`
on a free port; it reads `status --json` through the CLI (`RunSim`) and talks Modbus with `mbpoll`
(Debian; `ScadaClient`) or pymodbus. The tests kill it at the end.
"""
from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient

from sitecontroller.scada.service import load_map
from sitecontroller.sim.modbus_server import ProfileServer
from tests.e2e.run_sim import RunSim
from tests.protocol.test_mbpoll_meter import mbpoll_path
from tests.util import free_tcp_port, isolated_example, wait_until
SERVED = ProfileServer(load_map(), port=1).profile  # the map with the addresses the node serves
LINE = re.compile(r"^\[(\d+)\]:\s+(-?\d+)(?:\s+\(-?\d+\))?\s*$", re.MULTILINE)


def addr(point: str) -> int:
    return SERVED.point(point).address


class ScadaClient:
    """mbpoll against the SCADA server on 127.0.0.1:`port`, by point name."""

    def __init__(self, port: int):
        self.port = port

    def mbpoll(self, ref: int, *values: str, count: int = 1, kind: str = "4", unit: int = 1,
               big_endian: bool = True) -> tuple[int, str]:
        """Read `count` registers at `ref`, or write `values` there (mbpoll then takes no count).
        32-bit values: high word first (SunSpec) unless `big_endian` is False (EM24)."""
        cmd = [mbpoll_path(), "-m", "tcp", "-p", str(self.port), "-a", str(unit), "-0", "-1", "-o", "2",
               *(["-B"] if big_endian else []), "-r", str(ref), *([] if values else ["-c", str(count)]),
               "-t", kind, "127.0.0.1", *values]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return r.returncode, r.stdout + r.stderr

    def read(self, point: str, count: int | None = None) -> list[int]:
        p = SERVED.point(point)
        kind = {"int32": "4:int", "uint32": "4:int", "int16": "4"}.get(p.type, "4")
        n = count or (1 if kind == "4:int" else p.count)
        rc, out = self.mbpoll(p.address, count=n, kind=kind)
        assert rc == 0, out
        values = [int(v) for _, v in LINE.findall(out)]
        if p.type == "int16":
            values = [v - 65536 if v > 32767 else v for v in values]
        return values

    def write(self, point: str, *values: int) -> tuple[int, str]:
        """mbpoll writes `values` at the point's address (16-bit, or one 32-bit int for int32/uint32)."""
        p = SERVED.point(point)
        kind = "4:int" if p.type in ("int32", "uint32") else "4"
        return self.mbpoll(p.address, *(str(v) for v in values), kind=kind)

    def read_text(self, point: str) -> str:
        """A SunSpec string point: two characters per register, NUL padded."""
        raw = b"".join(v.to_bytes(2, "big") for v in self.read(point))
        return raw.rstrip(b"\0").decode()


class ScadaNode(RunSim, ScadaClient):
    """A node (`scripts/run-sim` of an in-process-plant file: one process) with its SCADA server."""

    def __init__(self, tmp_path: Path, example: str = "sim_node1_inproc.json", **scada):
        data = isolated_example(example, tmp_path)
        ScadaClient.__init__(self, free_tcp_port())
        data["scada"] = {"enabled": True, "port": self.port, "heartbeat_timeout_s": 10.0, **scada}
        params_file = tmp_path / "params.json"
        params_file.write_text(json.dumps(data))
        self.data_dir = Path(data["storage"]["data_dir"].replace("{node_id}", data["identity"]["node_id"]))
        RunSim.__init__(self, tmp_path, "node", params_file)

    def audit(self) -> list[dict]:
        path = self.data_dir / "audit.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    def wait_audit(self, predicate, what: str, timeout_s: float = 5.0) -> dict:
        """The first SCADA command line of the audit log that matches (the node writes it in the background)."""
        def find():
            return next((a for a in self.audit() if (a["payload"] or {}).get("source") == "scada" and predicate(a)),
                        None)
        return wait_until(find, timeout_s, 0.1, what)


def exception_in(out: str) -> str | None:
    """The Modbus exception mbpoll reports, by its libmodbus text (None: none)."""
    for text, code in (("Illegal function", "01"), ("Illegal data address", "02"), ("Illegal data value", "03"),
                       ("Slave device or server failure", "04")):
        if text in out:
            return code
    return None


async def pymodbus_write(port: int, point: str, values: list[int], *, source: str = "127.0.0.1"):
    """Write registers with pymodbus from a chosen loopback source address; the response (or exception)."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port, source_address=(source, 0), timeout=3, retries=0)
    try:
        assert await client.connect(), f"no connection to 127.0.0.1:{port} from {source}"
        return await client.write_registers(addr(point), values, device_id=1)
    finally:
        client.close()


def run(coro):
    return asyncio.run(coro)
