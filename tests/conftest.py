import asyncio
import importlib
import sys
import time

import pytest

from sitecontroller import vtime
from sitecontroller.clock import RealClock
from tests.live import LiveNode, protocol_params


def pytest_asyncio_loop_factories(config, item):
    """Tests marked `vtime` run on a VirtualTimeLoop (sitecontroller/vtime.py); the others on asyncio's default."""
    if item.get_closest_marker("vtime"):
        return {"vtime": vtime.new_loop}
    return {"asyncio": asyncio.new_event_loop}


class _LoopTime:
    """Stands in for the `time` module of code that reads time.monotonic() directly instead of an
    injected clock: monotonic() is the running loop's (virtual) time; everything else is real."""

    def monotonic(self):
        return asyncio.get_running_loop().time()

    def __getattr__(self, name):
        return getattr(time, name)


# Modules that still read time.monotonic() for timing that matters (to be given the node's clock).
_DIRECT_TIME_READERS = ("sitecontroller.drivers.modbus.client",)


@pytest.fixture(autouse=True)
def _direct_time_on_virtual_time(request, monkeypatch):
    """Under `vtime`, the modules above read the loop's clock, so their backoffs are virtual too."""
    if request.node.get_closest_marker("vtime"):
        for name in _DIRECT_TIME_READERS:
            module = sys.modules.get(name) or importlib.import_module(name)
            if getattr(module, "time", None) is time:  # still reads the time module directly
                monkeypatch.setattr(module, "time", _LoopTime())


@pytest.fixture
def clock(request):
    """The clock a test's node runs on: virtual time under the `vtime` marker, else the real clock."""
    return vtime.VirtualClock() if request.node.get_closest_marker("vtime") else RealClock()


@pytest.fixture
async def live(tmp_path, clock):
    nodes = []

    async def start(example="sim_node1.json", **overrides):
        node = LiveNode(protocol_params(tmp_path, example, **overrides), clock)
        nodes.append(node)
        await node.start()
        await node.until(lambda: node.node.states.state == "run", 10, "node in run")
        return node

    yield start
    for node in nodes:
        await node.close()
