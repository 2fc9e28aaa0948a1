import pytest

from tests.live import LiveNode, protocol_params


@pytest.fixture
async def live(tmp_path):
    nodes = []

    async def start(example="sim_node1.json", **overrides):
        node = LiveNode(protocol_params(tmp_path, example, **overrides))
        nodes.append(node)
        await node.start()
        await node.until(lambda: node.node.states.state == "run", 10, "node in run")
        return node

    yield start
    for node in nodes:
        await node.close()
