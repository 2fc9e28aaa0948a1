"""Grid services at the node: frequency response controllers, one file each (DESIGN §2.8).

`SERVICES` names each service the cluster can hold (`sitecontroller cluster service NAME`):
its direction ("up": discharge only, "down": charge only, "both"), its parameters and its
controller. `parse_params` is the one check of a service's parameters (the command edge and
the node use it). `frequency_hz(image)` is the node's measurement; `node.py`'s `GridServices`
turns the leader's allocation into the additive responses `decide` applies.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ...schema_base import parse_named
from . import aem, droop, fcr_d, fcr_n, ffr
from .base import ServiceParams


@dataclass(frozen=True)
class Service:
    name: str
    direction: str  # "up" (discharge), "down" (charge) or "both"
    Params: type[ServiceParams]
    Controller: Callable
    what: str


SERVICES = {s.name: s for s in (
    Service("ffr", "up", ffr.Params, ffr.Controller, "fast frequency reserve: full power at the activation level"),
    Service("fcr_d_up", "up", fcr_d.UpParams, fcr_d.Controller, "FCR-D up: linear 49.9 -> 49.5 Hz"),
    Service("fcr_d_down", "down", fcr_d.DownParams, fcr_d.Controller, "FCR-D down: linear 50.1 -> 50.5 Hz"),
    Service("fcr_n", "both", fcr_n.Params, fcr_n.Controller, "FCR-N: linear 49.9 .. 50.1 Hz"),
    Service("droop", "both", droop.Params, droop.Controller, "droop curve with thresholds f1 < f2 < f3 < f4"),
    Service("aem", "both", aem.Params, aem.Controller, "alert-state energy management: SOC back to its band while "
            "the 5-min mean frequency is outside 50 +/- 0.05 Hz"),
)}


def parse_params(name: str, raw) -> ServiceParams:
    """The service's validated parameters, or ValueError naming the service, the field and the rule."""
    return parse_named("service", name, {n: s.Params for n, s in SERVICES.items()}, raw)


def frequency_hz(image) -> float | None:
    """The node's frequency measurement: the newest of its inverter's and its meter's readings
    that has one (each device polled at its own rate; the faster one decides how soon a step is
    seen); None when neither is fresh (the image holds only fresh readings) or reports one."""
    readings = [r for r in (image.inverter, image.meter) if r is not None and r.freq_hz is not None]
    return max(readings, key=lambda r: r.t).freq_hz if readings else None
