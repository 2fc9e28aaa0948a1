"""Every allowed and every forbidden transition of the node state machine, as a table."""
import pytest

from sitecontroller.state_machine import STATES, NodeStateMachine, diagram

TRIGGERS = ["ready", "sleep", "wake", "maintenance", "resume", "fault", "recover", "restart", "reboot"]

# Written by hand from DESIGN §4 (not derived from the code under test).
# (source, trigger) -> destination; every pair not listed is forbidden.
ALLOWED = {
    ("init", "ready"): "run",
    ("init", "fault"): "error",
    ("init", "restart"): "restart",
    ("init", "reboot"): "reboot",
    ("run", "sleep"): "sleep",
    ("run", "maintenance"): "maintenance",
    ("run", "fault"): "error",
    ("run", "restart"): "restart",
    ("run", "reboot"): "reboot",
    ("sleep", "wake"): "run",
    ("sleep", "maintenance"): "maintenance",
    ("sleep", "fault"): "error",
    ("sleep", "restart"): "restart",
    ("sleep", "reboot"): "reboot",
    ("maintenance", "resume"): "run",
    ("maintenance", "fault"): "error",
    ("maintenance", "restart"): "restart",
    ("maintenance", "reboot"): "reboot",
    ("error", "recover"): "init",
    ("error", "restart"): "restart",
    ("error", "reboot"): "reboot",
}

ALL_PAIRS = [(s, t) for s in STATES for t in TRIGGERS]


def machine(run_blocker=None, error_blocker=None, state="init"):
    sm = NodeStateMachine(lambda: run_blocker, lambda: error_blocker, lambda: 123.0)
    sm.machine.set_state(state)
    return sm


@pytest.mark.parametrize("source,trigger", ALL_PAIRS)
def test_transition_table(source, trigger):
    sm = machine(state=source)
    moved = sm.go(trigger, cause="table")
    expected = ALLOWED.get((source, trigger))
    if expected is None:
        assert not moved and sm.state == source, f"{source} --{trigger}--> must be forbidden"
    else:
        assert moved and sm.state == expected
        last = sm.history[-1]
        assert (last.source, last.dest, last.cause) == (source, expected, "table")


@pytest.mark.parametrize("source,trigger", [("init", "ready"), ("sleep", "wake"), ("maintenance", "resume")])
def test_no_run_while_a_critical_error_is_listed(source, trigger):
    sm = machine(run_blocker="critical error listed: BMS_STALE", state=source)
    assert not sm.go(trigger, cause="try")
    assert sm.state == source
    assert sm.why_not("run") == "critical error listed: BMS_STALE"


@pytest.mark.parametrize("blocker", ["cause still active: CELL_OVERTEMP", "not acknowledged: CELL_OVERTEMP"])
def test_error_is_left_only_when_cause_gone_and_acknowledged(blocker):
    sm = machine(error_blocker=blocker, state="error")
    assert not sm.go("recover", cause="try")
    assert sm.state == "error"
    sm._error_blocker = lambda: None
    assert sm.go("recover", cause="cleared and acked")
    assert sm.state == "init"


@pytest.mark.parametrize(
    "state,target,refusal",
    [
        ("run", "run", None),
        ("run", "sleep", None),
        ("sleep", "run", None),
        ("run", "maintenance", None),
        ("maintenance", "run", None),
        ("maintenance", "sleep", "no transition from 'maintenance' to 'sleep'"),
        ("init", "sleep", "no transition from 'init' to 'sleep'"),
        ("error", "run", "node is in error: clear the cause and acknowledge the errors first"),
        ("run", "error", "cannot be requested"),
        ("run", "reboot", "cannot be requested"),
    ],
)
def test_requests_say_why_they_are_refused(state, target, refusal):
    sm = machine(state=state)
    reason = sm.request(target, cause="cli")
    if refusal is None:
        assert reason is None and sm.state == target
    else:
        assert refusal in reason and sm.state == state


def test_only_run_exchanges_power():
    for s in STATES:
        assert machine(state=s).may_exchange_power == (s == "run")


def test_diagram_is_drawn_from_the_same_table():
    text = diagram("mermaid")
    for (source, trigger), dest in ALLOWED.items():
        assert f"{source} --> {dest}: {trigger}" in text


def test_diagram_image_is_drawn_with_graphviz(tmp_path):
    """`sitecontroller state-diagram --format png` (graphviz is installed by scripts/test)."""
    import shutil
    import subprocess
    import sys

    assert shutil.which("dot"), "graphviz `dot` is missing: run scripts/test, which installs it"
    out = tmp_path / "states.png"
    r = subprocess.run([sys.executable, "-m", "sitecontroller.cli", "state-diagram", "--format", "png", "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
