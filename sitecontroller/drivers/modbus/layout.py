"""Where a profile's points live: the SunSpec layout and batched read planning.

- `sunspec_layout(profile)`: the standard layout the simulator serves (model id ->
  address of its ID register), models in `[sunspec].models` order from the first base;
- `resolve_sunspec(profile, starts, lengths)`: give every `model`/`offset` point its
  absolute address from the model starts a device reported;
- `plan_reads(profile, names)`: group points into as few contiguous reads as the
  profile's `max_read`/`max_gap` allow.
"""
from __future__ import annotations

from dataclasses import dataclass

from .profile import TABLES, Point, Profile, ProfileError


def sunspec_layout(profile: Profile, base: int | None = None) -> dict[int, int]:
    """The standard layout the simulator serves: model id -> address of its ID register."""
    addr = (profile.sunspec_bases[0] if base is None else base) + 2
    out = {}
    for model_id, length in profile.sunspec_models:
        out.setdefault(model_id, addr)
        addr += 2 + length
    return out


def resolve_sunspec(profile: Profile, model_starts: dict[int, int], lengths: dict[int, int] | None = None) -> Profile:
    """Give every SunSpec point its absolute address from the discovered model starts.

    Raises ProfileError naming a model a point needs that the device does not have
    (or has shorter than the point's offset)."""
    addresses = {}
    for name, p in profile.points.items():
        if p.model is None:
            continue
        if p.model not in model_starts:
            raise ProfileError(f"device has no SunSpec model {p.model} (needed by point {name!r})")
        if lengths and p.offset + p.count > lengths.get(p.model, 0):
            raise ProfileError(f"device's SunSpec model {p.model} is too short for point {name!r}")
        addresses[name] = model_starts[p.model] + 2 + p.offset
    return profile.with_addresses(addresses)


@dataclass(frozen=True)
class Block:
    """One read request: `count` registers of `table` from `start`, covering `points`."""

    table: str
    start: int
    count: int
    points: tuple[str, ...]


def plan_reads(profile: Profile, names) -> list[Block]:
    """Group the addressed points among `names` into as few contiguous reads as allowed."""
    pts = [profile.point(n) for n in names]
    blocks: list[Block] = []
    for table in TABLES:
        todo = sorted((p for p in pts if p.table == table and not p.derived), key=lambda p: (p.address, p.end))
        cur: list[Point] = []
        start = end = 0
        for p in todo:
            if p.address is None:
                raise ProfileError(f"point {p.name!r} has no address (SunSpec layout not resolved)")
            if cur and p.address - end <= profile.max_gap and max(end, p.end) - start <= profile.max_read:
                cur.append(p)
                end = max(end, p.end)
                continue
            if cur:
                blocks.append(Block(table, start, end - start, tuple(q.name for q in cur)))
            cur, start, end = [p], p.address, p.end
        if cur:
            blocks.append(Block(table, start, end - start, tuple(q.name for q in cur)))
    return blocks
