"""Parameters of the site grid meter (the `devices.meter` section; null = no meter)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..connection import DeviceConnection


class MeterConfig(DeviceConnection):
    MODBUS_MODELS = ("em24", "em340")
    HTTP_MODELS = ("homewizard_p1",)

    model: Literal["inproc", "em24", "em340", "homewizard_p1"]
    poll_s: float = Field(0.5, ge=0.05, le=30)
    comm_lost_after: int = Field(
        3, ge=1, le=100, description="consecutive unanswered polls before METER_COMM_LOST is raised"
    )
    profile: str | None = Field(
        None, min_length=1, description="Modbus meters: a register-map profile file to use instead of the model's built-in one"
    )
