"""The IoT Hub emulator in its own process on a loopback address of its own (the SDK's ports 8883 and
443 are fixed, so parallel tests differ by address), and nodes started with a `cloud` section."""
import json

import pytest

from mastercontroller import keys
from sitecontroller.cloud.emulator.process import EmulatorProcess
from tests.e2e.conftest import NodeProcess
from tests.util import REPO, free_tcp_port, isolated_example


@pytest.fixture
def emulator(tmp_path):
    started = []

    def start(devices=("node1",)):
        hub = EmulatorProcess(tmp_path / f"hub{len(started)}", tmp_path / f"hub{len(started)}.log", devices, REPO)
        started.append(hub)
        return hub

    yield start
    for hub in started:
        hub.stop()


@pytest.fixture
def cloud_node(tmp_path):
    """A simulated node (scripts/run-sim) whose `cloud` section points at an emulator."""
    started = []

    def start(hub, device="node1", cluster=False, restart_of=None, **cloud):
        if restart_of is not None:  # the same parameter file and data directory again
            node = NodeProcess(restart_of.params_file, restart_of.endpoint, tmp_path / f"{device}-{len(started)}.log")
            started.append(node)
            return node
        data = isolated_example("sim_node1.json", tmp_path)
        if cluster:  # a cluster of one: cluster modes go through its Raft log
            public = keys.generate(tmp_path / "node1")
            data["features"] = {**data.get("features", {}), "CLUSTER": True}
            data["cluster"] = {"members": [{"node_id": "node1", "raft": f"127.0.0.1:{free_tcp_port()}",
                                            "data": f"127.0.0.1:{free_tcp_port()}", "public_key": public}]}
        data["cloud"] = {"connection_string_file": str(hub.cs_file(device)), "ca_cert_file": str(hub.dir / "ca.pem"),
                         "telemetry_interval_s": 1, **cloud}
        path = tmp_path / f"params-{device}-{len(started)}.json"
        path.write_text(json.dumps(data))
        node = NodeProcess(path, data["control"]["endpoint"], tmp_path / f"{device}-{len(started)}.log")
        started.append(node)
        return node

    yield start
    for node in started:
        node.kill()
