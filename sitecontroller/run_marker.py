"""Did the previous run exit cleanly? A marker file in the data directory says.

`start()` is called once at start, before the cycle runs: if the marker of an
earlier run is still there, that run ended without `clean_exit()` (a crash,
`kill -9`, a power cut) and `start()` returns a warning text for the log and
the status. Then it writes its own marker (pid and start time). `clean_exit()`
removes it after the orderly stop. Neither ever raises: a data directory that
cannot be written is reported once in the log, and the node runs on.
"""
from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger("sitecontroller.run_marker")

MARKER_NAME = "running.json"


class RunMarker:
    def __init__(self, data_dir: Path, *, pid: int | None = None, wall=time.time):
        self.path = Path(data_dir) / MARKER_NAME
        self._pid = os.getpid() if pid is None else pid
        self._wall = wall
        self._written = False

    def start(self) -> str | None:
        """Warning text if the previous run did not exit cleanly (None if it did); marks this run."""
        warning = self._previous()
        if warning:
            log.warning("%s", warning)
        self._write()
        return warning

    def clean_exit(self) -> None:
        """This run stops in order: remove the marker (only if it is ours)."""
        if not self._written:
            return
        try:
            if json.loads(self.path.read_text(encoding="utf-8")).get("pid") != self._pid:
                log.warning("run marker %s belongs to another process: left in place", self.path)
                return
            self.path.unlink()
            _fsync_dir(self.path.parent)
            self._written = False
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("cannot remove run marker %s: %s (the next start will warn of an unclean exit)", self.path, exc)

    def _previous(self) -> str | None:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            return f"the previous run may not have exited cleanly (its run marker {self.path} is unreadable: {exc})"
        try:
            data = json.loads(text)
            pid, started = data["pid"], data["started_wall"]
            if not isinstance(pid, int) or isinstance(pid, bool) or not isinstance(started, (int, float)):
                raise TypeError("pid or started_wall of the wrong type")
            when = datetime.fromtimestamp(started, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        except (ValueError, KeyError, TypeError, OverflowError, OSError):
            return f"the previous run did not exit cleanly (its run marker {self.path} is damaged)"
        warning = f"the previous run (pid {pid}, started at {when}) did not exit cleanly"
        if pid != self._pid and _alive(pid):
            warning += f"; pid {pid} is running now: is another node using the data directory {self.path.parent}?"
        return warning

    def _write(self) -> None:
        tmp = self.path.with_name(MARKER_NAME + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"pid": self._pid, "started_wall": round(self._wall(), 3)}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
            self._written = True
        except OSError as exc:
            log.warning("cannot write run marker %s: %s (an unclean exit of this run will go unnoticed)", self.path, exc)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    if pid <= 0:  # 0 and negatives address process groups, never one process
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:  # exists, owned by someone else
        return True
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    return True
