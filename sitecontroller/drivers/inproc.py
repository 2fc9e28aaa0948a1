"""In-process drivers: the driver boundary over a `Plant` in the same process.

No protocol is spoken; these read the plant's state directly. They serve the
deterministic simulator (a simulated day in seconds) and fast tests. The
protocol drivers (CAN, Modbus, HTTP) are what a field node and `run-sim` use.
Each has a `silent` knob that makes it stop producing readings (comm loss).
"""
from __future__ import annotations

from ..process_image import BmsReading, InverterReading, MeterReading
from .base import BmsCommand, BmsDriver, DeviceIssue, InverterCommand, InverterDriver, MeterDriver


class _InprocDriver:
    def __init__(self, plant, clock):
        self.plant = plant
        self.clock = clock
        self.silent = False
        self._last = None

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def latest(self):
        if not self.silent:
            self._last = self._read(self.clock.monotonic())
        return self._last


class InprocBms(_InprocDriver, BmsDriver):
    def _read(self, t: float) -> BmsReading:
        b = self.plant.battery
        cells = [v for r in range(b.racks) for v in b.cell_v(r)]
        temps = [c for r in range(b.racks) for c in b.cell_t(r)]
        charge_a, discharge_a = b.limits_a()
        return BmsReading(
            t=t, soc=b.soc, soh=b.soh, pack_v=b.pack_v, pack_a=b.pack_a,
            cell_v_min_v=min(cells), cell_v_max_v=max(cells), cell_v_avg_v=sum(cells) / len(cells),
            cell_v_min_idx=cells.index(min(cells)), cell_v_max_idx=cells.index(max(cells)),
            cell_t_min_c=min(temps), cell_t_max_c=max(temps),
            charge_limit_a=charge_a, discharge_limit_a=discharge_a,
            contactor_closed=b.contactor_closed, racks_online=b.racks, racks_total=b.racks,
            capacity_wh=b.capacity_wh,
        )

    def command(self, cmd: BmsCommand) -> None:
        if self.silent:
            return
        b = self.plant.battery
        b.contactor_closed, b.balancing, b.sleeping = cmd.contactor_closed, cmd.balancing, cmd.sleep


class InprocInverter(_InprocDriver, InverterDriver):
    can_form_grid = True  # the plant models grid forming (sim/site_plant.py)
    can_set_q = True

    def _read(self, t: float) -> InverterReading:
        inv, plant = self.plant.inverter, self.plant
        return InverterReading(
            t=t, p_w=inv.p_w, q_var=inv.q_var, freq_hz=plant.grid.measured_hz,
            phase_v=plant.phase_v(), phase_a=tuple(p / v for p, v in zip(plant.phase_split(inv.p_w), plant.phase_v())),
            dc_v=plant.battery.pack_v, temp_c=inv.temp_c, running=inv.running,
            state="fault" if inv.tripped else ("running" if inv.running else "stopped"),
            faults=frozenset(inv.faults), rated_w=inv.rated_w, setpoint_p_w=inv.setpoint_p_w,
            island=plant.grid.lost,
        )

    def issues(self) -> list[DeviceIssue]:
        faults = self.plant.inverter.faults
        return [DeviceIssue("INV_FAULT", "inverter fault: " + ", ".join(sorted(faults)))] if faults else []

    def command(self, cmd: InverterCommand) -> None:
        if self.silent:
            return
        inv = self.plant.inverter
        inv.setpoint_p_w, inv.setpoint_q_var, inv.run_requested = cmd.p_w, cmd.q_var, cmd.run
        inv.grid_forming = cmd.run and cmd.grid_forming


class InprocMeter(_InprocDriver, MeterDriver):
    def _read(self, t: float) -> MeterReading:
        plant = self.plant
        grid = plant.grid_p_w
        return MeterReading(
            t=t, p_w=grid, phase_p_w=plant.phase_split(grid), phase_v=plant.phase_v(),
            phase_a=tuple(abs(p) / v for p, v in zip(plant.phase_split(grid), plant.phase_v())),
            freq_hz=plant.grid.measured_hz,
        )

    def latest(self):
        if self.plant.meter_stopped:
            return self._last
        return super().latest()
