"""How a node reaches a Modbus or HTTP device: shared by inverter and meter parameters."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ..schema_base import Strict


class DeviceConnection(Strict):
    MODBUS_MODELS: ClassVar[tuple[str, ...]] = ()
    HTTP_MODELS: ClassVar[tuple[str, ...]] = ()

    model: str
    transport: Literal["inproc", "tcp", "serial", "http"] = "tcp"
    host: str | None = Field(None, min_length=1, description="Modbus TCP or HTTP host")
    port: int | None = Field(None, ge=1, le=65535, description="Modbus TCP or HTTP port")
    unit_id: int = Field(1, ge=0, le=247, description="Modbus unit (slave) id")
    serial_port: str | None = Field(None, min_length=1, description="e.g. /dev/ttyUSB0 for Modbus RTU")
    baudrate: int = Field(9600, ge=1200, le=115200)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    timeout_s: float = Field(1.0, gt=0, le=30)

    @model_validator(mode="after")
    def _transport_fits_model(self):
        m, t = self.model, self.transport
        if m == "inproc" and t != "inproc":
            raise ValueError("model 'inproc' needs transport 'inproc'")
        if m in self.HTTP_MODELS and t != "http":
            raise ValueError(f"model {m!r} speaks HTTP: transport must be 'http'")
        if m in self.MODBUS_MODELS and t not in ("tcp", "serial"):
            raise ValueError(f"model {m!r} speaks Modbus: transport must be 'tcp' or 'serial'")
        if t in ("tcp", "http") and (self.host is None or self.port is None):
            raise ValueError(f"transport {t!r} needs 'host' and 'port'")
        if t == "serial" and self.serial_port is None:
            raise ValueError("transport 'serial' needs 'serial_port'")
        return self
