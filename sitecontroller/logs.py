"""The node's logging: stderr (the journal) and a rotated `<data_dir>/node.log`.

A disk that fills or turns read-only while the node runs must not disturb the
control cycle, and must not print a traceback for every record: the log file
handler then prints ONE warning to stderr, drops file records (the console keeps
them) and tries the file again every `RETRY_S` seconds; once it can write again
it notes in the file how many records it dropped.

The cycle never writes a log record itself: the root logger only puts records
on a queue (`QueueHandler`), and one listener thread writes them to stderr and
the file (DESIGN §4: no blocking disk I/O in the cycle). The listener is
stopped, and the queue drained, at interpreter exit or by `stop_logging()`.
"""
from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
import time
from pathlib import Path

LOG_FILE = "node.log"
MAX_BYTES = 5_000_000
BACKUPS = 5
# Libraries that talk too much at INFO; pymodbus logs an ERROR per timeout, which the drivers report already.
QUIET_LOGGERS = {"transitions": logging.WARNING, "can": logging.WARNING, "aiohttp.access": logging.WARNING,
                 "pymodbus": logging.CRITICAL}


class DegradingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log file that survives a full or read-only disk (see the module docstring)."""

    RETRY_S = 30.0

    def __init__(self, path: str | Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS,
                 warn_stream=None, monotonic=time.monotonic):
        super().__init__(str(path), maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True)
        self._warn_stream = warn_stream
        self._monotonic = monotonic
        self.paused = False
        self.dropped = 0
        self._retry_at = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        if self.paused:
            if self._monotonic() < self._retry_at:
                self.dropped += 1
                return
            if not self._resume():
                self.dropped += 1
                return
        super().emit(record)  # calls handleError() on an OSError, never raises

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as exc:
            self._pause(exc)

    def close(self) -> None:
        try:
            super().close()
        except OSError:
            self.stream = None

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            self._pause(exc)
            self.dropped += 1
        else:
            super().handleError(record)

    def _pause(self, exc: OSError) -> None:
        self._retry_at = self._monotonic() + self.RETRY_S
        self._drop_stream()
        if self.paused:
            return
        self.paused = True
        stream = self._warn_stream or sys.stderr
        try:
            stream.write(
                f"sitecontroller: WARNING cannot write the log file {self.baseFilename}: "
                f"{exc.strerror or exc}; file logging paused (the console keeps every record), "
                f"retrying every {self.RETRY_S:g} s\n"
            )
            stream.flush()
        except (OSError, ValueError):
            pass

    def _resume(self) -> bool:
        """Try the file again; True if it takes a line (then file logging is back)."""
        try:
            self._drop_stream()
            self.stream = self._open()
            self.stream.write(f"--- file logging resumed; {self.dropped} records were not written to this file\n")
            self.stream.flush()
        except OSError:
            self._retry_at = self._monotonic() + self.RETRY_S
            self._drop_stream()
            return False
        self.paused = False
        self.dropped = 0
        return True

    def _drop_stream(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                stream.close()  # flushes what is buffered: may fail again on a full disk
            except OSError:
                pass


class ConsoleHandler(logging.StreamHandler):
    """stderr; a closed or broken stderr (a pipe whose reader went away) is ignored, not a traceback."""

    def handleError(self, record: logging.LogRecord) -> None:
        if not isinstance(sys.exc_info()[1], (OSError, ValueError)):
            super().handleError(record)


def setup_logging(params, level: str = "INFO") -> None:
    """Console and `<data_dir>/node.log` (rotated). Run the preflight checks first: the data
    directory must exist; a disk that fails later only pauses the file (see above)."""
    fmt = logging.Formatter(f"%(asctime)s %(levelname)-8s [{params.identity.node_id}] %(name)s: %(message)s")
    global _listener
    stop_logging()
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level)
    handlers: list[logging.Handler] = [ConsoleHandler(sys.stderr),
                                       DegradingFileHandler(Path(params.data_dir) / LOG_FILE)]
    for handler in handlers:
        handler.setFormatter(fmt)
    records: queue.SimpleQueue = queue.SimpleQueue()
    root.addHandler(logging.handlers.QueueHandler(records))
    _listener = logging.handlers.QueueListener(records, *handlers, respect_handler_level=True)
    _listener.start()
    for name, quiet_level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(quiet_level)


_listener: logging.handlers.QueueListener | None = None


@atexit.register
def stop_logging() -> None:
    """Write out every queued record and stop the listener thread (idempotent)."""
    global _listener
    if _listener is not None:
        listener, _listener = _listener, None
        listener.stop()
        for handler in listener.handlers:
            handler.close()
