"""An asyncio Modbus client for one device: TCP or RTU serial, timeouts, reconnect with backoff.

One physical link, one connection (DESIGN §4): every `ModbusClient` on the same
link (the same TCP host:port, e.g. a gateway, or the same serial port, e.g. an
inverter and a meter on one RS-485 line) shares one pymodbus connection and one
lock, so requests to different unit ids never interleave on the wire. The link
is opened by its first user and closed when its last user closes.

A thin shell around pymodbus's async clients that turns every failure into one
of two exceptions a driver can act on:

- `CommError`: no usable answer (refused, reset, timeout, not connected). The
  link's connection is dropped (a late answer can never be taken for the next
  one, whichever device it was for) and the next call reconnects, no sooner than the backoff allows (doubling
  from `backoff_min_s` to `backoff_max_s`, reset by a successful connect).
- `DeviceError`: the device answered with a Modbus exception (`.code`).

Every request is bounded by `timeout_s`; nothing here retries on its own.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time

log = logging.getLogger(__name__)

EXCEPTION_NAMES = {
    1: "ILLEGAL_FUNCTION", 2: "ILLEGAL_ADDRESS", 3: "ILLEGAL_VALUE", 4: "DEVICE_FAILURE",
    5: "ACKNOWLEDGE", 6: "DEVICE_BUSY", 10: "GATEWAY_PATH_UNAVAILABLE", 11: "GATEWAY_NO_RESPONSE",
}


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _raise_if_cancelling() -> None:
    if _cancelling():
        raise asyncio.CancelledError()


class CommError(Exception):
    """The device did not answer usefully (the link is down or timed out)."""


class DeviceError(Exception):
    """The device answered with a Modbus exception response."""

    def __init__(self, code: int, what: str):
        self.code = code
        super().__init__(f"{what}: Modbus exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})")


class _Link:
    """One physical link: its pymodbus connection, its lock and its reconnect backoff."""

    def __init__(self, key: tuple, make, where: str, timeout_s: float, backoff_min_s: float,
                 backoff_max_s: float) -> None:
        self.key, self._make, self.where = key, make, where
        self.timeout_s = timeout_s
        self.backoff_min_s, self.backoff_max_s = backoff_min_s, backoff_max_s
        self.client = None
        self.lock = asyncio.Lock()
        self.users = 0
        self._backoff_s = 0.0
        self._next_attempt = 0.0
        self.counters = {"connects": 0, "connect_failures": 0}

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.connected

    async def connect(self) -> bool:
        """Connect now (ignoring the backoff). Never raises CommError; False if it failed."""
        self.drop()
        client = None
        try:
            client = self._make()
            async with asyncio.timeout(self.timeout_s + 0.5):
                ok = await client.connect()
        except asyncio.CancelledError:
            if client is not None:
                client.close()
            raise
        except (CommError, OSError, asyncio.TimeoutError) as exc:
            _raise_if_cancelling()
            log.debug("modbus connect to %s failed: %s", self.where, exc)
            ok, client = False, None
        if ok and client is not None and client.connected:
            self.client = client
            self._backoff_s = 0.0
            self.counters["connects"] += 1
            return True
        if client is not None:
            client.close()
        self.counters["connect_failures"] += 1
        self.schedule_retry()
        return False

    def schedule_retry(self) -> None:
        self._backoff_s = min(self.backoff_max_s, max(self.backoff_min_s, self._backoff_s * 2))
        self._next_attempt = _now() + self._backoff_s

    def drop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
            self.client = None

    async def ensure(self) -> None:
        if self.connected:
            return
        if self.client is not None:  # the peer closed the link
            self.drop()
            self.schedule_retry()
        wait = self._next_attempt - _now()
        if wait > 0:
            raise CommError(f"{self.where}: not connected (next attempt in {wait:.2f} s)")
        if not await self.connect():
            raise CommError(f"{self.where}: cannot connect")


# the links in use, per event loop (a pymodbus connection belongs to one loop)
_LINKS: dict[tuple, _Link] = {}


class ModbusClient:
    def __init__(
        self,
        *,
        transport: str = "tcp",
        host: str | None = None,
        port: int | None = None,
        serial_port: str | None = None,
        baudrate: int = 9600,
        parity: str = "N",
        stopbits: int = 1,
        unit_id: int = 1,
        timeout_s: float = 1.0,
        backoff_min_s: float = 0.1,
        backoff_max_s: float = 5.0,
    ) -> None:
        if transport not in ("tcp", "serial"):
            raise ValueError(f"Modbus transport must be 'tcp' or 'serial', not {transport!r}")
        self.transport = transport
        self.host, self.port = host, port
        self.serial_port, self.baudrate, self.parity, self.stopbits = serial_port, baudrate, parity, stopbits
        self.unit_id = unit_id
        self.timeout_s = timeout_s
        self.backoff_min_s, self.backoff_max_s = backoff_min_s, backoff_max_s
        self._link: _Link | None = None
        self.rtts_s: collections.deque[float] = collections.deque(maxlen=2000)
        self.counters = {"requests": 0, "comm_errors": 0, "device_errors": 0}

    @classmethod
    def from_config(cls, config, **kw) -> "ModbusClient":
        """From any `DeviceConnection` (inverter or meter parameters)."""
        return cls(
            transport=config.transport, host=config.host, port=config.port,
            serial_port=config.serial_port, baudrate=config.baudrate, parity=config.parity,
            stopbits=config.stopbits, unit_id=config.unit_id, timeout_s=config.timeout_s, **kw,
        )

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}" if self.transport == "tcp" else f"{self.serial_port}@{self.baudrate}"

    @property
    def link_key(self) -> tuple:
        """What identifies the physical link (devices with equal keys share one connection)."""
        if self.transport == "tcp":
            return ("tcp", self.host, self.port)
        return ("serial", self.serial_port, self.baudrate, self.parity, self.stopbits)

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.connected

    @property
    def shared_by(self) -> int:
        """How many clients use this client's link right now (1 = not shared)."""
        return self._link.users if self._link is not None else 0

    def stats(self) -> dict[str, float]:
        out = dict(self.counters)
        out.update(self._link.counters if self._link is not None else {"connects": 0, "connect_failures": 0})
        if self.rtts_s:
            out["last_rtt_s"] = self.rtts_s[-1]
        return out

    # --- connection --------------------------------------------------------------
    def _make(self):
        common = dict(timeout=self.timeout_s, retries=0, reconnect_delay=0, reconnect_delay_max=0)
        if self.transport == "tcp":
            from pymodbus.client import AsyncModbusTcpClient

            return AsyncModbusTcpClient(self.host, port=self.port, **common)
        try:
            import serial  # noqa: F401  (pymodbus needs pyserial for RTU)
        except ImportError:
            raise CommError("Modbus RTU needs the 'pyserial' package, which is not installed") from None
        from pymodbus.client import AsyncModbusSerialClient

        return AsyncModbusSerialClient(
            self.serial_port, baudrate=self.baudrate, parity=self.parity, stopbits=self.stopbits, bytesize=8, **common
        )

    def _acquire(self) -> _Link:
        if self._link is None:
            key = (id(asyncio.get_running_loop()), *self.link_key)
            link = _LINKS.get(key)
            if link is None:
                link = _LINKS[key] = _Link(key, self._make, self.where, self.timeout_s,
                                           self.backoff_min_s, self.backoff_max_s)
            link.users += 1
            self._link = link
        return self._link

    async def connect(self) -> bool:
        """Connect the link now (ignoring the backoff). Never raises; False if it failed."""
        return await self._acquire().connect()

    def close(self) -> None:
        """Leave the link; the last user closes its connection."""
        link, self._link = self._link, None
        if link is None:
            return
        link.users -= 1
        if link.users <= 0:
            link.drop()
            if _LINKS.get(link.key) is link:
                del _LINKS[link.key]

    # --- requests ----------------------------------------------------------------
    async def _call(self, what: str, make_request):
        link = self._acquire()
        async with link.lock:
            await link.ensure()
            self.counters["requests"] += 1
            t0 = time.perf_counter()
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
                # that arrives as the answer does, and the caller's task then never stops
                async with asyncio.timeout(self.timeout_s + 0.5):
                    rr = await make_request(link.client)
            except asyncio.CancelledError:
                link.drop()
                raise
            except Exception as exc:  # timeout, connection lost, garbled frame: the link is unusable
                link.drop()
                if _cancelling():  # pymodbus turned our cancellation into an error: it is still one
                    raise asyncio.CancelledError() from None
                self.counters["comm_errors"] += 1
                link.schedule_retry()
                raise CommError(f"{self.where}: {what}: {type(exc).__name__}: {exc}") from None
            self.rtts_s.append(time.perf_counter() - t0)
            if rr.isError():
                self.counters["device_errors"] += 1
                raise DeviceError(getattr(rr, "exception_code", 0), f"{self.where}: {what}")
            return rr

    async def read(self, table: str, address: int, count: int) -> list[int]:
        """Read `count` holding or input registers from `address`."""
        what = f"read {table} {address}+{count}"
        if table == "holding":
            rr = await self._call(what, lambda c: c.read_holding_registers(address, count=count, device_id=self.unit_id))
        elif table == "input":
            rr = await self._call(what, lambda c: c.read_input_registers(address, count=count, device_id=self.unit_id))
        else:
            raise ValueError(f"unknown register table {table!r}")
        regs = list(rr.registers)
        if len(regs) < count:
            raise CommError(f"{self.where}: {what}: short answer ({len(regs)} registers)")
        return regs[:count]

    async def write(self, address: int, values: list[int], single: bool = False) -> None:
        """Write holding registers (FC16; FC6 when `single` and one register)."""
        what = f"write {address}+{len(values)}"
        if single and len(values) == 1:
            await self._call(what, lambda c: c.write_register(address, values[0], device_id=self.unit_id))
        else:
            await self._call(what, lambda c: c.write_registers(address, list(values), device_id=self.unit_id))


def _now() -> float:
    """The event loop's clock: monotonic time in the field, virtual time in simulated runs."""
    return asyncio.get_running_loop().time()
