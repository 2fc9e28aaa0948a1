"""Grid meters: Carlo Gavazzi EM24/EM340 over Modbus (profiles), HomeWizard P1 over HTTP.

`make_meter(config, clock)` builds the driver a `devices.meter` section asks
for. Every meter reports grid power with positive = import (DESIGN §4).
`ISSUE_CODES` lists the issues the meter drivers can report, for the node's
error registry: code -> (severity, description).

A meter problem is a warning: the node runs on without the meter (a stale
meter reading is absent from the process image, and the controllers that
need it fall back), so no meter issue stops the battery.
"""
from __future__ import annotations

from ..base import MeterDriver
from .config import MeterConfig

ISSUE_CODES: dict[str, tuple[str, str]] = {
    "METER_COMM_LOST": (
        "warning",
        "The grid meter does not answer (timeout, connection refused or reset) for several polls in a row; "
        "the node runs on without meter data. Check the meter's power, cabling/network, host, port and unit id.",
    ),
    "METER_DECODE": (
        "warning",
        "The grid meter answers, but with data that cannot be used (malformed payload, missing or out-of-range "
        "value); the reading is discarded. Check that the configured model matches the device.",
    ),
    "METER_REJECTED": (
        "warning",
        "The grid meter answers with an error instead of data (Modbus exception, HTTP error status); "
        "check the model, unit id and, for a HomeWizard P1, that its local API is enabled.",
    ),
}

MODBUS_MODELS = MeterConfig.MODBUS_MODELS
HTTP_MODELS = MeterConfig.HTTP_MODELS


def make_meter(config: MeterConfig, clock) -> MeterDriver:
    """The driver for `config.model` (not started: call `await meter.start()`)."""
    if config.model in MODBUS_MODELS:
        from .modbus_meter import ModbusMeter

        return ModbusMeter(config, clock)
    if config.model == "homewizard_p1":
        from .homewizard import HomeWizardP1Meter

        return HomeWizardP1Meter(config, clock)
    raise ValueError(
        f"meter model {config.model!r} has no driver here; supported: {', '.join(MODBUS_MODELS + HTTP_MODELS)}"
    )


__all__ = ["ISSUE_CODES", "MeterConfig", "make_meter"]
from ...errors import register_codes; register_codes(ISSUE_CODES)  # noqa: E402,E702  (the core keeps one catalog)
