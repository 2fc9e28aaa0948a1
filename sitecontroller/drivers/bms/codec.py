"""CAN frames <-> signal values for a multi-rack BMS, with the DBC as the only source of truth.

Shared by the driver, the simulated BMS and the decode benchmark, so the two
ends of the bus can never disagree about a bit. The DBC files live inside the
package (`sitecontroller/drivers/bms/dbc/`) and are read with
`importlib.resources`, so they work from a wheel as well as from a checkout.

Multi-rack addressing (documented in each DBC's header comment): a frame sent
by node `BMS` is sent once per rack, rack r at `frame_id + r * stride`; the
stride is the DBC attribute `RackIdStride` unless the configuration overrides
it. Frames sent by any other node (the controller's command, an inverter
keep-alive) are not offset and belong to no rack.

Bad values are never laundered into plausible ones:
- a raw value the DBC names `not_available` in a value table (`VAL_`), e.g.
  0x8000 of a signed 16-bit signal, decodes to NaN;
- a value outside the range the DBC declares is returned unchanged (an SOC of
  101 % stays 101) and `out_of_range` says which signal; the node's protection
  judges the reading (BMS_DATA_INVALID), never a clamped or dropped copy.
A frame whose id is known but whose payload cannot be decoded at all (too
short) raises `FrameError`; the caller counts it. A frame whose id is unknown
decodes to None (another device on the bus).
"""
from __future__ import annotations

import functools
import math
from importlib import resources
from pathlib import Path

import can
import cantools

DBC_DIR = resources.files(__package__) / "dbc"  # a Traversable: a folder in a checkout or an installed wheel
DEFAULT_DBC = {"bess_sim": "bess_sim.dbc", "pylontech": "pylontech.dbc"}
RACK_SENDER = "BMS"
EXTENDED = 0x8000_0000  # key bit for 29-bit identifiers (as cantools does)
NOT_AVAILABLE = "not_available"  # the value-table name that marks a sentinel raw value


class FrameError(ValueError):
    """A frame with a known id whose payload is unusable (length, range, garbage)."""


def dbc_path(model: str, name: str | None = None):
    """The DBC file for `model`: `name` (a file in the package's dbc/ folder, or an absolute path) or the
    model's default. Returns a `Path` for an absolute name, else an `importlib.resources` Traversable."""
    if name is None:
        if model not in DEFAULT_DBC:
            raise ValueError(f"BMS model {model!r} has no DBC; CAN models: {', '.join(DEFAULT_DBC)}")
        name = DEFAULT_DBC[model]
    path = Path(name)
    if path.is_absolute():
        if not path.is_file():
            raise FileNotFoundError(f"DBC file {str(path)!r} not found")
        return path
    res = DBC_DIR.joinpath(*path.parts)
    if not res.is_file():
        shipped = ", ".join(sorted(p.name for p in DBC_DIR.iterdir() if p.name.endswith(".dbc")))
        raise FileNotFoundError(f"DBC file {name!r} not found in the package's dbc folder (shipped: {shipped})")
    return res


def load_dbc(path) -> cantools.database.can.Database:
    """Parse a DBC (a `dbc_path` result) once per process (the database is only read afterwards)."""
    return _load_dbc_text(path.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=16)
def _load_dbc_text(text: str) -> cantools.database.can.Database:
    return cantools.database.load_string(text, database_format="dbc", strict=True)


def dbc_attribute(db, name: str, default=None):
    attrs = getattr(getattr(db, "dbc", None), "attributes", None) or {}
    attr = attrs.get(name)
    return attr.value if attr is not None else default


def _range_checks(msg) -> tuple[tuple[str, float, float, str], ...]:
    """(signal, low, high, declared range as text) for every signal whose DBC range is narrower than
    its raw range (low/high include half a scale step of tolerance)."""
    checks = []
    for sig in msg.signals:
        if sig.minimum is None and sig.maximum is None:
            continue
        tol = abs(sig.scale) / 2
        lo = -math.inf if sig.minimum is None else sig.minimum - tol
        hi = math.inf if sig.maximum is None else sig.maximum + tol
        raw_lo = 0 if not sig.is_signed else -(1 << (sig.length - 1))
        raw_hi = (1 << sig.length) - 1 if not sig.is_signed else (1 << (sig.length - 1)) - 1
        ends = (raw_lo * sig.scale + sig.offset, raw_hi * sig.scale + sig.offset)
        if min(ends) >= lo and max(ends) <= hi:
            continue  # every raw value is in range: nothing to check
        shown = f"[{'-inf' if sig.minimum is None else f'{sig.minimum:g}'}, {'inf' if sig.maximum is None else f'{sig.maximum:g}'}]"
        checks.append((sig.name, lo, hi, shown))
    return tuple(checks)


def _sentinels(msg) -> tuple[tuple[str, float, float], ...]:
    """(signal, scaled sentinel value, tolerance) for every signal with a `not_available` raw value."""
    out = []
    for sig in msg.signals:
        for raw, label in (sig.choices or {}).items():
            if str(label).lower() == NOT_AVAILABLE:
                out.append((sig.name, int(raw) * sig.scale + sig.offset, abs(sig.scale) / 2))
    return tuple(out)


class FrameCodec:
    """Decode received frames to (rack, message name, values); encode values to frames."""

    def __init__(self, db, racks: int, stride: int | None = None):
        self.db = db
        self.racks = racks
        self.stride = int(stride or dbc_attribute(db, "RackIdStride", 16))
        rack_max = int(dbc_attribute(db, "RackCountMax", 64))
        if racks > rack_max:
            raise ValueError(f"{racks} racks configured, the DBC allows at most {rack_max}")
        self._rx: dict[int, tuple[int | None, object, tuple]] = {}
        self._by_name = {m.name: m for m in db.messages}
        self._checks = {m.name: _range_checks(m) for m in db.messages}
        for msg in db.messages:
            sentinels = _sentinels(msg)
            per_rack = RACK_SENDER in msg.senders
            for rack in (range(racks) if per_rack else (None,)):
                frame_id = self.frame_id(msg, rack)
                key = frame_id | (EXTENDED if msg.is_extended_frame else 0)
                if key in self._rx:
                    other = self._rx[key]
                    raise ValueError(
                        f"CAN id 0x{frame_id:X} of {msg.name} (rack {rack}) collides with "
                        f"{other[1].name} (rack {other[0]}): choose another rack id stride"
                    )
                self._rx[key] = (rack, msg, sentinels)

    def frame_id(self, msg, rack: int | None) -> int:
        frame_id = msg.frame_id + (rack * self.stride if rack else 0)
        if not msg.is_extended_frame and frame_id > 0x7FF:
            raise ValueError(f"{msg.name} of rack {rack} would need id 0x{frame_id:X}, beyond 11 bits")
        return frame_id

    def message(self, name: str):
        return self._by_name[name]

    def decode(self, arbitration_id: int, data, extended: bool = False):
        """(rack or None, message name, {signal: value}); None for an id this DBC does not know.

        A `not_available` raw value decodes to NaN; a value outside the DBC range is returned as it is
        (see `out_of_range`). Raises `FrameError` when the payload cannot be decoded (too short).
        """
        entry = self._rx.get(arbitration_id | EXTENDED if extended else arbitration_id)
        if entry is None:
            return None
        rack, msg, sentinels = entry
        try:
            values = msg.decode_simple(bytes(data), False, True)
        except Exception as exc:  # cantools raises DecodeError, bitstruct may raise others
            raise FrameError(f"{msg.name} (id 0x{arbitration_id:X}): {exc}") from None
        for name, value, tol in sentinels:
            if abs(values[name] - value) <= tol:
                values[name] = math.nan
        return rack, msg.name, values

    def out_of_range(self, name: str, values: dict) -> str | None:
        """The first signal of decoded message `name` outside its DBC range, as text; None if all are in range.
        NaN (not available) is not a range violation: it is already marked."""
        for sig, lo, hi, shown in self._checks[name]:
            value = values[sig]
            if not lo <= value <= hi and not math.isnan(value):
                return f"{name}.{sig}={value:g} outside {shown}"
        return None

    def encode(self, name: str, values: dict, rack: int | None = None) -> can.Message:
        """A frame for message `name` (of `rack` for per-rack messages); values are clamped to the DBC range."""
        msg = self._by_name[name]
        clamped = {}
        for sig in msg.signals:
            value = values.get(sig.name, 0)
            if sig.minimum is not None and value < sig.minimum:
                value = sig.minimum
            elif sig.maximum is not None and value > sig.maximum:
                value = sig.maximum
            clamped[sig.name] = value
        data = msg.encode(clamped, scaling=True, padding=False, strict=False)
        return can.Message(
            arbitration_id=self.frame_id(msg, rack), data=data, is_extended_id=msg.is_extended_frame
        )

    def encode_raw(self, name: str, raw: dict, rack: int | None = None) -> can.Message:
        """A frame from raw (unscaled) integers, unchecked: lets the simulator send out-of-range values."""
        msg = self._by_name[name]
        data = msg.encode({s.name: raw.get(s.name, 0) for s in msg.signals}, scaling=False, strict=False)
        return can.Message(arbitration_id=self.frame_id(msg, rack), data=data, is_extended_id=msg.is_extended_frame)
