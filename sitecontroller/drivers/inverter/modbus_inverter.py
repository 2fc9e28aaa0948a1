"""Modbus inverters (SunSpec, LuxPower, ABB, TRUMPF, ...): one driver, one profile per model.

The register map, scaling, signs, states, fault bits and the setpoint/run
registers are data (`profiles/<model>.toml`, format in
`drivers/modbus/PROFILES.md`). This driver runs one task that, every
`config.poll_s` (absolute deadlines) or as soon as a new command arrives:

1. polls the profile's reading points and publishes an `InverterReading`;
2. if a command is pending and differs from what was last written, or the
   profile's keep-alive period has passed, writes the control points, reads
   them back and compares.

Issues (see `ISSUE_CODES` in this package): INV_COMM_LOST (no successful poll
for `config.comm_lost_s`), INV_DECODE (an answer the profile cannot decode, or
a refused read), INV_FAULT (fault bits set or a fault state), INV_WRITE_FAILED
(a write refused or lost, or a read-back that differs). A failed write is
retried every cycle and reported until one succeeds; it is never silent.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from ...process_image import InverterReading
from ..base import DeviceIssue, InverterCommand, InverterDriver
from ..modbus import (
    CodecError,
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


def _floats(values) -> tuple[float, ...]:
    return tuple(float(v) for v in values if v is not None)


def _opt(v) -> float | None:
    return None if v is None else float(v)


class ModbusInverter(InverterDriver):
    def __init__(self, config: InverterConfig, clock, profile: str | Profile | None = None) -> None:
        if config.transport not in ("tcp", "serial"):
            raise ValueError(f"inverter model {config.model!r} speaks Modbus: transport must be 'tcp' or 'serial'")
        self.config = config
        self.clock = clock
        self.profile = inverter_profile(config, profile)
        self.client = ModbusClient.from_config(config)
        self.device = ModbusDevice(self.profile, self.client)
        self._names = self.profile.poll_points()
        self._control = self.profile.control_points()
        self._latest: InverterReading | None = None
        self._values: dict = {}
        self._issues: dict[str, DeviceIssue] = {}
        self._cmd: InverterCommand | None = None
        self._written: dict | None = None
        self._written_at = 0.0
        self._heartbeat = 0
        self._last_ok: float | None = None
        self._started = 0.0
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._stats = {"polls": 0, "poll_errors": 0, "writes": 0, "write_failures": 0, "overruns": 0}

    # --- InverterDriver -----------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            return
        self._started = self.clock.monotonic()
        self._task = asyncio.create_task(self._run(), name=f"inverter-{self.config.model}")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.device.close()

    def latest(self) -> InverterReading | None:
        return self._latest

    def issues(self) -> list[DeviceIssue]:
        return list(self._issues.values())

    def stats(self) -> dict[str, float]:
        out = dict(self._stats)
        out.update({f"modbus_{k}": v for k, v in self.client.stats().items()})
        return out

    def command(self, cmd: InverterCommand) -> None:
        """Remember the command; the driver's task writes it at once (non-blocking)."""
        self._cmd = cmd
        self._wake.set()

    @property
    def endpoint(self) -> str:
        return f"{self.client.where} unit {self.config.unit_id}"

    # --- the task -----------------------------------------------------------------------
    async def _run(self) -> None:
        next_t = self.clock.monotonic()
        while True:
            try:
                await self._cycle()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not kill the driver silently
                log.exception("inverter %s: cycle failed", self.endpoint)
                self._raise(DECODE, f"{self.endpoint}: internal error: {type(exc).__name__}: {exc}")
            next_t += self.config.poll_s
            now = self.clock.monotonic()
            if next_t < now:
                self._stats["overruns"] += 1
                next_t = now
            await self._sleep_until(next_t)

    async def _sleep_until(self, t: float) -> None:
        if self._wake.is_set():
            self._wake.clear()
            return
        sleeper = asyncio.ensure_future(self.clock.sleep_until(t))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in (sleeper, waker):
                f.cancel()
        self._wake.clear()

    async def _cycle(self) -> None:
        await self._poll()
        if self._cmd is not None:
            await self._write_if_due()

    def _raise(self, code: str, text: str) -> None:
        self._issues[code] = DeviceIssue(code, text)

    def _clear(self, *codes: str) -> None:
        for c in codes:
            self._issues.pop(c, None)

    # --- reading --------------------------------------------------------------------------
    async def _poll(self) -> None:
        self._stats["polls"] += 1
        try:
            values = await self.device.read_points(self._names)
        except CommError as exc:
            self._poll_failed(str(exc))
            return
        except DeviceError as exc:
            self._raise(DECODE, f"{self.endpoint}: the inverter refused the read: {exc}")
            self._poll_failed(str(exc))
            return
        except (DecodeError, CodecError, ProfileError) as exc:
            self._raise(DECODE, f"{self.endpoint}: cannot decode the inverter's answer: {exc}")
            self._poll_failed(str(exc))
            return
        now = self.clock.monotonic()
        self._last_ok = now
        self._clear(COMM_LOST)
        self._values = values
        reading = self._reading(values, now)
        if reading is not None:
            self._latest = reading

    def _poll_failed(self, why: str) -> None:
        self._stats["poll_errors"] += 1
        since = self._last_ok if self._last_ok is not None else self._started
        silent_s = self.clock.monotonic() - since
        if silent_s >= self.config.comm_lost_s:
            self._raise(COMM_LOST, f"{self.endpoint}: no successful poll for {silent_s:.1f} s ({why})")

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
        )

    def _ref_w(self, values: dict) -> float | None:
        if self.profile.ref_w == "rated":
            return self.config.rated_w
        v = values.get(self.profile.ref_w)
        return float(v) if v else None

    # --- writing --------------------------------------------------------------------------
    async def _write_if_due(self) -> None:
        cmd = self._cmd
        ref = self._ref_w(self._values)
        if not ref:
            self._write_failed(f"the power reference {self.profile.ref_w!r} is not available; setpoint not written")
            return
        heartbeat = self._heartbeat % 65535 + 1
        target = encode_command(self.profile, cmd.p_w, cmd.q_var, cmd.run, ref, heartbeat)
        now = self.clock.monotonic()
        due = (
            self._written is None
            or WRITE_FAILED in self._issues
            or self._without_heartbeat(target) != self._without_heartbeat(self._written)
            or now - self._written_at >= self.profile.keepalive_s
        )
        if not due:
            return
        self._stats["writes"] += 1
        try:
            await self.device.write_points(target)
            self._heartbeat = heartbeat
            mismatch = await self.device.verify_points(target)
        except DeviceError as exc:
            self._write_failed(f"the inverter refused the write: {exc}")
            return
        except CommError as exc:
            self._write_failed(f"the write did not get through: {exc}")
            return
        except (DecodeError, CodecError, ProfileError) as exc:
            self._write_failed(f"cannot encode or read back the setpoint: {exc}")
            return
        if mismatch:
            diff = ", ".join(f"{n}: wrote {w}, read back {h}" for n, (w, h) in mismatch.items())
            self._write_failed(f"read-back differs ({diff})")
            return
        self._written, self._written_at = target, now
        self._clear(WRITE_FAILED)

    def _write_failed(self, text: str) -> None:
        self._stats["write_failures"] += 1
        self._written = None
        self._raise(WRITE_FAILED, f"{self.endpoint}: {text}")

    def _without_heartbeat(self, values: dict) -> dict:
        skip = {w.point for w in self.profile.writes if w.source == "heartbeat"}
        return {k: v for k, v in values.items() if k not in skip}
