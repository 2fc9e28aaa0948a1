"""A profile-driven Modbus device: discover, read points, write points, verify.

`ModbusDevice` knows nothing about inverters or meters: it turns point names
into batched register reads and writes using the profile (PROFILES.md). The
drivers decide what the values mean.
"""
from __future__ import annotations

from .client import DeviceError, ModbusClient
from .codec import CodecError, decode_point, encode_point, merge_masked, raw_from_value, same_raw
from .layout import plan_reads, resolve_sunspec
from .profile import Profile, ProfileError

SUNS = (0x5375, 0x6E53)
END_ID = 0xFFFF
MAX_MODELS = 64


class DecodeError(Exception):
    """The device answered, but not with something the profile can decode."""


class ModbusDevice:
    def __init__(self, profile: Profile, client: ModbusClient) -> None:
        self.base_profile = profile
        self.profile = profile if not profile.is_sunspec else None  # resolved after discovery
        self.client = client
        self.sunspec_models: dict[int, int] = {}
        self.sf_cache: dict[str, int | None] = {}

    async def connect(self) -> bool:
        return await self.client.connect()

    async def close(self) -> None:
        self.client.close()

    # --- SunSpec discovery ---------------------------------------------------------
    async def discover(self) -> Profile:
        """Resolve the profile's addresses (SunSpec: walk the model chain). Idempotent."""
        if self.profile is not None:
            return self.profile
        base = None
        for b in self.base_profile.sunspec_bases:
            try:
                regs = await self.client.read("holding", b, 2)
            except DeviceError:
                continue
            if tuple(regs) == SUNS:
                base = b
                break
        if base is None:
            raise DecodeError(f"no SunSpec marker 'SunS' at {list(self.base_profile.sunspec_bases)}")
        addr, starts, lengths = base + 2, {}, {}
        for _ in range(MAX_MODELS):
            model_id, length = await self.client.read("holding", addr, 2)
            if model_id == END_ID:
                break
            starts.setdefault(model_id, addr)
            lengths.setdefault(model_id, length)
            addr += 2 + length
        else:
            raise DecodeError(f"SunSpec model chain from {base} has no end marker")
        try:
            self.profile = resolve_sunspec(self.base_profile, starts, lengths)
        except ProfileError as exc:
            raise DecodeError(str(exc)) from None
        self.sunspec_models = starts
        return self.profile

    # --- reading -------------------------------------------------------------------
    async def read_points(self, names) -> dict:
        """{name: engineering value or None} for `names` and their dependencies.

        Raises CommError / DeviceError from the link, DecodeError for bad data."""
        profile = await self.discover()
        names = profile.dependencies(names)
        raw_regs: dict[str, list[int]] = {}
        for block in plan_reads(profile, names):
            regs = await self.client.read(block.table, block.start, block.count)
            for n in block.points:
                p = profile.point(n)
                raw_regs[n] = regs[p.address - block.start : p.end - block.start]
        return self._decode(profile, names, raw_regs)

    def _decode(self, profile: Profile, names: list[str], raw_regs: dict[str, list[int]]) -> dict:
        values: dict = {}
        try:
            for n in names:  # dependencies come first (scale factors, sum terms)
                p = profile.point(n)
                if p.derived:
                    terms = [values.get(t) for t, _ in p.sum]
                    values[n] = None if any(v is None for v in terms) else sum(
                        k * v for (_, k), v in zip(p.sum, terms))
                    continue
                sf = None
                if p.sf is not None:
                    sf = values.get(p.sf)
                    sf = None if sf is None else int(sf)
                values[n] = decode_point(p, raw_regs[n], sf)
                if n in self._sf_names(profile):
                    self.sf_cache[n] = None if values[n] is None else int(values[n])
        except CodecError as exc:
            raise DecodeError(str(exc)) from None
        return values

    @staticmethod
    def _sf_names(profile: Profile) -> set[str]:
        return {p.sf for p in profile.points.values() if p.sf}

    # --- writing -------------------------------------------------------------------
    async def _sf_for(self, profile: Profile, names) -> None:
        missing = [profile.point(n).sf for n in names if profile.point(n).sf and profile.point(n).sf not in self.sf_cache]
        if missing:
            await self.read_points(dict.fromkeys(missing))

    async def write_points(self, values: dict) -> None:
        """Encode and write points in the given order.

        Points that share a register (bit flags) are merged into one
        read-modify-write; adjacent points are written in one request."""
        profile = await self.discover()
        await self._sf_for(profile, values)
        writes: list[tuple[int, list[int]]] = []  # (address, registers), in order
        masked: dict[tuple[int, int], list] = {}
        try:
            for name, v in values.items():
                p = profile.point(name)
                if not p.writable or p.table != "holding":
                    raise DecodeError(f"point {name!r} is not writable")
                regs = encode_point(p, v, self.sf_cache.get(p.sf) if p.sf else None)
                if p.mask is None:
                    writes.append((p.address, regs))
                else:
                    masked.setdefault((p.address, p.count), []).append((p, regs))
        except CodecError as exc:
            raise DecodeError(str(exc)) from None
        for (address, count), parts in masked.items():
            current = await self.client.read("holding", address, count)
            for p, regs in parts:
                current = merge_masked(p, current, regs)
            writes.append((address, current))
        for address, regs in _join_adjacent(writes):
            await self.client.write(address, regs, single=profile.write_function == 6)

    async def verify_points(self, values: dict) -> dict[str, tuple]:
        """Read the points back; {name: (wanted, read)} for each one that differs."""
        got = await self.read_points(values)
        return self.compare_points(values, got)

    def compare_points(self, values: dict, got: dict) -> dict[str, tuple]:
        """{name: (wanted, read)} for each point of `values` whose raw value in `got` differs."""
        profile = self.profile or self.base_profile
        bad = {}
        for name, want in values.items():
            p = profile.point(name)
            sf = self.sf_cache.get(p.sf) if p.sf else None
            try:
                want_raw = raw_from_value(p, want, sf)
            except CodecError as exc:
                raise DecodeError(str(exc)) from None
            have = got.get(name)
            have_raw = None if have is None else raw_from_value(p, have, sf)
            if not same_raw(p, want_raw, have_raw):
                bad[name] = (want, have)
        return bad


def _join_adjacent(writes: list[tuple[int, list[int]]]) -> list[tuple[int, list[int]]]:
    """Merge writes whose registers follow each other directly (order kept)."""
    out: list[tuple[int, list[int]]] = []
    for address, regs in writes:
        if out and out[-1][0] + len(out[-1][1]) == address and len(out[-1][1]) + len(regs) <= 120:
            out[-1] = (out[-1][0], out[-1][1] + list(regs))
        else:
            out.append((address, list(regs)))
    return out

