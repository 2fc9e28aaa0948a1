"""Modbus grid meters (Carlo Gavazzi EM24, EM340, ...): one driver, one profile per model.

The register map, word order, scaling and sign of each model are data
(`profiles/<model>.toml`, format in `drivers/modbus/PROFILES.md`); this
driver only polls the profile's reading points through the generic Modbus
engine and turns them into a `MeterReading` (positive = import).

The profile's `[reading]` keys a meter uses: `p_w` (required), `phase_p_w`,
`phase_v`, `phase_a` (lists, L1 first) and `freq_hz`.
"""
from __future__ import annotations

from ...process_image import MeterReading
from ..modbus import (
    CodecError,
    CommError,
    DecodeError,
    DeviceError,
    ModbusClient,
    ModbusDevice,
    Profile,
    ProfileError,
    load_profile,
    plan_reads,
)
from .config import MeterConfig
from .polling import MeterCommError, MeterDecodeError, MeterRejectedError, PollingMeter

READING_KEYS = ("p_w", "phase_p_w", "phase_v", "phase_a", "freq_hz")


def meter_profile(config: MeterConfig) -> Profile:
    """The profile `config.profile` names, else the model's built-in one (raises ProfileError)."""
    profile = load_profile(config.profile or config.model, kind="meter")
    if profile.kind != "meter":
        raise ProfileError(f"{profile.path}: [device].kind is {profile.kind!r}, a meter needs 'meter'")
    if not profile.reading_points("p_w"):
        raise ProfileError(f"{profile.path} [reading]: a meter profile needs 'p_w'")
    return profile


def _phases(values: tuple) -> tuple[float, ...]:
    """Per-phase values up to the first one the device does not provide."""
    out = []
    for v in values:
        if v is None:
            break
        out.append(float(v))
    return tuple(out)


class ModbusMeter(PollingMeter):
    def __init__(self, config: MeterConfig, clock, profile: Profile | None = None) -> None:
        if config.transport not in ("tcp", "serial"):
            raise ValueError(f"meter model {config.model!r} speaks Modbus: transport must be 'tcp' or 'serial'")
        super().__init__(config, clock)
        self.profile = profile if profile is not None else meter_profile(config)
        self.client = ModbusClient.from_config(config)
        self.device = ModbusDevice(self.profile, self.client)
        self._names = self.profile.poll_points()
        # SunSpec discovery adds requests to the first poll; a plain map needs one per block
        blocks = 4 if self.profile.is_sunspec else len(plan_reads(self.profile, self._names))
        self._requests = max(1, blocks)

    @property
    def endpoint(self) -> str:
        return f"{self.client.where} unit {self.config.unit_id}"

    @property
    def poll_timeout_s(self) -> float:
        # each request is bounded by timeout_s in the client; the poll by all of them
        return self.config.timeout_s * self._requests + 0.5

    async def _close(self) -> None:
        await self.device.close()

    async def _read(self) -> MeterReading:
        try:
            values = await self.device.read_points(self._names)
        except CommError as exc:
            raise MeterCommError(str(exc)) from None
        except DeviceError as exc:
            raise MeterRejectedError(str(exc)) from None
        except (DecodeError, CodecError) as exc:
            raise MeterDecodeError(str(exc)) from None
        t = self.clock.monotonic()
        r = self.profile.reading_values(values)
        p_w = r.get("p_w")
        if p_w is None:
            raise MeterDecodeError(f"total power ({self.profile.reading['p_w']}) is not available")
        freq = r.get("freq_hz")
        return MeterReading(
            t=t,
            p_w=float(p_w),
            phase_p_w=_phases(r.get("phase_p_w", ())),
            phase_v=_phases(r.get("phase_v", ())),
            phase_a=_phases(r.get("phase_a", ())),
            freq_hz=None if freq is None else float(freq),
        )

    def stats(self) -> dict[str, float]:
        out = super().stats()
        out.update({f"modbus_{k}": v for k, v in self.client.stats().items()})
        return out
