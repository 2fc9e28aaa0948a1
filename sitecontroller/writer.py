"""File writes that never block the control cycle (DESIGN §4: "no blocking disk I/O in the cycle").

Two operations cover the node's state files:

- `replace(path, text)`: make `path` hold exactly `text`, atomically (temp file,
  fsync, rename, fsync of the folder). Only the newest pending content of a path
  matters: replacements that were not written yet are coalesced.
- `append(path, line)`: append one line and fsync it (the audit log). Lines of
  one path are written in the order they were handed over; lines queued
  together share one fsync.

`BackgroundWriter` does the I/O on one thread of its own; the caller only
queues. `SyncWriter` does the same I/O at once in the caller's thread (tools,
tests, and the "before" of bench/slow_disk.py). A disk error (full, read-only,
missing folder) is logged once per kind and never raised: the node keeps its
state in memory and keeps protecting the battery. A replacement that failed is
retried with the next batch of work.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import IO, Protocol

log = logging.getLogger("sitecontroller.writer")


class FileWriter(Protocol):
    def replace(self, path: Path, text: str) -> None:
        """Make `path` hold exactly `text` (atomically, durably)."""

    def append(self, path: Path, line: str) -> None:
        """Append `line` (a newline is added) to `path` durably."""

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything handed over so far is on disk (or failed); False on timeout."""

    def close(self, timeout_s: float = 5.0) -> bool:
        """Flush, then release files and threads; later writes are done in the caller."""


class _Disk:
    """The I/O itself, with one log line per kind of failure (and one when it works again)."""

    def __init__(self) -> None:
        self._appenders: dict[Path, IO[str]] = {}
        self._failing: dict[tuple[str, Path], str] = {}  # (operation, path) -> kind of failure already logged
        self.failures = 0  # operations that failed (for status and tests)

    def replace(self, path: Path, text: str) -> bool:
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as exc:
            self._failed("replace", path, exc)
            return False
        self._worked("replace", path)
        return True

    def append(self, path: Path, lines: list[str]) -> bool:
        try:
            f = self._appenders.get(path)
            if f is None:
                path.parent.mkdir(parents=True, exist_ok=True)
                f = self._appenders[path] = open(path, "a", encoding="utf-8")
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        except OSError as exc:
            self._drop(path)  # reopen next time: the file may have been moved or the disk remounted
            self._failed("append", path, exc, len(lines))
            return False
        self._worked("append", path)
        return True

    def close(self) -> None:
        for path in list(self._appenders):
            self._drop(path)

    def _drop(self, path: Path) -> None:
        f = self._appenders.pop(path, None)
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    def _failed(self, op: str, path: Path, exc: OSError, lines: int = 0) -> None:
        self.failures += 1
        kind = f"{type(exc).__name__}/{exc.errno}"
        if self._failing.get((op, path)) == kind:
            return
        self._failing[(op, path)] = kind
        what = f"append {lines} line(s) to" if op == "append" else "write"
        log.error("cannot %s %s: %s (kept in memory; logged once until it works again)", what, path, exc)

    def _worked(self, op: str, path: Path) -> None:
        if self._failing.pop((op, path), None) is not None:
            log.warning("writing %s works again", path)


class SyncWriter:
    """Does every write at once, in the caller's thread (the behaviour before the background writer)."""

    def __init__(self) -> None:
        self._disk = _Disk()
        self._lock = threading.Lock()

    @property
    def failures(self) -> int:
        return self._disk.failures

    def replace(self, path: Path, text: str) -> None:
        with self._lock:
            self._disk.replace(Path(path), text)

    def append(self, path: Path, line: str) -> None:
        with self._lock:
            self._disk.append(Path(path), [line])

    def flush(self, timeout_s: float = 5.0) -> bool:
        return True

    def close(self, timeout_s: float = 5.0) -> bool:
        with self._lock:
            self._disk.close()
        return True


class BackgroundWriter:
    """One thread that does the writes handed to it; `replace`/`append` only queue and return."""

    def __init__(self, name: str = "sitecontroller-writer") -> None:
        self._disk = _Disk()
        self._cond = threading.Condition()
        self._replaces: dict[Path, str] = {}  # newest pending content per path
        self._appends: dict[Path, list[str]] = {}  # pending lines per path, in order
        self._queued = 0  # operations handed over
        self._done = 0  # operations written (or failed)
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def failures(self) -> int:
        return self._disk.failures

    @property
    def pending(self) -> int:
        with self._cond:
            return self._queued - self._done

    def replace(self, path: Path, text: str) -> None:
        if not self._thread.is_alive():  # closed: nobody else will write it
            self._disk.replace(Path(path), text)
            return
        with self._cond:
            self._replaces[Path(path)] = text
            self._queued += 1
            self._cond.notify()

    def append(self, path: Path, line: str) -> None:
        if not self._thread.is_alive():
            self._disk.append(Path(path), [line])
            return
        with self._cond:
            self._appends.setdefault(Path(path), []).append(line)
            self._queued += 1
            self._cond.notify()

    def flush(self, timeout_s: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            target = self._queued
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return self._done >= target
                self._cond.wait(left)
        return True

    def close(self, timeout_s: float = 5.0) -> bool:
        """Write what is pending, then stop the thread. False if it did not finish in time."""
        flushed = self.flush(timeout_s)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(max(0.0, timeout_s) if flushed else 0.1)
        if self._thread.is_alive():
            log.error("background writer did not finish within %.1f s: %d write(s) may be lost", timeout_s, self.pending)
            return False
        self._disk.close()
        return flushed

    def _run(self) -> None:
        retry: dict[Path, str] = {}
        while True:
            with self._cond:
                while not (self._replaces or self._appends or self._closing):
                    self._cond.wait()
                if self._closing and not (self._replaces or self._appends):
                    return
                replaces, self._replaces = self._replaces, {}
                appends, self._appends = self._appends, {}
                batch = self._queued
            try:
                for path, lines in appends.items():
                    self._disk.append(path, lines)
                for path, text in {**retry, **replaces}.items():
                    if self._disk.replace(path, text):
                        retry.pop(path, None)
                    else:
                        retry[path] = text
            except Exception:  # a bug here must not stop every later write
                log.exception("background writer: unexpected error")
            with self._cond:
                self._done = batch
                self._cond.notify_all()
