"""SLCAN over TCP: the simulator's simulated USB-CAN adapter, and the real BMS driver across processes."""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

import can
import pytest

from sitecontroller.clock import RealClock
from sitecontroller.drivers.base import BmsCommand
from sitecontroller.drivers.bms import make_bms
from sitecontroller.drivers.bms.config import BmsConfig
from sitecontroller.params import ParamsError, parse
from sitecontroller.sim.endpoint import SimUnreachable, sim_request
from sitecontroller.sim.slcan_server import SlcanServer, decode_frame, encode_frame
from tests.util import REPO, async_wait_until, free_tcp_port, isolated_example, wait_until


@pytest.mark.parametrize("msg, line", [
    (can.Message(arbitration_id=0x123, data=b"\x01\xab", is_extended_id=False), b"t123201AB\r"),
    (can.Message(arbitration_id=0x18FF50E5, data=bytes(range(8)), is_extended_id=True), b"T18FF50E580001020304050607\r"),
    (can.Message(arbitration_id=0x7FF, is_remote_frame=True, dlc=4, is_extended_id=False), b"r7FF4\r"),
    (can.Message(arbitration_id=0x1, is_remote_frame=True, dlc=0, is_extended_id=True), b"R000000010\r"),
])
def test_frames_round_trip(msg, line):
    assert encode_frame(msg) == line
    back = decode_frame(line[:-1].decode())
    assert (back.arbitration_id, back.is_extended_id, back.is_remote_frame, back.dlc, bytes(back.data)) == (
        msg.arbitration_id, msg.is_extended_id, msg.is_remote_frame, msg.dlc, bytes(msg.data))


@pytest.mark.parametrize("line", ["t12", "t1239", "t1232AB", "t12320XYZ", "tFFF1", "T2000000000", "x123", "r1231AB"])
def test_malformed_frames_are_refused(line):
    assert decode_frame(line) is None


async def test_the_adapter_answers_like_a_lawicel_device():
    channel = f"slcan-test-{free_tcp_port()}"
    server = SlcanServer("127.0.0.1", 0, channel)
    await server.start()
    bus = can.Bus(interface="virtual", channel=channel)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)

        async def ask(line: bytes) -> bytes:
            writer.write(line + b"\r")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(1), 2)
            while data not in (b"\a",) and not data.endswith(b"\r"):
                data += await asyncio.wait_for(reader.read(1), 2)
            return data

        assert await ask(b"t1230") == b"\a"  # channel closed: no sending
        assert await ask(b"S6") == b"\r" and await ask(b"V") == b"V1013\r"
        assert await ask(b"O") == b"\r"
        assert await ask(b"S6") == b"\a"  # no bit rate change while open
        assert await ask(b"t1232BEEF00") == b"\a"  # dlc 2 with 3 bytes of data: refused
        assert await ask(b"?") == b"\a"
        assert await ask(b"t1232BEEF") == b"z\r"
        got = await asyncio.to_thread(bus.recv, 2)
        assert got.arbitration_id == 0x123 and bytes(got.data) == b"\xbe\xef"
        bus.send(can.Message(arbitration_id=0x1ABCDE0, data=b"\x42", is_extended_id=True))
        line = await asyncio.wait_for(reader.readuntil(b"\r"), 2)
        assert line == b"T01ABCDE0142\r"
        assert await ask(b"C") == b"\r"
        writer.close()
    finally:
        bus.shutdown()
        await server.close()


async def test_a_taken_port_is_one_clear_line():
    port = free_tcp_port()
    first = SlcanServer("127.0.0.1", port, f"slcan-a-{port}")
    await first.start()
    try:
        with pytest.raises(OSError, match=rf"SLCAN\): cannot listen on 127.0.0.1:{port}"):
            await SlcanServer("127.0.0.1", port, f"slcan-b-{port}").start()
    finally:
        await first.close()


def test_slcan_bit_rates_are_checked_with_the_parameters():
    BmsConfig(model="bess_sim", can={"interface": "slcan", "channel": "socket://127.0.0.1:1", "bitrate": 250000})
    with pytest.raises(ValueError, match="slcan adapter runs at one of"):
        BmsConfig(model="bess_sim", can={"interface": "slcan", "channel": "/dev/ttyACM0", "bitrate": 400000})
    cfg = BmsConfig(model="bess_sim", can={"interface": "slcan", "channel": "socket://127.0.0.1:1"})
    assert cfg.can.bus_kwargs()["sleep_after_open"] == 0  # no 2 s blocking settle time for a network adapter


def test_udp_multicast_is_not_offered():
    """It needs msgpack and a private network namespace; slcan over TCP replaced it."""
    data = isolated_example("sim_node1.json", REPO / "var" / "unused")
    data["devices"]["bms"]["can"] = {"interface": "udp_multicast", "channel": "239.0.0.1"}
    with pytest.raises(ParamsError, match="interface"):
        parse(data)


@pytest.mark.slow
async def test_the_real_driver_reads_a_simulator_in_another_process(tmp_path):
    """The CAN BMS driver here, the simulated BMS in `python -m sitecontroller.sim`; contactor commands reach it."""
    data = isolated_example("sim_node1.json", tmp_path)
    path = tmp_path / "params.json"
    path.write_text(json.dumps(data))
    endpoint = data["simulation"]["endpoint"]
    log = open(tmp_path / "sim.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "sitecontroller.sim", "--params", str(path), "--soc", "0.42"],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    drv = None
    try:
        def ready():
            try:
                reply = sim_request(endpoint, {"op": "ping"}, 0.5)
                return reply["pid"] == proc.pid and reply["ready"]
            except SimUnreachable:
                return proc.poll() is not None
        wait_until(ready, 20, 0.1, "the simulator's endpoint")
        assert proc.poll() is None, (tmp_path / "sim.log").read_text()
        params = parse(data)
        drv = make_bms(params.devices.bms, RealClock())
        await drv.start()
        await async_wait_until(lambda: (r := drv.latest()) is not None and r.racks_online == 2, 10, 0.05,
                               "both racks online over SLCAN")
        assert drv.latest().soc == pytest.approx(0.42, abs=0.01)

        def plant():
            return sim_request(endpoint, {"op": "plant"})["plant"]

        assert plant()["contactor_closed"]
        drv.command(BmsCommand(contactor_closed=False))
        await async_wait_until(lambda: not plant()["contactor_closed"], 5, 0.05, "the simulated contactors open")
        await async_wait_until(lambda: drv.latest() is not None and not drv.latest().contactor_closed, 5, 0.05,
                               "the BMS frames report them open")
        drv.command(BmsCommand(contactor_closed=True))
        await async_wait_until(lambda: plant()["contactor_closed"], 5, 0.05, "closed again")
        assert drv.stats()["decode_errors"] == 0
    finally:
        if drv is not None:
            await drv.close()
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            log.close()
    assert "Traceback" not in (tmp_path / "sim.log").read_text()


async def test_clients_on_one_adapter_hear_each_other():
    """Like devices on one CAN bus: a frame from one client reaches the bus and every other open client."""
    server = SlcanServer("127.0.0.1", 0, f"slcan-share-{free_tcp_port()}")
    await server.start()
    try:
        (r1, w1), (r2, w2) = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
        for w in (w1, w2):
            w.write(b"O\r")
        assert await asyncio.wait_for(r1.readexactly(1), 2) == b"\r"
        assert await asyncio.wait_for(r2.readexactly(1), 2) == b"\r"
        w1.write(b"t10011F\r")
        assert await asyncio.wait_for(r1.readuntil(b"\r"), 2) == b"z\r"  # the sender gets its ack, not its frame
        assert await asyncio.wait_for(r2.readuntil(b"\r"), 2) == b"t10011F\r"
        for w in (w1, w2):
            w.close()
    finally:
        await server.close()


async def test_the_driver_reconnects_when_the_adapter_comes_back():
    """A simulator that restarts: the driver's bus fails, is reopened, and the racks come back online."""
    from sitecontroller.sim.bms import SimBms
    from tests.protocol.bms_rig import make_plant

    port = free_tcp_port()
    channel = f"slcan-reconnect-{port}"
    cfg = BmsConfig(model="bess_sim", can={"interface": "slcan", "channel": f"socket://127.0.0.1:{port}"},
                    timeout_s=0.5, alive_timeout_s=1.0)
    inner = cfg.model_copy(update={"can": cfg.can.model_copy(update={"interface": "virtual", "channel": channel})})
    clock = RealClock()
    sim = SimBms(make_plant(1), inner, clock, period_s=0.05)
    server = SlcanServer("127.0.0.1", port, channel)
    await server.start()
    await sim.start()
    drv = make_bms(cfg, clock)
    await drv.start()
    try:
        await async_wait_until(lambda: (r := drv.latest()) is not None and r.racks_online == 1, 5, 0.02, "online")
        await server.close()
        await async_wait_until(lambda: drv.latest() is None or drv.latest().racks_online == 0, 5, 0.02, "offline")
        server = SlcanServer("127.0.0.1", port, channel)
        await server.start()
        await async_wait_until(lambda: (r := drv.latest()) is not None and r.racks_online == 1, 10, 0.02,
                               "online again after the adapter came back")
        assert drv.stats()["bus_opens"] >= 2
    finally:
        await drv.close()
        await sim.close()
        await server.close()
