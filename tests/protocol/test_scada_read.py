"""SCADA reads by third-party clients: mbpoll and the pysunspec2 SunSpec client read a running
node's map; the values are those of `status --json`."""
from __future__ import annotations

import re

import pytest
import sunspec2.modbus.client as sunspec_client

from sitecontroller.scada.values import MAP_VERSION, error_code
from tests.protocol.scada_rig import ScadaNode
from tests.util import wait_until

pytestmark = pytest.mark.slow  # a node process


@pytest.fixture
def node(tmp_path):
    n = ScadaNode(tmp_path)
    try:
        n.wait_status(lambda s: s["state"] == "run", 20, "node in run")
        yield n
    finally:
        n.kill()


def test_mbpoll_discovers_the_sunspec_chain_and_reads_node_values(node):
    rc, out = node.mbpoll(40000, count=4, kind="4:hex")
    assert rc == 0 and "0x5375" in out and "0x6E53" in out and "0x0001" in out and "0x0042" in out, out
    # walk the chain as a SunSpec client does: ID, L, skip L
    addr, models = 40002, []
    while True:
        rc, out = node.mbpoll(addr, count=2)
        mid, length = (int(v) for v in re.findall(r"\]:\s+(\d+)", out))
        if mid == 0xFFFF:
            break
        models.append(mid)
        addr += 2 + length
    assert models == [1, 103, 123, 124, 802, 704, 64900]
    assert node.read("MapVer") == [MAP_VERSION]
    s = node.status()
    assert node.read("NodeSt") == [2]  # run
    assert node.read("CtlMode") == [1] and node.read("Role") == [0]  # local, alone
    soc = node.read("Bat_SoC")[0] / 10  # Bat_SoC_SF = -1
    assert soc == pytest.approx(s["soc"] * 100, abs=0.2)
    assert node.read("WChaMax") == [5000]
    assert node.read("Bat_WDisChaRteMax")[0] * 10 == pytest.approx(s["limits"]["discharge_w"], abs=10)
    assert node.read("Bat_CellVMax")[0] / 1000 == pytest.approx(s["battery"]["cell_v_max_v"], abs=0.002)
    assert node.read("W")[0] == pytest.approx(s["p_w"], abs=2)


def test_pysunspec2_reads_the_models_with_their_scale_factors(node):
    d = sunspec_client.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=node.port, timeout=5)
    try:
        d.scan()
        s = node.status()
        assert {1, 103, 123, 124, 802, 704, 64900} <= {k for k in d.models if isinstance(k, int)}
        common = d.models[1][0]
        assert common.SN.value == s["node_id"] and common.Mn.value == "BESS cluster controller"
        bat = d.models[802][0]
        assert bat.SoC.cvalue == pytest.approx(s["soc"] * 100, abs=0.2)
        assert bat.SoH.cvalue == pytest.approx(s["battery"]["soh"] * 100, abs=0.2)
        assert bat.V.cvalue == pytest.approx(s["battery"]["pack_v"], abs=0.3)
        assert bat.CellVMax.cvalue == pytest.approx(s["battery"]["cell_v_max_v"], abs=0.002)
        assert bat.CellVMin.cvalue == pytest.approx(s["battery"]["cell_v_min_v"], abs=0.002)
        assert bat.WChaRteMax.cvalue == pytest.approx(s["limits"]["charge_w"], abs=10)
        assert bat.State.value == (3 if s["battery"]["contactor_closed"] else 1)
        storage = d.models[124][0]
        assert storage.WChaMax.cvalue == 5000 and storage.ChaState.cvalue == pytest.approx(s["soc"] * 100, abs=0.2)
        inverter = d.models[103][0]
        assert inverter.W.cvalue == pytest.approx(s["p_w"], abs=2) and inverter.St.value == 4  # running
        assert inverter.Hz.value is None  # a value the node does not have: "not implemented"
    finally:
        d.close()


def test_error_codes_are_served_most_severe_first(tmp_path):
    node = ScadaNode(tmp_path, heartbeat_timeout_s=2.0)
    try:
        node.wait_status(lambda s: s["state"] == "run", 20, "node in run")
        error_codes_round(node)
    finally:
        node.kill()


def error_codes_round(node) -> None:
    node.write("WrEna", 1)
    rc, out = node.write("NodeWSet", 1000)
    assert rc == 0, out
    # no heartbeat: SCADA_HEARTBEAT_LOST is listed, and served as Err1
    s = node.wait_status(lambda s: any(e["id"] == "SCADA_HEARTBEAT_LOST" for e in s["errors"]), 6, "heartbeat lost")
    # the register bank is refreshed on its own period, after the status file: poll it with a deadline
    code = error_code("SCADA_HEARTBEAT_LOST")
    wait_until(lambda: code in node.read("Err1", count=8), 5, 0.2, "SCADA_HEARTBEAT_LOST served as an error code")
    assert node.read("ErrCnt") == [len(s["errors"])]
