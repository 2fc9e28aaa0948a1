"""After an unclean exit the node starts with a warning that says so (issue 6, 1.8)."""
import json
import subprocess
import sys

import pytest

from sitecontroller.run_marker import MARKER_NAME, RunMarker

T0 = 1_780_000_000.0  # 2026-05-28 20:26:40 UTC


def marker(tmp_path, pid=4242, wall=T0):
    return RunMarker(tmp_path, pid=pid, wall=lambda: wall)


def test_a_first_start_has_nothing_to_say(tmp_path):
    assert marker(tmp_path / "new-dir").start() is None
    assert (tmp_path / "new-dir" / MARKER_NAME).exists()


def test_after_a_clean_exit_the_next_start_is_quiet(tmp_path):
    first = marker(tmp_path)
    first.start()
    first.clean_exit()
    assert not (tmp_path / MARKER_NAME).exists()
    assert marker(tmp_path, pid=4243).start() is None


def test_after_an_unclean_exit_the_next_start_says_so(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited: not running any more
    marker(tmp_path, pid=pid).start()  # ... and then a crash: no clean_exit()
    warning = marker(tmp_path, pid=4243).start()
    assert warning == f"the previous run (pid {pid}, started at 2026-05-28 20:26:40 UTC) did not exit cleanly"
    # the new run is marked in its turn
    assert json.loads((tmp_path / MARKER_NAME).read_text())["pid"] == 4243


def test_a_previous_pid_that_still_runs_is_named(tmp_path):
    import os

    marker(tmp_path, pid=os.getppid()).start()
    warning = marker(tmp_path, pid=4243).start()
    assert "did not exit cleanly" in warning and "is another node using the data directory" in warning


@pytest.mark.parametrize("content", ["{ torn", "[]", '{"pid": "x", "started_wall": 1}', '{"pid": 1}', "null"])
def test_a_damaged_marker_still_counts_as_an_unclean_exit(tmp_path, content):
    (tmp_path / MARKER_NAME).write_text(content)
    warning = marker(tmp_path).start()
    assert warning is not None and "did not exit cleanly" in warning and "damaged" in warning


def test_a_data_directory_that_cannot_be_written_never_raises(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    m = RunMarker(blocker)
    assert m.start() is None
    m.clean_exit()
    assert "cannot write run marker" in caplog.text


def test_clean_exit_leaves_a_marker_of_another_process_alone(tmp_path):
    mine = marker(tmp_path)
    mine.start()
    marker(tmp_path, pid=4243).start()  # another run took over the directory
    mine.clean_exit()
    assert json.loads((tmp_path / MARKER_NAME).read_text())["pid"] == 4243


def test_the_warning_shows_in_the_error_list_for_this_run_only(tmp_path):
    """How the node reports it: errors.sync("run_marker", ...) at start (a restored entry is cleared)."""
    from sitecontroller.clock import SimClock
    from sitecontroller.errors import ErrorRegistry

    def start(pid):
        run = marker(tmp_path, pid=pid)
        warning = run.start()
        errors = ErrorRegistry(SimClock(), tmp_path / "errors.json")
        errors.sync("run_marker", {"UNCLEAN_EXIT": warning} if warning else {})
        return run, {e.id: e for e in errors.listed()}

    first, listed = start(4242)
    assert listed == {}  # then a crash: no clean_exit()
    second, listed = start(4243)
    assert listed["UNCLEAN_EXIT"].severity == "warning" and "pid 4242" in listed["UNCLEAN_EXIT"].text
    second.clean_exit()
    third, listed = start(4244)
    assert listed == {}  # after a clean exit the restored warning is cleared
