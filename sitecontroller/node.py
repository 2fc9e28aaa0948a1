"""One node's cycle: read → decide → write (DESIGN §2.2).

`Node.step()` is one cycle: freeze the drivers' latest readings into a
process image, sync errors from the drivers and the protection checks,
execute queued commands, move the state machine, decide, and hand the
setpoints to the drivers. It never waits on I/O, so the same code runs under
the real clock (a field node) and the simulated one (tests, simulated days).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from . import control
from . import limits as limiter
from .commands import DONE, FAILED, REJECTED, CommandBook
from .cycle import CycleStats
from .drivers.base import BmsCommand, InverterCommand
from .drivers.factory import Devices
from .errors import ErrorRegistry
from .process_image import ProcessImage, freeze
from .state_machine import NodeStateMachine

log = logging.getLogger("sitecontroller.node")

EXIT_CODES = {"restart": 75, "reboot": 76}  # what the service unit maps (README: "Running as a service")
STOP_RAMP_S = 0.8  # an orderly stop ramps to 0 W in about this long, whatever the ramp parameter
UNCONTROLLED_LIMIT_S = 5.0  # inverter silent while the BMS sees power flowing this long: critical


@dataclass
class LocalRequest:
    p_w: float
    expires_at: float  # monotonic
    command_id: str


class Node:
    def __init__(self, params, clock, devices: Devices, *, persist: bool = True):
        self.params = params
        self.clock = clock
        self.devices = devices
        data = params.data_dir if persist else None
        self.errors = ErrorRegistry(clock, data / "errors.json" if data else None)
        self.commands = CommandBook(clock, data / "audit.jsonl" if data else None)
        self.states = NodeStateMachine(self.errors.run_blocker, self.errors.error_blocker, clock.wall)
        self.stats = CycleStats()
        self.started_at = clock.monotonic()
        self.request: LocalRequest | None = None
        self.setpoint_w = 0.0
        self.stop_phase: str | None = None  # orderly stop: "ramp" -> "off" (inverter) -> "open" (contactors)
        self._stop_ramp_w_per_s: float | None = None
        self._uncontrolled_since: float | None = None
        self.image: ProcessImage | None = None
        self.decision: control.Decision | None = None
        self._last_step: float | None = None
        self._rated_w = params.devices.inverter.rated_w
        self._idle_w = max(100.0, 0.02 * self._rated_w)  # battery power below this counts as idle

    # --- the cycle ------------------------------------------------------------------
    def step(self) -> None:
        """One cycle. Never raises: a failing cycle commands the safe state instead."""
        try:
            self._step()
        except Exception as exc:
            self._fail_safe(exc)
        else:
            if self.errors.is_active("CYCLE_FAILED"):
                self.errors.clear("CYCLE_FAILED")

    def _step(self) -> None:
        now = self.clock.monotonic()
        dt = self.params.cycle.period_s if self._last_step is None else max(0.0, now - self._last_step)
        self._last_step = now
        d = self.devices
        image = freeze(
            now,
            self.clock.wall(),
            bms=d.bms.latest(),
            inverter=d.inverter.latest(),
            meter=d.meter.latest() if d.meter else None,
            limits_s=self.params.staleness.by_source(),
            meter_configured=d.meter is not None,
        )
        self.image = image
        self._sync_errors(image, now)
        for cmd in self.commands.take():
            self._execute(cmd, image)
        self._expire_request(now)
        self._drive_state()
        if self.states.state in ("restart", "reboot"):
            self.begin_stop()
        self._write(self._decide(image, dt))

    def _write(self, decision: control.Decision) -> None:
        self.decision = decision
        self.setpoint_w = decision.setpoint_w
        self.devices.inverter.command(InverterCommand(p_w=decision.setpoint_w, run=decision.inverter_run))
        self.devices.bms.command(BmsCommand(decision.contactor_closed, decision.balancing, decision.bms_sleep))

    def _decide(self, image: ProcessImage, dt: float) -> control.Decision:
        state = self.states.state
        request = self.request.p_w if self.request else None
        if self.stop_phase is None:
            return control.decide(image, state, request, self.setpoint_w, dt, self.params, self._rated_w)
        # Orderly stop: the same decision with no request and a fast fixed ramp, so that an
        # error, stale data, an inverter fault or a narrower limit still acts at once.
        ramping = self.stop_phase == "ramp" and self.setpoint_w != 0.0 and state in ("run", "restart", "reboot")
        decision = control.decide(image, "run" if ramping else state, None, self.setpoint_w, dt, self.params,
                                  self._rated_w, ramp_w_per_s=self._stop_ramp_w_per_s)
        if self.stop_phase == "ramp":
            return replace(decision, balancing=False, bms_sleep=False, note=f"stopping: {decision.note}")
        if self.stop_phase == "off":
            return replace(decision, setpoint_w=0.0, inverter_run=False, balancing=False, bms_sleep=False,
                           note="stopping: inverter off")
        return replace(decision, setpoint_w=0.0, inverter_run=False, contactor_closed=False, balancing=False,
                       bms_sleep=False, note="stopped: inverter off, contactors open")

    def begin_stop(self) -> None:
        """Start an orderly stop: ramp to 0 W within about STOP_RAMP_S, linearly."""
        if self.stop_phase is None:
            self.stop_phase = "ramp"
            self._stop_ramp_w_per_s = max(self.params.safety.ramp_w_per_s, abs(self.setpoint_w) / STOP_RAMP_S)
            self.request = None
            log.info("orderly stop: ramping %.0f W to 0 W at %.0f W/s", self.setpoint_w, self._stop_ramp_w_per_s)

    def _fail_safe(self, exc: Exception) -> None:
        """A cycle raised (a bug, a full disk): hold 0 W, stop the inverter, open the contactors."""
        log.critical("control cycle failed: %r; commanding 0 W, inverter off, contactors open", exc, exc_info=exc)
        self.request, self.setpoint_w = None, 0.0
        steps = (
            lambda: self.devices.inverter.command(InverterCommand(p_w=0.0, run=False)),
            lambda: self.devices.bms.command(BmsCommand(contactor_closed=False)),
            lambda: self.errors.raise_("CYCLE_FAILED", "node", f"control cycle failed: {exc!r}"),
            lambda: self.states.go("fault", cause=f"control cycle failed: {exc!r}"),
        )
        for safe_step in steps:
            try:
                safe_step()
            except Exception:  # keep going: every step that works makes the node safer
                log.exception("fail-safe step failed")

    def _sync_errors(self, image: ProcessImage, now: float) -> None:
        grace_over = now - self.started_at > max(self.params.staleness.bms_s, self.params.staleness.inverter_s)
        for driver in self.devices.all():
            self.errors.sync(driver.kind, {i.code: i.text for i in driver.issues()})
        flowing = image.inverter is None and image.bms is not None and abs(image.bms.pack_w) > self._idle_w
        self._uncontrolled_since = (self._uncontrolled_since or now) if flowing else None
        uncontrolled_s = 0.0 if self._uncontrolled_since is None else now - self._uncontrolled_since
        self.errors.sync("protection", control.protection(
            image, self.params.safety, grace_over=grace_over,
            uncontrolled_s=uncontrolled_s if uncontrolled_s >= UNCONTROLLED_LIMIT_S else 0.0,
        ))

    def _drive_state(self) -> None:
        sm = self.states
        blocker = self.errors.run_blocker()
        if blocker and sm.state in ("init", "run", "sleep", "maintenance"):
            sm.go("fault", cause=blocker)
        elif sm.state == "error" and self.errors.error_blocker() is None:
            sm.go("recover", cause="causes cleared and errors acknowledged")
        if sm.state == "init" and self.image.bms is not None and self.image.inverter is not None:
            sm.go("ready", cause="devices answering, no critical error")
        if not sm.may_exchange_power:
            self.request = None

    def _expire_request(self, now: float) -> None:
        if self.request and now >= self.request.expires_at:
            log.warning("power request %.0f W (command %s) expired: holding 0 W", self.request.p_w, self.request.command_id)
            self.request = None

    # --- commands -----------------------------------------------------------------------
    def _execute(self, cmd, image: ProcessImage) -> None:
        handler = getattr(self, f"_cmd_{cmd.type}")
        try:
            status, detail, result = handler(cmd, image)
        except Exception as exc:  # a bug must fail the command, not the node
            log.exception("command %s failed", cmd.id)
            status, detail, result = FAILED, f"internal error: {exc}", {}
        self.commands.finish(cmd, status, detail, **result)

    def _cmd_set_power(self, cmd, image):
        if not self.states.may_exchange_power:
            return REJECTED, f"node is in state {self.states.state}: power is exchanged only in run", {}
        if cmd.p_w > self._rated_w or cmd.p_w < -self._rated_w:
            return REJECTED, f"p_w {cmd.p_w:.0f} W outside the inverter rating ±{self._rated_w:.0f} W", {}
        applied, reason = limiter.clamp(cmd.p_w, control.limits_for(image, self.params, self._rated_w))
        hold = cmd.hold_s or self.params.staleness.setpoint_s
        self.request = LocalRequest(cmd.p_w, self.clock.monotonic() + hold, cmd.id)
        detail = f"request {cmd.p_w:.0f} W for {hold:g} s"
        if reason:
            detail += f"; clamped: {reason}"
        return DONE, detail, {"requested_w": cmd.p_w, "applied_w": applied, "hold_s": hold}

    def _cmd_set_state(self, cmd, image):
        before = self.states.state
        reason = self.states.request(cmd.target, cause=f"command {cmd.id} from {cmd.source}")
        if reason:
            return REJECTED, reason, {}
        return DONE, f"{before} -> {self.states.state}", {"state": self.states.state}

    def _cmd_ack_error(self, cmd, image):
        reason = self.errors.acknowledge(cmd.code)
        if reason:
            return REJECTED, reason, {}
        if self.states.state == "error" and self.errors.error_blocker() is None:
            self.states.go("recover", cause=f"errors acknowledged by {cmd.source}")
        still = self.errors.error_blocker() if self.states.state == "error" else None
        return DONE, f"acknowledged {cmd.code}" + (f"; node stays in error: {still}" if still else ""), {}

    def _cmd_estop(self, cmd, image):
        if cmd.engaged:
            self.errors.raise_("ESTOP", "operator", f"emergency stop engaged by {cmd.source}")
            self.states.go("fault", cause="emergency stop")
            self.request = None
            return DONE, "emergency stop engaged: 0 W, contactors open", {}
        self.errors.clear("ESTOP")
        return DONE, "emergency stop released; acknowledge ESTOP to leave error", {}

    def _cmd_restart(self, cmd, image):
        trigger = "reboot" if cmd.reboot else "restart"
        if not self.states.go(trigger, cause=f"command {cmd.id} from {cmd.source}"):
            return REJECTED, f"cannot {trigger} from state {self.states.state}", {}
        self.begin_stop()
        return DONE, f"orderly {trigger}: ramping to 0 W, then exiting", {}

    # --- what the node reports -------------------------------------------------------
    @property
    def exit_requested(self) -> int | None:
        return EXIT_CODES.get(self.states.state)

    def status(self) -> dict[str, Any]:
        img, dec = self.image, self.decision
        bms = img.bms if img else None
        inv = img.inverter if img else None
        meter = img.meter if img else None
        return {
            "node_id": self.params.identity.node_id,
            "site_id": self.params.identity.site_id,
            "state": self.states.state,
            "soc": None if bms is None else round(bms.soc, 4),
            "p_w": None if inv is None else round(inv.p_w, 1),
            "grid_p_w": None if meter is None else round(meter.p_w, 1),
            "setpoint_w": round(self.setpoint_w, 1),
            "request_w": None if self.request is None else self.request.p_w,
            "note": dec.note if dec else "starting",
            "limits": None if dec is None else {
                "charge_w": round(dec.limits.charge_w, 1),
                "discharge_w": round(dec.limits.discharge_w, 1),
                "reasons": list(dec.limits.reasons),
            },
            "battery": None if bms is None else {
                "pack_v": round(bms.pack_v, 2), "pack_a": round(bms.pack_a, 2), "soh": bms.soh,
                "cell_v_min_v": round(bms.cell_v_min_v, 4), "cell_v_max_v": round(bms.cell_v_max_v, 4),
                "cell_t_max_c": round(bms.cell_t_max_c, 2), "contactor_closed": bms.contactor_closed,
                "racks_online": bms.racks_online, "racks_total": bms.racks_total,
            },
            "absent": sorted(k for k in ("bms", "inverter", "meter") if img is None or getattr(img, k) is None),
            "errors": [
                {"id": e.id, "severity": e.severity, "text": e.text, "source": e.source,
                 "active": e.active, "acknowledged": e.acknowledged}
                for e in self.errors.listed()
            ],
            "cycle": self.stats.summary(),
            "devices": {drv.kind: drv.stats() for drv in self.devices.all()},
            "transitions": [
                {"wall": t.wall, "from": t.source, "to": t.dest, "cause": t.cause} for t in list(self.states.history)[-5:]
            ],
            "wall": img.wall if img else self.clock.wall(),
        }
