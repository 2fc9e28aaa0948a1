"""Commands: validated once, deduplicated by id, acknowledged, audited."""
import json

import pytest

from sitecontroller.clock import SimClock
from sitecontroller.commands import ACCEPTED, DONE, FAILED, REJECTED, CommandBook, parse_command


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
    book.close()
    with open(path, "a") as f:
        f.write('{"id": "torn')  # a torn last line after a crash

    book2 = CommandBook(SimClock(), path)
    assert book2.submit({"id": "done-1", "type": "set_power", "p_w": 5}).status == DONE
    interrupted = book2.submit({"id": "queued-1", "type": "set_power", "p_w": 5})
    assert interrupted.status == FAILED and "restarted" in interrupted.detail
    assert book2.take() == []
    assert book2.submit({"id": "new", "type": "set_power", "p_w": 5}).status == ACCEPTED
