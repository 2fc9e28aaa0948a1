"""Build the node's drivers from its parameters (the only place that picks a driver class)."""
from __future__ import annotations

from dataclasses import dataclass

from . import bms as _bms, inverter as _inverter, meter as _meter  # noqa: F401  (registers their error codes)
from .base import BmsDriver, InverterDriver, MeterDriver


@dataclass
class Devices:
    bms: BmsDriver
    inverter: InverterDriver
    meter: MeterDriver | None

    def all(self):
        return [d for d in (self.bms, self.inverter, self.meter) if d is not None]

    async def start(self) -> None:
        for d in self.all():
            await d.start()

    async def flush(self, timeout_s: float) -> bool:
        """Push every driver's last command to its device (see `Driver.flush`); True if all got there."""
        results = [await d.flush(timeout_s) for d in self.all()]
        return all(results)

    async def close(self) -> None:
        for d in self.all():
            await d.close()


def make_devices(params, clock, plant=None) -> Devices:
    """`plant` is needed only by the in-process ('inproc') models."""
    cfg = params.devices

    def needs_plant(kind):
        if plant is None:
            raise ValueError(f"devices.{kind}.model 'inproc' needs a simulated plant (run with --simulate)")
        return plant

    if cfg.bms.model == "inproc":
        from .inproc import InprocBms
        bms = InprocBms(needs_plant("bms"), clock)
    else:
        from .bms import make_bms
        bms = make_bms(cfg.bms, clock)

    if cfg.inverter.model == "inproc":
        from .inproc import InprocInverter
        inverter = InprocInverter(needs_plant("inverter"), clock)
    else:
        from .inverter import make_inverter
        inverter = make_inverter(cfg.inverter, clock, soc_window=(params.safety.soc_reserve, params.safety.soc_max))
    if params.features.BACKUP and not inverter.can_form_grid:
        raise ValueError(f"features.BACKUP: inverter model {cfg.inverter.model!r} cannot be told to form the grid "
                         "(its profile has no 'grid_forming' control write); set BACKUP false or use a model that can")

    meter = None
    if cfg.meter is not None:
        if cfg.meter.model == "inproc":
            from .inproc import InprocMeter
            meter = InprocMeter(needs_plant("meter"), clock)
        else:
            from .meter import make_meter
            meter = make_meter(cfg.meter, clock)
    return Devices(bms, inverter, meter)
