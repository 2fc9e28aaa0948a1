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

Given several parameter files (one per node), it is a site of several nodes
behind ONE grid connection point (`site_plant.SitePlant`): one load, one PV field,
one grid and ONE meter (the first file's; every other file names the same
meter or none), and per node its own battery, BMS and inverter on the ports of
its file. The meter measures load - PV - the sum of every node's inverter power.
Knobs are then per node (`bms`, `inverter`, `battery`) or the site's (`meter`,
`grid`): see `SiteKnobs`.
"""
from __future__ import annotations

import asyncio
import logging
import re

from ..drivers.inverter.config import InverterConfig
from ..drivers.meter.config import MeterConfig
from .knobs import BATTERY_KNOBS, GRID_KNOBS, INVERTER_PLANT_KNOBS, SITE_GRID_KNOBS, KnobError, KnobRegistry
from .plant import Plant
from .site_plant import SitePlant

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


def make_simulators(plant: Plant, params, clock, meter: bool = True) -> dict[str, object]:
    """The protocol simulators this parameter file needs, keyed by device kind (`bms_bus`: an SLCAN bridge);
    `meter=False`: all but the meter (a site of several nodes serves one meter for all)."""
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
    if meter and dev.meter is not None:
        sim = make_meter(plant, dev.meter)
        if sim is not None:
            sims["meter"] = sim
    return sims


def make_meter(plant, cfg):
    """The simulated meter for `cfg` reading `plant` (a node's `Plant` or a `SitePlant`), or None (inproc)."""
    if cfg.model in MeterConfig.MODBUS_MODELS:
        from .meter import SimModbusMeter

        return SimModbusMeter(plant, cfg)
    if cfg.model == "homewizard_p1":
        from .meter import SimP1Meter

        return SimP1Meter(plant, cfg)
    return None


def make_knobs(plant: Plant, sims: dict[str, object]) -> KnobRegistry:
    """Every fault knob: each simulated device's own (its KNOBS), and the plant's physics."""
    knobs = KnobRegistry()
    for kind in ("bms", "inverter", "meter"):
        if kind in sims:
            knobs.add(kind, sims[kind], extra=INVERTER_PLANT_KNOBS if kind == "inverter" else None)
    knobs.add("battery", plant.battery, BATTERY_KNOBS)
    knobs.add("grid", plant.grid, GRID_KNOBS)
    return knobs


def _meter_key(cfg) -> tuple:
    return (cfg.model, cfg.transport, cfg.host, cfg.port, cfg.unit_id if cfg.transport == "tcp" else None)


def check_site(params_list) -> None:
    """A site of several nodes: distinct node ids, devices simulated over a protocol (no `inproc`),
    no device port used by two nodes, and ONE meter: every file names the first one's or none.
    Raises ValueError with one line naming the node, the key and what is allowed."""
    from ..params_ports import sockets

    ids = [p.identity.node_id for p in params_list]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"identity.node_id: found {', '.join(dupes)} in more than one file; "
                         "allowed: a distinct node id per node of the site")
    meter, owner = None, None
    used: dict[tuple[str, int], str] = {}
    for p in params_list:
        node, dev = p.identity.node_id, p.devices
        for kind in ("bms", "inverter", "meter"):
            cfg = getattr(dev, kind)
            if cfg is not None and cfg.model == "inproc":
                raise ValueError(f"{node}: devices.{kind}.model: found 'inproc'; allowed: a device the site "
                                 "simulator serves over its protocol (a node of a site is its own process)")
        if dev.meter is not None:
            if meter is None:
                meter, owner = dev.meter, node
            elif _meter_key(dev.meter) != _meter_key(meter):
                raise ValueError(
                    f"{node}: devices.meter: found {dev.meter.model} at {dev.meter.host}:{dev.meter.port}; a site has "
                    f"one grid meter: {meter.model} at {meter.host}:{meter.port} (the meter of {owner}); "
                    "allowed: that meter, or null")
        for sock in sockets(p):
            if sock.path in ("$.control.endpoint", "$.devices.meter.port"):
                continue
            key = (sock.host, sock.port)
            if key in used:
                raise ValueError(f"{node}: {sock.path}: found {sock.host}:{sock.port}, already used by {used[key]}; "
                                 "allowed: a port of its own for each node's device")
            used[key] = f"{node} ({sock.path})"
    if meter is not None:
        key = (meter.host, meter.port)
        if key in used:
            raise ValueError(f"devices.meter.port: found {meter.host}:{meter.port}, already used by {used[key]}; "
                             "allowed: a port of its own for the site meter")


class SiteKnobs:
    """The fault knobs of a site of several nodes: per node its `bms`, `inverter` and `battery`;
    the site's one `meter` and `grid`, shared by every node.

    `scope(node)` gives what `KnobRegistry` gives (describe, set, clear) for one node (its
    knobs and the shared ones; `clear` clears only its own) or, with None, for the whole
    site (every knob; `set` of a per-node device asks for a node; `clear` clears all).
    Each knob described carries `node`: its node id, or None for a shared device.
    """

    def __init__(self, nodes: dict[str, KnobRegistry], shared: KnobRegistry):
        self.nodes, self.shared = nodes, shared

    @property
    def devices(self) -> list[str]:
        return list(dict.fromkeys([d for reg in self.nodes.values() for d in reg.devices] + self.shared.devices))

    def node_registry(self, node: str) -> KnobRegistry:
        if node not in self.nodes:
            raise KnobError(f"unknown node {node!r}; this site's nodes: {', '.join(self.nodes)}")
        return self.nodes[node]

    def scope(self, node: str | None) -> "_Scope":
        if node is not None:
            self.node_registry(node)
        return _Scope(self, node)

    # the whole site (what a KnobRegistry offers, so that code written for one node works)
    def describe(self) -> list[dict]:
        return self.scope(None).describe()

    async def set(self, device: str, name: str, raw=None) -> dict:
        return await self.scope(None).set(device, name, raw)

    async def clear(self) -> list[str]:
        return await self.scope(None).clear()


class _Scope:
    def __init__(self, knobs: SiteKnobs, node: str | None):
        self.knobs, self.node = knobs, node

    def describe(self) -> list[dict]:
        nodes = [self.node] if self.node is not None else list(self.knobs.nodes)
        out = [{**k, "node": n} for n in nodes for k in self.knobs.nodes[n].describe()]
        return out + [{**k, "node": None} for k in self.knobs.shared.describe()]

    async def set(self, device: str, name: str, raw=None) -> dict:
        if device in self.knobs.shared.devices:
            return {**await self.knobs.shared.set(device, name, raw), "node": None}
        if self.node is None:
            per_node = self.knobs.devices
            if device in per_node:
                raise KnobError(f"{device} is one per node: give --node ID (this site's nodes: "
                                f"{', '.join(self.knobs.nodes)})")
            raise KnobError(f"no simulated device {device!r}; devices: {', '.join(per_node)}")
        reg = self.knobs.nodes[self.node]
        if device not in reg.devices:
            raise KnobError(f"no simulated device {device!r} at {self.node}; devices: "
                            f"{', '.join(reg.devices + self.knobs.shared.devices)}")
        return {**await reg.set(device, name, raw), "node": self.node}

    async def clear(self) -> list[str]:
        nodes = [self.node] if self.node is not None else list(self.knobs.nodes)
        cleared = [f"{n} {c}" for n in nodes for c in await self.knobs.nodes[n].clear()]
        if self.node is None:
            cleared += await self.knobs.shared.clear()
        return cleared


class SimulatedSite:
    """The simulated devices of one parameter file (one node), or of several (a site of several nodes
    behind one grid meter: pass a list of parameter sets)."""

    def __init__(self, params, clock, step_s: float = 0.05):
        params_list = list(params) if isinstance(params, (list, tuple)) else [params]
        if not params_list:
            raise ValueError("a simulated site needs at least one parameter file")
        self.params = params_list[0]  # the first node's (a single node: its own)
        self.params_list = params_list
        self.clock = clock
        self.step_s = step_s
        self._task: asyncio.Task | None = None
        self._started: list[object] = []
        if len(params_list) == 1:  # one node, exactly as it always was
            self.site_plant = None
            self.plant = Plant.from_params(params, wall_s=clock.wall())
            self.sims = make_simulators(self.plant, params, clock)
            self.knobs = make_knobs(self.plant, self.sims)
            self.plants = {params.identity.node_id: self.plant}
            # (label, node params, device kind, simulator) in start order
            self._serve = [(kind, params, kind, sim) for kind, sim in self.sims.items()]
            return
        check_site(params_list)
        self.site_plant = SitePlant.from_params(params_list, wall_s=clock.wall())
        self.plants = dict(self.site_plant.nodes)
        self.plant = next(iter(self.plants.values()))
        self.sims, self._serve, registries = {}, [], {}
        for p in params_list:
            node = p.identity.node_id
            sims = make_simulators(self.plants[node], p, clock, meter=False)
            for kind, sim in sims.items():
                self.sims[f"{node}.{kind}"] = sim
                self._serve.append((f"{kind} of {node}", p, kind, sim))
            registries[node] = reg = KnobRegistry()
            for kind in ("bms", "inverter"):
                if kind in sims:
                    reg.add(kind, sims[kind], extra=INVERTER_PLANT_KNOBS if kind == "inverter" else None)
            reg.add("battery", self.plants[node].battery, BATTERY_KNOBS)
        shared = KnobRegistry()
        meter_params = next((p for p in params_list if p.devices.meter is not None), None)
        if meter_params is not None:
            self.sims["meter"] = meter = make_meter(self.site_plant, meter_params.devices.meter)
            self._serve.append(("meter", meter_params, "meter", meter))
            shared.add("meter", meter)
        shared.add("grid", self.site_plant.grid, SITE_GRID_KNOBS)
        self.knobs = SiteKnobs(registries, shared)

    @property
    def node_ids(self) -> list[str]:
        return list(self.plants)

    def knob_scope(self, node: str | None):
        """The knobs of one node (None: of the whole site); an unknown node is a KnobError naming the known ones."""
        if node is not None and node not in self.plants:
            raise KnobError(f"unknown node {node!r}; this simulator's nodes: {', '.join(self.plants)}")
        if isinstance(self.knobs, SiteKnobs):
            return self.knobs.scope(node)
        return self.knobs

    def served(self) -> list[tuple[str, str, object]]:
        """(label, device kind, node params) of every simulated device, for the log."""
        return [(label, kind, p) for label, p, kind, _ in self._serve if kind != "bms_bus"]

    async def start(self) -> None:
        """Start every simulator; a port that is taken is an OSError naming the device, port and holder."""
        try:
            for label, params, kind, sim in self._serve:
                try:
                    await sim.start()
                except (OSError, RuntimeError) as exc:  # pymodbus says RuntimeError("Could not start listen")
                    raise OSError(self._taken(label, params, kind, exc)) from None
                self._started.append(sim)
                log.info("simulated %s started: %s", label, type(sim).__name__)
        except BaseException:
            await self.close()
            raise
        self._task = asyncio.create_task(self._physics(), name="plant-physics")

    def _taken(self, label: str, params, kind: str, exc: Exception) -> str:
        from .port_holder import who_listens

        if kind == "bms_bus":
            return str(exc)  # the SLCAN server names its port already
        cfg = getattr(params.devices, kind)
        holder = who_listens(cfg.port) if cfg.port else None
        return (f"simulated {label} cannot listen on {cfg.host}:{cfg.port}"
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
            (self.site_plant or self.plant).step(now - last, self.clock.wall())
            last = now
