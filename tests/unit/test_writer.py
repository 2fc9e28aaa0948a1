"""The background writer: the caller only queues; atomic replaces coalesce; appends keep order."""
import logging
import os
import threading
import time

import pytest

from sitecontroller.writer import BackgroundWriter, SyncWriter


@pytest.fixture
def writer():
    w = BackgroundWriter()
    yield w
    w.close()


@pytest.fixture
def slow_fsync(monkeypatch):
    """fsync blocks until the test lets it go (a disk as slow as the test wants)."""
    gate = threading.Event()
    gate.entered = threading.Event()  # the writer thread is inside fsync now
    real = os.fsync

    def fsync(fd):
        gate.entered.set()
        gate.wait(10)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return gate


def test_replace_and_append_reach_the_disk_after_flush(tmp_path, writer):
    writer.replace(tmp_path / "sub" / "state.json", '{"a": 1}')
    for i in range(5):
        writer.append(tmp_path / "log.jsonl", f"line {i}")
    assert writer.flush(5.0)
    assert (tmp_path / "sub" / "state.json").read_text() == '{"a": 1}'
    assert (tmp_path / "log.jsonl").read_text().splitlines() == [f"line {i}" for i in range(5)]
    assert not list(tmp_path.glob("**/*.tmp"))


def test_the_caller_never_waits_for_a_slow_disk(tmp_path, writer, slow_fsync):
    t0 = time.monotonic()
    for i in range(50):
        writer.append(tmp_path / "log.jsonl", f"line {i}")
        writer.replace(tmp_path / "state.json", str(i))
    assert time.monotonic() - t0 < 0.5  # 100 writes queued while fsync is blocked
    assert writer.pending > 0 and not writer.flush(0.05)
    slow_fsync.set()
    assert writer.flush(5.0)
    assert (tmp_path / "log.jsonl").read_text().splitlines() == [f"line {i}" for i in range(50)]
    assert (tmp_path / "state.json").read_text() == "49"  # only the newest content matters


def test_pending_replacements_of_a_path_coalesce(tmp_path, writer, slow_fsync, monkeypatch):
    writes = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (writes.append(b), real_replace(a, b)))
    writer.replace(tmp_path / "first.json", "x")  # the thread takes this one and blocks in fsync
    assert slow_fsync.entered.wait(5.0)
    for i in range(100):
        writer.replace(tmp_path / "state.json", str(i))
    slow_fsync.set()
    assert writer.flush(5.0)
    assert writes.count(tmp_path / "state.json") == 1 and (tmp_path / "state.json").read_text() == "99"


def test_a_disk_error_is_logged_once_per_kind_and_never_raised(tmp_path, writer, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with caplog.at_level(logging.ERROR, logger="sitecontroller.writer"):
        for i in range(10):
            writer.append(blocker / "audit.jsonl", f"line {i}")
            writer.replace(blocker / "errors.json", str(i))
            assert writer.flush(5.0)
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "audit.jsonl" in m]) == 1
    assert len([m for m in messages if "errors.json" in m]) == 1
    assert writer.failures >= 10
    blocker.unlink()  # the disk works again: a replacement that failed is written with the next batch
    blocker.mkdir()
    with caplog.at_level(logging.WARNING, logger="sitecontroller.writer"):
        writer.append(blocker / "audit.jsonl", "again")
        assert writer.flush(5.0)
    assert (blocker / "errors.json").read_text() == "9"
    assert "writing" in caplog.text and "works again" in caplog.text


def test_close_writes_what_is_pending_and_later_writes_still_happen(tmp_path):
    w = BackgroundWriter()
    for i in range(20):
        w.append(tmp_path / "log.jsonl", str(i))
    assert w.close(5.0)
    w.append(tmp_path / "log.jsonl", "after close")  # done in the caller now
    assert (tmp_path / "log.jsonl").read_text().splitlines() == [str(i) for i in range(20)] + ["after close"]


def test_the_sync_writer_writes_at_once(tmp_path):
    w = SyncWriter()
    w.replace(tmp_path / "s.json", "1")
    w.append(tmp_path / "l.jsonl", "a")
    assert (tmp_path / "s.json").read_text() == "1" and (tmp_path / "l.jsonl").read_text() == "a\n"
    assert w.flush() and w.close()
