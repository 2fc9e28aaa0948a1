"""A simulated site: the plant physics plus the device side of every protocol.

For each device in the parameter file this starts the simulator that speaks
its protocol (CAN frames encoded with the DBC, Modbus TCP registers per the
profile, HTTP), all reading and writing one `Plant`, which a task steps in
real time. `inproc` devices need no simulator: their drivers read the plant.

A BMS on a `virtual` CAN bus shares the bus with a driver in the same process.
A BMS on `slcan` with a `socket://HOST:PORT` channel is served by an SLCAN
server (a simulated USB-CAN adapter on TCP) that any process can connect to.

`knobs` holds every fault knob of the simulated devices and of the plant
(`sitecontroller sim faults` lists them through the simulator's endpoint).
"""
from __future__ import annotations

import asyncio
import logging
import re

from ..drivers.inverter.config import InverterConfig
from ..drivers.meter.config import MeterConfig
from .knobs import BATTERY_KNOBS, GRID_KNOBS, INVERTER_PLANT_KNOBS, KnobRegistry
from .plant import Plant

log = logging.getLogger("sitecontroller.sim")


def slcan_address(channel: str) -> tuple[str, int]:
    """`socket://HOST:PORT` -> (HOST, PORT); the simulator serves slcan only on such URLs."""
    m = re.fullmatch(r"socket://([^:/]+):(\d{1,5})", channel)
    if not m or not 1 <= int(m[2]) <= 65535:
        raise ValueError(f"devices.bms.can.channel: found {channel!r}; the simulator serves slcan only on "
                         "socket://HOST:PORT (port 1..65535)")
    return m[1], int(m[2])


def _bms_simulators(plant: Plant, cfg, clock) -> list[object]:
    from .bms import SimBms

    if cfg.can.interface != "slcan":
        return [SimBms(plant, cfg, clock)]
    from .slcan_server import SlcanServer

    host, port = slcan_address(cfg.can.channel)
    channel = f"slcan-bridge-{port}-{id(plant)}"  # private to this process
    inner = cfg.model_copy(update={"can": cfg.can.model_copy(update={"interface": "virtual", "channel": channel})})
    # the bridge first: the BMS must not send before the adapter is listening
    return [SlcanServer(host, port, channel), SimBms(plant, inner, clock)]


def make_simulators(plant: Plant, params, clock) -> dict[str, object]:
    """The protocol simulators this parameter file needs, keyed by device kind (`bms_bus`: an SLCAN bridge)."""
    sims: dict[str, object] = {}
    dev = params.devices
    if dev.bms.model != "inproc":
        *bridge, sims["bms"] = _bms_simulators(plant, dev.bms, clock)
        if bridge:
            sims = {"bms_bus": bridge[0], **sims}
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


def make_knobs(plant: Plant, sims: dict[str, object]) -> KnobRegistry:
    """Every fault knob: each simulated device's own (its KNOBS), and the plant's physics."""
    knobs = KnobRegistry()
    for kind in ("bms", "inverter", "meter"):
        if kind in sims:
            knobs.add(kind, sims[kind], extra=INVERTER_PLANT_KNOBS if kind == "inverter" else None)
    knobs.add("battery", plant.battery, BATTERY_KNOBS)
    knobs.add("grid", plant.grid, GRID_KNOBS)
    return knobs


class SimulatedSite:
    def __init__(self, params, clock, step_s: float = 0.05):
        self.params = params
        self.clock = clock
        self.step_s = step_s
        self.plant = Plant.from_params(params, wall_s=clock.wall())
        self.sims = make_simulators(self.plant, params, clock)
        self.knobs = make_knobs(self.plant, self.sims)
        self._task: asyncio.Task | None = None
        self._started: list[object] = []

    async def start(self) -> None:
        """Start every simulator; a port that is taken is an OSError naming the device, port and holder."""
        try:
            for kind, sim in self.sims.items():
                try:
                    await sim.start()
                except (OSError, RuntimeError) as exc:  # pymodbus says RuntimeError("Could not start listen")
                    raise OSError(self._taken(kind, exc)) from None
                self._started.append(sim)
                log.info("simulated %s started: %s", kind, type(sim).__name__)
        except BaseException:
            await self.close()
            raise
        self._task = asyncio.create_task(self._physics(), name="plant-physics")

    def _taken(self, kind: str, exc: Exception) -> str:
        from .port_holder import who_listens

        if kind == "bms_bus":
            return str(exc)  # the SLCAN server names its port already
        cfg = getattr(self.params.devices, kind)
        holder = who_listens(cfg.port) if cfg.port else None
        return (f"simulated {kind} cannot listen on {cfg.host}:{cfg.port}"
                + (f": held by {holder}" if holder else f" ({exc})"))

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while self._started:
            await self._started.pop().close()

    async def _physics(self) -> None:
        last = self.clock.monotonic()
        nxt = last
        while True:
            nxt += self.step_s
            await self.clock.sleep_until(nxt)
            now = self.clock.monotonic()
            self.plant.step(now - last, self.clock.wall())
            last = now
