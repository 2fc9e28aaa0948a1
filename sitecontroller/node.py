"""One node's cycle: read → decide → write (DESIGN §2.2).

`Node.step()` is one cycle: put queued parameter changes in effect first
(`live_params.py`: before anything in the cycle reads a parameter), freeze the
drivers' latest readings into a process image, sync errors from the drivers,
the protection checks and the follow check, execute the other queued commands
(`executor.py`), freeze the setpoint sources, move the state machine, decide
(`control.decide`), and hand the setpoints to the drivers. It never waits on
I/O, so the same code runs under the real clock (a field node) and the
simulated one (tests, simulated days).
"""
from __future__ import annotations

import logging
from dataclasses import replace

from . import control
from .commands import FAILED, CommandBook
from .control import ControlInput, Decision, FollowMonitor, SetpointSources
from .control.services import frequency_hz
from .control.services.allocation import GridServices
from .control.sources import SetpointAge
from .cycle import CycleStats
from .drivers.base import BmsCommand, InverterCommand
from .drivers.factory import Devices
from .errors import ErrorRegistry
from .grid_events import EventRecorder
from .executor import CommandExecutor
from .live_params import LiveParams
from .orderly_stop import OrderlyStop
from .process_image import ProcessImage, freeze
from .state_machine import NodeStateMachine
from .status import NodeStatus, snapshot
from .writer import SyncWriter

log = logging.getLogger("sitecontroller.node")

EXIT_CODES = {"restart": 75, "reboot": 76}  # what the service unit maps (README: "Running as a service")
UNCONTROLLED_LIMIT_S = 5.0  # inverter silent while the BMS sees power flowing this long: critical


class Node:
    def __init__(self, params, clock, devices: Devices, *, persist: bool = True, responses=(), writer=None):
        """`writer`: where errors.json and audit.jsonl writes go (`writer.BackgroundWriter` in a
        running node, so the cycle never waits on the disk; default: written at once)."""
        self.params = params
        self.clock = clock
        self.devices = devices
        self.writer = writer
        self.cluster = None  # the cluster service, when this node is a cluster member (mastercontroller)
        self.cloud = None  # the cloud service, when the node has a `cloud` section (sitecontroller.cloud)
        data = params.data_dir if persist else None
        self.errors = ErrorRegistry(clock, data / "errors.json" if data else None, writer=writer)
        self.commands = CommandBook(clock, data / "audit.jsonl" if data else None, writer=writer)
        self.states = NodeStateMachine(self.errors.run_blocker, self.errors.error_blocker, clock.wall)
        self.stats = CycleStats()
        self.started_at = clock.monotonic()
        self.mode = "cluster" if params.features.CLUSTER else "local"
        self.sources = SetpointSources(params.staleness.setpoint_s)
        self.setpoint_age = SetpointAge()  # decision of the setpoint's origin -> our inverter command
        self.responses = tuple(responses)  # additive controllers (frequency response, …)
        self.grid_services = GridServices()  # the leader's reserve allocation: frequency responses
        self.grid_events = EventRecorder(params.identity.node_id, data, writer or SyncWriter(), params.cycle.period_s)
        self.executor = CommandExecutor(self)
        self.stop = OrderlyStop()
        safety = params.safety
        self.follow = FollowMonitor(safety.follow_tolerance_w, safety.follow_tolerance_frac, safety.follow_s,
                                    safety.follow_lag_s)
        self.rated_w = params.devices.inverter.rated_w
        self._idle_w = max(100.0, 0.02 * self.rated_w)  # battery power below this counts as idle
        self._uncontrolled_since: float | None = None
        self.image: ProcessImage | None = None
        self.decision: Decision | None = None
        self.in_cycle = False  # True from the end of the parameter changes to the end of the cycle
        self.live = LiveParams(self)  # run-time parameter changes (after everything it configures)

    @property
    def setpoint_w(self) -> float:
        return self.decision.setpoint_w if self.decision else 0.0

    def q_max_var(self) -> float:
        """Reactive power the node could give now, either sign: what its inverter's rating leaves beside
        the active power (0 when it may not exchange power, or its inverter cannot be told)."""
        d = self.decision
        if d is None or not d.inverter_run or not self.devices.inverter.can_set_q:
            return 0.0
        return control.q_headroom_var(self.rated_w, d.setpoint_w)

    def swap_params(self, new, origin: str = "") -> dict:
        """Put new site parameters in effect between two cycles, on the node's event-loop thread;
        only run-time keys may differ (`live_params.LiveParams.swap`). Returns {key: (old, new)}."""
        return self.live.swap(new, origin)

    # --- the cycle ------------------------------------------------------------------
    def step(self) -> None:
        """One cycle. Never raises: a failing cycle commands the safe state instead."""
        commands: list = []
        try:
            commands = self.live.run(self.commands.take())  # between two cycles: parameter changes first
            self.in_cycle = True
            self._step(commands)
        except Exception as exc:
            self._fail_safe(exc)
            self._fail_taken(commands, exc)
        else:
            if self.errors.is_active("CYCLE_FAILED"):
                self.errors.clear("CYCLE_FAILED")
        finally:
            self.in_cycle = False

    def _step(self, commands) -> None:
        now = self.clock.monotonic()
        d = self.devices
        image = freeze(
            now, self.clock.wall(),
            bms=d.bms.latest(), inverter=d.inverter.latest(), meter=d.meter.latest() if d.meter else None,
            limits_s=self.params.staleness.by_source(), meter_configured=d.meter is not None,
        )
        self.image = image
        self._sync_errors(image, now)
        self._fault_if_critical()  # before commands: they see the state the node is really in
        self.executor.run(commands, image)
        commands.clear()  # carried out or handed on (a cluster command awaits its commit)
        self._drive_state()
        if self.states.state in ("restart", "reboot"):
            self.begin_stop()
        fresh, expired = self.sources.freeze(now)
        for name in expired:
            log.warning("%s setpoint expired: %s", name, self.sources[name].latest().origin or "no origin")
            self.sources[name].withdraw()
        self.image = image = replace(image, setpoints=fresh, setpoints_expired=expired)
        self._write(control.decide(self.control_input(image)))
        self.grid_events.observe(image.wall, now, frequency_hz(image), self.decision,
                                 image.inverter.p_w if image.inverter else None, self.grid_services.responses(now))

    def control_input(self, image: ProcessImage) -> ControlInput:
        prev = self.decision
        # The base ramps from its own last value; a stop ramps the whole setpoint (responses included) down.
        prev_base = (prev.setpoint_w if self.stop.phase else prev.base_w) if prev else 0.0
        return ControlInput(
            image=image, state=self.states.state, mode=self.mode, critical=self.errors.run_blocker(),
            prev_base_w=prev_base, dt_s=self.params.cycle.period_s, params=self.params, rated_w=self.rated_w,
            stop_phase=self.stop.phase, stop_ramp_w_per_s=self.stop.ramp_w_per_s,
            stop_keep_open=self.stop.keep_open, responses=self.responses + self.grid_services.responses(image.t),
        )

    def _write(self, decision: Decision) -> None:
        self.decision = decision
        self.devices.inverter.command(InverterCommand(p_w=decision.setpoint_w, q_var=decision.q_var,
                                                      run=decision.inverter_run, grid_forming=decision.grid_forming))
        if decision.source is not None and self.image is not None:
            self.setpoint_age.observe(self.image.setpoints.get(decision.source), self.clock.wall())
        self.devices.bms.command(BmsCommand(decision.contactor_closed, decision.balancing, decision.bms_sleep))

    def begin_stop(self) -> None:
        """Start an orderly stop: ramp to 0 W within about STOP_RAMP_S, linearly. Contactors
        that are open now (state error, before the first cycle) stay open to the end."""
        contactors_open = self.decision is None or not self.decision.contactor_closed
        if self.stop.begin(self.setpoint_w, self.params.safety.ramp_w_per_s, contactors_open=contactors_open):
            self.sources.withdraw_all()

    def _fail_safe(self, exc: Exception) -> None:
        """A cycle raised (a bug, a full disk): hold 0 W, stop the inverter, open the contactors."""
        log.critical("control cycle failed: %r; commanding 0 W, inverter off, contactors open", exc, exc_info=exc)
        steps = (
            lambda: self.sources.withdraw_all(),
            lambda: self.devices.inverter.command(InverterCommand(p_w=0.0, run=False)),
            lambda: self.devices.bms.command(BmsCommand(contactor_closed=False)),
            lambda: self.errors.raise_("CYCLE_FAILED", "node", f"control cycle failed: {exc!r}"),
            lambda: self.states.go("fault", cause=f"control cycle failed: {exc!r}"),
        )
        if self.decision is not None:
            steps = (lambda: setattr(self, "decision", replace(
                self.decision, setpoint_w=0.0, base_w=0.0, q_var=0.0, inverter_run=False, contactor_closed=False,
                grid_forming=False, note=f"control cycle failed: {exc!r}")),) + steps
        for safe_step in steps:
            try:
                safe_step()
            except Exception:  # keep going: every step that works makes the node safer
                log.exception("fail-safe step failed")

    def _fail_taken(self, commands, exc: Exception) -> None:
        """Commands taken by a cycle that failed before carrying them out: each gets its final ack."""
        for cmd in commands:
            try:
                ack = self.commands.ack_of(cmd.id)
                if ack is None or not ack.final:
                    self.commands.finish(cmd, FAILED, f"not carried out: the control cycle failed ({exc!r})")
            except Exception:
                log.exception("failing command %s failed", cmd.id)

    def _sync_errors(self, image: ProcessImage, now: float) -> None:
        staleness = self.params.staleness
        grace_over = now - self.started_at > max(staleness.bms_s, staleness.inverter_s)
        for driver in self.devices.all():
            self.errors.sync(driver.kind, {i.code: i.text for i in driver.issues()})
        flowing = image.inverter is None and image.bms is not None and abs(image.bms.pack_w) > self._idle_w
        self._uncontrolled_since = (self._uncontrolled_since or now) if flowing else None
        uncontrolled_s = 0.0 if self._uncontrolled_since is None else now - self._uncontrolled_since
        self.errors.sync("protection", control.protection(
            image, self.params.safety, grace_over=grace_over,
            uncontrolled_s=uncontrolled_s if uncontrolled_s >= UNCONTROLLED_LIMIT_S else 0.0,
        ))
        bms, safety = image.bms, self.params.safety
        self.errors.sync("grid services", self.grid_services.problems(
            now, None if bms is None else bms.soc, self.params.battery.capacity_wh * (bms.soh if bms else 1.0),
            safety.soc_reserve, safety.soc_max))
        prev = self.decision
        commanded = None if prev is None else (prev.setpoint_w if prev.inverter_run else 0.0)
        # INV_WRITE_FAILED: the inverter family's issue for a refused or unconfirmed write
        write_failing = self.errors.is_active("INV_WRITE_FAILED")
        forming = None  # the inverter forms the grid: it carries the load within the limiter's window
        if prev is not None and prev.grid_forming and image.inverter is not None and image.inverter.island:
            forming = (prev.limits.charge_w, prev.limits.discharge_w)
        self.errors.sync("follow", self.follow.check(now, image, commanded, write_failing, forming))

    def _fault_if_critical(self) -> bool:
        blocker = self.errors.run_blocker()
        if blocker and self.states.state in ("init", "run", "sleep", "maintenance"):
            self.states.go("fault", cause=blocker)
        return blocker is not None

    def _drive_state(self) -> None:
        sm = self.states
        if not self._fault_if_critical() and sm.state == "error" and self.errors.error_blocker() is None:
            sm.go("recover", cause="causes cleared and errors acknowledged")
        if sm.state == "init" and self.image.bms is not None and self.image.inverter is not None:
            sm.go("ready", cause="devices answering, no critical error")
        if not sm.may_exchange_power:
            self.sources.withdraw_all()

    # --- what the node reports -------------------------------------------------------
    @property
    def exit_requested(self) -> int | None:
        return EXIT_CODES.get(self.states.state)

    def snapshot(self) -> NodeStatus:
        return snapshot(self)

    def status(self) -> dict:
        return self.snapshot().to_dict()
