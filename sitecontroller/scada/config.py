"""The `scada` section of the site parameters (issue 11)."""
from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..schema_base import Strict


class ScadaParams(Strict):
    enabled: bool = Field(False, description="serve the SCADA Modbus TCP map (REGISTERS.md)")
    host: str = Field("127.0.0.1", description="address to listen on; loopback unless set (0.0.0.0: every interface)")
    port: int = Field(5502, ge=1, le=65535, description="Modbus TCP port (502 needs root)")
    unit_id: int = Field(1, ge=1, le=247)
    allow_write_from: list[str] = Field(
        default_factory=lambda: ["127.0.0.1/32"], max_length=64,
        description="CIDRs whose clients may write; every other client can read only (writes: exception 01)")
    heartbeat_timeout_s: float = Field(
        30.0, ge=1, le=3600, description="after a SCADA setpoint or mode write, Hb must change within this")
    fallback: Literal["hold_zero", "previous_mode"] = Field(
        "hold_zero", description="heartbeat lost: hold 0 W (cluster: passive), or return to what ran before")

    meter_unit_id: int | None = Field(
        2, ge=1, le=247, description="the site meter re-served read-only as a Carlo Gavazzi EM24 on this unit id (null: off)")

    @model_validator(mode="after")
    def _distinct_units(self):
        if self.meter_unit_id == self.unit_id:
            raise ValueError(f"meter_unit_id: found {self.meter_unit_id}, the unit_id of the SCADA map; allowed: "
                             "another unit id, or null (no meter gateway)")
        return self

    @field_validator("host")
    @classmethod
    def _address(cls, v: str) -> str:
        try:
            ipaddress.ip_address(v)
        except ValueError:
            raise ValueError("an IP address such as 127.0.0.1 (loopback) or 0.0.0.0 (every interface)") from None
        return v

    @field_validator("allow_write_from")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for cidr in v:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"CIDRs such as 10.0.0.0/24 or 127.0.0.1/32 ({cidr!r} is not one)") from None
        return v
