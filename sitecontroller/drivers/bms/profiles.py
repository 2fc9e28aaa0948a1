"""What each CAN BMS model means by its frames: signal names, units, signs, commands.

A profile turns one rack's latest decoded frames into `RackValues` (project
units: V, A with + = discharge, SOC/SOH as fractions) and says which command
frames express a `BmsCommand`. The frame layouts themselves live in the DBC
files (the package's dbc/ folder); a new BMS that speaks an existing protocol is a new DBC plus, at
most, a new profile entry, never a new driver.

Alarm and fault names are shared by all models, so the node can map them to
its error ids without knowing the BMS type:
CELL_OV, CELL_UV, OVER_TEMP, UNDER_TEMP, CHARGE_OVERCURRENT,
DISCHARGE_OVERCURRENT, SOC_LOW, CELL_IMBALANCE, INTERNAL, INTERNAL_COMM,
CONTACTOR.

Values are taken as the BMS sends them: no absolute values, no clamping. A
"not available" raw value is already NaN (codec), and an impossible value (a
negative current limit, an SOC above 100 %) reaches the node as it is, where
protection raises BMS_DATA_INVALID instead of trusting a laundered number.
"""
from __future__ import annotations

from ..base import BmsCommand
from .rack import RackValues

# --- bess_sim (dbc/bess_sim.dbc) -------------------------------------------

BESS_SIM_WARNINGS = {
    "WarnCellOV": "CELL_OV",
    "WarnCellUV": "CELL_UV",
    "WarnOverTemp": "OVER_TEMP",
    "WarnUnderTemp": "UNDER_TEMP",
    "WarnChargeOvercurrent": "CHARGE_OVERCURRENT",
    "WarnDischargeOvercurrent": "DISCHARGE_OVERCURRENT",
    "WarnSocLow": "SOC_LOW",
    "WarnCellImbalance": "CELL_IMBALANCE",
}
BESS_SIM_FAULTS = {
    "FaultCellOV": "CELL_OV",
    "FaultCellUV": "CELL_UV",
    "FaultOverTemp": "OVER_TEMP",
    "FaultUnderTemp": "UNDER_TEMP",
    "FaultChargeOvercurrent": "CHARGE_OVERCURRENT",
    "FaultDischargeOvercurrent": "DISCHARGE_OVERCURRENT",
    "FaultInternal": "INTERNAL",
    "FaultContactor": "CONTACTOR",
}
CONTACTOR_OPEN, CONTACTOR_CLOSED, CONTACTOR_PRECHARGE, CONTACTOR_FAULT = 0, 1, 2, 3
CMD_NONE, CMD_OFF, CMD_ON = 0, 1, 2  # open/disable/wake = 1, close/enable/sleep = 2
BROADCAST = 255


def _flags(frame: dict, names: dict[str, str]) -> frozenset[str]:
    return frozenset(name for sig, name in names.items() if frame.get(sig))


class BessSimProfile:
    model = "bess_sim"
    required = ("RackStatus", "RackCellVoltage", "RackCellTemp", "RackLimits", "RackAlarms")
    alive = ("RackStatus", "AliveCounter")
    command_message = "ControllerCommand"
    cmd_period_s = 0.5
    keepalive: str | None = None
    keepalive_period_s = 0.0

    def __init__(self, config=None):
        self.config = config

    def rack_values(self, frames: dict[str, dict], stamps: dict[str, float]) -> RackValues:
        st, cv, ct = frames["RackStatus"], frames["RackCellVoltage"], frames["RackCellTemp"]
        lim, al, info = frames["RackLimits"], frames["RackAlarms"], frames.get("RackInfo")
        faults = _flags(al, BESS_SIM_FAULTS)
        if st["ContactorState"] == CONTACTOR_FAULT:
            faults |= {"CONTACTOR"}
        return RackValues(
            t=min(stamps[n] for n in self.required),
            pack_v=st["PackVoltage"],
            pack_a=st["PackCurrent"],
            soc=st["SOC"] / 100.0,
            soh=st["SOH"] / 100.0,
            cell_v_min_v=cv["CellVMin"],
            cell_v_max_v=cv["CellVMax"],
            cell_v_avg_v=cv["CellVAvg"],
            cell_v_min_no=int(cv["CellVMinNo"]),
            cell_v_max_no=int(cv["CellVMaxNo"]),
            cell_t_min_c=ct["CellTMin"],
            cell_t_max_c=ct["CellTMax"],
            charge_limit_a=lim["ChargeCurrentLimit"],
            discharge_limit_a=lim["DischargeCurrentLimit"],
            charge_v_max_v=lim["ChargeVoltageLimit"],
            discharge_v_min_v=lim["DischargeVoltageLimit"],
            contactor_closed=st["ContactorState"] == CONTACTOR_CLOSED,
            balancing=bool(st["Balancing"]),
            sleeping=bool(st["Sleeping"]),
            alarms=_flags(al, BESS_SIM_WARNINGS),
            faults=faults,
            capacity_wh=info["CapacityKWh"] * 1000.0 if info and info["CapacityKWh"] > 0 else None,
        )

    can_isolate = True  # ControllerCommand.TargetRack addresses one rack

    def command_frames(self, cmd: BmsCommand, counter: int, isolated=frozenset()) -> list[tuple[str, dict]]:
        """One broadcast frame; while racks are `isolated` (offline), one frame per rack instead, with the
        isolated racks' contactors commanded open (a broadcast would close them again).
        CmdCounter counts from `counter`, one per frame."""
        def frame(i: int, target: int, closed: bool) -> tuple[str, dict]:
            return (self.command_message, {
                "TargetRack": target,
                "ContactorCmd": CMD_ON if closed else CMD_OFF,
                "BalancingCmd": CMD_ON if cmd.balancing else CMD_OFF,
                "SleepCmd": CMD_ON if cmd.sleep else CMD_OFF,
                "CmdCounter": (counter + i) & 0xFF,
            })

        if not isolated:
            return [frame(0, BROADCAST, cmd.contactor_closed)]
        racks = getattr(self.config, "racks", 1)
        return [frame(r, r, cmd.contactor_closed and r not in isolated) for r in range(racks)]

    def unsupported(self, cmd: BmsCommand) -> str | None:
        return None

    def mismatch(self, v: RackValues, cmd: BmsCommand) -> list[str]:
        """What the rack reports differently from the command (the command's read-back)."""
        out = []
        if v.contactor_closed != cmd.contactor_closed:
            out.append("contactor " + ("closed" if cmd.contactor_closed else "open"))
        if v.balancing != cmd.balancing:
            out.append("balancing " + ("on" if cmd.balancing else "off"))
        if v.sleeping != cmd.sleep:
            out.append("sleep" if cmd.sleep else "wake")
        return out


# --- pylontech (dbc/pylontech.dbc) -----------------------------------------

PYLONTECH_FAULTS = {  # protection flags: the battery has acted
    "ProtCellOV": "CELL_OV",
    "ProtCellUV": "CELL_UV",
    "ProtOverTemp": "OVER_TEMP",
    "ProtUnderTemp": "UNDER_TEMP",
    "ProtDischargeOvercurrent": "DISCHARGE_OVERCURRENT",
    "ProtChargeOvercurrent": "CHARGE_OVERCURRENT",
    "ProtSystemError": "INTERNAL",
}
PYLONTECH_WARNINGS = {
    "AlarmCellHighVoltage": "CELL_OV",
    "AlarmCellLowVoltage": "CELL_UV",
    "AlarmHighTemp": "OVER_TEMP",
    "AlarmLowTemp": "UNDER_TEMP",
    "AlarmDischargeHighCurrent": "DISCHARGE_OVERCURRENT",
    "AlarmChargeHighCurrent": "CHARGE_OVERCURRENT",
    "AlarmInternalComm": "INTERNAL_COMM",
}
PYLONTECH_EXTENSION = "ExtCellStats"


class PylontechProfile:
    """Pylontech LV V1.2. What the protocol lacks is documented in dbc/pylontech.dbc and handled here:
    cell figures from the optional 0x373 extension or derived from the pack (flagged `cells_derived`;
    US-series modules are 15 cells in series, the default), contactor = charge or discharge enabled,
    no alive counter, no commands (keep-alive 0x305 only: no rack can be isolated)."""

    DEFAULT_CELLS_IN_SERIES = 15

    model = "pylontech"
    required = ("BatteryLimits", "BatterySocSoh", "BatteryActual", "BatteryProtectAlarm", "BatteryRequest")
    alive = None
    command_message = None
    cmd_period_s = 1.0
    keepalive: str | None = "InverterKeepAlive"
    keepalive_period_s = 1.0
    can_isolate = False

    def __init__(self, config=None):
        self.cells_in_series = getattr(config, "cells_in_series", None) or self.DEFAULT_CELLS_IN_SERIES
        self.timeout_s = getattr(config, "timeout_s", 2.0)

    def rack_values(self, frames: dict[str, dict], stamps: dict[str, float]) -> RackValues:
        lim, ss, act = frames["BatteryLimits"], frames["BatterySocSoh"], frames["BatteryActual"]
        pa, req = frames["BatteryProtectAlarm"], frames["BatteryRequest"]
        t = min(stamps[n] for n in self.required)
        ext = frames.get(PYLONTECH_EXTENSION)
        if ext is not None and max(stamps.values()) - stamps[PYLONTECH_EXTENSION] > self.timeout_s:
            ext = None  # the extension stopped while the standard frames go on: do not use old cell data
        pack_v = act["Voltage"]
        per_cell = pack_v / self.cells_in_series
        if ext is not None:
            v_min, v_max = ext["MinCellVoltage"], ext["MaxCellVoltage"]
            t_min, t_max = ext["MinCellTemp"], ext["MaxCellTemp"]
            v_avg = min(max(per_cell, v_min), v_max)
            t = min(t, stamps[PYLONTECH_EXTENSION])
        else:
            v_min = v_max = v_avg = per_cell
            t_min = t_max = act["Temperature"]
        return RackValues(
            t=t,
            pack_v=pack_v,
            pack_a=-act["Current"],  # Pylontech: + = charge
            soc=ss["SOC"] / 100.0,
            soh=ss["SOH"] / 100.0,
            cell_v_min_v=v_min,
            cell_v_max_v=v_max,
            cell_v_avg_v=v_avg,
            cell_t_min_c=t_min,
            cell_t_max_c=t_max,
            charge_limit_a=lim["ChargeCurrentLimit"],  # as sent: NaN (0x8000) or negative reach the node as they are
            discharge_limit_a=lim["DischargeCurrentLimit"],
            charge_v_max_v=lim["ChargeVoltage"],
            discharge_v_min_v=lim["DischargeVoltage"],
            charge_enabled=bool(req["ChargeEnable"]),
            discharge_enabled=bool(req["DischargeEnable"]),
            force_charge=bool(req["ForceChargeRequestI"] or req["ForceChargeRequestII"]),
            contactor_closed=bool(req["ChargeEnable"] or req["DischargeEnable"]),
            alarms=_flags(pa, PYLONTECH_WARNINGS),
            faults=_flags(pa, PYLONTECH_FAULTS),
            cells_derived=ext is None,
        )

    def command_frames(self, cmd: BmsCommand, counter: int, isolated=frozenset()) -> list[tuple[str, dict]]:
        return []

    def unsupported(self, cmd: BmsCommand) -> str | None:
        wanted = []
        if not cmd.contactor_closed:
            wanted.append("contactor open")
        # balancing is not listed: a Pylontech BMS balances its cells on its own
        if cmd.sleep:
            wanted.append("sleep")
        if not wanted:
            return None
        return f"the Pylontech protocol has no command for: {', '.join(wanted)}; not applied"

    def mismatch(self, v: RackValues, cmd: BmsCommand) -> list[str]:
        return []


PROFILES = {"bess_sim": BessSimProfile, "pylontech": PylontechProfile}


def profile_for(config):
    try:
        return PROFILES[config.model](config)
    except KeyError:
        raise ValueError(f"BMS model {config.model!r} is not a CAN model ({', '.join(PROFILES)})") from None
