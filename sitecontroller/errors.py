"""Error registry: stable ids, severities, the active set, acknowledgement, persistence.

An error is *listed* while its cause is present (`active`) and, for severities
`error` and `critical`, until a person has acknowledged it (latched). Warnings
disappear with their cause. The listed set is written to disk atomically on
every change and read back at start, so a crash or restart never forgets an
error. A listed critical error keeps the node at 0 W in state `error`.

Writes go through a `FileWriter` (writer.py): with a `BackgroundWriter` the
cycle only queues the new content. The file read at start is validated
(errors_file.py); a damaged file is itself the critical error ERRORS_FILE_DAMAGED.

The catalog of error ids is filled by each subsystem at import with
`register_codes` (the node's own ids here, each driver family its
`ISSUE_CODES`), so this core module never imports the drivers.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from .errors_file import (  # noqa: F401  (ErrorEntry and the severities are part of this module's interface)
    CRITICAL,
    ERROR,
    FILE_VERSION,
    SEVERITIES,
    WARNING,
    ErrorEntry,
    parse_errors_file,
)
from .writer import FileWriter, SyncWriter

log = logging.getLogger("sitecontroller.errors")

MAX_PROBLEMS_SHOWN = 5  # in the ERRORS_FILE_DAMAGED text; the log has them all

# The node's own error ids. Every other subsystem registers its own (drivers: ISSUE_CODES).
NODE_CODES: dict[str, tuple[str, str]] = {
    "ESTOP": (CRITICAL, "emergency stop engaged"),
    "ERRORS_FILE_DAMAGED": (CRITICAL, "the persisted error file was damaged: errors may have been lost"),
    "BMS_STALE": (CRITICAL, "no fresh BMS data within its staleness limit"),
    "BMS_FAULT": (CRITICAL, "the BMS reports a fault"),
    "CELL_OVERVOLTAGE": (CRITICAL, "a cell is above the maximum cell voltage"),
    "CELL_UNDERVOLTAGE": (CRITICAL, "a cell is below the minimum cell voltage"),
    "CELL_OVERTEMP": (CRITICAL, "a cell is above the maximum temperature"),
    "CELL_UNDERTEMP": (CRITICAL, "a cell is below the minimum temperature"),
    "INV_STALE": (ERROR, "no fresh inverter data within its staleness limit: holding 0 W"),
    "METER_STALE": (WARNING, "grid meter data missing or stale: modes that need it are unavailable"),
    "CYCLE_FAILED": (CRITICAL, "a control cycle raised an exception: 0 W, inverter off, contactors open"),
    "UNCONTROLLED_POWER": (CRITICAL, "the inverter is silent while the battery still carries power"),
    "BMS_DATA_INVALID": (CRITICAL, "the BMS reports non-numeric values"),
    "BMS_ALARM": (WARNING, "the BMS reports an alarm"),
    "INV_NOT_FOLLOWING": (CRITICAL, "the inverter delivers more power than commanded, or the other direction"),
    "INV_UNDERDELIVERING": (WARNING, "the inverter delivers less power than commanded"),
    "RESERVE_ENDURANCE": (WARNING, "the grid-service reserve allocated to this node needs more energy than the "
                                   "battery holds for the service's endurance"),
    "RESERVE_STALE": (WARNING, "no leader has refreshed this node's grid-service allocation: it holds the last one "
                               "until it expires"),
    "GRID_ALERT": (WARNING, "the grid is in alert state (sustained frequency deviation): AEM manages the SOC"),
    "UNCLEAN_EXIT": (WARNING, "the previous run did not exit cleanly (crash, kill, power loss): see node.log and the audit log"),
}


_CATALOG: dict[str, tuple[str, str]] = {}


def register_codes(codes: dict[str, tuple[str, str]]) -> None:
    """Add a subsystem's error ids (id -> (severity, description)) to the catalog.

    Called once per subsystem at import. Registering the same id again with the
    same meaning is harmless; with another meaning it is a programming error.
    """
    for code, entry in codes.items():
        severity, text = entry
        if severity not in SEVERITIES:
            raise ValueError(f"error id {code}: severity {severity!r} is not one of {', '.join(SEVERITIES)}")
        known = _CATALOG.get(code)
        if known is not None and known != (severity, text):
            raise ValueError(f"error id {code} registered twice with different meanings: {known} and {entry}")
        _CATALOG[code] = (severity, text)


def catalog() -> dict[str, tuple[str, str]]:
    """Every error id registered so far: the node's and those of each subsystem imported."""
    return dict(_CATALOG)


register_codes(NODE_CODES)


class ErrorRegistry:
    """The listed errors of one node. `writer` does the file writes (default: at once, in the caller)."""

    def __init__(self, clock, path: Path | None = None, codes: dict[str, tuple[str, str]] | None = None,
                 *, writer: FileWriter | None = None):
        self._clock = clock
        self._path = Path(path) if path else None
        self._codes = codes  # None: the live catalog, so ids registered later are known too
        self._owns_writer = writer is None
        self._writer: FileWriter = writer if writer is not None else SyncWriter()
        self._entries: dict[str, ErrorEntry] = {}
        self.changed = False  # set on every change; the node reports and clears it
        if self._path:
            self._load()

    # --- raising and clearing -----------------------------------------------
    def _code(self, code: str) -> tuple[str, str] | None:
        return (self._codes if self._codes is not None else _CATALOG).get(code)

    def severity_of(self, code: str) -> str:
        return (self._code(code) or (ERROR, ""))[0]

    def raise_(self, code: str, source: str, text: str | None = None) -> ErrorEntry:
        now = self._clock.wall()
        text = text or (self._code(code) or (ERROR, code))[1] or code
        entry = self._entries.get(code)
        if entry is None:
            entry = ErrorEntry(code, self.severity_of(code), source, text, now, now)
            self._entries[code] = entry
            log.log(_level(entry.severity), "error raised %s [%s] from %s: %s", code, entry.severity, source, text)
        elif not entry.active:
            entry.active, entry.acknowledged, entry.text = True, False, text
            entry.last_wall, entry.count = now, entry.count + 1
            log.log(_level(entry.severity), "error raised again %s [%s] from %s: %s", code, entry.severity, source, text)
        else:
            entry.text = text  # a live value in the text changed: not worth a disk write
            return entry
        self._save()
        return entry

    def clear(self, code: str) -> None:
        """The cause is gone. The entry stays listed until acknowledged (if latched)."""
        entry = self._entries.get(code)
        if entry is None or not entry.active:
            return
        entry.active = False
        log.info("error cause cleared %s%s", code, " (awaiting acknowledgement)" if entry.latched else "")
        if not entry.listed:
            del self._entries[code]
        self._save()

    def sync(self, source: str, present: dict[str, str]) -> None:
        """Make the errors of `source` match `present` (code -> text): raise new, clear gone."""
        for code, text in present.items():
            self.raise_(code, source, text)
        for entry in [e for e in self._entries.values() if e.source == source and e.active]:
            if entry.id not in present:
                self.clear(entry.id)

    def acknowledge(self, code: str) -> str | None:
        """Acknowledge one error id, or 'all'. Returns the reason if nothing was acknowledged.

        A critical error whose cause is still active cannot be acknowledged in
        advance (an e-stop is reset only after it was released): 'all' skips it.
        """
        if code != "all" and code not in self._entries:
            listed = ", ".join(sorted(self._entries)) or "none"
            return f"no listed error {code!r} (listed: {listed})"
        blocked = {c for c, e in self._entries.items() if e.severity == CRITICAL and e.active}
        if code != "all" and code in blocked:
            return f"{code} cannot be acknowledged while its cause is active ({self._entries[code].text}); clear it first"
        targets = [c for c in self._entries if c not in blocked] if code == "all" else [code]
        if not targets:
            return f"nothing to acknowledge: causes still active: {', '.join(sorted(blocked))}"
        for c in targets:
            entry = self._entries[c]
            entry.acknowledged = True
            log.info("error acknowledged %s%s", c, "" if not entry.active else " (cause still active)")
            if not entry.listed:
                del self._entries[c]
        self._save()
        return None

    # --- questions the node asks ---------------------------------------------
    def listed(self) -> list[ErrorEntry]:
        order = {s: i for i, s in enumerate(reversed(SEVERITIES))}
        return sorted(self._entries.values(), key=lambda e: (order[e.severity], e.first_wall))

    def is_active(self, code: str) -> bool:
        entry = self._entries.get(code)
        return bool(entry and entry.active)

    def run_blocker(self) -> str | None:
        """Why the node may not exchange power (None if nothing blocks it)."""
        crit = [e.id for e in self._entries.values() if e.severity == CRITICAL]
        return f"critical error listed: {', '.join(sorted(crit))}" if crit else None

    def error_blocker(self) -> str | None:
        """Why the node may not leave `error` (None if it may)."""
        active = sorted(e.id for e in self._entries.values() if e.severity == CRITICAL and e.active)
        if active:
            return f"cause still active: {', '.join(active)}"
        unacked = sorted(e.id for e in self._entries.values() if e.latched)
        if unacked:
            return f"not acknowledged: {', '.join(unacked)}"
        return None

    # --- persistence -------------------------------------------------------------
    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until the newest listed set is on disk (False on timeout)."""
        return self._writer.flush(timeout_s)

    def close(self, timeout_s: float = 5.0) -> bool:
        """Flush; close the writer too if this registry made it."""
        done = self._writer.flush(timeout_s)
        if self._owns_writer:
            done = self._writer.close(timeout_s) and done
        return done

    def _save(self) -> None:
        """Hand the listed set to the writer (atomic replace; a disk failure is logged, never raised)."""
        self.changed = True
        if self._path is None:
            return
        data = {"version": FILE_VERSION, "errors": [asdict(e) for e in self._entries.values()]}
        self._writer.replace(self._path, json.dumps(data, indent=1))

    def _load(self) -> None:
        """Read the file of the previous run. Never raises; a damaged file raises ERRORS_FILE_DAMAGED."""
        try:
            raw = self._path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):  # no earlier run wrote one
            return
        except OSError as exc:
            self._damaged([f"unreadable ({exc}): its entries are unknown"], None)
            return
        text = raw.decode("utf-8", errors="replace")
        entries, problems = parse_errors_file(text, self._clock.wall(), catalog() if self._codes is None else self._codes)
        self._entries.update(entries)
        if problems:
            self._damaged(problems, text)
        if self._entries:
            log.warning("restored %d listed errors from %s: %s", len(self._entries), self._path, ", ".join(self._entries))

    def _damaged(self, problems: list[str], text: str | None) -> None:
        """A damaged file must not hide a critical error: it is one itself, and says what was wrong."""
        copy = self._path.with_name(self._path.name + ".damaged")
        shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
        if len(problems) > MAX_PROBLEMS_SHOWN:
            shown += f"; and {len(problems) - MAX_PROBLEMS_SHOWN} more"
        where = f" (copy kept in {copy.name})" if text is not None else ""
        message = f"{self._path.name} was damaged{where}: {shown}. Check the node, then acknowledge"
        log.error("%s was damaged: %s", self._path, "; ".join(problems))
        if text is not None:
            self._writer.replace(copy, text)
        now = self._clock.wall()
        self._entries["ERRORS_FILE_DAMAGED"] = ErrorEntry(
            "ERRORS_FILE_DAMAGED", CRITICAL, "errors", message, now, now, active=False,
        )
        self._save()  # the file is sound again and records the damage


def _level(severity: str) -> int:
    return {WARNING: logging.WARNING, ERROR: logging.ERROR, CRITICAL: logging.CRITICAL}[severity]
