"""Parameters of the node's BMS connection (the `devices.bms` section)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ...schema_base import Strict


SLCAN_BITRATES = (10_000, 20_000, 50_000, 83_300, 100_000, 125_000, 250_000, 500_000, 750_000, 1_000_000)


class CanBusConfig(Strict):
    """A python-can bus. On a Pi: interface "socketcan", channel "can0".

    `slcan` is a serial (USB) CAN adapter: channel `/dev/ttyACM0`, or a pyserial
    URL such as `socket://127.0.0.1:15023` (the simulator serves its BMS so).
    """

    interface: Literal["socketcan", "virtual", "slcan", "pcan", "kvaser"] = "socketcan"
    channel: str = Field("can0", min_length=1, max_length=64)
    bitrate: int = Field(500_000, ge=10_000, le=1_000_000)

    @model_validator(mode="after")
    def _slcan_bitrate(self):
        if self.interface == "slcan" and self.bitrate not in SLCAN_BITRATES:
            raise ValueError(f"an slcan adapter runs at one of {', '.join(map(str, SLCAN_BITRATES))} bit/s")
        return self

    def bus_kwargs(self) -> dict:
        """Keyword arguments for `can.Bus`. A network (URL) slcan channel needs no 2 s settle time after opening."""
        kw = {"interface": self.interface, "channel": self.channel, "bitrate": self.bitrate}
        if self.interface == "slcan" and "://" in self.channel:
            kw["sleep_after_open"] = 0
        return kw


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
