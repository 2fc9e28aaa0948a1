"""A live node against the protocol simulators, in the test's event loop, on the given clock
(the real clock, or virtual time under the `vtime` marker)."""
import asyncio

from sitecontroller import params as params_mod
from sitecontroller.clock import RealClock
from sitecontroller.drivers.factory import make_devices
from sitecontroller.runtime import NodeRuntime
from sitecontroller.sim.site import SimulatedSite
from tests.util import isolated_example



class LiveNode:
    def __init__(self, params, clock=None):
        self.params = params
        self.clock = clock or RealClock()
        self.site = SimulatedSite(params, self.clock)
        self.plant = self.site.plant
        self.sims = self.site.sims
        self.devices = make_devices(params, self.clock)
        self.runtime = NodeRuntime(params, self.clock, self.devices)
        self.node = self.runtime.node

    async def start(self):
        await self.site.start()
        await self.runtime.start()

    async def close(self):
        await self.runtime.stop()
        await self.site.close()

    async def until(self, predicate, timeout_s, what):
        """Poll every 5 ms; return the node clock's time at which `predicate` first held."""
        deadline = self.clock.monotonic() + timeout_s
        while not predicate():
            if self.clock.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; status: {self.node.status()}")
            await asyncio.sleep(0.005)
        return self.clock.monotonic()

    async def command(self, **raw):
        ack = self.node.commands.submit(raw)
        await self.until(lambda: self.node.commands.ack_of(ack.id).final, 2, f"final ack of {raw}")
        return self.node.commands.ack_of(ack.id)

    @property
    def error_ids(self):
        return {e.id for e in self.node.errors.listed()}


def protocol_params(tmp_path, example="sim_node1.json", **overrides):
    """The example with its own ports. Its simulators run in this process, so a BMS bus that the
    example reaches over SLCAN (a TCP adapter, for a simulator in another process) becomes
    python-can's in-process `virtual` bus: same DBC frames, and faithful under virtual time
    (SLCAN is read by a python-can thread in real time; tests/protocol/test_slcan.py covers it)."""
    data = isolated_example(example, tmp_path, **overrides)
    can = data["devices"]["bms"].get("can")
    if can and can.get("interface") == "slcan":
        data["devices"]["bms"]["can"] = {**can, "interface": "virtual", "channel": f"live-{can['channel'][-5:]}"}
    return params_mod.parse(data)
