"""A simulated Modbus inverter: the model's profile served live from the plant.

`SimModbusInverter(plant, config, profile=None)` serves Modbus TCP on
`config.host:config.port`, unit `config.unit_id`, with the register map of
`profile` (a name or a Profile; default `config.profile` or `config.model`).
Every read shows the plant as it is now; accepted setpoint and run/stop writes
go into `plant.inverter` (setpoint_p_w, setpoint_q_var, run_requested). It
never steps the plant's physics: the simulator's runner does.

Fault knobs (tests and the simulator CLI):
- `mute()` / `unmute()`: requests are swallowed (the client times out);
- `await drop()` / `await resume()`: close the port and every connection / listen again;
- `delay_s`: every answer comes this much later;
- `trip(fault)`: the inverter trips (`plant.inverter.trip`), reports the fault;
- `reject_writes`: every write is answered with DEVICE_FAILURE.
"""
from __future__ import annotations

import math

from ..drivers.inverter.config import InverterConfig
from ..drivers.modbus import Profile, decode_command, load_profile
from .modbus_server import ProfileServer


def inverter_quantities(plant) -> dict:
    """What the inverter measures right now (p positive = discharge), by `sim` quantity name."""
    inv, bat = plant.inverter, plant.battery
    p, q = inv.p_w, inv.q_var
    phase_v = plant.phase_v()
    phase_p = plant.phase_split(p)
    phase_q = plant.phase_split(q)
    phase_a = tuple(math.hypot(pp, qq) / v for pp, qq, v in zip(phase_p, phase_q, phase_v))
    s = math.hypot(p, q)
    dc_v = bat.pack_v
    dc_w = p / inv.efficiency if p >= 0 else p * inv.efficiency
    dc_a = dc_w / dc_v if dc_v else 0.0
    if inv.tripped:
        state = "fault"
    elif inv.running:
        state = "running"
    else:
        state = "standby"
    return {
        "p_w": p,
        "q_var": q,
        "s_va": s,
        "pf_pct": 100.0 * (p / s) if s > 1e-9 else 100.0,
        "freq_hz": plant.grid.measured_hz,
        "phase_v": phase_v,
        "line_v": tuple(v * math.sqrt(3) for v in phase_v),
        "phase_a": phase_a,
        "a_total": sum(phase_a),
        "phase_p_w": phase_p,
        "phase_q_var": phase_q,
        "dc_v": dc_v,
        "dc_w": dc_w,
        "dc_a": abs(dc_a),
        "dc_a_signed": dc_a,
        "temp_c": inv.temp_c,
        "rated_w": inv.rated_w,
        "capacity_wh": bat.capacity_wh,
        "soc_pct": 100.0 * bat.soc,
        "soh_pct": 100.0 * bat.soh,
        "state": state,
        "faults": frozenset(inv.faults),
        "bat_state": "connected" if bat.contactor_closed else "disconnected",
    }


class SimModbusInverter:
    KNOBS = {  # `sitecontroller sim faults` lists these (sim/knobs.py)
        "silent": ("mute()/unmute()", "requests are swallowed, never answered (the client times out)"),
        "dropped": ("drop()/resume()", "the Modbus port and every connection are closed (connection refused)"),
        "delay_s": "every answer comes this many seconds late",
        "reject_writes": "the inverter refuses writes: every write is answered with exception DEVICE_FAILURE",
    }

    def __init__(self, plant, config: InverterConfig, profile: str | Profile | None = None) -> None:
        if not isinstance(profile, Profile):
            profile = load_profile(profile or config.profile or config.model, kind="inverter")
        self.plant = plant
        self.config = config
        self.profile = profile
        self.server = ProfileServer(
            profile,
            host=config.host or "127.0.0.1",
            port=config.port,
            unit_id=config.unit_id,
            source=self.quantities,
            on_write=self._on_write,
        )
        self.profile = self.server.profile  # with the served (SunSpec-resolved) addresses
        self._control = self.profile.control_points()
        self.applied = 0  # accepted control writes

    def quantities(self) -> dict:
        return inverter_quantities(self.plant)

    # --- writes ----------------------------------------------------------------------------
    def _ref_w(self) -> float:
        if self.profile.ref_w == "rated":
            return self.config.rated_w
        self.server.refresh()
        return float(self.server.values([self.profile.ref_w])[self.profile.ref_w] or 0.0)

    def _on_write(self, written: dict):
        if not any(n in self._control for n in written):
            return None
        current = self.server.values(self._control)
        current.update(written)
        sp = decode_command(self.profile, current, self._ref_w())
        if sp is None:
            return None
        inv = self.plant.inverter
        inv.setpoint_p_w = sp.p_w
        inv.setpoint_q_var = sp.q_var
        inv.run_requested = sp.run
        self.applied += 1
        return None

    # --- fault knobs -------------------------------------------------------------------------
    def mute(self) -> None:
        self.server.muted = True

    def unmute(self) -> None:
        self.server.muted = False

    async def drop(self) -> None:
        await self.server.drop()

    async def resume(self) -> None:
        await self.server.resume()

    @property
    def delay_s(self) -> float:
        return self.server.delay_s

    @delay_s.setter
    def delay_s(self, value: float) -> None:
        self.server.delay_s = float(value)

    @property
    def reject_writes(self) -> bool:
        return self.server.reject_writes

    @reject_writes.setter
    def reject_writes(self, value: bool) -> None:
        self.server.reject_writes = bool(value)

    def trip(self, fault: str = "GRID_FAULT") -> None:
        self.plant.inverter.trip(fault)

    @property
    def requests(self) -> int:
        return self.server.requests

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self.server.start()

    async def close(self) -> None:
        await self.server.close()
