"""Error registry: stable ids, severities, the active set, acknowledgement, persistence.

An error is *listed* while its cause is present (`active`) and, for severities
`error` and `critical`, until a person has acknowledged it (latched). Warnings
disappear with their cause. The listed set is written to disk atomically on
every change and read back at start, so a crash or restart never forgets an
error. A listed critical error keeps the node at 0 W in state `error`.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("sitecontroller.errors")

WARNING, ERROR, CRITICAL = "warning", "error", "critical"
SEVERITIES = (WARNING, ERROR, CRITICAL)

# The node's own error ids. Driver packages add theirs through ISSUE_CODES.
NODE_CODES: dict[str, tuple[str, str]] = {
    "ESTOP": (CRITICAL, "emergency stop engaged"),
    "ERRORS_FILE_DAMAGED": (CRITICAL, "the persisted error file was unreadable: errors may have been lost"),
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
}


def catalog() -> dict[str, tuple[str, str]]:
    """Every known error id: the node's and each driver family's."""
    from .drivers import bms, inverter, meter

    merged = dict(NODE_CODES)
    for family in (bms, inverter, meter):
        merged.update(getattr(family, "ISSUE_CODES", {}))
    return merged


@dataclass
class ErrorEntry:
    id: str
    severity: str
    source: str
    text: str
    first_wall: float
    last_wall: float
    active: bool = True
    acknowledged: bool = False
    count: int = 1

    @property
    def latched(self) -> bool:
        return self.severity != WARNING and not self.acknowledged

    @property
    def listed(self) -> bool:
        return self.active or self.latched


class ErrorRegistry:
    def __init__(self, clock, path: Path | None = None, codes: dict[str, tuple[str, str]] | None = None):
        self._clock = clock
        self._path = Path(path) if path else None
        self._codes = codes if codes is not None else catalog()
        self._entries: dict[str, ErrorEntry] = {}
        self.changed = False  # set on every change; the node reports and clears it
        if self._path and self._path.exists():
            self._load()

    # --- raising and clearing -----------------------------------------------
    def severity_of(self, code: str) -> str:
        return self._codes.get(code, (ERROR, ""))[0]

    def raise_(self, code: str, source: str, text: str | None = None) -> ErrorEntry:
        now = self._clock.wall()
        text = text or self._codes.get(code, (ERROR, code))[1] or code
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
    def _save(self) -> None:
        """Write the listed set atomically (temp file, fsync, rename, fsync the folder).

        A disk that fails (full, read-only) is logged, never raised: the node keeps
        its errors in memory and keeps protecting the battery.
        """
        self.changed = True
        if self._path is None:
            return
        tmp = self._path.with_suffix(".tmp")
        data = {"version": 1, "errors": [asdict(e) for e in self._entries.values()]}
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
            folder = os.open(self._path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as exc:
            log.error("cannot persist errors to %s: %s (kept in memory)", self._path, exc)

    def _load(self) -> None:
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
            for raw in data["errors"]:
                entry = ErrorEntry(**raw)
                self._entries[entry.id] = entry
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # A damaged file must not hide a critical error: assume the worst.
            log.error("error file %s unreadable (%s): raising ERRORS_FILE_DAMAGED", self._path, exc)
            now = self._clock.wall()
            self._entries["ERRORS_FILE_DAMAGED"] = ErrorEntry(
                "ERRORS_FILE_DAMAGED", CRITICAL, "errors", f"error file unreadable ({exc}); check the node and acknowledge", now, now,
                active=False,
            )
        if self._entries:
            log.warning("restored %d listed errors from %s: %s", len(self._entries), self._path, ", ".join(self._entries))


def _level(severity: str) -> int:
    return {WARNING: logging.WARNING, ERROR: logging.ERROR, CRITICAL: logging.CRITICAL}[severity]
