"""A simulated site: the plant physics plus the device side of every protocol.

For each device in the parameter file this starts the simulator that speaks
its protocol (CAN frames encoded with the DBC, Modbus TCP registers per the
profile, HTTP), all reading and writing one `Plant`, which a task steps in
real time. `inproc` devices need no simulator: their drivers read the plant.
"""
from __future__ import annotations

import asyncio
import logging

from ..drivers.inverter.config import InverterConfig
from ..drivers.meter.config import MeterConfig
from .plant import Plant

log = logging.getLogger("sitecontroller.sim")


def make_simulators(plant: Plant, params, clock) -> dict[str, object]:
    """The protocol simulators this parameter file needs, keyed by device kind."""
    sims: dict[str, object] = {}
    dev = params.devices
    if dev.bms.model != "inproc":
        from .bms import SimBms

        sims["bms"] = SimBms(plant, dev.bms, clock)
    if dev.inverter.model in InverterConfig.MODBUS_MODELS:
        from .inverter import SimModbusInverter

        sims["inverter"] = SimModbusInverter(plant, dev.inverter)
    elif dev.inverter.model == "indevolt":
        from .indevolt import SimIndevolt

        sims["inverter"] = SimIndevolt(plant, dev.inverter)
    if dev.meter is not None and dev.meter.model in MeterConfig.MODBUS_MODELS:
        from .meter import SimModbusMeter

        sims["meter"] = SimModbusMeter(plant, dev.meter)
    elif dev.meter is not None and dev.meter.model == "homewizard_p1":
        from .meter import SimP1Meter

        sims["meter"] = SimP1Meter(plant, dev.meter)
    return sims


class SimulatedSite:
    def __init__(self, params, clock, step_s: float = 0.05):
        self.params = params
        self.clock = clock
        self.step_s = step_s
        self.plant = Plant.from_params(params, wall_s=clock.wall())
        self.sims = make_simulators(self.plant, params, clock)
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        for kind, sim in self.sims.items():
            await sim.start()
            log.info("simulated %s started: %s", kind, type(sim).__name__)
        self._task = asyncio.create_task(self._physics(), name="plant-physics")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for sim in self.sims.values():
            await sim.close()

    async def _physics(self) -> None:
        last = self.clock.monotonic()
        nxt = last
        while True:
            nxt += self.step_s
            await self.clock.sleep_until(nxt)
            now = self.clock.monotonic()
            self.plant.step(now - last, self.clock.wall())
            last = now
