"""Parameters of the node's inverter connection (the `devices.inverter` section)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..connection import DeviceConnection


class InverterConfig(DeviceConnection):
    MODBUS_MODELS = ("abb_esi", "abb_pqstorl", "luxpowertek", "trumpf_ac3025", "sunspec")
    HTTP_MODELS = ("indevolt",)

    model: Literal["inproc", "abb_esi", "abb_pqstorl", "luxpowertek", "trumpf_ac3025", "sunspec", "indevolt"]
    rated_w: float = Field(..., gt=0, le=10_000_000, description="inverter AC rating")
    poll_s: float = Field(0.2, ge=0.02, le=10)
