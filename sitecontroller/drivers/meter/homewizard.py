"""HomeWizard Wi-Fi P1 meter (HWE-P1) over its local HTTP API v1.

Source: HomeWizard Energy, "Local API documentation", v1, endpoints `/api`
(device information) and `/api/v1/data` (recent measurement),
https://api-documentation.homewizard.com/docs/v1/measurement
(github.com/homewizard/api-documentation, docs/v1/measurement.mdx).

What we use from `/api/v1/data` (all data points are optional in the API; the
device leaves out what the smart meter does not report):

    active_power_w                   total active power, W      (required here)
    active_power_l1_w .. _l3_w       per-phase active power, W
    active_voltage_l1_v .. _l3_v     per-phase voltage, V
    active_current_l1_a .. _l3_a     per-phase current, A
    active_frequency_hz              line frequency, Hz

    timestamp                        the telegram's own time (DSMR 0-0:1.0.0, YYMMDDhhmmss)

The smart meter sends a telegram about once a second; the P1 dongle serves the
latest one. A reading is only as fresh as its telegram: while `timestamp`
repeats (a frozen telegram: meter or dongle stuck), the driver publishes no new
reading, so `reading.t` does not advance and the reading goes stale. Without a
`timestamp` in the answer, every answer counts as new.

Sign: the API reports "active usage": positive while the site draws from the
grid, negative while it feeds in (the documentation's examples show negative
`active_power_w` on a meter with export counters). That is our convention
(DESIGN §4: grid meter positive = import), so values pass through unchanged.

The local API v1 must be enabled in the HomeWizard app; a device with the API
disabled answers 403, which we report as METER_REJECTED with that hint.
"""
from __future__ import annotations

import asyncio
import json
import math

import aiohttp

from ...process_image import MeterReading
from .config import MeterConfig
from .polling import MeterCommError, MeterDecodeError, MeterRejectedError, PollingMeter

DATA_PATH = "/api/v1/data"
PHASES = ("l1", "l2", "l3")


def _number(data: dict, key: str, *, required: bool = False):
    value = data.get(key)
    if value is None:
        if required:
            raise MeterDecodeError(f"'{key}' is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MeterDecodeError(f"'{key}' must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise MeterDecodeError(f"'{key}' is not finite")
    return value


def _phases(data: dict, pattern: str) -> tuple[float, ...]:
    """The per-phase values present, L1 first; stops at the first missing phase."""
    out = []
    for ph in PHASES:
        value = _number(data, pattern.format(ph))
        if value is None:
            break
        out.append(value)
    return tuple(out)


def telegram_time(data: dict):
    """The telegram's own timestamp (int or digit string), or None if the answer has none."""
    value = data.get("timestamp")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise MeterDecodeError(f"'timestamp' must be an integer YYMMDDhhmmss, got {value!r}")
    return value


def _document(body: bytes | str) -> dict:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MeterDecodeError(f"body is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise MeterDecodeError(f"body must be a JSON object, got {type(data).__name__}")
    return data


def parse_data(body: bytes | str | dict, t: float) -> MeterReading:
    """Turn a `/api/v1/data` body into a reading taken at monotonic time `t`.

    Raises MeterDecodeError (naming the field) on anything unusable; the
    plausibility of the values is checked by the polling base.
    """
    data = body if isinstance(body, dict) else _document(body)
    return MeterReading(
        t=t,
        p_w=_number(data, "active_power_w", required=True),
        phase_p_w=_phases(data, "active_power_{}_w"),
        phase_v=_phases(data, "active_voltage_{}_v"),
        phase_a=_phases(data, "active_current_{}_a"),
        freq_hz=_number(data, "active_frequency_hz"),
    )


class HomeWizardP1Meter(PollingMeter):
    """Polls `GET http://host:port/api/v1/data` every `poll_s`."""

    def __init__(self, config: MeterConfig, clock) -> None:
        if config.transport != "http" or config.host is None or config.port is None:
            raise ValueError("homewizard_p1 needs transport 'http' with 'host' and 'port'")
        super().__init__(config, clock)
        self._base = f"http://{config.host}:{config.port}"
        self._session: aiohttp.ClientSession | None = None
        self._telegram = None  # the last telegram timestamp seen

    @property
    def endpoint(self) -> str:
        return self._base

    async def _open(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout)

    async def _close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _read(self) -> MeterReading:
        if self._session is None:
            raise MeterCommError("driver not started")
        url = self._base + DATA_PATH
        try:
            async with self._session.get(url, headers={"Accept": "application/json"}) as resp:
                body = await resp.read()
                status = resp.status
        except asyncio.TimeoutError:
            raise MeterCommError(f"no answer within {self.config.timeout_s:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise MeterCommError(f"{type(exc).__name__}: {exc}") from None
        t = self.clock.monotonic()
        if status != 200:
            hint = " (is the local API enabled in the HomeWizard app?)" if status == 403 else ""
            raise MeterRejectedError(f"HTTP {status} for {DATA_PATH}{hint}")
        data = _document(body)
        stamp = telegram_time(data)
        if stamp is not None and stamp == self._telegram and self._latest is not None:
            t = self._latest.t  # the same telegram again: no new reading (the base drops it)
        reading = parse_data(data, t)
        self._telegram = stamp
        return reading
