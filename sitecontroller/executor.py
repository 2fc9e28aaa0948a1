"""The command executor: one handler per command type (DESIGN §2.5).

Runs inside the cycle, after the image is frozen and before the decision, so a
command acts in the cycle that executes it. Every handler returns a final
status and a detail that says what was actually done; the decision rules
(`control.decide`) make that true in the same cycle (an e-stop is 0 W with the
contactors open at once, whatever else is going on).

Commands are routed by their scope: a node-scope command is carried out here; a
cluster-scope command (a mode change, a cluster target) is handed to the cluster
service when one is plugged in (`cluster_handler`, same signature as a handler;
it may return None and finish the command itself once the Raft log has committed
the change), and rejected with the reason otherwise.

`apply_parameters` is not carried out here but at the very start of the cycle, before the image
is frozen (`live_params.LiveParams.run`), so that a whole cycle decides with one set of parameters.

Power requests are not kept here: a `set_power` command writes the setpoint
source of its edge (CLI → local, SCADA → scada, cloud → cloud), and the
arbiter decides each cycle which source owns the setpoint.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from . import limits as limiter
from .commands import DONE, FAILED, REJECTED
from .control import decide
from .control.arbiter import accepts
from .control.sources import CLOUD, CLUSTER, LOCAL, SCADA

if TYPE_CHECKING:
    from .node import Node
    from .process_image import ProcessImage

log = logging.getLogger("sitecontroller.node")

# Which setpoint source a power request fills, by the edge it came from.
SOURCE_OF_EDGE = {"cli": LOCAL, "ui": LOCAL, "test": LOCAL, "scada": SCADA, "cloud": CLOUD, "cluster": CLUSTER}


class CommandExecutor:
    def __init__(self, node: "Node"):
        self.node = node
        self.cluster_handler = None  # set by the cluster service: (command, image) -> (status, detail, result)
        self.handlers = {
            "set_power": self.set_power,
            "set_state": self.set_state,
            "ack_error": self.ack_error,
            "estop": self.estop,
            "restart": self.restart,
        }

    def run(self, commands, image: "ProcessImage") -> None:
        for cmd in commands:
            handler = self.handlers.get(cmd.type) if cmd.scope == "node" else self.cluster_handler
            try:
                if handler is None and cmd.scope == "cluster":
                    status, detail, result = REJECTED, f"{cmd.type} is a cluster command: this node runs no cluster service", {}
                elif handler is None:
                    status, detail, result = REJECTED, f"command type {cmd.type!r} is not handled by the node", {}
                else:
                    outcome = handler(cmd, image)
                    if outcome is None:  # the handler finishes it later (a cluster change awaits its commit)
                        continue
                    status, detail, result = outcome
            except Exception as exc:  # a bug must fail the command, not the node
                log.exception("command %s failed", cmd.id)
                status, detail, result = FAILED, f"internal error: {exc}", {}
            self.node.commands.finish(cmd, status, detail, **result)

    # --- handlers: (command, image) -> (status, detail, result) --------------------------
    def set_power(self, cmd, image):
        node = self.node
        rated = node.rated_w
        if not node.states.may_exchange_power:
            return REJECTED, f"node is in state {node.states.state}: power is exchanged only in run", {}
        if node.stop.phase is not None:
            return REJECTED, "node is stopping: no new power requests", {}
        source = SOURCE_OF_EDGE[cmd.source]
        if not accepts(node.mode, source):
            return REJECTED, (f"node is in {node.mode} control mode: a {source} request cannot own its setpoint "
                              f"({'the leader dispatches power' if node.mode == 'cluster' else 'see README'})"), {}
        if not -rated <= cmd.p_w <= rated:
            return REJECTED, f"p_w {cmd.p_w:.0f} W outside the inverter rating ±{rated:.0f} W", {}
        hold = cmd.hold_s or node.params.staleness.setpoint_s
        now = node.clock.monotonic()
        node.sources[source].put(cmd.p_w, now, valid_s=hold, origin=f"command {cmd.id}")
        detail = f"request {cmd.p_w:.0f} W for {hold:g} s"
        result = {"requested_w": cmd.p_w, "applied_w": None, "hold_s": hold, "source": source}
        # What this cycle's decision will do with it: the same rules over the same sources
        # (responses left out: they may keep state, and the ack is about the base setpoint).
        fresh, _ = node.sources.freeze(now)
        preview = decide(replace(node.control_input(replace(image, setpoints=fresh)), responses=()))
        if preview.source is not None and preview.source != source:
            return DONE, detail + f"; not applied now: {preview.source} outranks {source} in {node.mode} mode", result
        if preview.source is None:
            return DONE, detail + f"; not applied now: {preview.note}", result
        applied, reason = limiter.clamp(cmd.p_w, preview.limits)
        if reason:
            detail += f"; clamped: {reason}"
        return DONE, detail, {**result, "applied_w": applied}

    def set_state(self, cmd, image):
        states = self.node.states
        before = states.state
        reason = states.request(cmd.target, cause=f"command {cmd.id} from {cmd.source}")
        if reason:
            return REJECTED, reason, {}
        return DONE, f"{before} -> {states.state}", {"state": states.state}

    def ack_error(self, cmd, image):
        node = self.node
        reason = node.errors.acknowledge(cmd.code)
        if reason:
            return REJECTED, reason, {}
        if node.states.state == "error" and node.errors.error_blocker() is None:
            node.states.go("recover", cause=f"errors acknowledged by {cmd.source}")
        still = node.errors.error_blocker() if node.states.state == "error" else None
        return DONE, f"acknowledged {cmd.code}" + (f"; node stays in error: {still}" if still else ""), {}

    def estop(self, cmd, image):
        node = self.node
        if cmd.engaged:
            node.errors.raise_("ESTOP", "operator", f"emergency stop engaged by {cmd.source}")
            node.states.go("fault", cause="emergency stop")
            node.sources.withdraw_all()
            return DONE, "emergency stop engaged: 0 W, inverter off, contactors open", {}
        node.errors.clear("ESTOP")
        return DONE, "emergency stop released; acknowledge ESTOP to leave error", {}

    def restart(self, cmd, image):
        node = self.node
        trigger = "reboot" if cmd.reboot else "restart"
        if not node.states.go(trigger, cause=f"command {cmd.id} from {cmd.source}"):
            return REJECTED, f"cannot {trigger} from state {node.states.state}", {}
        node.begin_stop()
        critical = node.errors.run_blocker()
        if critical:
            return DONE, f"orderly {trigger}: 0 W and contactors stay open ({critical}), then exiting", {}
        if node.stop.keep_open:
            return DONE, f"orderly {trigger}: 0 W and contactors stay open (they were open), then exiting", {}
        return DONE, f"orderly {trigger}: ramping to 0 W, inverter off, contactors open, then exiting", {}
