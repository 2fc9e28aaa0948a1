"""Run-time site parameter changes (sitecontroller/live_params.py), on a whole node with the simulated
clock: `apply_parameters` is validated as a whole against what is in effect, takes effect whole between
two cycles (every reader of a parameter, and every object that keeps one, sees the new values from the
next cycle on), is logged, audited and shown in status; anything invalid or needing a restart changes
nothing. The random test below checks the invariant on every cycle of seeded sequences of changes,
commands and faults."""
import json
import logging
import random
import threading

import pytest

from sitecontroller import control, live_params
from sitecontroller import node as node_module
from sitecontroller import executor as executor_module
from sitecontroller import params as site_params
from sitecontroller.control import limits_for
from sitecontroller.node import Node
from tests.unit.test_node import Rig
from tests.unit.test_node_invariants import FAULTS, FaultyRig, check_cycle, random_command


def apply(rig, parameters, **extra):
    return rig.command(type="apply_parameters", parameters=parameters, **extra)


def test_the_table_names_real_keys_and_no_hardware_or_wiring(make_params):
    doc = make_params().model_dump(mode="json")
    for key in live_params.RUNTIME_KEYS:
        section = key.split(".")[0]
        assert section not in ("identity", "cycle", "battery", "devices", "features", "control", "storage",
                               "simulation", "cluster", "scada"), key
        if section != "cloud":  # (the example has no cloud section)
            assert live_params.get(doc, key.split(".")) is not None, key
    assert live_params.is_runtime(("safety", "soc_max")) and live_params.is_runtime(("cloud", "telemetry_interval_s"))
    assert not live_params.is_runtime(("cloud", "websockets")) and not live_params.is_runtime(("safetyx",))


def test_a_change_takes_effect_in_the_next_cycle_is_logged_audited_and_shown_in_status(make_params, caplog):
    rig = Rig(make_params())
    rig.run(0.3)
    assert rig.node.status()["limits"]["charge_w"] == 5000 and rig.node.status()["parameters_changed"] is None
    caplog.set_level(logging.INFO, "sitecontroller.node")
    ack = apply(rig, {"safety": {"soc_max": 0.5}, "staleness": {"meter_s": 5}})  # SOC is 0.6
    assert ack.status == "done", ack
    assert ack.result["changed"] == {"safety.soc_max": [0.95, 0.5], "staleness.meter_s": [3.0, 5.0]}
    s = rig.node.status()  # the cycle that carried it out decided with it already
    assert s["limits"]["charge_w"] == 0 and "at max 0.50" in " ".join(s["limits"]["reasons"])
    assert s["parameters"]["safety"]["soc_max"] == 0.5 and s["parameters"]["staleness"]["meter_s"] == 5
    assert s["parameters_changed"]["keys"] == ack.result["changed"] and ack.id in s["parameters_changed"]["origin"]
    lines = [r.getMessage() for r in caplog.records if "site parameters changed" in r.getMessage()]
    assert len(lines) == 1 and "safety.soc_max 0.95 -> 0.5" in lines[0] and "staleness.meter_s 3.0 -> 5.0" in lines[0]
    audit = [json.loads(x) for x in (rig.params.data_dir / "audit.jsonl").read_text().splitlines()]
    mine = [a for a in audit if a["id"] == ack.id]
    assert [a["status"] for a in mine] == ["accepted", "done"] and mine[-1]["result"] == ack.result
    assert mine[0]["payload"]["parameters"] == {"safety": {"soc_max": 0.5}, "staleness": {"meter_s": 5}}
    assert apply(rig, {"safety": {"soc_max": 0.5}}).detail.startswith("no change")


@pytest.mark.parametrize("parameters, fragment", [
    ({"safety": {"soc_max": 0.08}}, "soc_reserve (0.1) must lie in"),  # an ordering against what is in effect
    ({"safety": {"soc_max": 1.5}}, "$.safety.soc_max"),
    ({"safety": {"soc_max": "0.9"}}, "safety.soc_max: a number"),
    ({"safety": {"sox_max": 0.9}}, "$.safety.sox_max"),
    ({"cycle": {"period_s": 0.2}}, "cycle.period_s is not a run-time key"),
    ({"battery": {"max_charge_w": 9000}}, "battery.max_charge_w is not a run-time key"),
    ({"safety": {"soc_max": None}}, "safety.soc_max: a number"),
    ({"cloud": {"telemetry_interval_s": 5}}, "$.cloud.connection_string_file"),  # this node has no cloud
    ({}, "non-empty"),
])
def test_an_invalid_change_or_one_that_needs_a_restart_changes_nothing(make_params, parameters, fragment):
    rig = Rig(make_params())
    rig.run(0.3)
    before, shown = rig.node.params, rig.node.status()["parameters"]
    ack = apply(rig, {"staleness": {"meter_s": 7}, **parameters} if parameters else {})  # a good key beside the bad one
    assert ack.status == "rejected" and fragment in ack.detail, ack
    assert rig.node.params is before and rig.node.status()["parameters"] == shown
    assert rig.node.status()["parameters_changed"] is None


def test_every_holder_of_a_value_matches_a_node_started_with_the_new_parameters(make_params):
    rig = Rig(make_params())
    calls = []
    rig.devices.inverter.set_soc_window = lambda low, high: calls.append((low, high))
    rig.run(0.3)
    new = {"safety": {"soc_reserve": 0.2, "soc_max": 0.8, "follow_s": 2.0, "follow_lag_s": 1.0,
                      "follow_tolerance_w": 500.0, "follow_tolerance_frac": 0.2}, "staleness": {"setpoint_s": 3.0}}
    assert apply(rig, new).status == "done"
    fresh = Node(rig.node.params, rig.clock, rig.devices, persist=False)
    for name in ("tolerance_w", "tolerance_frac", "limit_s", "lag_s"):
        assert getattr(rig.node.follow, name) == getattr(fresh.follow, name), name
    assert {i.default_valid_s for i in rig.node.sources.inboxes.values()} == {3.0}
    assert calls == [(0.2, 0.8)]  # the inverter's device-side SOC stop
    assert rig.node.live.in_effect == live_params.runtime_view(fresh.params)


def test_a_lower_staleness_and_a_shorter_follow_time_act_from_the_next_cycle(make_params):
    rig = FaultyRig(make_params())
    rig.run(0.3)
    assert apply(rig, {"staleness": {"inverter_s": 0.3}}).status == "done"
    rig.command(type="set_power", p_w=2000, hold_s=600)
    rig.run(1.0)
    rig.devices.inverter.silent = True
    took = rig.run_until(lambda: "INV_STALE" in rig.error_ids, 2.0, "INV_STALE")
    assert took <= 0.3 + 2 * rig.period  # not the file's 1 s
    rig.devices.inverter.silent = False
    rig.run(1.0)
    assert apply(rig, {"safety": {"follow_s": 1.0, "follow_lag_s": 0.5}}).status == "done"
    rig.ignores_writes = True
    rig.command(type="set_power", p_w=0, hold_s=600)
    took = rig.run_until(lambda: "INV_NOT_FOLLOWING" in rig.error_ids, 5.0, "INV_NOT_FOLLOWING")
    assert took <= 1.0 + 0.5 + 3 * rig.period  # not the file's 5 s + 2 s


def test_a_swap_happens_between_cycles_on_the_cycle_thread_and_only_for_run_time_keys(make_params, monkeypatch):
    rig = Rig(make_params())
    rig.run(0.2)
    doc = rig.node.params.model_dump(mode="json")
    lower = site_params.parse(live_params.merge(doc, {"safety": {"soc_max": 0.7}}))
    refused = []

    def protection(*args, **kwargs):  # somebody tries to swap in the middle of a cycle
        try:
            rig.node.swap_params(lower, "mid-cycle")
        except RuntimeError as exc:
            refused.append(str(exc))
        return real(*args, **kwargs)

    real = control.protection
    monkeypatch.setattr(control, "protection", protection)
    rig.run(0.1)
    monkeypatch.setattr(control, "protection", real)
    assert refused and "between two cycles" in refused[0] and rig.node.params.safety.soc_max == 0.95
    errors = []
    thread = threading.Thread(target=lambda: _capture(errors, rig.node.swap_params, lower))
    thread.start()
    thread.join(5)
    assert errors and "event-loop thread" in errors[0] and rig.node.params.safety.soc_max == 0.95
    wider = site_params.parse(live_params.merge(doc, {"safety": {"soc_max": 0.7}, "battery": {"max_charge_w": 9000}}))
    with pytest.raises(ValueError, match="battery.max_charge_w cannot change at run time"):
        rig.node.swap_params(wider)
    assert rig.node.params.safety.soc_max == 0.95
    assert rig.node.swap_params(lower, "test") == {"safety.soc_max": (0.95, 0.7)}  # between cycles: fine


def _capture(errors, fn, *args):
    try:
        fn(*args)
    except RuntimeError as exc:
        errors.append(str(exc))


def test_split_reports_whole_sections_and_keeps_a_new_cloud_section_staged(make_params):
    old = make_params()
    doc = old.model_dump(mode="json")
    new = site_params.parse(live_params.merge(doc, {
        "safety": {"ramp_w_per_s": 1000}, "cycle": {"period_s": 0.2}, "simulation": None,
        "cloud": {"connection_string_file": "/x.cs", "telemetry_interval_s": 3}}))
    live, staged = live_params.split(old, new)
    assert live == {"safety.ramp_w_per_s": (10000.0, 1000.0)}
    assert staged == ["cloud", "cycle.period_s", "simulation"]
    assert live_params.document({"safety.soc_max": 0.9, "pid.grid.kp": 1}) == {"safety": {"soc_max": 0.9},
                                                                                "pid": {"grid": {"kp": 1}}}


# --- the invariant over random sequences ------------------------------------------------------------
SEEDS = range(16)
CYCLES = 250
CHOICES = {  # values around the simulated battery's state (SOC 0.6, cells at 22 °C): they move the limits
    "safety.soc_max": [0.5, 0.58, 0.62, 0.7, 0.95, 1.5],
    "safety.soc_reserve": [0.05, 0.1, 0.55, 0.6, 0.65],
    "safety.soc_min": [0.0, 0.05, 0.3],
    "safety.ramp_w_per_s": [300, 1000, 5000, 20000],
    "safety.cell_t_max_c": [25.0, 50.0],
    "safety.cell_t_min_c": [0.0, 21.0],
    "safety.follow_s": [1.0, 5.0],
    "safety.follow_lag_s": [0.5, 2.0],
    "safety.follow_tolerance_w": [100.0, 300.0],
    "staleness.inverter_s": [0.3, 1.0, 5.0],
    "staleness.bms_s": [0.5, 2.0],
    "staleness.meter_s": [1.0, 3.0],
    "staleness.setpoint_s": [1.0, 30.0],
    "pid.grid.kp": [0.2, 0.5],
    "telemetry.interval_s": [5, 10],
    "cycle.period_s": [0.2],  # needs a restart: rejected as a whole
}


def random_change(rng):
    keys = rng.sample(sorted(CHOICES), rng.choice([1, 1, 2, 3]))
    if rng.random() < 0.5:  # the SOC window most often: it moves the limits of a running node
        keys.append(rng.choice(["safety.soc_max", "safety.soc_reserve"]))
    keys = [k for k in keys if k != "cycle.period_s" or rng.random() < 0.3]
    return live_params.document({k: rng.choice(CHOICES[k]) for k in keys})


class Watch:
    """What each reader of a parameter saw in the cycle: the image freeze, protection, the follow check,
    the grid-service check, the executor's preview and the decision."""

    def __init__(self, rig, monkeypatch):
        self.seen = []
        for module, name in ((node_module, "freeze"), (control, "protection"), (control, "decide"),
                             (executor_module, "decide")):
            monkeypatch.setattr(module, name, self._wrap(name, getattr(module, name)))
        self.rig = rig
        node = rig.node
        check, problems = node.follow.check, node.grid_services.problems

        def follow_check(*args, **kwargs):
            f = node.follow
            self.seen.append(("follow", (f.tolerance_w, f.tolerance_frac, f.limit_s, f.lag_s)))
            return check(*args, **kwargs)

        def grid_problems(now, soc, usable_wh, soc_reserve, soc_max):
            self.seen.append(("grid services", (soc_reserve, soc_max)))
            return problems(now, soc, usable_wh, soc_reserve, soc_max)

        node.follow.check, node.grid_services.problems = follow_check, grid_problems

    def _wrap(self, name, fn):
        def wrapped(*args, **kwargs):
            if name == "freeze":
                self.seen.append(("freeze", kwargs["limits_s"]))
            elif name == "protection":
                self.seen.append(("protection", args[1]))
            else:
                self.seen.append(("decide", args[0].params))
            return fn(*args, **kwargs)
        return wrapped

    def check(self, p, where):
        """Every reading of this cycle was of `p`, the parameters in effect."""
        s = p.safety
        want = {"freeze": p.staleness.by_source(), "protection": s, "decide": p,
                "follow": (s.follow_tolerance_w, s.follow_tolerance_frac, s.follow_s, s.follow_lag_s),
                "grid services": (s.soc_reserve, s.soc_max)}
        assert {kind for kind, _ in self.seen} >= set(want), (where, self.seen)
        for kind, value in self.seen:
            assert value is want[kind] if kind in ("protection", "decide") else value == want[kind], \
                (where, kind, value, want[kind])
        self.seen.clear()


@pytest.mark.parametrize("seed", SEEDS)
def test_each_cycle_decides_entirely_with_the_old_or_entirely_with_the_new_parameters(make_params, monkeypatch, seed):
    rng = random.Random(seed)
    rig = FaultyRig(make_params())
    watch = Watch(rig, monkeypatch)
    active, changes = {}, 0
    for cycle in range(CYCLES):
        where = f"seed {seed} cycle {cycle}"
        before = rig.node.params
        pending, direct = None, None
        if rng.random() < 0.12:  # through the command path: carried out at the start of the next cycle
            pending = rig.node.commands.submit({"type": "apply_parameters", "parameters": random_change(rng)})
        elif rng.random() < 0.03:  # the node method itself, between two cycles
            try:
                direct = site_params.parse(live_params.merge(before.model_dump(mode="json"), random_change(rng)))
                rig.node.swap_params(direct, "test")
            except (site_params.ParamsError, ValueError):
                direct = None
            before = rig.node.params
        for name in [n for n, until in active.items() if until <= cycle]:  # faults come and go
            rig.fault(name, False)
            del active[name]
        if rng.random() < 0.03:
            name = rng.choice([f for f in FAULTS if f not in active and f not in ("grid_lost", "freq_event")])
            rig.fault(name, True)
            active[name] = cycle + rng.randint(5, 40)
        raw = random_command(rng) if rng.random() < 0.1 else None
        raws = [raw] if raw is not None and raw["type"] != "restart" else []  # (a restart ends the process)
        if cycle % 25 == 24:  # an operator releases the e-stop and acknowledges: back to run, power flows
            raws += [{"type": "estop", "engaged": False}, {"type": "ack_error", "code": "all"},
                     {"type": "set_power", "p_w": rng.choice([-4000, 3000]), "hold_s": 30.0}]
        submitted = [(raw, rig.node.commands.submit(raw).id) for raw in raws]
        prev = rig.node.decision
        rig.run(rig.period)
        after = rig.node.params  # in effect for the whole of this cycle
        watch.check(after, where)
        if pending is not None:
            ack = rig.node.commands.ack_of(pending.id)
            assert ack.final, (where, ack)
            if ack.status == "done":
                doc = after.model_dump(mode="json")
                for key, (_, value) in ack.result["changed"].items():
                    assert live_params.get(doc, key.split(".")) == value, (where, key)
            else:
                assert ack.status == "rejected" and after is before, (where, ack)
        elif direct is None:
            assert after is before, where  # nothing else changes them
        if after is not before or direct is not None:
            changes += 1
        d, image = rig.node.decision, rig.node.image
        limits = limits_for(image, after, rig.node.rated_w)
        assert d.limits.charge_w <= limits.charge_w + 1e-6 and d.limits.discharge_w <= limits.discharge_w + 1e-6, \
            (where, d.limits, limits)
        bms = image.bms
        if bms is not None and bms.soc >= after.safety.soc_max:
            assert d.limits.charge_w == 0, (where, d.limits)
        if bms is not None and bms.soc <= after.safety.soc_reserve:
            assert d.limits.discharge_w == 0, (where, d.limits)
        if prev is not None and d.base_w not in (0.0, d.limits.discharge_w, -d.limits.charge_w):
            assert abs(d.base_w - prev.base_w) <= after.safety.ramp_w_per_s * rig.period + 1e-6, (where, d, prev)
        assert rig.node.status()["parameters"] == live_params.runtime_view(after), where
        check_cycle(rig, [(raw, rig.node.commands.ack_of(i)) for raw, i in submitted], where, prev)
    assert changes >= 3, changes


def test_the_watch_sees_a_change_made_in_the_middle_of_a_cycle(make_params, monkeypatch):
    """The check above is not vacuous: a node that swapped its parameters after the image was frozen
    (bypassing `swap`) is caught in that very cycle."""
    rig = FaultyRig(make_params())
    rig.run(0.3)
    watch = Watch(rig, monkeypatch)
    new = site_params.parse(live_params.merge(rig.node.params.model_dump(mode="json"), {"safety": {"soc_max": 0.5}}))
    real = control.protection

    def protection(image, safety, **kwargs):  # (the watch's wrapper calls this one)
        rig.node.params = new
        return real(image, safety, **kwargs)

    monkeypatch.setattr(control, "protection", watch._wrap("protection", protection))
    rig.run(rig.period)
    with pytest.raises(AssertionError):
        watch.check(rig.node.params, "a half-applied change")
    assert limits_for(rig.node.image, new, 5000) != limits_for(rig.node.image, make_params(), 5000)


def test_commands_taken_by_a_cycle_that_fails_early_still_get_their_final_ack(make_params, monkeypatch):
    """Commands are taken at the start of the cycle (parameter changes first); a cycle that fails before
    the executor ran fails them, each with its final ack, instead of losing them."""
    rig = Rig(make_params())
    rig.run(0.2)

    def broken(*a, **k):
        raise RuntimeError("a bug in freeze")

    monkeypatch.setattr(node_module, "freeze", broken)
    params_ack = rig.node.commands.submit({"type": "apply_parameters", "parameters": {"safety": {"soc_max": 0.9}}})
    state_ack = rig.node.commands.submit({"type": "set_state", "target": "sleep"})
    rig.run(rig.period)
    assert rig.node.commands.ack_of(params_ack.id).status == "done"  # between the cycles, before the failure
    failed = rig.node.commands.ack_of(state_ack.id)
    assert failed.status == "failed" and "control cycle failed" in failed.detail
    assert "CYCLE_FAILED" in rig.error_ids
