"""The process image: a frozen snapshot of the latest device readings (DESIGN §2.2).

Drivers publish timestamped readings whenever they receive them. Once per cycle
the shell freezes the latest of each into a `ProcessImage`; a reading older than
its staleness limit is *absent* (None) in the image, so a controller can never
act on stale data by mistake (DESIGN §2.4).

Signs and units (DESIGN §4): battery/inverter power positive = discharge; grid
meter power positive = import; SOC/SOH are fractions 0..1.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from .control.sources import SetpointReading


@dataclass(frozen=True, slots=True)
class BmsReading:
    """The node's battery, aggregated over its racks."""

    t: float  # monotonic time the data was received
    soc: float  # 0..1
    soh: float  # 0..1
    pack_v: float
    pack_a: float  # positive = discharge
    cell_v_min_v: float
    cell_v_max_v: float
    cell_v_avg_v: float
    cell_t_min_c: float
    cell_t_max_c: float
    charge_limit_a: float  # >= 0, allowed charge current
    discharge_limit_a: float  # >= 0, allowed discharge current
    contactor_closed: bool
    cell_v_min_idx: int = 0
    cell_v_max_idx: int = 0
    racks_online: int = 1
    racks_total: int = 1
    alarms: frozenset[str] = frozenset()  # warnings reported by the BMS
    faults: frozenset[str] = frozenset()  # faults reported by the BMS (critical)
    capacity_wh: float | None = None
    # Rack extremes (several racks in parallel): the emptiest and the fullest rack's SOC, over the online
    # racks and the last known SOC of configured racks that went offline. None: only `soc` is known.
    soc_min: float | None = None  # 0..1; the limiter's discharge window uses it
    soc_max: float | None = None  # 0..1; the limiter's charge window uses it
    # What the BMS allows (None / True: the protocol does not say). Voltages are pack (string) volts.
    charge_v_max_v: float | None = None  # BMS charge voltage limit: no charge at/above it
    discharge_v_min_v: float | None = None  # BMS discharge voltage limit: no discharge at/below it
    charge_enabled: bool = True  # False: the BMS forbids charging
    discharge_enabled: bool = True  # False: the BMS forbids discharging
    force_charge: bool = False  # the BMS requests a charge (reported; never widens a limit)

    @property
    def pack_w(self) -> float:
        return self.pack_v * self.pack_a


@dataclass(frozen=True, slots=True)
class InverterReading:
    t: float
    p_w: float  # active power, positive = discharge (export from the battery)
    q_var: float = 0.0
    freq_hz: float | None = None
    phase_v: tuple[float, ...] = ()
    phase_a: tuple[float, ...] = ()
    dc_v: float | None = None
    temp_c: float | None = None
    running: bool = False
    state: str = "unknown"
    faults: frozenset[str] = frozenset()
    rated_w: float | None = None
    setpoint_p_w: float | None = None  # the setpoint the inverter reports back
    island: bool | None = None  # the inverter reports the grid lost (it forms the grid or stands still); None: not reported


@dataclass(frozen=True, slots=True)
class MeterReading:
    t: float
    p_w: float  # grid power at the connection point, positive = import
    phase_p_w: tuple[float, ...] = ()
    phase_v: tuple[float, ...] = ()
    phase_a: tuple[float, ...] = ()
    freq_hz: float | None = None


@dataclass(frozen=True, slots=True)
class ProcessImage:
    """What the controllers see in one cycle. None means absent (missing or stale)."""

    t: float  # monotonic time of the freeze
    wall: float
    bms: BmsReading | None
    inverter: InverterReading | None
    meter: MeterReading | None
    meter_configured: bool = True
    stale: frozenset[str] = field(default_factory=frozenset)  # names of stale sources
    setpoints: Mapping[str, "SetpointReading"] = field(default_factory=dict)  # fresh setpoint sources by name
    setpoints_expired: frozenset[str] = field(default_factory=frozenset)  # sources whose value expired


def fresh(reading, now: float, limit_s: float):
    """The reading if it is not older than `limit_s`, else None."""
    if reading is None or now - reading.t > limit_s:
        return None
    return reading


def freeze(
    now: float,
    wall: float,
    *,
    bms: BmsReading | None,
    inverter: InverterReading | None,
    meter: MeterReading | None,
    limits_s: dict[str, float],
    meter_configured: bool = True,
    setpoints: Mapping[str, "SetpointReading"] | None = None,
    setpoints_expired: frozenset[str] = frozenset(),
) -> ProcessImage:
    """Build the cycle's image from the drivers' latest readings.

    `limits_s` maps "bms", "inverter", "meter" to their staleness limits.
    A source that has produced a reading which is now too old is listed in
    `stale`; a source that never produced one is simply absent. `setpoints`
    are the fresh setpoint sources (`SetpointSources.freeze`), passed through.
    """
    stale = set()
    latest = {"bms": bms, "inverter": inverter, "meter": meter}
    frozen = {}
    for name, reading in latest.items():
        frozen[name] = fresh(reading, now, limits_s[name])
        if reading is not None and frozen[name] is None:
            stale.add(name)
    return ProcessImage(
        t=now,
        wall=wall,
        bms=frozen["bms"],
        inverter=frozen["inverter"],
        meter=frozen["meter"],
        meter_configured=meter_configured,
        stale=frozenset(stale),
        setpoints=dict(setpoints or {}),
        setpoints_expired=setpoints_expired,
    )
