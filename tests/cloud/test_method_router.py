"""The method router on its own (no SDK): a command that takes longer than the answer budget is
answered `accepted` within it and its final status follows as an SC_command_event; the dedup book
answers repeats; rate limits count per method."""
import asyncio
import types

from sitecontroller.clock import RealClock
from sitecontroller.cloud import methods
from sitecontroller.commands import DONE, CommandBook


def _router(monkeypatch, rate=30, require_issued_at=False):
    monkeypatch.setattr(methods, "ANSWER_WITHIN_S", 0.05)
    clock = RealClock()
    node = types.SimpleNamespace(clock=clock, commands=CommandBook(clock))
    events = []
    cfg = types.SimpleNamespace(method_ttl_s=60, method_rate_per_min=rate, method_require_issued_at=require_issued_at)

    async def apply(doc, origin):
        return "applied", "ok"

    return methods.MethodRouter(node, cfg, apply, events.append), node, events


def test_slow_commands_are_accepted_in_time_and_the_final_status_follows(monkeypatch):
    router, node, events = _router(monkeypatch)

    async def scenario():
        node.commands.bind_loop()
        code, body = await router.answer("GoToState_Running", {"request_id": "r1"}, "rid1")
        assert (code, body["status"], body["command_id"]) == (200, "accepted", "cloud-r1")
        assert events == []
        (cmd,) = node.commands.take()  # the cycle carries it out later
        node.commands.finish(cmd, DONE, "init -> run")
        for _ in range(100):
            if events:
                break
            await asyncio.sleep(0.01)
        assert [(e.id, e.status) for e in events] == [("cloud-r1", "done")]
        code, body = await router.answer("GoToState_Running", {"request_id": "r1"}, "rid2")
        assert code == 200 and body["status"] == "done" and body["detail"].startswith("duplicate request")
        assert node.commands.take() == []  # not queued again

    asyncio.run(scenario())


def test_rate_limit_counts_per_method_and_repeats_are_free(monkeypatch):
    router, node, _ = _router(monkeypatch, rate=2)

    async def scenario():
        node.commands.bind_loop()
        codes = [(await router.answer("GoToState_Idling", {"request_id": f"i{i}"}, f"r{i}"))[0] for i in range(3)]
        assert codes == [200, 200, 429]
        assert (await router.answer("GoToState_Idling", {"request_id": "i0"}, "x"))[0] == 200  # a repeat: answered
        assert (await router.answer("GoToState_Running", {}, "y"))[0] == 200

    asyncio.run(scenario())


def test_payload_errors_name_the_field(monkeypatch):
    router, _, _ = _router(monkeypatch)

    async def scenario():
        assert await router.answer("GoToState_Idling", [1], "r") == (400, {"status": "rejected",
                                                                            "detail": "$: found list; allowed: a JSON object"})
        code, body = await router.answer("GoToMode_LoadMatching", {"import_limit_w": "x"}, "r")
        assert code == 400 and body["detail"].startswith("$.import_limit_w"), body
        code, body = await router.answer("GoToState_Idling", {"request_id": 5}, "r")
        assert code == 400 and body["detail"].startswith("$.request_id")

    asyncio.run(scenario())


def test_the_time_to_live_refuses_old_and_far_future_requests_and_can_be_required(monkeypatch):
    router, node, _ = _router(monkeypatch, require_issued_at=True)
    now = node.clock.wall()

    async def scenario():
        code, body = await router.answer("GoToState_Idling", {}, "r1")
        assert code == 400 and body["detail"].startswith("$.issued_at: missing"), body
        assert (await router.answer("GoToState_Idling", {"issued_at": now - 61}, "r2"))[0] == 408
        code, body = await router.answer("GoToState_Idling", {"issued_at": now + 3600}, "r3")
        assert code == 408 and "in the future" in body["detail"], body
        assert node.commands.ack_of("cloud-r1") is None and node.commands.ack_of("cloud-r3") is None  # nothing ran
        code, body = await router.answer("GoToState_Idling", {"issued_at": now - 5}, "r4")
        assert code == 200, body  # within the time-to-live (clocks a few seconds apart are fine)

    asyncio.run(scenario())
