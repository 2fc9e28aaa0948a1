"""Commands: validated once, deduplicated by id, acknowledged, audited."""
import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from sitecontroller.clock import SimClock
from sitecontroller.commands import (
    ACCEPTED,
    COMMAND_TYPES,
    DONE,
    FAILED,
    REJECTED,
    SCOPES,
    CommandBook,
    parse_command,
)
from sitecontroller.writer import BackgroundWriter


@pytest.mark.parametrize(
    "raw,fragment",
    [
        ({"type": "set_power"}, "p_w: found (missing)"),
        ({"type": "set_power", "p_w": "lots"}, "p_w: found 'lots'"),
        ({"type": "set_power", "p_w": 1e12}, "p_w: found 1000000000000.0"),
        ({"type": "set_power", "p_w": float("nan")}, "p_w"),
        ({"type": "set_power", "p_w": 10, "hold_s": 0}, "hold_s"),
        ({"type": "set_power", "p_w": 10, "pw": 3}, "pw: found 3; Extra inputs are not permitted"),
        ({"type": "set_state", "target": "turbo"}, "target: found 'turbo'"),
        ({"type": "launch"}, "type: found 'launch'; allowed: set_power, set_state, ack_error, estop, restart"),
        ({"p_w": 10}, "type: found None"),
        ({"type": "ack_error", "code": ""}, "code"),
        ({"type": "estop", "engaged": "maybe"}, "engaged"),
        ({"type": "set_power", "p_w": 1, "source": "mars"}, "source"),
    ],
)
def test_invalid_commands_are_rejected_with_the_field_named(raw, fragment):
    with pytest.raises(ValueError) as exc:
        parse_command(raw)
    assert fragment in str(exc.value)


def test_a_command_that_is_not_an_object_is_rejected():
    book = CommandBook(SimClock())
    ack = book.submit(["set_power", 3])
    assert ack.status == REJECTED and "JSON object" in ack.detail


def test_accept_queue_finish_and_dedup(tmp_path):
    book = CommandBook(SimClock(), tmp_path / "audit.jsonl")
    first = book.submit({"id": "c1", "type": "set_power", "p_w": 3000})
    assert first.status == ACCEPTED
    queued = book.take()
    assert [c.id for c in queued] == ["c1"] and book.take() == []
    book.finish(queued[0], DONE, "ok", applied_w=3000)
    # the same id again is not executed twice: it gets the final ack back
    again = book.submit({"id": "c1", "type": "set_power", "p_w": 3000})
    assert again.status == DONE and again.result == {"applied_w": 3000}
    assert book.take() == []


def test_a_rejected_id_stays_rejected():
    book = CommandBook(SimClock())
    assert book.submit({"id": "bad", "type": "set_power"}).status == REJECTED
    assert book.submit({"id": "bad", "type": "set_power", "p_w": 1}).status == REJECTED
    assert book.take() == []


def test_every_status_change_is_in_the_audit_log(tmp_path):
    path = tmp_path / "audit.jsonl"
    book = CommandBook(SimClock(), path)
    book.submit({"id": "a", "type": "set_state", "target": "sleep", "source": "cloud"})
    book.finish(book.take()[0], FAILED, "not now")
    book.submit({"id": "b", "type": "nonsense"})
    book.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(d["id"], d["status"]) for d in lines] == [("a", ACCEPTED), ("a", FAILED), ("b", REJECTED)]
    assert lines[1]["detail"] == "not now" and lines[0]["payload"]["source"] == "cloud"
    assert all(isinstance(d["wall"], float) for d in lines)


def test_dedup_survives_a_restart_and_unfinished_commands_are_failed(tmp_path):
    path = tmp_path / "audit.jsonl"
    book = CommandBook(SimClock(), path)
    book.submit({"id": "done-1", "type": "set_power", "p_w": 5})
    book.finish(book.take()[0], DONE)
    book.submit({"id": "queued-1", "type": "set_power", "p_w": 5})  # the node dies before executing it
    with open(path, "a") as f:  # (no close: a crash)
        f.write('{"id": "torn')  # a torn last line after a crash

    book2 = CommandBook(SimClock(), path)
    assert book2.submit({"id": "done-1", "type": "set_power", "p_w": 5}).status == DONE
    interrupted = book2.submit({"id": "queued-1", "type": "set_power", "p_w": 5})
    assert interrupted.status == FAILED and "restarted" in interrupted.detail
    assert book2.take() == []
    assert book2.submit({"id": "new", "type": "set_power", "p_w": 5}).status == ACCEPTED


# --- damaged audit lines (issue 6, 1.6): skipped with one warning, never a crash ------------

GOOD = {"wall": 1.0, "id": "good", "type": "set_power", "status": "done", "detail": "", "result": {}, "payload": {}}


@pytest.mark.parametrize("line", [
    pytest.param(json.dumps({**GOOD, "id": [1]}), id="list-id"),
    pytest.param(json.dumps({**GOOD, "id": {"a": 1}}), id="object-id"),
    pytest.param(json.dumps({**GOOD, "id": None}), id="null-id"),
    pytest.param(json.dumps({**GOOD, "id": 7}), id="number-id"),
    pytest.param(json.dumps({**GOOD, "status": "weird"}), id="unknown-status"),
    pytest.param(json.dumps({**GOOD, "result": [1, 2]}), id="list-result"),
    pytest.param(json.dumps({**GOOD, "wall": "noon"}), id="text-wall"),
    pytest.param(json.dumps([1, 2]), id="list-line"),
    pytest.param('"just text"', id="text-line"),
    pytest.param('{"id": "torn', id="torn-line"),
])
def test_a_damaged_audit_line_is_skipped_with_one_warning(tmp_path, caplog, line):
    path = tmp_path / "audit.jsonl"
    ok = {**GOOD, "id": "ok-1"}
    path.write_text(json.dumps(ok) + "\n" + line + "\n" + json.dumps({**ok, "id": "ok-2"}) + "\n")
    with caplog.at_level("WARNING", logger="sitecontroller.commands"):
        book = CommandBook(SimClock(), path)
    warnings = [r for r in caplog.records if "damaged line" in r.getMessage()]
    assert len(warnings) == 1 and "line 2" in warnings[0].getMessage()
    # the valid lines around it are remembered: dedup still works
    assert book.submit({"id": "ok-1", "type": "set_power", "p_w": 1}).status == DONE
    assert book.submit({"id": "ok-2", "type": "set_power", "p_w": 1}).status == DONE
    assert book.take() == []
    # and a new command goes through
    assert book.submit({"id": "new", "type": "set_power", "p_w": 1}).status == ACCEPTED


def test_an_interrupted_command_gets_its_failed_line_in_the_audit_log_once(tmp_path):
    path = tmp_path / "audit.jsonl"
    book = CommandBook(SimClock(), path)
    book.submit({"id": "q", "type": "set_state", "target": "sleep"})  # then a crash: no close
    CommandBook(SimClock(), path).close()  # the next start appends the final line
    CommandBook(SimClock(), path).close()  # and the one after that does not repeat it
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(d["id"], d["status"]) for d in lines] == [("q", ACCEPTED), ("q", FAILED)]
    assert lines[1]["detail"].startswith("interrupted") and lines[1]["payload"]["target"] == "sleep"


def test_close_gives_every_queued_command_its_final_ack(tmp_path):
    path = tmp_path / "audit.jsonl"
    book = CommandBook(SimClock(), path)
    ack = book.submit({"id": "late", "type": "set_power", "p_w": 1})
    book.close()
    assert book.ack_of(ack.id).status == FAILED and "interrupted" in book.ack_of(ack.id).detail
    assert [json.loads(x)["status"] for x in path.read_text().splitlines()] == [ACCEPTED, FAILED]
    after = book.submit({"id": "too-late", "type": "set_power", "p_w": 1})
    assert after.status == REJECTED and "stopping" in after.detail and book.take() == []


def test_a_command_gets_exactly_one_final_ack(tmp_path):
    path = tmp_path / "audit.jsonl"
    book = CommandBook(SimClock(), path)
    book.submit({"id": "once", "type": "estop", "engaged": True})
    cmd = book.take()[0]
    first = book.finish(cmd, DONE, "engaged")
    second = book.finish(cmd, FAILED, "again")
    assert second is first and book.ack_of("once").status == DONE
    assert [json.loads(x)["status"] for x in path.read_text().splitlines()] == [ACCEPTED, DONE]


def test_every_command_type_has_a_scope():
    assert set(SCOPES) == set(COMMAND_TYPES)
    assert parse_command({"type": "set_state", "target": "run"}).scope == "node"
    assert parse_command({"type": "cluster_setpoint", "target_w": 6000}).scope == "cluster"


def test_the_audit_goes_through_the_writer(tmp_path):
    path = tmp_path / "audit.jsonl"
    writer = BackgroundWriter()
    book = CommandBook(SimClock(), path, writer=writer)
    book.submit({"id": "w", "type": "set_power", "p_w": 1})
    book.finish(book.take()[0], DONE)
    assert book.flush(5.0)
    assert [json.loads(x)["status"] for x in path.read_text().splitlines()] == [ACCEPTED, DONE]
    book.close()
    writer.close()


# --- the command path for asynchronous edges -------------------------------------------------

async def test_wait_final_returns_as_soon_as_the_command_is_finished():
    book = CommandBook(SimClock())
    ack = book.submit({"id": "a1", "type": "set_state", "target": "sleep"})
    waiting = asyncio.create_task(book.wait_final(ack.id, 10.0))
    await asyncio.sleep(0)
    assert not waiting.done()
    book.finish(book.take()[0], DONE, "run -> sleep")
    final = await asyncio.wait_for(waiting, 1.0)  # woken by finish(), not by a poll
    assert final.status == DONE and final.detail == "run -> sleep"
    assert (await book.wait_final(ack.id, 0.0)).status == DONE  # already final: at once


async def test_a_wait_that_times_out_returns_the_current_ack_saying_so():
    book = CommandBook(SimClock())
    ack = book.submit({"id": "slow", "type": "set_power", "p_w": 1})
    current = await book.wait_final(ack.id, 0.05)
    assert current.status == ACCEPTED and not current.final
    assert "not carried out within 0.05 s: still accepted" in current.detail
    assert book.ack_of("slow").detail == ""  # the book's own ack is unchanged
    book.finish(book.take()[0], DONE)
    assert (await book.wait_final(ack.id, 0.05)).status == DONE


async def test_wait_final_for_an_unknown_id_says_so():
    with pytest.raises(KeyError, match="no command 'nope'"):
        await CommandBook(SimClock()).wait_final("nope", 0.1)


def test_submit_threadsafe_needs_a_loop():
    with pytest.raises(RuntimeError, match="bind_loop"):
        CommandBook(SimClock()).submit_threadsafe({"type": "estop", "engaged": True})


async def test_many_threads_submitting_at_once_each_command_gets_exactly_one_final_ack(tmp_path):
    path = tmp_path / "audit.jsonl"
    writer = BackgroundWriter()
    book = CommandBook(SimClock(), path, writer=writer)
    book.bind_loop()
    executed: list[str] = []
    stop = asyncio.Event()

    async def executor():  # the node's cycle: take and finish what is queued
        while not stop.is_set():
            for cmd in book.take():
                executed.append(cmd.id)
                book.finish(cmd, DONE, f"did {cmd.id}")
            await asyncio.sleep(0.001)

    threads, per_thread = 8, 40

    def client(t: int) -> list:
        futures = []
        for i in range(per_thread):
            shared = f"shared-{i}"  # every thread also sends the same ids: dedup
            futures.append(book.submit_threadsafe({"id": f"t{t}-{i}", "type": "set_power", "p_w": i}))
            futures.append(book.submit_threadsafe({"id": shared, "type": "set_power", "p_w": i}))
            futures.append(book.submit_threadsafe({"id": f"bad-{t}-{i}", "type": "set_power"}))  # rejected
        return [f.result(timeout=20) for f in futures]

    run = asyncio.create_task(executor())
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(threads) as pool:
        results = await asyncio.gather(*(loop.run_in_executor(pool, client, t) for t in range(threads)))
    stop.set()
    await run
    assert book.close() and writer.close()
    acks = [a for r in results for a in r]
    assert all(a.final for a in acks)
    assert len(executed) == len(set(executed)) == threads * per_thread + per_thread  # dedup: shared ids once
    for a in acks:
        expected = REJECTED if a.id.startswith("bad-") else DONE
        assert a.status == expected and (expected == REJECTED or a.detail == f"did {a.id}")
    finals = [json.loads(x) for x in path.read_text().splitlines()]
    finals = [d["id"] for d in finals if d["status"] != ACCEPTED]
    assert len(finals) == len(set(finals)) == 2 * threads * per_thread + per_thread
