"""The SCADA Modbus TCP server: the register map served from the latest snapshot, writes guarded.

`ScadaServer` is the profile server (pymodbus 3.16 SimDevice/SimData with the async
`action` hook, `sim/modbus_server.py`) with what a plant-facing server adds:

- reads serve the registers as the last `refresh()` left them: the service refreshes them from
  the latest status snapshot once per cycle period (and the server after each accepted write),
  so a read costs no encoding, never touches the cycle's live objects and never waits for the
  cycle; a quantity that is absent reads as SunSpec "not implemented";
- every write first checks its client's address against `allow_write_from` (CIDRs): a client
  outside it gets ILLEGAL_FUNCTION (01), so it can read but never write; pymodbus gives the
  action hook no client, so each connection's handler puts its peer into a context variable
  for the request's task;
- then the map's static checks (read-only -> 02, split point -> 02, outside min/max -> 03),
  then the control's guard (`ScadaControl.check`: write enable, the node's rating, mode
  parameters), and only then the control's action (`ScadaControl.apply`, which awaits the
  command's acknowledgement). A refused write stores nothing.
"""
from __future__ import annotations

import contextvars
import ipaddress
import logging

from pymodbus.constants import ExcCodes

from ..drivers.modbus.codec import SUNSPEC_NA
from ..sim.modbus_server import WRITE_FCS, ProfileServer
from ..sim.pymodbus_server import ModbusTcpServer, ServerRequestHandler  # without aiohttp (~9 MB)

log = logging.getLogger("sitecontroller.scada")

PEER: contextvars.ContextVar[str] = contextvars.ContextVar("scada_peer", default="")
WRITTEN: contextvars.ContextVar[dict | None] = contextvars.ContextVar("scada_written", default=None)


class _PeerHandler(ServerRequestHandler):
    """A connection's handler that tells the request's task who the client is."""

    async def handle_request(self):
        peer = self.transport.get_extra_info("peername") if self.transport else None
        PEER.set(peer[0] if peer else "")
        await super().handle_request()


class _PeerTcpServer(ModbusTcpServer):
    def callback_new_connection(self):
        return _PeerHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class ScadaServer(ProfileServer):
    server_class = _PeerTcpServer

    def __init__(self, profile, *, host: str, port: int, unit_id: int, source, control, allow_write_from,
                 gateways=()):
        """`gateways`: more ProfileServers served on the same port under their own unit ids."""
        self.control = control
        self.gateways = tuple(gateways)
        self.allow = tuple(ipaddress.ip_network(c, strict=False) for c in allow_write_from)
        self.refused_clients = 0
        super().__init__(profile, host=host, port=port, unit_id=unit_id, source=source, on_write=self._guard)
        for table in ("holding", "input"):  # nothing served yet: every live point reads "not implemented"
            img = self._regs[table]
            for p in self._points[table]:
                if p.sim is not None:
                    self._na(img["regs"], img["start"], p)

    def _device(self):
        return [super()._device(), *(g._device() for g in self.gateways)]

    def allowed(self, client: str) -> bool:
        try:
            addr = ipaddress.ip_address(client)
        except ValueError:
            return False
        return any(addr in net for net in self.allow)

    def _serve(self, regs, lo, p, live) -> None:
        if self._quantity(p, live) is None:
            self._na(regs, lo, p)
        else:
            super()._serve(regs, lo, p, live)

    @staticmethod
    def _na(regs: list[int], lo: int, p) -> None:
        na = SUNSPEC_NA.get(p.type)
        words = [0] * p.count if na is None else [(na[0] >> (16 * i)) & 0xFFFF for i in reversed(range(p.count))]
        regs[p.address - lo : p.end - lo] = words

    def _guard(self, written: dict) -> ExcCodes | None:
        rc = self.control.check(written)
        if rc is None:
            WRITTEN.set(written)
        return rc

    async def _action(self, fc, start_address, address, count, registers, set_values):
        if set_values is None or fc not in WRITE_FCS:  # a read: the registers are up to date already
            img = self._regs["input" if fc == 4 else "holding"]
            if img["regs"] is not registers:  # the first request: from now on refresh pymodbus's own list
                img["regs"] = registers
                self.refresh()
            return None
        client = PEER.get()
        if not self.allowed(client):
            self.refused_clients += 1
            log.warning("SCADA write from %s refused: not in scada.allow_write_from", client or "an unknown client")
            return ExcCodes.ILLEGAL_FUNCTION
        WRITTEN.set(None)
        rc = await super()._action(fc, start_address, address, count, registers, set_values)
        written = WRITTEN.get()
        if rc is not None or not written:
            return rc
        rc = await self.control.apply(written, client)
        self.refresh()  # a read right after this write sees its effect (WrEna, CtlSt, NodeWSet, ...)
        return rc
