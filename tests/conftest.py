import asyncio

import pytest

from sitecontroller import vtime
from sitecontroller.clock import RealClock
from tests.live import LiveNode, protocol_params


def pytest_asyncio_loop_factories(config, item):
    """Tests marked `vtime` run on a VirtualTimeLoop (sitecontroller/vtime.py); the others on asyncio's default."""
    if item.get_closest_marker("vtime"):
        return {"vtime": vtime.new_loop}
    return {"asyncio": asyncio.new_event_loop}


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
