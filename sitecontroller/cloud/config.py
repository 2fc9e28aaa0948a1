"""The `cloud` section of the site parameters, and reading the files it names.

    "cloud": {"enabled": true,
              "connection_string_file": "secrets/node1.cs",   // HostName=...;DeviceId=...;SharedAccessKey=...
              "ca_cert_file": "secrets/hub-ca.pem",           // optional: trust this CA (emulator, private CA)
              "websockets": false,                            // MQTT over WSS 443 instead of MQTT/TLS 8883
              "telemetry_interval_s": 10,
              "offline_queue": {"max_age_s": 604800, "max_mb": 200}}

Relative paths are relative to the parameter file (anchored by `sitecontroller.params.load`).
The connection string is a secret: it is never logged, only its HostName and DeviceId.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from ..schema_base import Strict


class OfflineQueueParams(Strict):
    max_age_s: float = Field(604_800, ge=60, le=90 * 86_400, description="older queued messages are dropped")
    max_mb: float = Field(200, ge=1, le=100_000, description="past this size the oldest are dropped")


class CloudParams(Strict):
    enabled: bool = True
    connection_string_file: str = Field(..., min_length=1, description="file holding the device connection string")
    ca_cert_file: str | None = Field(None, min_length=1, description="PEM CA certificate to trust (emulator, private CA)")
    websockets: bool = Field(False, description="MQTT over WSS on 443 instead of MQTT/TLS on 8883")
    telemetry_interval_s: float = Field(10.0, ge=1, le=3600)
    reconnect_max_s: float = Field(300.0, ge=2, le=3600, description="reconnect attempts back off from 1 s, "
                                   "doubling up to this (with ±50 % jitter)")
    offline_queue: OfflineQueueParams = OfflineQueueParams()
    method_ttl_s: float = Field(60.0, ge=1, le=3600, description="a method request issued longer ago is refused")
    method_require_issued_at: bool = Field(
        False, description="refuse (400) a method request without `issued_at`: then none can be replayed later")
    method_rate_per_min: int = Field(30, ge=1, le=6000, description="per method; more are refused with 429")


@dataclass(frozen=True)
class HubCredentials:
    connection_string: str
    hostname: str
    device_id: str
    ca_pem: str | None


class CloudConfigError(ValueError):
    """One line naming the parameter and the file."""


def anchor(cloud: CloudParams, base: Path) -> CloudParams:
    """Relative file names made relative to `base` (the parameter file's folder)."""
    update = {}
    for key in ("connection_string_file", "ca_cert_file"):
        value = getattr(cloud, key)
        if value is not None and not Path(value).is_absolute():
            update[key] = os.path.normpath(base / value)
    return cloud.model_copy(update=update)


def read_credentials(cloud: CloudParams) -> HubCredentials:
    """The connection string and CA, checked; raises CloudConfigError with one clear line."""
    where = "$.cloud.connection_string_file"
    try:
        text = Path(cloud.connection_string_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CloudConfigError(f"{where}: cannot read {cloud.connection_string_file} ({exc.strerror or exc})") from None
    fields = dict(part.split("=", 1) for part in text.split(";") if "=" in part)
    missing = [k for k in ("HostName", "DeviceId", "SharedAccessKey") if not fields.get(k)]
    if missing or len(text.splitlines()) != 1:
        raise CloudConfigError(f"{where}: {cloud.connection_string_file} is not one line "
                               f"HostName=...;DeviceId=...;SharedAccessKey=... (missing: {', '.join(missing) or 'none'})")
    ca_pem = None
    if cloud.ca_cert_file is not None:
        try:
            ca_pem = Path(cloud.ca_cert_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CloudConfigError(f"$.cloud.ca_cert_file: cannot read {cloud.ca_cert_file} ({exc})") from None
        if "-----BEGIN CERTIFICATE-----" not in ca_pem:
            raise CloudConfigError(f"$.cloud.ca_cert_file: {cloud.ca_cert_file} holds no PEM certificate")
    return HubCredentials(text, fields["HostName"], fields["DeviceId"], ca_pem)


def file_problems(params) -> list[str]:
    """For `check-params`: the cloud files that cannot be used (none without an enabled cloud section)."""
    cloud = getattr(params, "cloud", None)
    if cloud is None or not cloud.enabled:
        return []
    try:
        read_credentials(cloud)
    except CloudConfigError as exc:
        return [str(exc)]
    return []
