"""A simulated multi-rack BMS on a real python-can bus, speaking bess_sim or Pylontech (DBC-encoded).

`SimBms(plant, config, clock)` opens its own bus from `config.can` (with the
`virtual` interface the driver and the simulator share a channel inside one
process), and every `period_s` sends each rack's frames, computed from the
plant's battery. It never steps the physics: it only reads the battery and
applies the command frames it receives (contactor, balancing, sleep).

Racks: the plant models one battery; rack r reports its own cells
(`battery.cell_v(r)`, `cell_t(r)`), an equal share of the current limits and
an equal share of the current among the racks whose contactor is closed (an
open rack carries 0 A). Contactor, balancing and sleep are kept per rack
here, commanded to all racks (TargetRack 255) or to one; the battery's
contactor is closed while any rack is closed (an isolated rack leaves the
others running), it balances while any rack does and sleeps while all racks
sleep.

Alarm (warning) and fault (protection) bits come from the plant state
against the thresholds below. The simulated BMS reports faults; it does not
open its contactors by itself.

Fault knobs for tests: `drop()` / `resume()` communication (all racks or one),
`delay_s` (every frame sent that much later), `freeze_alive()`,
`send_corrupt_frame()`, `send_error_frame()`, `internal_fault`,
`ignore_commands`, `pylontech_extension` (send the optional 0x373 cell frame),
`rack_soc` (rack -> the SOC that rack reports, e.g. racks at 5 % and 35 %),
`set_raw(frame, rack=None, **raw)` / `clear_raw()` (send raw signal values as
they are: the 0x8000 "not available" sentinel, an SOC of 101 %, a negative
limit, ChargeEnable=0, ForceChargeRequestI=1...). Cell over-voltage and
over-temperature come from the plant's own knobs (`battery.cell_v_fault_v`,
`battery.temp_fault_c`).
"""
from __future__ import annotations

import asyncio
import logging

import can

from ..drivers.bms.codec import FrameCodec, FrameError, dbc_path, load_dbc
from ..drivers.bms.profiles import BROADCAST, CMD_OFF, CMD_ON, CONTACTOR_CLOSED, CONTACTOR_OPEN

log = logging.getLogger("sitecontroller.sim.bms")

# our condition name -> (bess_sim warning, bess_sim fault, pylontech alarm, pylontech protection)
SIGNALS = {
    "CellOV": ("WarnCellOV", "FaultCellOV", "AlarmCellHighVoltage", "ProtCellOV"),
    "CellUV": ("WarnCellUV", "FaultCellUV", "AlarmCellLowVoltage", "ProtCellUV"),
    "OverTemp": ("WarnOverTemp", "FaultOverTemp", "AlarmHighTemp", "ProtOverTemp"),
    "UnderTemp": ("WarnUnderTemp", "FaultUnderTemp", "AlarmLowTemp", "ProtUnderTemp"),
    "ChargeOvercurrent": (
        "WarnChargeOvercurrent", "FaultChargeOvercurrent", "AlarmChargeHighCurrent", "ProtChargeOvercurrent"),
    "DischargeOvercurrent": (
        "WarnDischargeOvercurrent", "FaultDischargeOvercurrent", "AlarmDischargeHighCurrent", "ProtDischargeOvercurrent"),
    "SocLow": ("WarnSocLow", None, None, None),
    "CellImbalance": ("WarnCellImbalance", None, None, None),
    "Internal": (None, "FaultInternal", "AlarmInternalComm", "ProtSystemError"),
}


class SimBms:
    KNOBS = {  # `sitecontroller sim faults` lists these (sim/knobs.py)
        "silent": "racks that send nothing: all, none, or rack numbers like 1 (a silent BMS, a silent rack)",
        "alive_frozen": "racks whose alive counter stops moving: all, none, or rack numbers",
        "delay_s": "every frame is sent this many seconds late",
        "internal_fault": "the BMS reports an internal fault (protection)",
        "ignore_commands": "the BMS receives contactor/balancing/sleep commands but does not carry them out",
        "pylontech_extension": "pylontech: also send the optional 0x373 cell-statistics frame",
        "corrupt_frame": ("send_corrupt_frame(kind)", "send one bad frame now: short (cut to 3 bytes) or range (SOC > 100 %)"),
        "error_frame": ("send_error_frame()", "send one CAN error frame now"),
    }
    PERIOD_S = 0.1
    INFO_PERIOD_S = 1.0
    CELL_OV_WARN_V = 3.60
    CELL_OV_FAULT_V = 3.65
    CELL_UV_WARN_V = 2.90
    CELL_UV_FAULT_V = 2.80
    OVER_TEMP_WARN_C = 50.0
    OVER_TEMP_FAULT_C = 55.0
    UNDER_TEMP_WARN_C = 0.0
    UNDER_TEMP_FAULT_C = -10.0
    OVERCURRENT_WARN_FACTOR = 1.10  # x the BMS's own limit (and at least 1 A over it)
    OVERCURRENT_FAULT_C = 1.5  # x the 1C current
    SOC_LOW_WARN = 0.05
    CELL_IMBALANCE_WARN_V = 0.10
    CHARGE_V_PER_CELL = 3.55
    DISCHARGE_V_PER_CELL = 2.80

    def __init__(self, plant, config, clock, period_s: float | None = None):
        if config.model not in ("bess_sim", "pylontech") or config.can is None:
            raise ValueError(f"SimBms speaks the CAN models bess_sim and pylontech, not {config.model!r}")
        self.plant = plant
        self.config = config
        self.clock = clock
        self.period_s = period_s or self.PERIOD_S
        self.racks = config.racks
        self.codec = FrameCodec(load_dbc(dbc_path(config.model, config.dbc)), config.racks, config.rack_id_stride)
        b = plant.battery
        self.contactor = [b.contactor_closed] * self.racks
        self.balancing = [b.balancing] * self.racks
        self.sleeping = [b.sleeping] * self.racks
        self._alive = [0] * self.racks
        # knobs
        self.silent: set[int] = set()
        self.alive_frozen: set[int] = set()
        self.delay_s = 0.0
        self.internal_fault = False
        self.pylontech_extension = True
        self.ignore_commands = False  # a BMS that receives but does not carry out commands
        self.rack_soc: dict[int, float] = {}  # rack -> reported SOC (fraction) instead of the plant's
        self._raw: dict[tuple[str, int | None], dict[str, int]] = {}  # (frame, rack or None = all) -> raw values
        # what the controller sent
        self.commands_received = 0
        self.keepalives_received = 0
        self.last_command: dict | None = None
        self.frames_sent = 0
        self._bus: can.BusABC | None = None
        self._notifier: can.Notifier | None = None
        self._task: asyncio.Task | None = None
        self._delayed: set[asyncio.TimerHandle] = set()
        self._info_next = 0.0

    # --- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        c = self.config.can
        self._bus = can.Bus(interface=c.interface, channel=c.channel, bitrate=c.bitrate)
        self._notifier = can.Notifier(self._bus, [self._on_frame], timeout=0.1, loop=asyncio.get_running_loop())
        self._task = asyncio.create_task(self._run(), name=f"sim-bms-{c.channel}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for handle in self._delayed:
            handle.cancel()
        self._delayed.clear()
        if self._notifier is not None:
            self._notifier.stop(timeout=1.0)
            self._notifier = None
        if self._bus is not None:
            self._bus.shutdown()
            self._bus = None

    # --- knobs ---------------------------------------------------------------
    def _which(self, rack: int | None) -> range | tuple[int]:
        return range(self.racks) if rack is None else (rack,)

    def drop(self, rack: int | None = None) -> None:
        """Stop sending (every rack, or one)."""
        self.silent.update(self._which(rack))

    def resume(self, rack: int | None = None) -> None:
        self.silent.difference_update(self._which(rack))

    def freeze_alive(self, rack: int | None = None, frozen: bool = True) -> None:
        for r in self._which(rack):
            (self.alive_frozen.add if frozen else self.alive_frozen.discard)(r)

    def send_corrupt_frame(self, rack: int = 0, kind: str = "short") -> None:
        """One bad frame: 'short' (a status frame cut to 3 bytes) or 'range' (SOC one raw step above 100 %,
        the rest of the frame zero)."""
        name = "RackStatus" if self.config.model == "bess_sim" else "BatterySocSoh"
        good = self.frames(rack)[name]
        if kind == "short":
            msg = self.codec.encode(name, good, rack)
            msg.data, msg.dlc = msg.data[:3], 3
        elif kind == "range":
            sig = self.codec.message(name).get_signal_by_name("SOC")
            raw = {k: 0 for k in good}
            raw["SOC"] = round((sig.maximum - sig.offset) / sig.scale) + 1
            msg = self.codec.encode_raw(name, raw, rack)
        else:
            raise ValueError(f"unknown corrupt frame kind {kind!r}")
        self._send(msg)

    def set_raw(self, frame: str, rack: int | None = None, **raw: int) -> None:
        """Send these raw (unscaled) signal values in `frame` of one rack (None: every rack) until cleared."""
        msg = self.codec.message(frame)
        unknown = set(raw) - {sig.name for sig in msg.signals}
        if unknown:
            raise ValueError(f"{frame} has no signal {', '.join(sorted(unknown))}")
        self._raw.setdefault((frame, rack), {}).update(raw)

    def clear_raw(self) -> None:
        self._raw.clear()

    def send_error_frame(self) -> None:
        self._send(can.Message(is_error_frame=True, arbitration_id=0, data=b"", is_extended_id=False))

    # --- receive commands ----------------------------------------------------
    def _on_frame(self, msg: can.Message) -> None:
        if msg.is_error_frame or msg.is_remote_frame:
            return
        try:
            decoded = self.codec.decode(msg.arbitration_id, msg.data, msg.is_extended_id)
        except FrameError as exc:
            log.warning("simulated BMS: bad frame from the controller: %s", exc)
            return
        if decoded is None or decoded[0] is not None:
            return
        _, name, values = decoded
        if name == "ControllerCommand":
            self.commands_received += 1
            self.last_command = dict(values)
            if not self.ignore_commands:
                self._apply_command(values)
        elif name == "InverterKeepAlive":
            self.keepalives_received += 1

    def _apply_command(self, v: dict) -> None:
        target = int(v["TargetRack"])
        racks = range(self.racks) if target == BROADCAST else ((target,) if target < self.racks else ())
        for r in racks:
            for state, key in (
                (self.contactor, "ContactorCmd"), (self.balancing, "BalancingCmd"), (self.sleeping, "SleepCmd")
            ):
                if v[key] == CMD_ON:
                    state[r] = True
                elif v[key] == CMD_OFF:
                    state[r] = False
        b = self.plant.battery
        b.contactor_closed = any(self.contactor)
        b.balancing = any(self.balancing)
        b.sleeping = all(self.sleeping)

    # --- send ----------------------------------------------------------------
    async def _run(self) -> None:
        nxt = self.clock.monotonic()
        while True:
            now = self.clock.monotonic()
            info = now >= self._info_next
            if info:
                self._info_next = now + self.INFO_PERIOD_S
            for r in range(self.racks):
                if r in self.silent:
                    continue
                try:
                    for name, values in self.frames(r, info).items():
                        self._send(self._encode(name, values, r))
                except Exception:
                    log.exception("simulated BMS: building rack %d frames failed", r)
            nxt += self.period_s
            if nxt < now:
                nxt = now + self.period_s
            await self.clock.sleep_until(nxt)

    def _send(self, msg: can.Message) -> None:
        if self.delay_s > 0:
            loop = asyncio.get_running_loop()
            handle = loop.call_later(self.delay_s, lambda: (self._delayed.discard(handle), self._send_now(msg)))
            self._delayed.add(handle)
        else:
            self._send_now(msg)

    def _encode(self, name: str, values: dict, rack: int) -> can.Message:
        """The frame, with the `set_raw` overrides for this frame and rack applied."""
        raw = {**self._raw.get((name, None), {}), **self._raw.get((name, rack), {})}
        msg = self.codec.encode(name, values, rack)
        if not raw:
            return msg
        m = self.codec.message(name)
        return self.codec.encode_raw(name, {**m.decode_simple(bytes(msg.data), False, False), **raw}, rack)

    def rack_a(self, rack: int) -> float:
        """The current of one rack: the racks with a closed contactor share it evenly."""
        closed = [r for r in range(self.racks) if self.contactor[r]] or list(range(self.racks))
        return self.plant.battery.pack_a / len(closed) if rack in closed else 0.0

    def _send_now(self, msg: can.Message) -> None:
        if self._bus is None:
            return
        try:
            self._bus.send(msg)
            self.frames_sent += 1
        except can.CanError as exc:
            log.warning("simulated BMS: send failed: %s", exc)

    # --- plant state -> frames -------------------------------------------------
    def conditions(self, rack: int) -> tuple[set[str], set[str]]:
        """(warnings, faults) of one rack, from the plant state against the class thresholds."""
        b = self.plant.battery
        cells, temps = b.cell_v(rack), b.cell_t(rack)
        i_rack = self.rack_a(rack)
        charge_lim, discharge_lim = (x / self.racks for x in b.limits_a())
        one_c = b.usable_wh / b.nominal_v / self.racks
        warn, fault = set(), set()

        def check(name, value, warn_at, fault_at, above=True):
            if (value >= fault_at) if above else (value <= fault_at):
                fault.add(name)
            elif (value >= warn_at) if above else (value <= warn_at):
                warn.add(name)

        check("CellOV", max(cells), self.CELL_OV_WARN_V, self.CELL_OV_FAULT_V)
        check("CellUV", min(cells), self.CELL_UV_WARN_V, self.CELL_UV_FAULT_V, above=False)
        check("OverTemp", max(temps), self.OVER_TEMP_WARN_C, self.OVER_TEMP_FAULT_C)
        check("UnderTemp", min(temps), self.UNDER_TEMP_WARN_C, self.UNDER_TEMP_FAULT_C, above=False)
        for name, current, limit in (
            ("DischargeOvercurrent", i_rack, discharge_lim), ("ChargeOvercurrent", -i_rack, charge_lim)
        ):
            if current > self.OVERCURRENT_FAULT_C * one_c:
                fault.add(name)
            elif current > max(limit * self.OVERCURRENT_WARN_FACTOR, limit + 1.0):
                warn.add(name)
        if self.rack_soc.get(rack, b.soc) < self.SOC_LOW_WARN:
            warn.add("SocLow")
        if max(cells) - min(cells) > self.CELL_IMBALANCE_WARN_V:
            warn.add("CellImbalance")
        if self.internal_fault:
            fault.add("Internal")
        return warn, fault

    def frames(self, r: int, info: bool = False) -> dict[str, dict]:
        """Signal values of every frame rack `r` sends now (`info`: with the 1 s frames); advances its alive counter."""
        b = self.plant.battery
        cells, temps = b.cell_v(r), b.cell_t(r)
        i_min, i_max = cells.index(min(cells)), cells.index(max(cells))
        t_min, t_max = temps.index(min(temps)), temps.index(max(temps))
        charge_lim, discharge_lim = (x / self.racks for x in b.limits_a())
        warn, fault = self.conditions(r)
        closed = self.contactor[r] and b.contactor_closed
        pack_v, pack_a = sum(cells), self.rack_a(r)
        soc = self.rack_soc.get(r, b.soc)
        n = len(cells)
        if r not in self.alive_frozen:
            self._alive[r] = (self._alive[r] + 1) & 0xFF
        if self.config.model == "bess_sim":
            frames = {
                "RackStatus": {
                    "PackVoltage": pack_v, "PackCurrent": pack_a, "SOC": soc * 100, "SOH": b.soh * 100,
                    "ContactorState": CONTACTOR_CLOSED if closed else CONTACTOR_OPEN,
                    "Balancing": int(self.balancing[r]), "Sleeping": int(self.sleeping[r] or b.sleeping),
                    "AliveCounter": self._alive[r],
                },
                "RackCellVoltage": {
                    "CellVMin": cells[i_min], "CellVMax": cells[i_max], "CellVAvg": pack_v / n,
                    "CellVMinNo": i_min + 1, "CellVMaxNo": i_max + 1,
                },
                "RackCellTemp": {
                    "CellTMin": temps[t_min], "CellTMax": temps[t_max], "CellTMinNo": t_min + 1, "CellTMaxNo": t_max + 1,
                },
                "RackLimits": {
                    "ChargeCurrentLimit": charge_lim, "DischargeCurrentLimit": discharge_lim,
                    "ChargeVoltageLimit": n * self.CHARGE_V_PER_CELL, "DischargeVoltageLimit": n * self.DISCHARGE_V_PER_CELL,
                },
                "RackAlarms": self._bits(warn, fault, 0, 1),
            }
            if info:
                frames["RackInfo"] = {"CapacityKWh": b.capacity_wh / self.racks / 1000, "CellCount": n, "ProtocolVersion": 1}
            return frames
        alarm = self._bits(warn, fault, 2, 3)
        alarm.update(ModuleCount=1, ManufacturerTag=0x4E50)  # 'P' 'N'
        can_run = closed and not fault
        frames = {
            "BatteryLimits": {
                "ChargeVoltage": n * self.CHARGE_V_PER_CELL, "ChargeCurrentLimit": charge_lim,
                "DischargeCurrentLimit": discharge_lim, "DischargeVoltage": n * self.DISCHARGE_V_PER_CELL,
            },
            "BatterySocSoh": {"SOC": round(soc * 100), "SOH": round(b.soh * 100)},
            "BatteryActual": {"Voltage": pack_v, "Current": -pack_a, "Temperature": sum(temps) / len(temps)},
            "BatteryProtectAlarm": alarm,
            "BatteryRequest": {
                "ChargeEnable": int(can_run and charge_lim > 0), "DischargeEnable": int(can_run and discharge_lim > 0),
                "ForceChargeRequestI": int(soc < self.SOC_LOW_WARN),
            },
        }
        if info:
            frames["Manufacturer"] = {"ManufacturerName": int.from_bytes(b"PYLON   ", "little")}
        if self.pylontech_extension:
            frames["ExtCellStats"] = {
                "MinCellVoltage": cells[i_min], "MaxCellVoltage": cells[i_max],
                "MinCellTemp": temps[t_min], "MaxCellTemp": temps[t_max],
            }
        return frames

    @staticmethod
    def _bits(warn: set[str], fault: set[str], warn_col: int, fault_col: int) -> dict[str, int]:
        bits = {}
        for cond, names in SIGNALS.items():
            if names[warn_col]:
                bits[names[warn_col]] = int(cond in warn or cond in fault)
            if names[fault_col]:
                bits[names[fault_col]] = int(cond in fault)
        return bits
