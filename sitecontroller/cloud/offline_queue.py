"""The crash-safe offline queue of device-to-cloud messages: SQLite in WAL mode, in the data directory.

Every message (telemetry, events) is committed here *before* the SDK is asked to send it, and
removed only after the hub acknowledged it (PUBACK, QoS 1). A `kill -9` or a power cut at any
moment therefore loses nothing that was queued (synchronous=FULL: a commit is on disk when `put`
returns); at worst a message acknowledged just before the crash is sent twice (its `seq` tells).
Messages leave in the order they were queued (`id` order).

Bounded by age and size: past `max_age_s` or `max_bytes` the oldest are dropped first, counted in
`dropped` (reported in status). All calls block on disk: the cloud service runs them in its own
worker thread, never in the control cycle.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    kind TEXT NOT NULL,
    properties TEXT NOT NULL,
    body TEXT NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Queued:
    id: int
    created: float
    kind: str
    properties: dict
    body: str


class OfflineQueue:
    def __init__(self, path: Path, max_age_s: float, max_bytes: int, wall=time.time):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_age_s, self.max_bytes, self._wall = max_age_s, max_bytes, wall
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA cache_size=-512")
        self._db.executescript(_SCHEMA)
        self._bytes, self._count = self._db.execute("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM outbox").fetchone()

    def put(self, kind: str, properties: dict, body: dict) -> int:
        """Commit one message, its body given the node's next `seq` (monotonic across restarts); returns
        that seq. Drops the oldest first if a bound is passed."""
        props = json.dumps(properties, separators=(",", ":"))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            seq = self._counter("seq") + 1
            text = json.dumps({**body, "seq": seq}, separators=(",", ":"), default=str)
            size = len(text.encode("utf-8")) + len(props)
            self._db.execute("INSERT INTO outbox (created, kind, properties, body, size) VALUES (?, ?, ?, ?, ?)",
                             (self._wall(), kind, props, text, size))
            self._add("seq", 1)
            self._db.execute("COMMIT")
            self._bytes += size
            self._count += 1
            self._prune()
            return seq

    def peek(self, limit: int) -> list[Queued]:
        """The oldest `limit` messages, oldest first."""
        with self._lock:
            self._prune()
            rows = self._db.execute("SELECT id, created, kind, properties, body FROM outbox ORDER BY id LIMIT ?",
                                    (limit,)).fetchall()
        return [Queued(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    def remove(self, ids: list[int]) -> None:
        """Forget messages the hub acknowledged."""
        if not ids:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                gone = self._db.execute(f"SELECT COALESCE(SUM(size), 0), COUNT(*) FROM outbox WHERE id IN ({marks})",
                                        chunk).fetchone()
                self._db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk)
                self._bytes -= gone[0]
                self._count -= gone[1]
            self._db.execute("COMMIT")

    def stats(self) -> dict:
        with self._lock:
            head = self._db.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()  # by key: cheap
            oldest = head[0] if head else None
            dropped = self._counter("dropped")
        return {"queued": self._count, "bytes": self._bytes, "dropped": dropped,
                "oldest_queued_s": None if oldest is None else round(max(0.0, self._wall() - oldest), 1)}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- internals (called with the lock held) ------------------------------------------------
    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    def _add(self, name: str, n: int) -> None:
        self._db.execute("INSERT INTO counters (name, value) VALUES (?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, n))

    def _prune(self) -> None:
        """Drop from the head while the oldest is too old or the queue too large."""
        cutoff = self._wall() - self.max_age_s
        head = self._db.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
        if head is None or (head[0] >= cutoff and self._bytes <= self.max_bytes):
            return
        drop, freed = [], 0
        for row_id, created, size in self._db.execute("SELECT id, created, size FROM outbox ORDER BY id"):
            if created >= cutoff and self._bytes - freed <= self.max_bytes:
                break
            drop.append(row_id)
            freed += size
        self._db.execute("BEGIN IMMEDIATE")
        for start in range(0, len(drop), 500):
            chunk = drop[start:start + 500]
            self._db.execute(f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        self._add("dropped", len(drop))
        self._db.execute("COMMIT")
        self._bytes -= freed
        self._count -= len(drop)
