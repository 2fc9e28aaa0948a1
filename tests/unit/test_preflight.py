"""Preflight checks and the log file that survives a full disk: one clear line, never a traceback."""
import errno
import io
import json
import logging
import socket
import subprocess
import sys
import tempfile

import pytest

from sitecontroller import preflight
from sitecontroller.logs import DegradingFileHandler
from sitecontroller.params import parse
from tests.util import REPO, free_tcp_port, isolated_example


def _params(tmp_path, **overrides):
    return parse(isolated_example("sim_node1.json", tmp_path, **overrides))


# --- data directory ----------------------------------------------------------------------------


def test_a_missing_data_dir_is_created(tmp_path):
    assert preflight.check_data_dir(tmp_path / "a" / "b") is None
    assert (tmp_path / "a" / "b").is_dir()


def test_a_file_where_the_data_dir_should_be(tmp_path):
    (tmp_path / "f").write_text("")
    assert preflight.check_data_dir(tmp_path / "f") == (
        f"data directory {tmp_path / 'f'} (storage.data_dir) is not a directory; allowed: a writable directory")


def test_a_data_dir_below_a_file_cannot_be_created(tmp_path):
    (tmp_path / "f").write_text("")
    line = preflight.check_data_dir(tmp_path / "f" / "node1")
    assert line.startswith(f"cannot create data directory {tmp_path / 'f' / 'node1'} (storage.data_dir): ")


@pytest.mark.parametrize("code, words", [(errno.EROFS, "the file system is read-only"),
                                         (errno.EACCES, "permission denied"),
                                         (errno.ENOSPC, "the disk is full")])
def test_a_data_dir_that_cannot_be_written(code, words, tmp_path, monkeypatch):
    """Root ignores file modes, so the failing write is injected where the probe writes."""
    def refuse(*args, **kwargs):
        raise OSError(code, "injected")

    monkeypatch.setattr(preflight.tempfile, "NamedTemporaryFile", refuse)
    line = preflight.check_data_dir(tmp_path)
    assert line.startswith(f"cannot write in data directory {tmp_path} (storage.data_dir): {words}")


def test_a_nearly_full_disk_is_refused(tmp_path):
    line = preflight.check_data_dir(tmp_path, min_free_bytes=10**18)
    assert line.startswith(f"data directory {tmp_path} (storage.data_dir) is on a full disk: ")
    assert "kB free, at least" in line


def test_a_real_full_device_fails_the_write_probe(tmp_path, monkeypatch):
    """/dev/full answers every write with ENOSPC, like a full disk."""
    real = tempfile.NamedTemporaryFile
    monkeypatch.setattr(preflight.tempfile, "NamedTemporaryFile", lambda **kw: open("/dev/full", "wb"))
    assert "the disk is full" in preflight.check_data_dir(tmp_path)
    monkeypatch.setattr(preflight.tempfile, "NamedTemporaryFile", real)


# --- ports --------------------------------------------------------------------------------------


@pytest.fixture
def taken_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_taken_control_port_names_port_purpose_and_holder(tmp_path, taken_port):
    params = _params(tmp_path, control={"endpoint": f"tcp://127.0.0.1:{taken_port}"})
    problems = preflight.run_preflight(params)
    assert len(problems) == 1
    line = problems[0]
    assert line.startswith(f"port 127.0.0.1:{taken_port} (control.endpoint) is in use by ")
    import os

    assert f"pid {os.getpid()} (" in line  # this test process holds it
    assert line.endswith("is this node already running? Stop it, or give this node other ports")


def test_simulated_device_ports_are_checked_only_when_simulating(tmp_path, taken_port):
    data = isolated_example("sim_node1.json", tmp_path)
    data["devices"]["inverter"]["port"] = taken_port
    params = parse(data)
    assert preflight.run_preflight(params, simulate=False) == []
    problems = preflight.run_preflight(params, simulate=True)
    assert len(problems) == 1 and "(devices.inverter.port, simulated) is in use by" in problems[0]


def test_free_ports_and_a_good_dir_pass(tmp_path):
    assert preflight.run_preflight(_params(tmp_path), simulate=True) == []


def test_an_ipc_endpoint_in_use_is_found(tmp_path):
    path = tmp_path / "ctl.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        s.listen()
        problems = preflight.run_preflight(_params(tmp_path, control={"endpoint": f"ipc://{path}"}))
    assert problems == [f"ipc://{path} (control.endpoint) is in use by another process; is this node already "
                        f"running? Stop it, or give this node another endpoint"]


def test_the_cli_refuses_to_start_in_one_line(tmp_path, taken_port):
    data = isolated_example("sim_node1.json", tmp_path, control={"endpoint": f"tcp://127.0.0.1:{taken_port}"})
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    r = subprocess.run([sys.executable, "-m", "sitecontroller.cli", "run", "--params", str(path), "--simulate"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert r.returncode == 1
    assert r.stderr.startswith(f"sitecontroller: cannot start: port 127.0.0.1:{taken_port} (control.endpoint) is in use")
    assert r.stderr.count("\n") == 1, r.stderr


# --- the log file on a disk that fills while the node runs ----------------------------------------


def _logger(handler):
    logger = logging.getLogger(f"test-full-{id(handler)}")
    logger.propagate = False
    logger.addHandler(handler)
    return logger


def test_a_full_disk_gives_one_warning_then_drops_file_records():
    warn, now = io.StringIO(), [0.0]
    handler = DegradingFileHandler("/dev/full", warn_stream=warn, monotonic=lambda: now[0])
    logger = _logger(handler)
    for i in range(50):
        logger.warning("record %d", i)
    assert warn.getvalue().count("\n") == 1
    assert warn.getvalue().startswith("sitecontroller: WARNING cannot write the log file /dev/full: No space left")
    assert handler.paused and handler.dropped >= 49
    now[0] = handler.RETRY_S + 1  # the retry fails again: no second warning
    logger.warning("later")
    assert warn.getvalue().count("\n") == 1
    handler.close()


def test_file_logging_resumes_when_the_disk_has_room_again(tmp_path):
    warn, now = io.StringIO(), [0.0]
    handler = DegradingFileHandler(tmp_path / "node.log", warn_stream=warn, monotonic=lambda: now[0])
    logger = _logger(handler)
    handler._pause(OSError(errno.ENOSPC, "No space left on device"))
    logger.warning("dropped")
    now[0] = handler.RETRY_S + 1
    logger.warning("written")
    handler.close()
    text = (tmp_path / "node.log").read_text()
    assert "file logging resumed; 1 records were not written" in text and "written" in text
    assert "dropped" not in text.replace("were not written", "")


def test_other_errors_still_reach_logging_s_own_handler(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(logging.Handler, "handleError", lambda self, record: seen.append(record))
    handler = DegradingFileHandler(tmp_path / "node.log")
    logger = _logger(handler)
    logger.warning("%d", "not a number")  # a formatting bug is not a disk problem
    handler.close()
    assert len(seen) == 1 and not handler.paused


def test_sigterm_on_a_full_disk_exits_0(tmp_path):
    """A node whose log file hits a full disk keeps running, warns once and still stops cleanly."""
    program = f"""
import logging, signal, os, sys, time
sys.path.insert(0, {str(REPO)!r})
from sitecontroller.logs import DegradingFileHandler
handler = DegradingFileHandler('/dev/full')
logging.getLogger().addHandler(handler)
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
count = 0
while not stop:
    logging.getLogger('x').warning('cycle record')
    count += 1
    if count == 200:
        print('ready', flush=True)  # 200 records went to the full disk
    time.sleep(0.001)
logging.shutdown()
"""
    proc = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert err.count("WARNING cannot write the log file") == 1 and "Traceback" not in err, err


def test_free_port_helper_is_not_in_use():
    assert not preflight.port_in_use("127.0.0.1", free_tcp_port())
