"""Parameters of the node's BMS connection (the `devices.bms` section)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ...schema_base import Strict


class CanBusConfig(Strict):
    """A python-can bus. On a Pi: interface "socketcan", channel "can0"."""

    interface: Literal["socketcan", "virtual", "udp_multicast", "slcan", "pcan", "kvaser"] = "socketcan"
    channel: str = Field("can0", min_length=1, max_length=64)
    bitrate: int = Field(500_000, ge=10_000, le=1_000_000)


class BmsConfig(Strict):
    """`model` names the BMS protocol; each CAN model has its DBC in the package's dbc/ folder."""

    model: Literal["inproc", "bess_sim", "pylontech"]
    can: CanBusConfig | None = None
    dbc: str | None = Field(None, min_length=1, description="DBC file name in the package's dbc/ folder, or an absolute path (default: the model's own)")
    racks: int = Field(1, ge=1, le=16, description="racks on this node's bus")
    timeout_s: float = Field(2.0, gt=0, le=60, description="a rack silent this long is offline")
    alive_timeout_s: float = Field(3.0, gt=0, le=60, description="alive counter stuck this long is an error")
    rack_id_stride: int | None = Field(
        None, ge=1, le=0x200,
        description="CAN id offset between racks (rack r sends at id + r * stride); default: the DBC's RackIdStride",
    )
    cells_in_series: int | None = Field(
        None, ge=1, le=512,
        description="series cells per rack; used only to derive a cell voltage when the BMS does not send cell "
                    "data. Default (null): the model's (pylontech: 15, the US-series modules)",
    )

    @model_validator(mode="after")
    def _bus_needed(self):
        if self.model != "inproc" and self.can is None:
            raise ValueError(f"model {self.model!r} talks CAN: a 'can' section is required")
        return self
