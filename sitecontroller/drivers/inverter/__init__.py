"""Inverters: Modbus models driven by profiles (`profiles/<model>.toml`), Indevolt over HTTP.

`make_inverter(config, clock)` returns the driver for `config.model`:
- the Modbus models (`InverterConfig.MODBUS_MODELS`) -> `ModbusInverter` with the
  model's profile (format: `drivers/modbus/PROFILES.md`);
- 'indevolt' (HTTP) -> `IndevoltInverter(config, clock)` from `indevolt.py`, imported
  only when asked for;
- 'inproc' is not a device: the simulator wires it directly.

`ISSUE_CODES` lists every issue code an inverter driver reports, with its
severity and meaning (for the error registry).
"""
from __future__ import annotations

from ..base import CRITICAL, ERROR, WARNING, InverterDriver
from .config import InverterConfig

MODBUS_MODELS = InverterConfig.MODBUS_MODELS
HTTP_MODELS = InverterConfig.HTTP_MODELS

ISSUE_CODES: dict[str, tuple[str, str]] = {
    "INV_COMM_LOST": (ERROR, "The inverter has not answered a poll for longer than its comm_lost_s"),
    "INV_FAULT": (ERROR, "The inverter reports a fault (fault bits set or a fault state)"),
    "INV_DECODE": (WARNING, "The inverter's answer cannot be decoded with its profile, or it refused a read"),
    "INV_WRITE_FAILED": (
        ERROR,
        "A setpoint or run/stop write was refused, did not get through, or its read-back differs",
    ),
}
assert all(sev in (WARNING, ERROR, CRITICAL) for sev, _ in ISSUE_CODES.values())


def make_inverter(config: InverterConfig, clock, soc_window: tuple[float, float] | None = None) -> InverterDriver:
    """The driver for `config.model` (raises ValueError for a model without one here).

    `soc_window` = the node's (safety.soc_reserve, safety.soc_max): models with a device-side
    SOC limit (indevolt) set it from these, so the device stops there even when the node is gone."""
    if config.model in MODBUS_MODELS:
        from .modbus_inverter import ModbusInverter

        return ModbusInverter(config, clock, soc_window=soc_window)
    if config.model == "indevolt":
        from .indevolt import IndevoltInverter  # HTTP driver, imported lazily by name

        if soc_window is None:
            return IndevoltInverter(config, clock)
        return IndevoltInverter(config, clock, soc_window=soc_window)
    raise ValueError(
        f"inverter model {config.model!r} has no driver here; supported: {', '.join(MODBUS_MODELS + HTTP_MODELS)}"
        " ('inproc' is wired by the simulator)"
    )


__all__ = ["ISSUE_CODES", "MODBUS_MODELS", "HTTP_MODELS", "make_inverter"]
from ...errors import register_codes; register_codes(ISSUE_CODES)  # noqa: E402,E702  (the core keeps one catalog)
