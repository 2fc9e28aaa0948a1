"""Parameters of the node's inverter connection (the `devices.inverter` section)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..connection import DeviceConnection


class InverterConfig(DeviceConnection):
    MODBUS_MODELS = ("abb_esi", "abb_pqstorl", "luxpowertek", "trumpf_ac3025", "sunspec", "sunspec_backup")
    HTTP_MODELS = ("indevolt",)

    model: Literal["inproc", "abb_esi", "abb_pqstorl", "luxpowertek", "trumpf_ac3025", "sunspec", "sunspec_backup",
                   "indevolt"]
    rated_w: float = Field(..., gt=0, le=10_000_000, description="inverter AC rating")
    poll_s: float = Field(0.2, ge=0.02, le=10)
    comm_lost_s: float = Field(
        2.0, gt=0, le=60, description="no successful poll for this long -> INV_COMM_LOST (Modbus models)"
    )
    failsafe_s: float | None = Field(
        None, ge=5, le=3600,
        description="Modbus models with a revert timer (sunspec, abb_esi, trumpf_ac3025): seconds after the last "
        "write at which the inverter itself reverts to 0 W when the node is gone (default: the profile's)",
    )
    profile: str | None = Field(
        None, min_length=1, description="Modbus models: a register-map profile file to use instead of the model's built-in one"
    )
