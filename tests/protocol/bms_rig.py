"""The test rig for the CAN BMS driver: the simulated BMS and the driver on one python-can virtual channel.

`rig_factory` is a pytest fixture (import it into a test module to use it): `await rig_factory(model, racks,
cells=..., **config)` starts a simulated BMS and the driver, waits until every rack is online, and closes
both at the end of the test.
"""
from __future__ import annotations

import itertools
import os

import pytest

from sitecontroller.clock import RealClock
from sitecontroller.drivers.bms import make_bms
from sitecontroller.drivers.bms.config import BmsConfig
from sitecontroller.sim.bms import SimBms
from sitecontroller.sim.plant import Battery, Grid, Inverter, Load, Plant, Solar
from tests.util import async_wait_until

_channels = itertools.count()


def make_plant(racks: int, soc: float = 0.637, cells: int = 16) -> Plant:
    battery = Battery(capacity_wh=15_000 * racks, soc=soc, racks=racks, cells_per_rack=cells)
    plant = Plant(battery, Inverter(rated_w=10_000), Grid(), Solar(0), Load(0))
    plant.battery.pack_a = 7.5 * racks  # discharging
    return plant


class Rig:
    def __init__(self, plant, sim, drv):
        self.plant, self.sim, self.drv = plant, sim, drv

    def codes(self) -> set[str]:
        return {i.code for i in self.drv.issues()}

    def issue(self, code):
        return next((i for i in self.drv.issues() if i.code == code), None)


@pytest.fixture
async def rig_factory():
    started = []

    async def build(model="bess_sim", racks=1, cells=None, soc=0.637, **cfg):
        channel = f"bms-test-{os.getpid()}-{next(_channels)}"
        cfg.setdefault("timeout_s", 0.5)
        cfg.setdefault("alive_timeout_s", 0.5)
        config = BmsConfig(model=model, can={"interface": "virtual", "channel": channel}, racks=racks, **cfg)
        clock = RealClock()
        plant = make_plant(racks, soc, cells or (15 if model == "pylontech" else 16))
        sim = SimBms(plant, config, clock, period_s=0.05)
        drv = make_bms(config, clock)
        await sim.start()
        started.append(sim)
        await drv.start()
        started.append(drv)
        rig = Rig(plant, sim, drv)
        await async_wait_until(lambda: (r := drv.latest()) is not None and r.racks_online == racks, what="all racks online")
        return rig

    yield build
    for thing in reversed(started):
        await thing.close()
