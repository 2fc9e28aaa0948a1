"""Node-as-inverter: our own SunSpec inverter driver steers a node through the node's SCADA server,
as if the node were a SunSpec storage inverter (models 1/103/123/124/802/704, the same control
semantics), and reads back what the node does."""
from __future__ import annotations

import pytest

from sitecontroller.clock import RealClock
from sitecontroller.drivers.base import InverterCommand
from sitecontroller.drivers.inverter.config import InverterConfig
from sitecontroller.drivers.inverter.modbus_inverter import ModbusInverter
from tests.protocol.scada_rig import ScadaNode
from tests.util import async_wait_until

pytestmark = pytest.mark.slow  # a node process


@pytest.fixture
def node(tmp_path):
    n = ScadaNode(tmp_path, heartbeat_timeout_s=30.0)  # the driver rewrites every keepalive (5 s)
    try:
        n.wait_status(lambda s: s["state"] == "run", 20, "node in run")
        yield n
    finally:
        n.kill()


async def test_our_sunspec_driver_steers_a_node_through_its_scada_server(node):
    assert node.write("WrEna", 1)[0] == 0  # the site's SCADA engineer opens the gate once
    cfg = InverterConfig(model="sunspec", host="127.0.0.1", port=node.port, rated_w=5000, poll_s=0.1,
                         timeout_s=1.0, comm_lost_s=3.0)
    drv = ModbusInverter(cfg, RealClock())
    await drv.start()
    try:
        first = await async_wait_until(drv.latest, 10, 0.05, "a first reading through the SCADA map")
        assert first.p_w == pytest.approx(0, abs=5)
        for p_w in (2000.0, -1500.0):
            drv.command(InverterCommand(p_w=p_w, run=True))
            s = await async_wait_until(
                lambda: (st := node.status()) and st["setpoint_source"] == "scada" and st["request_w"] == p_w and st,
                5, 0.1, f"the node asked for {p_w} W by the driver")
            assert s["control_mode"] == "local"
            await async_wait_until(lambda: abs(drv.latest().p_w - p_w) < 30, 5, 0.05,
                                   f"the driver reads the node at {p_w} W")
        drv.command(InverterCommand(p_w=0.0, run=False))  # stop: Conn = 0
        await async_wait_until(lambda: node.status()["request_w"] == 0, 5, 0.1, "stopped: 0 W")
        assert not {i.code for i in drv.issues()} & {"INV_WRITE_FAILED", "INV_COMM_LOST"}
        node.wait_audit(lambda a: a["status"] == "done" and a["payload"].get("p_w") == 2000, "the audited 2000 W")
    finally:
        await drv.close()
