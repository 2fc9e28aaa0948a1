"""The local control endpoint answers every request, and refuses bad ones before anything runs."""
import asyncio
import json

import pytest
import zmq
import zmq.asyncio

from sitecontroller.control_endpoint import ControlServer, NodeUnreachable, request
from tests.unit.test_node import Rig


async def ask(endpoint, body: bytes, timeout_s=2.0):
    sock = zmq.asyncio.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        await sock.send(body)
        assert await sock.poll(int(timeout_s * 1000)), f"no answer to {body!r}"
        return json.loads(await sock.recv())
    finally:
        sock.close()


@pytest.fixture
async def served(make_params, tmp_path):
    rig = Rig(make_params())
    server = ControlServer(f"ipc://{tmp_path}/node.sock", rig.node)
    await server.start()
    yield rig, server.endpoint
    await server.close()


@pytest.mark.parametrize("body,fragment", [
    (b"not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"op": "reboot-now"}', "unknown op 'reboot-now'"),
    (b'{"op": "command", "wait_s": null, "command": {"type": "estop", "engaged": true}}', "wait_s: found None"),
    (b'{"op": "command", "wait_s": "soon", "command": {"type": "estop", "engaged": true}}', "wait_s: found 'soon'"),
    (b'{"op": "command", "wait_s": 3600, "command": {"type": "estop", "engaged": true}}', "0..10"),
])
async def test_bad_requests_get_a_clear_answer_and_run_nothing(served, body, fragment):
    rig, endpoint = served
    reply = await ask(endpoint, body)
    assert reply["ok"] is False and fragment in reply["error"]
    assert rig.node.commands.take() == []


async def test_an_id_that_is_not_text_is_rejected_not_dropped(served):
    rig, endpoint = served
    body = json.dumps({"op": "command", "wait_s": 0, "command": {"id": [1], "type": "set_power", "p_w": 1}}).encode()
    reply = await ask(endpoint, body)
    assert reply["ok"] is True and reply["ack"]["status"] == "rejected" and "id" in reply["ack"]["detail"]


async def test_a_command_is_answered_with_its_final_ack(served):
    rig, endpoint = served
    rig.run(0.2)

    async def cycles():
        for _ in range(20):
            rig.run(rig.period)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(cycles())
    reply = await ask(endpoint, json.dumps({"op": "command", "command": {"type": "set_state", "target": "sleep"}}).encode())
    await task
    assert reply["ack"]["status"] == "done" and reply["ack"]["detail"] == "run -> sleep"


def test_a_malformed_endpoint_is_one_clear_error():
    with pytest.raises(NodeUnreachable, match="cannot use endpoint 'foo'"):
        request("foo", {"op": "status"}, 0.5)


async def test_the_reply_comes_when_the_command_is_finished_not_on_a_poll(served):
    rig, endpoint = served
    rig.run(0.2)
    server = ControlServer("inproc://unused", rig.node)  # handle() needs no socket
    body = {"op": "command", "wait_s": 10, "command": {"id": "w1", "type": "set_state", "target": "sleep"}}
    answer = asyncio.create_task(server.handle(body))
    await asyncio.sleep(0)
    assert not answer.done()
    rig.run(rig.period)  # the cycle executes it and calls finish()
    for _ in range(3):  # a few turns of the loop, no time passing: a 10 ms poll would not see it yet
        await asyncio.sleep(0)
    assert answer.done()
    reply = answer.result()
    assert reply["ack"]["status"] == "done" and reply["ack"]["detail"] == "run -> sleep"


async def test_a_command_not_carried_out_within_wait_s_is_answered_with_its_current_ack(served):
    rig, endpoint = served
    rig.run(0.2)  # in run; from now on nobody runs the cycle until the reply is there
    body = json.dumps({"op": "command", "wait_s": 0.1, "command": {"id": "w2", "type": "set_state", "target": "sleep"}})
    reply = await ask(endpoint, body.encode())
    assert reply["ok"] is True and reply["ack"]["status"] == "accepted"
    assert "not carried out within 0.1 s: still accepted" in reply["ack"]["detail"]
    rig.run(rig.period)
    again = await ask(endpoint, body.encode())  # asking again with the id: its final ack (dedup)
    assert again["ack"]["status"] == "done"


async def test_wait_s_zero_answers_at_once(served):
    rig, endpoint = served
    body = {"op": "command", "wait_s": 0, "command": {"type": "estop", "engaged": True}}
    reply = await ask(endpoint, json.dumps(body).encode())
    assert reply["ack"]["status"] == "accepted" and reply["ack"]["detail"] == ""
