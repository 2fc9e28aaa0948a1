"""The SCADA service of a node: the Modbus TCP server, its snapshot refresher, the heartbeat watchdog.

Plugged into `NodeRuntime` (DESIGN §3) when `scada.enabled`:

    runtime = NodeRuntime(params, clock, devices, services=[..., ScadaService])

Once per cycle period, between cycles, the refresher turns the node's status snapshot
(and the cluster status on a cluster member) into the live values the map serves
(`values.live_values`) and encodes them into the served registers; Modbus reads serve those
registers, so a read never waits for the cycle and never reads the cycle's objects.
Writes: `control.ScadaControl`.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ..drivers.modbus import load_profile
from .control import ScadaControl
from .meter_gateway import MeterGateway, meter_values
from .server import ScadaServer
from .values import live_values

log = logging.getLogger("sitecontroller.scada")

MAP_FILE = Path(__file__).resolve().parent / "registers.toml"


def load_map():
    """The SCADA register map (a Profile; SunSpec addresses resolved as served)."""
    return load_profile(str(MAP_FILE))


class ScadaService:
    def __init__(self, node):
        self.node = node
        self.params = node.params.scada
        profile = load_map()
        self.control = ScadaControl(node, self.params, profile, values=lambda names: self.server.values(names))
        self.live: dict = {}
        self.meter_live: dict = {}
        gateways = []
        if self.params.meter_unit_id is not None:
            gateways.append(MeterGateway(unit_id=self.params.meter_unit_id, source=lambda: self.meter_live))
        self.server = ScadaServer(profile, host=self.params.host, port=self.params.port, unit_id=self.params.unit_id,
                                  source=self.served, control=self.control,
                                  allow_write_from=self.params.allow_write_from, gateways=gateways)
        self.control.profile = self.server.profile  # with the served addresses
        self.refreshes = 0
        self._tasks: list[asyncio.Task] = []

    def served(self) -> dict:
        """What a read serves: the latest snapshot's values, and the SCADA control's state as it is
        now (a read right after a write sees that write)."""
        return {**self.live, **self.control.served()}

    def refresh(self) -> None:
        node = self.node
        cluster = node.cluster.cluster_status() if node.cluster is not None else None
        p = node.params
        self.live = live_values(node.status(), cluster, rated_w=node.rated_w,
                                capacity_wh=p.battery.capacity_wh)
        self.meter_live = meter_values(node.image.meter if node.image is not None else None)
        self.server.refresh()  # encode the registers now, once, not per read
        self.refreshes += 1

    async def _refresher(self) -> None:
        period = self.node.params.cycle.period_s
        while True:
            try:
                self.refresh()
            except Exception:  # a bug here must not stop the map: the last values stay, logged
                log.exception("SCADA: refreshing the served values failed")
            await asyncio.sleep(period)

    async def start(self) -> None:
        self.refresh()
        await self.server.start()
        self._tasks = [asyncio.create_task(self._refresher(), name="scada-refresh"),
                       asyncio.create_task(self.control.watch(), name="scada-heartbeat")]
        log.info("SCADA Modbus TCP server on %s:%d unit %d (writes from %s; heartbeat %g s, fallback %s)",
                 self.params.host, self.params.port, self.params.unit_id, ", ".join(self.params.allow_write_from),
                 self.params.heartbeat_timeout_s, self.params.fallback)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.close()
