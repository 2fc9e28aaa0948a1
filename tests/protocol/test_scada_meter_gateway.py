"""The meter gateway: the site meter re-served read-only in the EM24 layout, read by mbpoll and by
our own EM24 meter driver (as a second inverter or an EV charger would read it)."""
from __future__ import annotations

import pytest
from pymodbus.client import AsyncModbusTcpClient

from sitecontroller.clock import RealClock
from sitecontroller.drivers.meter.config import MeterConfig
from sitecontroller.drivers.meter.modbus_meter import ModbusMeter
from sitecontroller.process_image import MeterReading
from sitecontroller.scada.meter_gateway import MeterGateway, meter_values
from tests.protocol.scada_rig import LINE, ScadaNode
from tests.util import async_wait_until, free_tcp_port

pytestmark = pytest.mark.slow  # a node process


@pytest.fixture
def node(tmp_path):
    n = ScadaNode(tmp_path)
    try:
        n.wait_status(lambda s: s["state"] == "run" and s["grid_p_w"] is not None, 20, "node in run with a meter")
        yield n
    finally:
        n.kill()


def test_mbpoll_reads_the_site_meter_through_the_node(node):
    # W sys at 0x0028: INT32, least significant word first (mbpoll's default order), 0.1 W, + = import
    rc, out = node.mbpoll(0x28, count=1, kind="4:int", unit=2, big_endian=False)
    assert rc == 0, out
    w_sys = int(LINE.findall(out)[0][1]) / 10
    assert w_sys == pytest.approx(node.status()["grid_p_w"], abs=400)  # load and PV drift between the two reads
    rc, out = node.mbpoll(0x28, "1", unit=2)
    assert rc != 0 and "Illegal data address" in out  # read-only


async def test_our_em24_driver_reads_the_gateway_and_an_absent_meter_is_never_served():
    reading = {"now": MeterReading(t=0.0, p_w=-1234.5, phase_p_w=(-400.0, -400.0, -434.5),
                                   phase_v=(230.1, 229.9, 231.0), phase_a=(1.8, 1.8, 1.9), freq_hz=50.01)}
    gw = MeterGateway(unit_id=2, source=lambda: meter_values(reading["now"]))
    gw.host, gw.port = "127.0.0.1", free_tcp_port()
    await gw.start()
    cfg = MeterConfig(model="em24", transport="tcp", host="127.0.0.1", port=gw.port, unit_id=2)
    drv = ModbusMeter(cfg, RealClock())
    await drv.start()
    try:
        r = await async_wait_until(drv.latest, 5, 0.05, "a meter reading through the gateway")
        assert r.p_w == pytest.approx(-1234.5, abs=0.1)  # export: negative, our sign and the EM24's
        assert r.phase_v == pytest.approx((230.1, 229.9, 231.0), abs=0.1)
        assert r.freq_hz == pytest.approx(50.0, abs=0.1)
        reading["now"] = None  # the node has no fresh meter reading: no numbers at all
        client = AsyncModbusTcpClient("127.0.0.1", port=gw.port, timeout=2, retries=0)
        await client.connect()
        try:
            rr = await client.read_holding_registers(0x28, count=2, device_id=2)
            assert rr.isError() and rr.exception_code == 0x0B
        finally:
            client.close()
    finally:
        await drv.close()
        await gw.close()
