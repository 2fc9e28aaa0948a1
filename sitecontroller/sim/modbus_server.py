"""A simulated Modbus TCP device that serves a profile's registers from live values.

`ProfileServer` is generic: give it a profile (PROFILES.md), a `source()` that
returns the live quantities the points' `sim` hints name, and an `on_write()`
that applies accepted writes. It uses pymodbus's SimDevice/SimData with an
async `action` hook (DESIGN §8: overriding setValues is silently ignored):

- every read refreshes the requested points from `source()`;
- writes to registers no writable point covers are refused by pymodbus
  (read-only registers -> ILLEGAL_ADDRESS); a write that splits a multi-register
  point -> ILLEGAL_ADDRESS; a value outside the point's min/max -> ILLEGAL_VALUE;
  `on_write` may refuse with any exception code; nothing is stored then.

Fault knobs for tests: `delay_s` (every answer comes late), `muted` (requests
are swallowed, no answer), `reject_writes` (every write -> DEVICE_FAILURE),
`drop()`/`resume()` (close the listener and every connection / listen again).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from ..drivers.modbus.codec import CodecError, decode_point, encode_raw, merge_masked, raw_from_value
from ..drivers.modbus.layout import resolve_sunspec, sunspec_layout
from ..drivers.modbus.profile import Point, Profile
from .pymodbus_server import ModbusTcpServer  # not `pymodbus.server`: that one loads aiohttp (~9 MB)

log = logging.getLogger(__name__)

WRITE_FCS = (5, 6, 15, 16, 22, 23)
SUNS = (0x5375, 0x6E53)


class ProfileServer:
    server_class = ModbusTcpServer  # the SCADA server's knows each request's client

    def __init__(
        self,
        profile: Profile,
        *,
        host: str = "127.0.0.1",
        port: int,
        unit_id: int = 1,
        source: Callable[[], dict] = dict,
        on_write: Callable[[dict], ExcCodes | None] | None = None,
    ) -> None:
        self.host, self.port, self.unit_id = host, port, unit_id
        self.source, self.on_write = source, on_write
        self.delay_s = 0.0
        self.muted = False
        self.reject_writes = False
        self.requests = 0
        self._server: ModbusTcpServer | None = None
        self._release = asyncio.Event()
        self.profile = self._layout(profile)
        self._points = {t: [p for p in self.profile.points.values() if p.table == t and p.address is not None]
                        for t in ("holding", "input")}
        self._sf = {p.sf: self.profile.point(p.sf).sim_value for p in self.profile.points.values() if p.sf}
        self._regs = {t: self._image(t) for t in ("holding", "input")}
        self._writable = {t: self._writable_mask(t) for t in ("holding", "input")}

    # --- register image --------------------------------------------------------------
    def _layout(self, profile: Profile) -> Profile:
        self._fixed: dict[int, int] = {}
        if not profile.is_sunspec:
            return profile
        starts = sunspec_layout(profile)
        base = profile.sunspec_bases[0]
        self._fixed[base], self._fixed[base + 1] = SUNS
        addr = base + 2
        for model_id, length in profile.sunspec_models:
            self._fixed[addr], self._fixed[addr + 1] = model_id, length
            addr += 2 + length
        self._fixed[addr], self._fixed[addr + 1] = 0xFFFF, 0
        return resolve_sunspec(profile, starts, dict(profile.sunspec_models))

    def _span(self, table: str) -> tuple[int, int]:
        ends = [(p.address, p.end) for p in self._points[table]]
        if table == "holding":
            ends += [(a, a + 1) for a in self._fixed]
        if not ends:
            return 0, 1
        return min(a for a, _ in ends), max(e for _, e in ends)

    def _image(self, table: str) -> dict:
        lo, hi = self._span(table)
        regs = [0] * (hi - lo)
        if table == "holding":
            for a, v in self._fixed.items():
                regs[a - lo] = v
        for p in self._points[table]:
            if p.sim_value is not None:
                self._put(regs, lo, p, p.sim_value)
        return {"start": lo, "regs": regs}

    def _writable_mask(self, table: str) -> list[bool]:
        lo, hi = self._span(table)
        mask = [False] * (hi - lo)
        for p in self._points[table]:
            if p.writable:
                for a in range(p.address, p.end):
                    mask[a - lo] = True
        return mask

    def _simdata(self, table: str) -> list[SimData]:
        img, mask = self._regs[table], self._writable[table]
        out, i, regs = [], 0, img["regs"][: len(mask)]  # pymodbus appends one guard register
        while i < len(regs):
            j = i
            while j < len(regs) and mask[j] == mask[i]:
                j += 1
            out.append(SimData(address=img["start"] + i, values=list(regs[i:j]),
                               datatype=DataType.REGISTERS, readonly=not mask[i]))
            i = j
        return out

    def _device(self) -> SimDevice:
        dummy_bits = [SimData(address=0, values=[False] * 16, datatype=DataType.BITS)]
        return SimDevice(
            id=self.unit_id,
            simdata=(list(dummy_bits), list(dummy_bits), self._simdata("holding"), self._simdata("input")),
            action=self._action,
        )

    # --- values ----------------------------------------------------------------------------
    def _quantity(self, p: Point, live: dict):
        if p.sim is None:
            return p.sim_value
        name, _, idx = p.sim.partition(".")
        v = live.get(name)
        if idx and v is not None:
            v = v[int(idx)] if int(idx) < len(v) else None
        if v is None:
            return None
        if p.sim_clip == "pos":
            v = max(v, 0.0)
        elif p.sim_clip == "neg":
            v = max(-v, 0.0)
        if p.states and isinstance(v, str):
            v = self.profile.sim_states.get(v, v)
            return next((raw for raw, n in p.states.items() if n == v), None)
        if isinstance(v, (set, frozenset)):  # fault names -> bits
            raw = 0
            for fault in v:
                fault = self.profile.sim_faults.get(fault, fault)
                bit = next((b for b, n in p.bits.items() if n.lower() == str(fault).lower()), min(p.bits, default=0))
                raw |= 1 << bit
            return raw
        return v

    def _put(self, regs: list[int], lo: int, p: Point, value) -> None:
        sf = self._sf.get(p.sf) if p.sf else None
        try:
            raw = raw_from_value(p, value, sf)
            try:
                new = encode_raw(p, raw)
            except CodecError:  # out of the type's range: serve the nearest representable value
                bits = 16 * p.count if p.mask is None else (p.mask >> p.shift).bit_length()
                lo_r, hi_r = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if p.signed else (0, (1 << bits) - 1)
                new = encode_raw(p, min(hi_r, max(lo_r, int(raw))))
        except (CodecError, TypeError, ValueError) as exc:
            log.warning("sim: cannot serve %s=%r: %s", p.name, value, exc)
            return
        i = p.address - lo
        regs[i : i + p.count] = merge_masked(p, regs[i : i + p.count], new)

    def refresh(self) -> None:
        """Serve every live point from `source()` now (also done for each read request)."""
        live = self.source()
        for table in ("holding", "input"):
            img = self._regs[table]
            for p in self._points[table]:
                if p.sim is not None:
                    self._serve(img["regs"], img["start"], p, live)

    def _serve(self, regs: list[int], lo: int, p: Point, live: dict) -> None:
        """Serve one live point (a quantity `live` lacks: the register keeps its value)."""
        v = self._quantity(p, live)
        if v is not None:
            self._put(regs, lo, p, v)

    def values(self, names) -> dict:
        """Decode the points' current register values (what a client would read, without refreshing)."""
        out = {}
        for n in names:
            p = self.profile.point(n)
            img = self._regs[p.table]
            sf = self._sf.get(p.sf) if p.sf else None
            i = p.address - img["start"]
            out[n] = decode_point(p, img["regs"][i : i + p.count], sf)
        return out

    def set_values(self, values: dict) -> None:
        """Store engineering values into the served registers (what the device itself changes)."""
        for n, v in values.items():
            p = self.profile.point(n)
            img = self._regs[p.table]
            self._put(img["regs"], img["start"], p, v)

    # --- the pymodbus action hook ----------------------------------------------------------
    async def _action(self, fc, start_address, address, count, registers, set_values):
        self.requests += 1
        if self.muted:
            await self._release.wait()
            return ExcCodes.DEVICE_FAILURE
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        table = "input" if fc == 4 else "holding"
        img = self._regs[table]
        img["regs"] = registers  # pymodbus owns the live list; keep our view on it
        if set_values is None or fc not in WRITE_FCS:
            live = self.source()
            for p in self._points[table]:
                if p.sim is not None and p.address < address + count and p.end > address:
                    self._serve(registers, start_address, p, live)
            return None
        if self.reject_writes:
            return ExcCodes.DEVICE_FAILURE
        return self._check_write(start_address, address, registers, list(set_values))

    def _check_write(self, lo: int, address: int, registers: list[int], new: list[int]):
        end = address + len(new)
        after = list(registers)
        after[address - lo : end - lo] = new
        written = {}
        for p in self._points["holding"]:
            if p.address >= end or p.end <= address:
                continue
            if p.address < address or p.end > end:
                return ExcCodes.ILLEGAL_ADDRESS
            if not p.writable:
                continue
            sf = self._sf.get(p.sf) if p.sf else None
            try:
                v = decode_point(p, after[p.address - lo : p.end - lo], sf)
            except CodecError:
                return ExcCodes.ILLEGAL_VALUE
            if v is not None and ((p.min is not None and v < p.min - 1e-9) or (p.max is not None and v > p.max + 1e-9)):
                return ExcCodes.ILLEGAL_VALUE
            written[p.name] = v
        if self.on_write is not None and written:
            rc = self.on_write(written)
            if rc:
                return rc
        return None

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._release = asyncio.Event()
        self.refresh()
        self._server = self.server_class(self._device(), address=(self.host, self.port))
        await self._server.serve_forever(background=True)

    async def drop(self) -> None:
        """Close the listener and every connection (the device vanishes from the network)."""
        self._release.set()
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    async def resume(self) -> None:
        """Listen again on the same port, with the registers as they were."""
        if self._server is None:
            await self.start()  # the SimDevice is rebuilt from the current register image

    async def close(self) -> None:
        await self.drop()
