"""Register codec: Modbus registers <-> engineering values (pure functions).

The rules are written down in PROFILES.md ("Decoding rules"). In short:
registers are joined by the point's word order into one unsigned integer, a
"not available" sentinel reads as None, `mask`/`shift` select packed bits,
signed types are sign-extended, and a number becomes
`sign * raw * scale * 10**sf + add`. Encoding is the exact inverse.
"""
from __future__ import annotations

import math
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .profile import Point

# canonical type -> (registers, signed)
TYPES: dict[str, tuple[int, bool]] = {
    "uint16": (1, False),
    "int16": (1, True),
    "uint32": (2, False),
    "int32": (2, True),
    "float32": (2, True),
    "string": (0, False),  # length comes from the point
}
ALIASES = {
    "sunssf": "int16",
    "enum16": "uint16",
    "bitfield16": "uint16",
    "bitfield32": "uint32",
    "acc32": "uint32",
    "pad": "uint16",
}
# SunSpec "not implemented" values, by canonical type (raw, unsigned form)
SUNSPEC_NA = {
    "uint16": (0xFFFF,),
    "int16": (0x8000,),
    "uint32": (0xFFFFFFFF,),
    "int32": (0x80000000,),
}


class CodecError(ValueError):
    """A value that does not fit its register type, or registers of the wrong size."""


def canonical_type(name: str) -> str:
    t = ALIASES.get(name, name)
    if t not in TYPES:
        raise CodecError(f"unknown register type {name!r}; allowed: {sorted(set(TYPES) | set(ALIASES))}")
    return t


def join_registers(regs: list[int], word_order: str) -> int:
    """Registers (16-bit words) -> one unsigned integer."""
    words = list(regs) if word_order == "big" else list(reversed(regs))
    value = 0
    for w in words:
        if not 0 <= w <= 0xFFFF:
            raise CodecError(f"register value {w} is not a 16-bit word")
        value = (value << 16) | w
    return value


def split_registers(value: int, count: int, word_order: str) -> list[int]:
    """One unsigned integer -> `count` registers in the given word order."""
    words = [(value >> (16 * (count - 1 - i))) & 0xFFFF for i in range(count)]
    return words if word_order == "big" else list(reversed(words))


def _to_signed(raw: int, bits: int) -> int:
    return raw - (1 << bits) if raw & (1 << (bits - 1)) else raw


def decode_raw(point: "Point", regs: list[int]):
    """Registers -> the raw value (int, float for float32, str for strings), or None if 'not available'."""
    if len(regs) != point.count:
        raise CodecError(f"point {point.name!r} needs {point.count} registers, got {len(regs)}")
    if point.type == "string":
        data = b"".join(r.to_bytes(2, "big") for r in regs)
        return data.split(b"\x00", 1)[0].decode("utf-8", errors="replace").rstrip()
    unsigned = join_registers(regs, point.word_order)
    if unsigned in point.na:
        return None
    if point.type == "float32":
        value = struct.unpack(">f", unsigned.to_bytes(4, "big"))[0]
        return None if math.isnan(value) else value
    bits = 16 * point.count
    if point.mask is not None:
        unsigned = (unsigned & point.mask) >> point.shift
        bits = max(1, (point.mask >> point.shift).bit_length())
    return _to_signed(unsigned, bits) if point.signed else unsigned


def scale_of(point: "Point", sf: int | None) -> float | None:
    """The factor from raw to engineering value (None if the scale factor is not available)."""
    if point.sf is not None and sf is None:
        return None
    return point.scale * (10.0 ** sf if point.sf is not None else 1.0)


def decode_point(point: "Point", regs: list[int], sf: int | None = None):
    """Registers -> engineering value (see PROFILES.md). Enumerations and bit fields stay raw ints."""
    raw = decode_raw(point, regs)
    if raw is None or point.type == "string" or point.is_enum:
        return raw
    factor = scale_of(point, sf)
    if factor is None:
        return None
    return point.sign * raw * factor + point.add


def raw_from_value(point: "Point", value, sf: int | None = None):
    """Engineering value -> raw value (rounded to the nearest step). Inverse of decode_point."""
    if point.type == "string" or point.is_enum:
        return value
    factor = scale_of(point, sf)
    if factor is None:
        raise CodecError(f"point {point.name!r}: its scale factor {point.sf!r} is not available")
    raw = (float(value) - point.add) / (point.sign * factor)
    if point.type == "float32":
        return raw
    return round_half_away(raw)


def round_half_away(x: float) -> int:
    """Nearest integer, halves away from zero, after trimming float noise (231.15 / 0.1 -> 2312)."""
    x = round(x, 6)
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def encode_raw(point: "Point", raw) -> list[int]:
    """Raw value -> registers. For a masked point, returns the bits in place (other bits 0)."""
    if point.type == "string":
        data = str(raw).encode("utf-8")
        size = 2 * point.count
        if len(data) > size:
            raise CodecError(f"point {point.name!r}: {raw!r} is longer than {size} bytes")
        data = data.ljust(size, b"\x00")
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, size, 2)]
    if point.type == "float32":
        unsigned = int.from_bytes(struct.pack(">f", float(raw)), "big")
        return split_registers(unsigned, 2, point.word_order)
    raw = int(raw)
    if point.mask is not None:
        width = (point.mask >> point.shift).bit_length()
        lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if point.signed else (0, (1 << width) - 1)
        if not lo <= raw <= hi:
            raise CodecError(f"point {point.name!r}: raw value {raw} does not fit bits {point.mask:#x}")
        unsigned = ((raw & ((1 << width) - 1)) << point.shift) & point.mask
    else:
        bits = 16 * point.count
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if point.signed else (0, (1 << bits) - 1)
        if not lo <= raw <= hi:
            raise CodecError(f"point {point.name!r}: raw value {raw} is outside {point.type} [{lo}, {hi}]")
        unsigned = raw & ((1 << bits) - 1)
    return split_registers(unsigned, point.count, point.word_order)


def encode_point(point: "Point", value, sf: int | None = None) -> list[int]:
    """Engineering value -> registers (see PROFILES.md)."""
    return encode_raw(point, raw_from_value(point, value, sf))


def merge_masked(point: "Point", current: list[int], new: list[int]) -> list[int]:
    """Put a masked point's new bits into the current register values (read-modify-write)."""
    if point.mask is None:
        return list(new)
    cur = join_registers(current, point.word_order)
    val = join_registers(new, point.word_order)
    merged = (cur & ~point.mask) | (val & point.mask)
    return split_registers(merged, point.count, point.word_order)


def same_raw(point: "Point", a, b) -> bool:
    """Whether two raw values are equal for read-back verification (float32: to float precision)."""
    if a is None or b is None:
        return a is b
    if point.type == "float32":
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-6)
    return a == b
