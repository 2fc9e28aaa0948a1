"""SCADA control writes through mbpoll (and pymodbus for a client address of our choice): the
guard (allow-list, write enable, read-only, ranges) answers with the right exception and changes
nothing; a good write acts through an audited command; the heartbeat keeps control alive, its loss
applies the fallback within the timeout, and only a fresh write resumes control."""
from __future__ import annotations

import time

import pytest
from pymodbus.pdu import ExceptionResponse

from sitecontroller.scada.values import MAP_VERSION
from tests.protocol.scada_rig import ScadaNode, exception_in, pymodbus_write, run
from tests.util import wait_until

pytestmark = pytest.mark.slow  # a node process


def start(tmp_path, **scada) -> ScadaNode:
    n = ScadaNode(tmp_path, **scada)
    n.wait_status(lambda s: s["state"] == "run", 20, "node in run")
    return n


@pytest.fixture
def node(tmp_path):
    n = start(tmp_path)
    try:
        yield n
    finally:
        n.kill()


def assert_refused(node, point: str, value: int, code: str) -> None:
    before = len(node.audit())
    rc, out = node.write(point, value)
    assert rc != 0 and exception_in(out) == code, out
    s = node.status()
    assert s["setpoint_source"] != "scada" or s["request_w"] != value
    assert len(node.audit()) == before, "a refused write must not become a command"


def test_every_control_write_is_refused_while_write_enable_is_off(node):
    for point, value in (("NodeWSet", 1000), ("ModeSel", 1), ("ModeParW", 100), ("ModeParSoC", 500),
                         ("ClTgtWSet", 1000), ("Hb", 1), ("WSet", 1000), ("OutWRte", 2000), ("Conn", 1)):
        assert_refused(node, point, value, "02")
    assert node.read("WrEna") == [0]


def test_read_only_and_out_of_range_writes_change_nothing(node):
    assert node.write("WrEna", 1)[0] == 0
    assert node.read("WrEna") == [1]
    for point in ("MapVer", "NodeSt", "Bat_SoC", "WChaMax", "W", "CtlSt", "HbTmo"):
        assert_refused(node, point, 1, "02")
    assert_refused(node, "WrEna", 2, "03")
    assert_refused(node, "NodeWSet", 5001, "03")  # beyond the inverter rating (5000 W)
    assert_refused(node, "NodeWSet", 20_000_000, "03")  # beyond the register's range
    assert_refused(node, "ModeSel", 9, "03")  # no such mode
    assert_refused(node, "ModeSel", 7, "03")  # external_control needs a schedule: not over Modbus
    assert_refused(node, "ModeParSoC", 1001, "03")  # 100.1 %
    assert_refused(node, "OutWRte", 10001, "03")  # 100.01 % of WChaMax
    assert node.status()["setpoint_w"] == 0


def test_node_setpoint_acts_and_a_refused_command_is_exception_04(node):
    assert node.write("WrEna", 1)[0] == 0
    rc, out = node.write("NodeWSet", 2000)
    assert rc == 0, out
    s = node.status()  # the write is answered once the command is done: no waiting here
    assert s["setpoint_source"] == "scada" and s["request_w"] == 2000
    node.wait_status(lambda s: abs(s["p_w"] - 2000) < 30, 3, "inverter at 2000 W")
    assert node.read("NodeWSet") == [2000] and node.read("CtlSt") == [1]
    node.wait_audit(lambda a: a["type"] == "set_power" and a["status"] == "done" and a["payload"]["p_w"] == 2000,
                    "the audited set_power")
    rc, out = node.write("NodeWSet", "--", "-1500")  # a charge request: negative = charge
    assert rc == 0, out
    assert node.status()["request_w"] == -1500
    # a request the node's state forbids (e-stop: state error): the node refuses the command -> 04
    assert node.cli("estop", "engage", "--endpoint", node.endpoint).returncode == 0
    node.wait_status(lambda s: s["state"] == "error", 5, "node in error")
    rc, out = node.write("NodeWSet", 1000)
    assert rc != 0 and exception_in(out) == "04", out
    node.wait_audit(lambda a: a["type"] == "set_power" and a["status"] == "rejected", "the audited refusal")
    assert node.status()["request_w"] != 1000 and node.status()["setpoint_w"] == 0


def test_sunspec_setpoint_points_steer_the_node_like_our_driver_writes_them(node):
    assert node.write("WrEna", 1)[0] == 0
    assert node.write("StorCtl_Mod", 3)[0] == 0
    rc, out = node.write("OutWRte", 3000)  # 30.00 % of WChaMax 5000 W = 1500 W discharge
    assert rc == 0, out
    assert node.status()["request_w"] == pytest.approx(1500)
    assert node.write("WSetEna", 1)[0] == 0
    assert node.write("WSet", 2500)[0] == 0  # model 704: watts, takes precedence when enabled
    assert node.status()["request_w"] == pytest.approx(2500)
    assert node.write("Conn", 0)[0] == 0  # disconnect: 0 W
    assert node.status()["request_w"] == 0


def test_a_client_outside_the_allow_list_reads_but_cannot_write(tmp_path):
    node = start(tmp_path, allow_write_from=["127.0.0.2/32"])
    try:
        rc, out = node.write("WrEna", 1)  # mbpoll connects from 127.0.0.1
        assert rc != 0 and exception_in(out) == "01", out
        assert node.read("MapVer") == [MAP_VERSION]  # reading is fine
        ok = run(pymodbus_write(node.port, "WrEna", [1], source="127.0.0.2"))
        assert not ok.isError(), ok
        refused = run(pymodbus_write(node.port, "NodeWSet", [0, 1000], source="127.0.0.1"))
        assert isinstance(refused, ExceptionResponse) and refused.exception_code == 1
        assert node.status()["setpoint_source"] != "scada"
    finally:
        node.kill()


def test_heartbeat_keeps_control_its_loss_falls_back_and_only_a_fresh_write_resumes(tmp_path):
    timeout = 3.0
    node = start(tmp_path, heartbeat_timeout_s=timeout)
    try:
        heartbeat_round(node, timeout)
    finally:
        node.kill()


def heartbeat_round(node, timeout: float) -> None:
    assert node.write("WrEna", 1)[0] == 0
    assert node.write("NodeWSet", 2000)[0] == 0
    t0 = time.monotonic()
    beat = 0
    while time.monotonic() - t0 < 2 * timeout:  # beats (one per status call) keep it longer than the timeout
        beat += 1
        beat_sent = time.time()
        assert node.write("Hb", beat)[0] == 0
        beat_taken = time.time()  # the node took the last beat between these two
        s = node.status()
        assert s["setpoint_source"] == "scada" and s["request_w"] == 2000, s
    s = node.wait_status(lambda s: s["request_w"] == 0 and any(e["id"] == "SCADA_HEARTBEAT_LOST" for e in s["errors"]),
                         timeout + 5, "fallback hold_zero")
    assert s["setpoint_source"] == "scada"  # hold_zero: SCADA holds 0 W, no other source takes over
    wait_until(lambda: node.read("CtlSt") == [2], 3, 0.1, "CtlSt fallback (the bank refreshes once per cycle)")
    fallback = node.wait_audit(lambda a: a["payload"]["id"].startswith("scada-fallback"), "the audited fallback")
    # by the node's own clock (the audit line): the timeout after the last beat, not before, and
    # within a cycle and the watchdog's check period after it (the test's polling does not count)
    assert timeout - 0.1 <= fallback["wall"] - beat_sent and fallback["wall"] - beat_taken <= timeout + 1.0, \
        (fallback["wall"] - beat_sent, fallback["wall"] - beat_taken)
    # a heartbeat alone does not resume control
    assert node.write("Hb", beat + 1)[0] == 0
    assert node.status()["request_w"] == 0 and node.read("CtlSt") == [2]
    # a fresh write does, and the warning goes
    assert node.write("NodeWSet", 1200)[0] == 0
    s = node.status()
    assert s["request_w"] == 1200 and not any(e["id"] == "SCADA_HEARTBEAT_LOST" for e in s["errors"])
    assert node.read("CtlSt") == [1]


def test_previous_mode_fallback_hands_the_node_back_to_its_other_sources(tmp_path):
    node = start(tmp_path, fallback="previous_mode", heartbeat_timeout_s=2.0)
    try:
        assert node.write("WrEna", 1)[0] == 0
        assert node.write("NodeWSet", 2000)[0] == 0
        s = node.wait_status(lambda s: s["setpoint_source"] is None and s["setpoints"] == {}, 5,
                             "the scada source withdrawn")
        assert any(e["id"] == "SCADA_HEARTBEAT_LOST" for e in s["errors"])
    finally:
        node.kill()
