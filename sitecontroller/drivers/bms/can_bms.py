"""The CAN BMS driver: python-can in, cantools decode, per-rack state, aggregated reading out.

Receiving: a `can.Notifier` reader thread hands every frame to `_on_frame`
on the asyncio loop (`call_soon_threadsafe`), so all driver state lives on the
loop thread. The Notifier is deliberately not bound to the loop: bound, a
receive error kills its thread with a traceback (thread mode) or is raised
into the loop on every wake-up (socketcan `add_reader` mode, e.g. after
`ip link set can0 down`); unbound, it reports the error to our listener,
which raises BMS_BUS_ERROR and has the bus reopened. Decoding is the shared
`FrameCodec` (DBC from the package's dbc/ folder, per-rack id offset); a
frame that fails to decode is counted, never raised. A value outside its DBC
range is used as it is (never clamped or dropped: the node's protection judges
the reading) and reported as BMS_VALUE_OUT_OF_RANGE.

A periodic task (every `TICK_S`) sends the command frames (every
`profile.cmd_period_s` and at once on change) or the protocol's keep-alive,
watches the bus and reopens it after a failure. `latest()` and `issues()`
are computed from the per-rack state when asked, with the clock's time.

A rack is *online* while every frame its profile requires arrived within
`timeout_s` and, where the protocol has one, its alive counter moved within
`alive_timeout_s`. Only online racks enter the reading (their limits); the
last known SOC of an offline rack still enters the SOC extremes. Once the
start-up grace (`timeout_s`) is over, an offline rack is *isolated* where the
protocol can address racks (bess_sim: a per-rack ControllerCommand opens its
contactor; Pylontech cannot, and BMS_RACK_TIMEOUT says so).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import can

from ..base import BmsCommand, BmsDriver, DeviceIssue
from .codec import FrameCodec, FrameError, dbc_path, load_dbc
from .profiles import profile_for
from .rack import RackTracker, RackValues, aggregate

log = logging.getLogger("sitecontroller.drivers.bms")


class _Receiver(can.Listener):
    """Runs on the Notifier's reader thread: forwards frames and failures to the loop thread."""

    ERROR_PAUSE_S = 0.1  # a persistent receive error must not spin the reader thread

    def __init__(self, driver: "CanBmsDriver", loop: asyncio.AbstractEventLoop, bus: can.BusABC):
        self._driver = driver
        self._loop = loop
        self._bus = bus
        self._failed = False

    def on_message_received(self, msg: can.Message) -> None:
        try:
            self._loop.call_soon_threadsafe(self._driver._on_frame, msg)
        except RuntimeError:  # the loop is closed: the driver is going away
            pass

    def on_error(self, exc: Exception) -> None:
        if not self._failed:
            self._failed = True
            try:
                self._loop.call_soon_threadsafe(self._driver._rx_failed, self._bus, f"receive failed: {exc}")
            except RuntimeError:
                pass
        time.sleep(self.ERROR_PAUSE_S)


class CanBmsDriver(BmsDriver):
    TICK_S = 0.05
    BUS_ERROR_HOLD_S = 5.0  # BMS_BUS_ERROR stays this long after the last error
    DECODE_WINDOW_S = 10.0  # BMS_DECODE_ERRORS counts failures in this window
    REOPEN_S = 1.0  # wait before reopening a failed bus
    SEND_TIMEOUT_S = 0.005

    def __init__(self, config, clock):
        if config.can is None:
            raise ValueError(f"BMS model {config.model!r} needs a 'can' section")
        self.config = config
        self.clock = clock
        self.profile = profile_for(config)
        self.db = load_dbc(dbc_path(config.model, config.dbc))
        self.codec = FrameCodec(self.db, config.racks, config.rack_id_stride)
        self._racks = [RackTracker(i) for i in range(config.racks)]
        self._alive_signal = self.profile.alive[1] if self.profile.alive else None
        self._alive_message = self.profile.alive[0] if self.profile.alive else None
        self._bus: can.BusABC | None = None
        self._notifier: can.Notifier | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._t_start: float | None = None
        self._reopen_at = 0.0
        # bus health
        self._bus_error_t: float | None = None
        self._bus_error_text = ""
        self._decode_errors_t: deque[float] = deque(maxlen=10_000)
        self._decode_error_text = ""
        self._range_errors_t: deque[float] = deque(maxlen=10_000)
        self._range_error_text = ""
        # commands
        self._cmd: BmsCommand | None = None
        self._cmd_t = 0.0
        self._cmd_dirty = False
        self._cmd_next = 0.0
        self._cmd_counter = 0
        self._isolated: frozenset[int] = frozenset()  # racks whose contactor is commanded open
        self._keepalive_next = 0.0
        # aggregation cache
        self._cache_key = None
        self._cache: object = None
        self._stats = dict.fromkeys(
            ("frames_rx", "frames_decoded", "decode_errors", "values_out_of_range", "frames_ignored",
             "error_frames", "frames_tx", "tx_errors", "bus_errors", "bus_opens"), 0)

    # --- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._t_start = self.clock.monotonic()
        self._open_bus()
        self._task = asyncio.create_task(self._run(), name=f"bms-can-{self.config.can.channel}")

    async def close(self) -> None:
        """Stop the task (bounded: a task that does not stop is logged and left) and close the bus."""
        from ..polling import CLOSE_TIMEOUT_S, cancel_and_wait

        task, self._task = self._task, None
        await cancel_and_wait(task, CLOSE_TIMEOUT_S, f"BMS CAN {self.config.can.channel}")
        self._close_bus()

    async def flush(self, timeout_s: float) -> bool:
        """Send a changed command now instead of at the next tick; True if its frames went out."""
        if self._cmd is None or not self._cmd_dirty:
            return True
        errors = self._stats["tx_errors"]
        self._tick(self.clock.monotonic())  # sends the dirty command (CAN send is bounded by SEND_TIMEOUT_S)
        return not self._cmd_dirty and self._stats["tx_errors"] == errors

    def _open_bus(self) -> None:
        c = self.config.can
        try:
            self._bus = can.Bus(**c.bus_kwargs())  # slcan on a URL: no 2 s settle time (blocks the loop)
            self._notifier = can.Notifier(self._bus, [_Receiver(self, self._loop, self._bus)], timeout=0.1)
            self._stats["bus_opens"] += 1
        except Exception as exc:  # no such interface, permission, missing backend...
            self._close_bus()
            self._bus_failed(f"cannot open CAN bus {c.interface}:{c.channel}: {exc}", reopen=True)

    def _close_bus(self) -> None:
        notifier, bus = self._notifier, self._bus
        self._notifier = self._bus = None
        if notifier is not None:
            try:
                notifier.stop(timeout=1.0)
            except Exception:
                log.debug("notifier stop failed", exc_info=True)
        if bus is not None:
            try:
                bus.shutdown()
            except Exception:
                log.debug("bus shutdown failed", exc_info=True)

    def _bus_failed(self, text: str, reopen: bool = False) -> None:
        now = self.clock.monotonic()
        if self._bus_error_t is None or now - self._bus_error_t > self.BUS_ERROR_HOLD_S or text != self._bus_error_text:
            log.warning("BMS CAN bus: %s", text)
        self._bus_error_t = now
        self._bus_error_text = text
        self._stats["bus_errors"] += 1
        if reopen:
            self._close_bus()
            self._reopen_at = now + self.REOPEN_S

    def _rx_failed(self, bus: can.BusABC, text: str) -> None:
        if bus is self._bus:  # not a late report from a bus already replaced
            self._bus_failed(text, reopen=True)

    # --- receive ---------------------------------------------------------------
    def _on_frame(self, msg: can.Message) -> None:
        now = self.clock.monotonic()
        stats = self._stats
        stats["frames_rx"] += 1
        if msg.is_error_frame:
            stats["error_frames"] += 1
            self._bus_error_t = now
            self._bus_error_text = "error frames on the bus"
            return
        if msg.is_remote_frame:
            stats["frames_ignored"] += 1
            return
        try:
            decoded = self.codec.decode(msg.arbitration_id, msg.data, msg.is_extended_id)
        except FrameError as exc:
            stats["decode_errors"] += 1
            if not self._decode_errors_t:
                self._decode_error_text = str(exc)  # the episode's first: a stable issue text
            self._decode_errors_t.append(now)
            return
        if decoded is None or decoded[0] is None:
            stats["frames_ignored"] += 1  # other devices, or another controller's command
            return
        rack, name, values = decoded
        stats["frames_decoded"] += 1
        bad = self.codec.out_of_range(name, values)
        if bad is not None:  # used as it is: the node's protection must see the impossible value
            stats["values_out_of_range"] += 1
            if not self._range_errors_t:
                self._range_error_text = f"rack {rack}: {bad}"  # the episode's first: a stable issue text
            self._range_errors_t.append(now)
        self._racks[rack].update(name, values, now, self._alive_signal if name == self._alive_message else None)

    # --- periodic work -------------------------------------------------------
    async def _run(self) -> None:
        nxt = self.clock.monotonic()
        while True:
            nxt += self.TICK_S
            await self.clock.sleep_until(nxt)
            now = self.clock.monotonic()
            if now - nxt > 1.0:
                nxt = now  # after a stall, do not try to catch up tick by tick
            try:
                self._tick(now)
            except Exception:  # the task must survive anything a bus backend throws
                if asyncio.current_task().cancelling():
                    raise asyncio.CancelledError() from None
                log.exception("BMS CAN driver tick failed")

    def _tick(self, now: float) -> None:
        if self._bus is None:
            if now >= self._reopen_at:
                self._open_bus()
            if self._bus is None:
                return
        if self._notifier is not None and self._notifier.exception is not None:  # reader thread died anyway
            self._bus_failed(f"receive failed: {self._notifier.exception}", reopen=True)
            return
        try:
            state = self._bus.state
        except Exception:
            state = None
        if state == can.BusState.ERROR:
            self._bus_failed("controller in bus-off / error state")
        cmd = self._cmd
        if cmd is not None:
            isolated = self._to_isolate(now) if cmd.contactor_closed else frozenset()
            if isolated != self._isolated:
                if isolated - self._isolated:
                    log.warning("BMS rack(s) %s offline: commanding their contactors open", _racks(sorted(isolated)))
                self._isolated = isolated
                self._cmd_dirty = True
                self._cmd_t = now  # the read-back of a rejoining rack gets its full time
        if cmd is not None and (self._cmd_dirty or now >= self._cmd_next):
            self._cmd_dirty = False
            self._cmd_next = now + self.profile.cmd_period_s
            frames = self.profile.command_frames(cmd, self._cmd_counter, self._isolated)
            self._cmd_counter = (self._cmd_counter + len(frames)) & 0xFF
            for name, values in frames:
                self._send(self.codec.encode(name, values))
        if self.profile.keepalive and now >= self._keepalive_next:
            self._keepalive_next = now + self.profile.keepalive_period_s
            self._send(self.codec.encode(self.profile.keepalive, {}))

    def _send(self, msg: can.Message) -> None:
        if self._bus is None:
            return
        try:
            self._bus.send(msg, timeout=self.SEND_TIMEOUT_S)
            self._stats["frames_tx"] += 1
        except Exception as exc:  # can.CanError and backend-specific errors
            self._stats["tx_errors"] += 1
            self._bus_failed(f"send of 0x{msg.arbitration_id:X} failed: {exc}")

    # --- the driver interface --------------------------------------------------
    def command(self, cmd: BmsCommand) -> None:
        if cmd != self._cmd:
            self._cmd = cmd
            self._cmd_t = self.clock.monotonic()
            self._cmd_dirty = True

    def _rack_states(self, now: float):
        """(online values by rack, silent racks, stuck racks)."""
        cfg, required = self.config, self.profile.required
        online: dict[int, RackValues] = {}
        silent, stuck = [], []
        for tr in self._racks:
            if not tr.fresh(required, now, cfg.timeout_s):
                silent.append(tr.index)
            elif self._alive_signal is not None and tr.alive_stuck(now, cfg.alive_timeout_s):
                stuck.append(tr.index)
            else:
                online[tr.index] = tr.values(self.profile.rack_values)
        return online, silent, stuck

    def _to_isolate(self, now: float) -> frozenset[int]:
        """Offline racks, once the start-up grace is over, where the protocol can address one rack."""
        if not self.profile.can_isolate or self._t_start is None or now - self._t_start <= self.config.timeout_s:
            return frozenset()
        _, silent, stuck = self._rack_states(now)
        return frozenset(silent) | frozenset(stuck)

    def latest(self):
        online, silent, stuck = self._rack_states(self.clock.monotonic())
        required = self.profile.required
        offline = {i: self._racks[i] for i in silent + stuck if self._racks[i].complete(required)}
        key = (tuple((i, self._racks[i].version) for i in online),
               tuple((i, tr.version) for i, tr in offline.items()))
        if key != self._cache_key:
            self._cache_key = key
            last_known = {i: tr.values(self.profile.rack_values) for i, tr in offline.items()}
            self._cache = aggregate(online, self.config.racks, last_known)
        return self._cache

    def issues(self) -> list[DeviceIssue]:
        now = self.clock.monotonic()
        cfg = self.config
        out: list[DeviceIssue] = []
        if self._t_start is None:
            return out  # not started: nothing to report yet
        if self._bus is None or (self._bus_error_t is not None and now - self._bus_error_t <= self.BUS_ERROR_HOLD_S):
            out.append(DeviceIssue("BMS_BUS_ERROR", self._bus_error_text or "CAN bus not open"))
        online, silent, stuck = self._rack_states(now)
        started = now - self._t_start > cfg.timeout_s
        isolation = ("contactor open commanded (isolated)" if self.profile.can_isolate
                     else f"the {cfg.model} protocol cannot isolate a rack: check it on site")
        if silent and started:
            out.append(DeviceIssue(
                "BMS_RACK_TIMEOUT",
                f"rack(s) {_racks(silent)} of {cfg.racks} silent for more than {cfg.timeout_s:g} s: "
                f"no share of the current limits; {isolation}"))
        if stuck:
            out.append(DeviceIssue(
                "BMS_ALIVE_STUCK",
                f"alive counter of rack(s) {_racks(stuck)} stuck for more than {cfg.alive_timeout_s:g} s: "
                f"data not used; {isolation}"))
        if not online and (started or stuck):
            out.append(DeviceIssue("BMS_TIMEOUT", f"no BMS rack online (0 of {cfg.racks})"))
        while self._decode_errors_t and now - self._decode_errors_t[0] > self.DECODE_WINDOW_S:
            self._decode_errors_t.popleft()
        if self._decode_errors_t:
            out.append(DeviceIssue(  # the count is in stats(): a changing text would rewrite the error file
                "BMS_DECODE_ERRORS",
                f"frames fail to decode (counted in decode_errors), e.g. {self._decode_error_text}"))
        while self._range_errors_t and now - self._range_errors_t[0] > self.DECODE_WINDOW_S:
            self._range_errors_t.popleft()
        if self._range_errors_t:
            out.append(DeviceIssue(  # the count is in stats(), as for decode errors
                "BMS_VALUE_OUT_OF_RANGE",
                f"values outside the DBC range (counted in values_out_of_range), e.g. {self._range_error_text}"))
        derived = [i for i, v in online.items() if v.cells_derived]
        if derived:
            out.append(DeviceIssue(
                "BMS_CELL_DATA_DERIVED",
                f"rack(s) {_racks(derived)} send no cell voltages/temperatures: derived from the pack values"))
        cmd = self._cmd
        if cmd is not None:
            why = self.profile.unsupported(cmd)
            if why:
                out.append(DeviceIssue("BMS_CMD_UNSUPPORTED", why))
            elif now - self._cmd_t > max(cfg.timeout_s, 3 * self.profile.cmd_period_s):
                bad = {i: self.profile.mismatch(v, cmd) for i, v in online.items()}
                bad = {i: m for i, m in bad.items() if m}
                if bad:
                    text = "; ".join(f"rack {i}: {', '.join(m)}" for i, m in sorted(bad.items()))
                    out.append(DeviceIssue("BMS_CMD_NOT_APPLIED", f"commanded state not reported back: {text}"))
        return out

    def stats(self) -> dict[str, float]:
        out = {k: float(v) for k, v in self._stats.items()}
        online, _, _ = self._rack_states(self.clock.monotonic())
        out["racks_online"] = float(len(online))
        out["racks_total"] = float(self.config.racks)
        return out


def _racks(indices) -> str:
    return ", ".join(str(i) for i in indices)
