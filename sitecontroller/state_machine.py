"""Node states (DESIGN §4), built with `transitions`.

    init → run ⇄ sleep,  run/sleep → maintenance → run,  any → error,
    error → init (only when no critical cause is active and every error is
    acknowledged), any → restart | reboot (orderly exit; terminal).

Only `run` may exchange power. Every transition is logged with its cause and
kept in a short history for status and telemetry.
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from transitions import Machine, MachineError

log = logging.getLogger("sitecontroller.state")

STATES = ["init", "run", "sleep", "maintenance", "error", "restart", "reboot"]
LIVE = ["init", "run", "sleep", "maintenance", "error"]  # states the process keeps running in
POWER_STATES = frozenset({"run"})

TRANSITIONS = [
    {"trigger": "ready", "source": "init", "dest": "run", "conditions": "no_critical_error"},
    {"trigger": "sleep", "source": "run", "dest": "sleep"},
    {"trigger": "wake", "source": "sleep", "dest": "run", "conditions": "no_critical_error"},
    {"trigger": "maintenance", "source": ["run", "sleep"], "dest": "maintenance"},
    {"trigger": "resume", "source": "maintenance", "dest": "run", "conditions": "no_critical_error"},
    {"trigger": "fault", "source": ["init", "run", "sleep", "maintenance"], "dest": "error"},
    {"trigger": "recover", "source": "error", "dest": "init", "conditions": "causes_cleared_and_acknowledged"},
    {"trigger": "restart", "source": LIVE, "dest": "restart"},
    {"trigger": "reboot", "source": LIVE, "dest": "reboot"},
]

# A request for a target state, by current state: which trigger gets there.
ROUTES = {
    ("init", "run"): "ready",
    ("sleep", "run"): "wake",
    ("maintenance", "run"): "resume",
    ("run", "sleep"): "sleep",
    ("run", "maintenance"): "maintenance",
    ("sleep", "maintenance"): "maintenance",
    ("error", "init"): "recover",
}
REQUESTABLE = ("run", "sleep", "maintenance")


@dataclass(frozen=True, slots=True)
class Transition:
    wall: float
    source: str
    dest: str
    cause: str


class NodeStateMachine:
    """The node's state with its guards.

    `run_blocker()` returns why the node may not enter `run` (None if it may);
    `error_blocker()` returns why it may not leave `error` (None if it may).
    Both are supplied by the node (they look at the error registry).
    """

    def __init__(
        self,
        run_blocker: Callable[[], str | None],
        error_blocker: Callable[[], str | None],
        wall: Callable[[], float],
    ):
        self._run_blocker = run_blocker
        self._error_blocker = error_blocker
        self._wall = wall
        self.history: deque[Transition] = deque(maxlen=50)
        self.machine = Machine(
            model=self,
            states=STATES,
            transitions=TRANSITIONS,
            initial="init",
            send_event=True,
            auto_transitions=False,
            after_state_change="_log_transition",
        )

    # --- guards and callbacks (called by transitions) -----------------------
    def no_critical_error(self, event) -> bool:
        return self._run_blocker() is None

    def causes_cleared_and_acknowledged(self, event) -> bool:
        return self._error_blocker() is None

    def _log_transition(self, event) -> None:
        cause = event.kwargs.get("cause", "unspecified")
        t = Transition(self._wall(), event.transition.source, event.transition.dest, cause)
        self.history.append(t)
        log.info("state %s -> %s (cause: %s)", t.source, t.dest, cause)

    # --- the node's interface -----------------------------------------------
    @property
    def may_exchange_power(self) -> bool:
        return self.state in POWER_STATES

    def go(self, trigger: str, cause: str) -> bool:
        """Fire `trigger` if it is allowed now; False (and nothing changes) otherwise."""
        try:
            return bool(getattr(self, trigger)(cause=cause))
        except MachineError:
            return False

    def why_not(self, target: str) -> str | None:
        """Why a request for `target` cannot be carried out now (None if it can)."""
        if target not in REQUESTABLE:
            return f"state {target!r} cannot be requested; allowed: {', '.join(REQUESTABLE)}"
        if self.state == target:
            return None
        trigger = ROUTES.get((self.state, target))
        if trigger is None:
            if self.state == "error":
                return "node is in error: clear the cause and acknowledge the errors first"
            return f"no transition from {self.state!r} to {target!r}"
        if target == "run":
            return self._run_blocker()
        return None

    def request(self, target: str, cause: str) -> str | None:
        """Carry out a requested state change; return the reason if refused."""
        reason = self.why_not(target)
        if reason is None and self.state != target:
            if not self.go(ROUTES[(self.state, target)], cause):
                reason = f"transition {self.state!r} -> {target!r} refused by its guard"
        return reason


def diagram(fmt: str = "mermaid") -> str | bytes:
    """The state diagram, drawn from the same transition table the node uses.

    `mermaid` needs nothing extra; `png`/`svg` need the graphviz package and `dot`.
    """
    from transitions.extensions import GraphMachine

    class _Model:
        pass

    engine = "mermaid" if fmt == "mermaid" else "graphviz"
    machine = GraphMachine(
        model=_Model(), states=STATES, transitions=TRANSITIONS, initial="init",
        auto_transitions=False, graph_engine=engine, show_conditions=True,
        title="site controller node states",
    )
    graph = machine.get_graph()
    if fmt == "mermaid":
        return graph.draw(None)
    return graph.draw(None, format=fmt, prog="dot")
