"""Every example node configuration runs end to end against its simulated devices.

Covers each device family combination shipped in site_parameters/: BMS over CAN
(our DBC, Pylontech), inverters over Modbus (SunSpec, LuxPower) and HTTP
(Indevolt), meters over Modbus (EM24, EM340) and HTTP (HomeWizard P1).
"""
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(
    p.name for p in (REPO / "site_parameters").glob("*.json")
    if json.loads(p.read_text())["devices"]["bms"]["model"] != "inproc"
)


def test_there_are_protocol_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("example", EXAMPLES)
async def test_example_runs_and_follows_a_setpoint(live, example):
    n = await live(example)
    await n.until(lambda: n.node.image.meter is not None, 5, "meter reading")
    img = n.node.image
    assert img.bms.soc == pytest.approx(n.plant.battery.soc, abs=0.01)  # decoded from the BMS protocol
    assert img.meter.p_w == pytest.approx(n.plant.grid_p_w, abs=150)
    target = min(1000.0, n.params.devices.inverter.rated_w / 2)
    ack = await n.command(type="set_power", p_w=target)
    assert ack.status == "done", ack
    await n.until(lambda: abs(n.plant.inverter.p_w - target) < 2, 6, f"plant inverter at {target} W")
    await n.until(lambda: n.node.image.inverter is not None and abs(n.node.image.inverter.p_w - target) < 25,
                  3, "the inverter's reading shows it")
    await n.until(lambda: abs(n.node.image.meter.p_w - n.plant.grid_p_w) < 150, 3, "meter follows the plant")
    assert not [e for e in n.node.errors.listed() if e.severity != "warning"], n.node.errors.listed()
