"""The SCADA write guard over random sequences (in-process server, real Modbus over loopback):

- a client outside the allow-list gets exception 01, always (02 for a read-only register);
- with write enable off every write but one of 1 to WrEna is refused (02; 03 when out of range too);
- a refused write (any exception) changes no register; one refused by the guard (01, 02, 03)
  submits no command either (04: the node refused the command);
- an accepted write stores exactly what was written (points the node serves live aside);
- SCADA never submits a power request beyond the inverter rating.
"""
from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from pymodbus.client import AsyncModbusTcpClient

from sitecontroller.clock import RealClock
from sitecontroller.commands import DONE, REJECTED, Ack
from sitecontroller.control.sources import SetpointSources
from sitecontroller.errors import ErrorRegistry
from sitecontroller.scada.config import ScadaParams
from sitecontroller.scada.control import ScadaControl
from sitecontroller.scada.server import ScadaServer
from sitecontroller.scada.service import load_map
from tests.util import free_tcp_port

RATED_W = 5000.0
ALLOWED, OTHER = "127.0.0.1", "127.0.0.3"


class Book:
    """The node's command book as the SCADA control sees it: power requests are carried out, cluster
    commands refused (a node without a cluster)."""

    def __init__(self):
        self.submitted: list[dict] = []

    def submit(self, raw):
        self.submitted.append(raw)
        return Ack(raw["id"], DONE if raw["type"] == "set_power" else REJECTED, "", raw["type"])


@pytest.fixture
async def rig():
    clock = RealClock()
    node = SimpleNamespace(rated_w=RATED_W, sources=SetpointSources(5.0), commands=Book(), clock=clock,
                           errors=ErrorRegistry(clock), cluster=None)
    params = ScadaParams(enabled=True, port=free_tcp_port(), allow_write_from=[f"{ALLOWED}/32"])
    profile = load_map()
    holder = {}
    control = ScadaControl(node, params, profile, values=lambda names: holder["server"].values(names))
    server = ScadaServer(profile, host="127.0.0.1", port=params.port, unit_id=1, source=control.served,
                         control=control, allow_write_from=params.allow_write_from)
    holder["server"] = server
    control.profile = server.profile
    await server.start()
    clients = {}
    for source in (ALLOWED, OTHER):
        clients[source] = AsyncModbusTcpClient("127.0.0.1", port=params.port, source_address=(source, 0),
                                               timeout=3, retries=0)
        assert await clients[source].connect()
    try:
        yield SimpleNamespace(node=node, server=server, control=control, clients=clients)
    finally:
        for c in clients.values():
            c.close()
        await server.close()


END = 40002 + sum(2 + length for _, length in load_map().sunspec_models) + 2  # after the end marker


async def image(client) -> list[int]:
    out = []
    for start in range(40000, END, 120):
        rr = await client.read_holding_registers(start, count=min(120, END - start), device_id=1)
        assert not rr.isError(), rr
        out += rr.registers
    return out


def random_words(rng: random.Random, p) -> list[int]:
    if p.count == 2:
        v = rng.choice([0, 1000, -1000, 4999, 5001, -5001, 20_000_000, rng.randrange(-2**31, 2**31)])
        v &= 0xFFFFFFFF
        return [v >> 16, v & 0xFFFF]
    return [rng.choice([0, 1, 2, 3, 7, 9, 100, 3000, 10001, 0x8000, rng.randrange(65536)]) for _ in range(p.count)]


async def test_the_guard_holds_over_random_write_sequences(rig):
    rng = random.Random(5)
    profile = rig.server.profile
    writable = [p for p in profile.points.values() if p.writable]
    read_only = [profile.point(n) for n in ("MapVer", "W", "Bat_SoC", "WChaMax", "CtlSt", "SN")]
    live = {p.name for p in profile.points.values() if p.sim is not None}
    write_enable = False
    for step in range(300):
        p = rng.choice(writable + read_only)
        words = [rng.choice([0, 1])] if p.name == "WrEna" and rng.random() < 0.7 else random_words(rng, p)
        source = OTHER if rng.random() < 0.1 else ALLOWED
        before, n_cmds = await image(rig.clients[ALLOWED]), len(rig.node.commands.submitted)
        rr = await rig.clients[source].write_registers(p.address, words, device_id=1)
        after = await image(rig.clients[ALLOWED])
        where = f"step {step}: {source} wrote {p.name} = {words}"
        if source == OTHER:  # a read-only register is refused by pymodbus first: 02
            assert rr.isError() and rr.exception_code == (1 if p.writable else 2), where
        elif not p.writable:
            assert rr.isError() and rr.exception_code == 2, where
        elif not write_enable and not (p.name == "WrEna" and words == [1]):
            assert rr.isError() and rr.exception_code in (2, 3), where  # 03 if out of range anyway
        if rr.isError():
            assert after == before, where
            if rr.exception_code != 4:  # 04: the node refused the command (audited there)
                assert len(rig.node.commands.submitted) == n_cmds, where
            continue
        if p.name == "WrEna":
            write_enable = bool(words[0])
        if p.name not in live:
            i = p.address - 40000
            assert after[i : i + p.count] == words, where
    powers = [c["p_w"] for c in rig.node.commands.submitted if c["type"] == "set_power"]
    assert powers and all(abs(w) <= RATED_W for w in powers)
    # a command the node refuses (a cluster mode on a node without a cluster): 04, nothing stored
    client = rig.clients[ALLOWED]
    assert not (await client.write_registers(profile.point("WrEna").address, [1], device_id=1)).isError()
    before = await image(client)
    rr = await client.write_registers(profile.point("ModeSel").address, [2], device_id=1)
    assert rr.isError() and rr.exception_code == 4 and await image(client) == before
    assert rig.node.commands.submitted[-1]["type"] == "cluster_mode"


class Cluster:
    """What the SCADA control reads of the cluster service: the replicated mode."""

    def __init__(self, mode: str, params: dict):
        state = SimpleNamespace(mode=mode, mode_params=params)
        self.consensus = SimpleNamespace(state=lambda: state)


class ClusterBook(Book):
    def submit(self, raw):
        self.submitted.append(raw)
        return Ack(raw["id"], DONE, "", raw["type"])


@pytest.mark.parametrize("fallback, node_after, cluster_after", [
    ("hold_zero", 0.0, {"type": "cluster_mode", "mode": "passive"}),
    ("previous_mode", None, {"type": "cluster_mode", "mode": "self_consumption", "params": {"grid_target_w": 100.0}}),
])
async def test_heartbeat_loss_applies_the_configured_fallback(fallback, node_after, cluster_after):
    clock = RealClock()
    node = SimpleNamespace(rated_w=RATED_W, sources=SetpointSources(5.0), commands=ClusterBook(), clock=clock,
                           errors=ErrorRegistry(clock), cluster=Cluster("self_consumption", {"grid_target_w": 100.0}))
    params = ScadaParams(enabled=True, heartbeat_timeout_s=1.0, fallback=fallback)
    control = ScadaControl(node, params, load_map(), values=lambda names: {})
    control.write_enable = True
    assert await control.apply({"NodeWSet": 2000.0}, ALLOWED) is None
    node.sources["scada"].put(2000.0, clock.monotonic(), valid_s=2.0)  # what the executor does with it
    assert await control.apply({"ClTgtWSet": 3000.0}, ALLOWED) is None
    assert control.state == "controlling" and control.holding == {"node", "cluster"}
    control.beat(1)
    control.beat(1)  # the same value again is no heartbeat
    assert control.last_beat == 1
    await control.fall_back()
    sent = [{k: v for k, v in c.items() if k not in ("id", "source")} for c in node.commands.submitted[2:]]
    assert cluster_after in sent
    assert control.state == "fallback" and node.errors.is_active("SCADA_HEARTBEAT_LOST")
    if node_after is None:
        assert node.sources["scada"].latest() is None  # the node's other sources take over
    else:
        assert {"type": "set_power", "p_w": 0.0, "hold_s": 86400.0} in sent
    control.beat(2)  # a heartbeat alone does not resume control
    assert control.state == "fallback"
    assert await control.apply({"NodeWSet": 500.0}, ALLOWED) is None  # a fresh write does
    assert control.state == "controlling" and not node.errors.is_active("SCADA_HEARTBEAT_LOST")


async def test_one_request_that_would_be_two_commands_is_refused_whole(rig):
    client, profile = rig.clients[ALLOWED], rig.server.profile
    assert not (await client.write_registers(profile.point("WrEna").address, [1], device_id=1)).isError()
    before = await image(client)
    # NodeWSet (2 registers) and ClTgtWSet (2) and Hb in one request: a node and a cluster command
    start = profile.point("NodeWSet").address
    assert profile.point("Hb").address == start + 4
    rr = await client.write_registers(start, [0, 1000, 0, 2000, 1], device_id=1)
    assert rr.isError() and rr.exception_code == 3
    assert await image(client) == before and rig.node.commands.submitted == []
    # NodeWSet alone: one command
    rr = await client.write_registers(start, [0, 1000], device_id=1)
    assert not rr.isError() and rig.node.commands.submitted[-1]["p_w"] == 1000
