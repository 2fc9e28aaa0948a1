"""An SLCAN (Lawicel ASCII) server on TCP: a simulated USB-CAN adapter for other processes.

A node reaches the simulated BMS of another process with python-can's `slcan`
interface and a pyserial URL as its channel:

    "can": {"interface": "slcan", "channel": "socket://127.0.0.1:15023"}

`SlcanServer(host, port, channel)` listens on `host:port` and bridges every
connected client to a python-can `virtual` bus `channel` in this process (the
simulated BMS sends and receives on that channel). Like devices on one real CAN
bus, a frame a client sends reaches the virtual bus and every *other* open
client; a frame from the virtual bus reaches every open client.

The protocol (each command and answer ends with CR, errors answer BEL):

    O / L         open the channel (L: listen only)  -> CR
    C             close the channel                  -> CR
    Sn / sXXYY    set bit rate / BTR (channel closed) -> CR (accepted, not modelled)
    tIIILDD..     send a standard data frame          -> z CR
    TIIIIIIIILDD  send an extended data frame         -> Z CR
    rIIIL / RIIIIIIIIL  remote frames                 -> z CR / Z CR
    V / N / F     version / serial number / status    -> V1013 / NSIM1 / F00, CR
    Z0/Z1, Y.., M/m, X, empty line                    -> CR (accepted, ignored)
    anything else, or sending on a closed channel     -> BEL

Frames from the bus go to a client as `tIIIL<data>` / `TIIIIIIIIL<data>` (or
`r`/`R`) followed by CR, only while its channel is open.
"""
from __future__ import annotations

import asyncio
import logging

import can

log = logging.getLogger("sitecontroller.sim.slcan")

OK = b"\r"
BELL = b"\a"
MAX_LINE = 64  # longest legal command is ~30 characters
MAX_BACKLOG_BYTES = 1_000_000  # a client that stops reading is dropped rather than buffered forever
BITRATE_CODES = {f"S{i}" for i in range(10)}


def encode_frame(msg: can.Message) -> bytes:
    """One CAN frame as an SLCAN line (with its CR)."""
    if msg.is_extended_id:
        head = f"{'R' if msg.is_remote_frame else 'T'}{msg.arbitration_id:08X}{msg.dlc:d}"
    else:
        head = f"{'r' if msg.is_remote_frame else 't'}{msg.arbitration_id:03X}{msg.dlc:d}"
    body = "" if msg.is_remote_frame else bytes(msg.data[: msg.dlc]).hex().upper()
    return (head + body).encode() + OK


def decode_frame(line: str) -> can.Message | None:
    """An SLCAN t/T/r/R line (without CR) as a CAN frame; None if malformed."""
    kind = line[:1]
    id_len = 3 if kind in ("t", "r") else 8 if kind in ("T", "R") else 0
    if not id_len or len(line) < 1 + id_len + 1:
        return None
    try:
        can_id = int(line[1 : 1 + id_len], 16)
        dlc = int(line[1 + id_len], 10)
    except ValueError:
        return None
    if dlc > 8 or can_id > (0x7FF if id_len == 3 else 0x1FFFFFFF):
        return None
    remote = kind in ("r", "R")
    hex_data = line[2 + id_len :]
    if remote:
        if hex_data:
            return None
        data = b""
    else:
        if len(hex_data) != 2 * dlc:
            return None
        try:
            data = bytes.fromhex(hex_data)
        except ValueError:
            return None
    return can.Message(arbitration_id=can_id, is_extended_id=id_len == 8, is_remote_frame=remote, dlc=dlc,
                       data=data)


class _Client:
    def __init__(self, server: "SlcanServer", writer: asyncio.StreamWriter):
        self.server = server
        self.writer = writer
        self.open = False
        self.peer = writer.get_extra_info("peername")

    def send(self, data: bytes) -> None:
        if self.writer.is_closing():
            return
        if self.writer.transport.get_write_buffer_size() > MAX_BACKLOG_BYTES:
            log.warning("SLCAN client %s does not read its frames: dropping it", self.peer)
            self.writer.close()
            return
        self.writer.write(data)

    def handle(self, line: str) -> bytes:
        """The answer to one command line."""
        if not line:
            return OK
        cmd = line[0]
        if cmd in "tTrR":
            if not self.open or self.server.listen_only_clients.get(self):
                return BELL
            msg = decode_frame(line)
            if msg is None:
                return BELL
            self.server.from_client(self, msg)
            return (b"Z" if msg.is_extended_id else b"z") + OK
        if cmd in "OL":
            if self.open:
                return BELL
            self.open = True
            self.server.listen_only_clients[self] = cmd == "L"
            return OK
        if cmd == "C":
            self.open = False
            return OK
        if line in BITRATE_CODES or (cmd == "s" and len(line) == 5):
            return BELL if self.open else OK
        if cmd == "V":
            return b"V1013" + OK
        if cmd == "N":
            return b"NSIM1" + OK
        if cmd == "F":
            return b"F00" + OK
        if cmd in "ZYMmXU":
            return OK
        return BELL


class SlcanServer:
    """Bridges TCP clients speaking SLCAN to the virtual CAN bus `channel` of this process."""

    def __init__(self, host: str, port: int, channel: str):
        self.host, self.port, self.channel = host, port, channel
        self.clients: set[_Client] = set()
        self.listen_only_clients: dict[_Client, bool] = {}
        self.frames_from_clients = 0
        self.frames_to_clients = 0
        self._bus: can.BusABC | None = None
        self._notifier: can.Notifier | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._bus = can.Bus(interface="virtual", channel=self.channel)
        self._notifier = can.Notifier(self._bus, [self._from_bus], timeout=0.1, loop=asyncio.get_running_loop())
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
        except OSError as exc:
            await self.close()
            from .port_holder import who_listens

            holder = who_listens(self.port)
            raise OSError(f"simulated CAN adapter (SLCAN): cannot listen on {self.host}:{self.port}: "
                          + (f"held by {holder}" if holder else str(exc.strerror or exc))) from None
        if not self.port:
            self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for client in list(self.clients):
            client.writer.close()  # the client's task then reads EOF and ends
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=1.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._notifier is not None:
            self._notifier.stop(timeout=1.0)
            self._notifier = None
        if self._bus is not None:
            self._bus.shutdown()
            self._bus = None

    # --- traffic ---------------------------------------------------------------------------
    def _from_bus(self, msg: can.Message) -> None:
        if msg.is_error_frame:
            return  # SLCAN has no error frames
        line = encode_frame(msg)
        for client in self.clients:
            if client.open:
                client.send(line)
                self.frames_to_clients += 1

    def from_client(self, sender: _Client, msg: can.Message) -> None:
        self.frames_from_clients += 1
        if self._bus is not None:
            try:
                self._bus.send(msg)
            except can.CanError as exc:
                log.warning("SLCAN bridge: send to the simulated bus failed: %s", exc)
        line = encode_frame(msg)
        for client in self.clients:
            if client is not sender and client.open:
                client.send(line)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        client = _Client(self, writer)
        self.clients.add(client)
        log.info("SLCAN client %s connected to %s:%d", client.peer, self.host, self.port)
        buf = bytearray()
        try:
            while True:
                chunk = await reader.read(4096)
                if not chunk:
                    break
                buf.extend(chunk)
                while True:
                    end = buf.find(b"\r")
                    if end < 0:
                        if len(buf) > MAX_LINE:  # garbage without CR: answer BEL and drop it
                            buf.clear()
                            client.send(BELL)
                        break
                    raw, buf[:] = bytes(buf[:end]), buf[end + 1 :]
                    line = raw.decode("ascii", "replace").strip("\n")
                    client.send(client.handle(line))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.clients.discard(client)
            self.listen_only_clients.pop(client, None)
            self._tasks.discard(task)
            writer.close()
            log.info("SLCAN client %s disconnected", client.peer)
