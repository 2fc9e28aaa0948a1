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

Device-side fail-safes (issue 6, 1.5), as the profile's `[control].failsafe` says,
checked every `WATCH_S` by the simulator's own task, also when nobody polls:
- "revert": the revert time is the value last written to the `revert_s` point (e.g.
  SunSpec 704 WSetRvrtTms); no control write for that long -> the power setpoint
  reverts to 0 W (the served setpoint registers show it too);
- "heartbeat": the `heartbeat` point, once written, must change within
  `failsafe_s`; otherwise the inverter stops (run off, 0 W);
- device SOC stops (points with sources `soc_low_pct` / `soc_high_pct`): discharging
  ends at or below the low one, charging at or above the high one.
`failsafe_fired` names the last one that acted (None while none did).
"""
from __future__ import annotations

import asyncio
import math

from ..drivers.inverter.config import InverterConfig
from ..drivers.modbus import Profile, decode_command, load_profile
from .modbus_server import ProfileServer

WATCH_S = 0.05  # how often the device checks its own fail-safes


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


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
        "island": 1 if plant.grid.lost else 0,
        "revert_remaining_s": 0,
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
        self._now = _loop_time  # the device's own clock: the event loop's (virtual time follows it)
        by_source = {w.source: w.point for w in self.profile.writes if w.source}
        self._revert_point = by_source.get("revert_s") if self.profile.failsafe == "revert" else None
        self._heartbeat_point = by_source.get("heartbeat") if self.profile.failsafe == "heartbeat" else None
        self._soc_points = (by_source.get("soc_low_pct"), by_source.get("soc_high_pct"))
        self._setpoint_points = [w.point for w in self.profile.writes
                                 if w.source in ("p_w", "p_pct", "window_out_pct", "window_in_pct", "discharge_pct",
                                                 "charge_pct", "discharge_w", "charge_w")]
        self._last_write: float | None = None  # monotonic time of the last accepted control write
        self._last_beat: tuple[float, float] | None = None  # (heartbeat value, when it last changed)
        self.failsafe_fired: str | None = None
        self.last_write_t: float | None = None  # when the last control write was accepted (the sim's clock)
        self.last_beat_t: float | None = None  # when the heartbeat last changed
        self._watcher: asyncio.Task | None = None

    def quantities(self) -> dict:
        q = inverter_quantities(self.plant)
        q["revert_remaining_s"] = self.revert_remaining_s()
        return q

    # --- device-side fail-safes ----------------------------------------------------------------
    def revert_remaining_s(self) -> float:
        if self._revert_point is None or self._last_write is None or self.failsafe_fired:
            return 0.0
        timer_s = float(self.server.values([self._revert_point])[self._revert_point] or 0.0)
        return max(0.0, timer_s - (self._now() - self._last_write)) if timer_s > 0 else 0.0

    def check_failsafe(self) -> None:
        """Apply the device's own fail-safes now (the watcher task calls this every WATCH_S)."""
        inv, now = self.plant.inverter, self._now()
        if self._revert_point and self._last_write is not None and self.failsafe_fired is None:
            timer_s = float(self.server.values([self._revert_point])[self._revert_point] or 0.0)
            if timer_s > 0 and now - self._last_write >= timer_s:
                inv.setpoint_p_w, inv.setpoint_q_var = 0.0, 0.0
                self.server.set_values({n: 0 for n in self._setpoint_points})
                self.failsafe_fired = "revert"
        if self._heartbeat_point and self._last_beat is not None and self.failsafe_fired is None:
            if now - self._last_beat[1] >= self.profile.failsafe_s:
                inv.setpoint_p_w, inv.setpoint_q_var, inv.run_requested = 0.0, 0.0, False
                self.failsafe_fired = "heartbeat"
        low_point, high_point = self._soc_points
        soc_pct = 100.0 * self.plant.battery.soc
        if low_point and inv.setpoint_p_w > 0:
            low = self.server.values([low_point])[low_point]
            if low is not None and soc_pct <= low:
                inv.setpoint_p_w = 0.0
                self.failsafe_fired = "soc_low"
        if high_point and inv.setpoint_p_w < 0:
            high = self.server.values([high_point])[high_point]
            if high is not None and soc_pct >= high:
                inv.setpoint_p_w = 0.0
                self.failsafe_fired = "soc_high"

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_S)
            try:
                self.check_failsafe()
            except Exception:  # noqa: BLE001  (a sim bug must not end the device)
                import logging

                logging.getLogger(__name__).exception("sim inverter: fail-safe check failed")

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
        inv.grid_forming = sp.grid_forming
        self.applied += 1
        now = self._now()
        self._last_write = self.last_write_t = now
        self.failsafe_fired = None
        if self._heartbeat_point and self._heartbeat_point in written:
            beat = written[self._heartbeat_point]
            if self._last_beat is None or beat != self._last_beat[0]:
                self._last_beat = (beat, now)
                self.last_beat_t = now
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
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="sim inverter fail-safe")

    async def close(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        await self.server.close()
