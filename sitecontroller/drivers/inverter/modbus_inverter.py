"""Modbus inverters (SunSpec, LuxPower, ABB, TRUMPF, ...): one driver, one profile per model.

The register map, scaling, signs, states, fault bits and the setpoint/run
registers are data (`profiles/<model>.toml`, format in
`drivers/modbus/PROFILES.md`). The task (`drivers/polling.py`) polls every
`config.poll_s` on absolute deadlines and publishes an `InverterReading`; a
command that differs from what was last written is written at once (woken by
`command()`), and verified against the control points the next poll reads back.
Unchanged commands are rewritten every `keepalive_s` of the profile, which keeps
the device-side fail-safe (revert timers, heartbeat) from firing while the node lives.

Issues (see `ISSUE_CODES` in this package): INV_COMM_LOST (no successful poll
for `config.comm_lost_s`), INV_DECODE (an answer the profile cannot decode, or
a refused read), INV_FAULT (fault bits set or a fault state), INV_WRITE_FAILED
(a write refused or lost, or a read-back that differs). A failed write is
retried at every poll and reported until one succeeds; it is never silent.
"""
from __future__ import annotations

import logging
import math

from ...process_image import InverterReading
from ..base import InverterCommand, InverterDriver
from ..modbus import (
    CodecError,
    Failsafe,
    CommError,
    DecodeError,
    DeviceError,
    ModbusClient,
    ModbusDevice,
    Profile,
    ProfileError,
    decode_command,
    encode_command,
    load_profile,
)
from ..polling import PollingDriver, raise_if_cancelling
from .config import InverterConfig

log = logging.getLogger(__name__)

COMM_LOST, DECODE, FAULT, WRITE_FAILED = "INV_COMM_LOST", "INV_DECODE", "INV_FAULT", "INV_WRITE_FAILED"


def inverter_profile(config: InverterConfig, profile: str | Profile | None = None) -> Profile:
    """The profile given, else `config.profile`, else the model's built-in one (raises ProfileError)."""
    if isinstance(profile, Profile):
        return profile
    p = load_profile(profile or config.profile or config.model, kind="inverter")
    if p.kind != "inverter":
        raise ProfileError(f"{p.path}: [device].kind is {p.kind!r}, an inverter needs 'inverter'")
    if not p.reading_points("p_w"):
        raise ProfileError(f"{p.path} [reading]: an inverter profile needs 'p_w'")
    return p


def device_failsafe(profile: Profile, config: InverterConfig, soc_window: tuple[float, float] | None) -> Failsafe:
    """The fail-safe values the control writes carry (revert time, device SOC window in whole %)."""
    revert_s = profile.failsafe_s
    if config.failsafe_s is not None:
        if profile.failsafe != "revert":
            what = {"heartbeat": f"its heartbeat timeout is fixed by the device ({profile.failsafe_s:g} s)",
                    "none": "it has no communication timeout"}[profile.failsafe]
            raise ValueError(f"devices.inverter.failsafe_s: model {config.model!r} has no revert timer to set; {what}")
        revert_s = config.failsafe_s
    low, high = 5, 100
    if soc_window is not None:
        low = max(5, min(100, math.ceil(round(soc_window[0] * 100, 6))))
        high = max(low, min(100, math.floor(round(soc_window[1] * 100, 6))))
    return Failsafe(revert_s=revert_s, soc_low_pct=low, soc_high_pct=high)


def _floats(values) -> tuple[float, ...]:
    return tuple(float(v) for v in values if v is not None)


def _opt(v) -> float | None:
    return None if v is None else float(v)


class ModbusInverter(PollingDriver, InverterDriver):
    comm_lost_code = COMM_LOST

    def __init__(self, config: InverterConfig, clock, profile: str | Profile | None = None,
                 soc_window: tuple[float, float] | None = None) -> None:
        """`soc_window` = the node's (soc_reserve, soc_max): for profiles that write a device SOC limit."""
        if config.transport not in ("tcp", "serial"):
            raise ValueError(f"inverter model {config.model!r} speaks Modbus: transport must be 'tcp' or 'serial'")
        super().__init__(clock, poll_s=config.poll_s, comm_lost_s=config.comm_lost_s, comm_lost_polls=1)
        self.config = config
        self.profile = inverter_profile(config, profile)
        self.failsafe = device_failsafe(self.profile, config, soc_window)
        self.keepalive_s = self.profile.keepalive_s
        if self.profile.failsafe == "revert":  # rewrite well before the device reverts
            self.keepalive_s = min(self.keepalive_s, self.failsafe.revert_s / 3)
        self.client = ModbusClient.from_config(config)
        self.device = ModbusDevice(self.profile, self.client)
        self._names = self.profile.poll_points()
        self._control = self.profile.control_points()
        self.can_form_grid = any(w.source == "grid_forming" for w in self.profile.writes)
        self.can_set_q = any(w.source in ("q_var", "q_pct") for w in self.profile.writes)
        self._latest: InverterReading | None = None
        self._values: dict = {}
        self._written: dict | None = None  # the last target the device acknowledged
        self._written_at = 0.0
        self._unverified: dict | None = None  # written, to be checked against the next poll
        self._attempted: dict | None = None
        self._heartbeat = 0
        self._stats = {"poll_errors": 0}

    # --- InverterDriver -----------------------------------------------------------------
    def set_soc_window(self, soc_reserve: float, soc_max: float) -> None:
        """The device SOC limits the control writes carry (profiles with soc_low_pct/soc_high_pct): the
        target differs from what was written, so the next command() writes it at once."""
        self.failsafe = device_failsafe(self.profile, self.config, (soc_reserve, soc_max))

    async def _close(self) -> None:
        await self.device.close()

    def latest(self) -> InverterReading | None:
        return self._latest

    def stats(self) -> dict[str, float]:
        out = super().stats()
        out.update(self._stats)
        out.update({f"modbus_{k}": v for k, v in self.client.stats().items()})
        return out

    @property
    def endpoint(self) -> str:
        return f"{self.client.where} unit {self.config.unit_id}"

    def _internal_code(self) -> str:
        return DECODE

    # --- reading --------------------------------------------------------------------------
    async def _poll(self) -> bool:
        try:
            values = await self.device.read_points(self._names)
        except CommError as exc:
            raise_if_cancelling()
            self._stats["poll_errors"] += 1
            self._no_answer(str(exc))
            return False
        except DeviceError as exc:
            raise_if_cancelling()
            self._stats["poll_errors"] += 1
            self._raise(DECODE, f"{self.endpoint}: the inverter refused the read: {exc}")
            self._answered()
            return False
        except (DecodeError, CodecError, ProfileError) as exc:
            self._stats["poll_errors"] += 1
            self._raise(DECODE, f"{self.endpoint}: cannot decode the inverter's answer: {exc}")
            self._answered()
            return False
        self._answered()
        now = self.clock.monotonic()
        self._values = values
        self._verify(values)
        reading = self._reading(values, now)
        if reading is not None:
            self._latest = reading
        return True

    def _reading(self, values: dict, now: float) -> InverterReading | None:
        prof = self.profile
        r = prof.reading_values(values)
        problems = []
        state = "unknown"
        if prof.reading_points("state"):
            point = prof.reading_points("state")[0]
            raw = values.get(point)
            name = prof.state_name(point, raw)
            if name is not None:
                state = name
            elif raw is not None:
                problems.append(f"unknown state value {raw} in {point}")
        faults: set[str] = set()
        for point in prof.reading_points("faults"):
            faults |= prof.bit_names(point, values.get(point))
        fault_states = prof.reading_states("fault_states")
        if faults or state in fault_states:
            what = ", ".join(sorted(faults)) or f"state {state}"
            self._raise(FAULT, f"{self.endpoint}: the inverter reports a fault: {what}")
        else:
            self._clear(FAULT)
        p_w = r.get("p_w")
        if p_w is None:
            problems.append(f"active power ({prof.reading['p_w']}) is not available")
        if problems:
            self._raise(DECODE, f"{self.endpoint}: " + "; ".join(problems))
        else:
            self._clear(DECODE)
        if p_w is None:
            return None
        setpoint = None
        if self._control:
            ref = self._ref_w(values)
            sp = decode_command(prof, values, ref) if ref else None
            if sp is not None:
                setpoint = sp.p_w if sp.run else 0.0
        return InverterReading(
            t=now,
            p_w=float(p_w),
            q_var=float(r.get("q_var") or 0.0),
            freq_hz=_opt(r.get("freq_hz")),
            phase_v=_floats(r.get("phase_v", ())),
            phase_a=_floats(r.get("phase_a", ())),
            dc_v=_opt(r.get("dc_v")),
            temp_c=_opt(r.get("temp_c")),
            running=state in prof.reading_states("running_states"),
            state=state,
            faults=frozenset(faults),
            rated_w=self.config.rated_w,
            setpoint_p_w=setpoint,
            island=None if r.get("island") is None else bool(r["island"]),
        )

    def _ref_w(self, values: dict) -> float | None:
        if self.profile.ref_w == "rated":
            return self.config.rated_w
        v = values.get(self.profile.ref_w)
        return float(v) if v else None

    # --- writing --------------------------------------------------------------------------
    def _target(self, cmd: InverterCommand, heartbeat: int) -> dict | None:
        ref = self._ref_w(self._values)
        if not ref and not self._values:
            return None  # nothing polled yet: the first poll brings the reference
        if not ref:
            self._write_failed(f"the power reference {self.profile.ref_w!r} is not available; setpoint not written")
            return None
        return encode_command(self.profile, cmd.p_w, cmd.q_var, cmd.run, ref, heartbeat, self.failsafe,
                              cmd.grid_forming)

    async def _write(self, cmd: InverterCommand, due: bool) -> bool:
        """Write the control points when the command changed (at once), after a failure or a
        failed verification (at the next poll) and every keep-alive period; True once written."""
        heartbeat = self._heartbeat % 65535 + 1
        target = self._target(cmd, heartbeat)
        if target is None:
            return False
        plain = self._without_heartbeat(target)
        now = self.clock.monotonic()
        changed = self._written is None or plain != self._without_heartbeat(self._written)
        if not due and (not changed or plain == self._attempted):
            return not changed  # a failed write is retried at the next poll, not at every wake-up
        if due and not changed and now - self._written_at < self.keepalive_s:
            return True
        self._base_stats["writes"] += 1
        self._attempted = plain
        try:
            await self.device.write_points(target)
        except DeviceError as exc:
            raise_if_cancelling()
            self._write_failed(f"the inverter refused the write: {exc}")
            return False
        except CommError as exc:
            raise_if_cancelling()
            self._write_failed(f"the write did not get through: {exc}")
            return False
        except (DecodeError, CodecError, ProfileError) as exc:
            self._write_failed(f"cannot encode the setpoint: {exc}")
            return False
        self._heartbeat = heartbeat
        self._written, self._written_at, self._unverified = target, now, target
        return True

    def _verify(self, values: dict) -> None:
        """Check the last write against what this poll read back (DESIGN §4: verified on the next poll)."""
        target, self._unverified = self._unverified, None
        if target is None:
            return
        try:
            mismatch = self.device.compare_points(target, values)
        except DecodeError as exc:
            self._write_failed(f"cannot read back the setpoint: {exc}")
            return
        if mismatch:
            diff = ", ".join(f"{n}: wrote {w}, read back {h}" for n, (w, h) in mismatch.items())
            self._write_failed(f"read-back differs ({diff})")
            return
        self._clear(WRITE_FAILED)

    def _write_failed(self, text: str) -> None:
        self._base_stats["write_failures"] += 1
        self._written = None
        self._attempted = None if "read-back" in text else self._attempted
        self._raise(WRITE_FAILED, f"{self.endpoint}: {text}")

    def _without_heartbeat(self, values: dict) -> dict:
        skip = {w.point for w in self.profile.writes if w.source == "heartbeat"}
        return {k: v for k, v in values.items() if k not in skip}
