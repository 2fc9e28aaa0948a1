"""The day simulation: scenarios, the CLI edge, determinism, metrics, plots, limits, and the plant's
grid-loss and inverter-lag physics it relies on. Runs are short (minutes to an hour of virtual time)."""
import json
import random

import numpy as np
import pytest

from mastercontroller.simulate import metrics
from mastercontroller.simulate.engine import simulate
from mastercontroller.simulate.scenario import (ScenarioError, list_scenarios, load_scenario, parse_scenario,
                                                scenario_names)
from sitecontroller import cli
from sitecontroller.sim.plant import Battery, Grid, Inverter, Load, Plant, Solar
from sitecontroller.sim.site_plant import SitePlant

NODES = [{"soc0": s, "capacity_wh": 10000, "max_charge_w": 5000, "max_discharge_w": 5000, "rated_w": 5000}
         for s in (0.2, 0.5, 0.8)]


def scenario_data(**over) -> dict:
    """A day whose first hour is busy: 30 min of strong PV, then a 4 kW load with no PV."""
    pv = [12000.0] * 2 + [0.0] * 94
    load = [1500.0] * 2 + [4000.0] * 94
    data = {"name": "test_day", "description": "test", "start": "2025-06-21T12:00:00+02:00", "nodes": NODES,
            "load": {"w": load, "noise": 0.05}, "pv": {"w": pv, "cloud": 0.5},
            "prices": {"import_per_kwh": [0.3] * 24, "export_per_kwh": 0.05},
            "mode": "self_consumption", "mode_params": {"grid_target_w": 0}, "seed": 11}
    data.update(over)
    return data


def run_short(hours=1.0, **over):
    return simulate(parse_scenario(scenario_data(**over)), hours=hours)


# --- scenarios and the command line ------------------------------------------------------------

@pytest.mark.parametrize("name", scenario_names())
def test_every_packaged_scenario_validates(name):
    sc = load_scenario(name)
    assert sc.name == name and "\n" not in sc.description
    assert sc.cluster_state().mode == sc.mode


def test_the_required_scenarios_are_packaged():
    names = set(scenario_names())
    assert {"sunny_self_consumption", "cloudy_self_consumption", "peak_shaving", "cost_saving", "grid_loss",
            "mixed_soc"} <= names
    assert [round(n.soc0, 2) for n in load_scenario("mixed_soc").nodes] == [0.2, 0.5, 0.8]
    assert load_scenario("grid_loss").backup and load_scenario("grid_loss").grid_loss


def test_list_prints_each_scenario_on_one_line(capsys):
    assert cli.main(["simulate", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(scenario_names())
    for (name, description), line in zip(list_scenarios(), lines):
        assert line.startswith(name) and line.rstrip().endswith(description) and "invalid" not in line


@pytest.mark.parametrize("change, field", [
    ({"nodes": [{"soc0": 1.5}]}, "nodes[0].soc0"),
    ({"load": {"w": [1.0] * 23}}, "load.w"),
    ({"mode": "nonsense"}, "mode: unknown mode 'nonsense'"),
    ({"mode_params": {"grid_target_w": "high"}}, "grid_target_w"),
    ({"grid_loss": [{"start_s": 100, "end_s": 50}]}, "grid_loss[0]"),
    ({"colour": "blue"}, "colour: unknown key"),
    ({"start": "2025-06-21T00:00:00"}, "start"),
])
def test_a_bad_scenario_file_names_the_field_and_exits_2(tmp_path, capsys, change, field):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(scenario_data(**change)))
    assert cli.main(["simulate", "--scenario", str(path)]) == 2
    err = capsys.readouterr().err
    assert field in err and str(path) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_an_unknown_scenario_lists_the_known_ones(capsys):
    assert cli.main(["simulate", "--scenario", "no_such_day"]) == 2
    err = capsys.readouterr().err
    assert "unknown scenario 'no_such_day'" in err and "sunny_self_consumption" in err


def test_broken_json_is_one_clear_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"name": "x",}')
    with pytest.raises(ScenarioError, match="not valid JSON at line 1"):
        load_scenario(path)


# --- a run: determinism, metrics, plots -------------------------------------------------------------

def test_the_same_scenario_and_seed_give_identical_metrics(tmp_path, capsys):
    path = tmp_path / "day.json"
    path.write_text(json.dumps(scenario_data()))
    outs = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        assert cli.main(["simulate", "--scenario", str(path), "--hours", "1", "--nodes", "3", "--no-plots",
                         "--out", str(out)]) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert m.pop("wall_s") > 0
        outs.append(json.dumps(m, sort_keys=True))
    assert outs[0] == outs[1]
    assert "test_day: exchange" in capsys.readouterr().out
    m = json.loads(outs[0])
    assert set(metrics.REQUIRED) - {"wall_s"} <= set(m)
    assert m["grid_exchange_wh"] == pytest.approx(m["import_wh"] + m["export_wh"], abs=0.01)
    assert m["steps"] == 3600 and m["nodes"] == 3 and m["mode"] == "self_consumption"
    assert m["ideal_grid_exchange_wh"] is not None and m["ratio_to_ideal"] >= 0.99


def test_frequency_steps_and_prices_follow_the_scenario():
    prices = {"import_per_kwh": [0.1] * 12 + [0.5] * 12}  # the day starts at 12:00: hour 12 of the list is 0.5
    run = run_short(hours=0.25, frequency=[{"at_s": 300, "hz": 49.5}], prices=prices)
    a = run.arrays
    early, late = a["t_s"] < 300, a["t_s"] >= 300
    assert np.all(np.abs(a["freq_hz"][early] - 50.0) <= 0.1) and np.all(np.abs(a["freq_hz"][late] - 49.5) <= 0.1)
    assert np.all(a["price"] == 0.1)  # profiles and prices are aligned with the scenario's start


def test_another_seed_gives_another_day():
    a = metrics.compute(run_short(hours=0.25), ideal=False)
    b = metrics.compute(run_short(hours=0.25, seed=12), ideal=False)
    assert a["load_wh"] != b["load_wh"]


def test_plots_are_written(tmp_path):
    from mastercontroller.simulate.plots import plot_all

    run = run_short(hours=0.3, grid_loss=[{"start_s": 300, "end_s": 600}], backup=True)
    paths = plot_all(run, tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["nodes.png", "overview.png", "soc.png"]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_nodes_never_exceed_their_limits_at_any_step():
    # full and empty nodes, PV surplus then a load: the charge limit at soc_max and the reserve both bind
    nodes = [dict(NODES[0], soc0=0.94), dict(NODES[1], soc0=0.10), dict(NODES[2], soc0=0.5, rated_w=3000)]
    run = run_short(hours=1.0, nodes=nodes)
    a = run.arrays
    sp, p = a["setpoint_w"], a["p_w"]
    assert np.all(sp <= a["limit_discharge_w"] + 1e-6), "a node discharged above its limit"
    assert np.all(-sp <= a["limit_charge_w"] + 1e-6), "a node charged above its limit"
    rated = np.array([[n["rated_w"]] for n in nodes])
    assert np.all(np.abs(p) <= rated + 1e-6) and np.all(np.abs(sp) <= rated + 1e-6)
    assert np.all((a["soc"] >= 0.0) & (a["soc"] <= 1.0))
    assert np.any(a["limit_charge_w"][0] == 0.0) and np.any(a["limit_discharge_w"][1] == 0.0)  # limits did bind
    assert np.all(a["soc"][1] >= 0.1 - 1e-3)  # the reserve held
    assert np.abs(a["p_w"]).max() > 1000  # and power did flow


def test_passive_keeps_every_battery_at_zero():
    run = run_short(hours=0.5, mode="passive", mode_params={})
    a = run.arrays
    assert np.all(a["p_w"] == 0.0) and np.all(a["setpoint_w"] == 0.0) and np.all(a["target_w"] == 0.0)
    assert np.allclose(a["grid_w"], a["load_w"] - a["pv_w"])
    assert run.mode_names == ["passive"]


def test_self_consumption_holds_the_grid_near_zero_while_it_can():
    run = run_short(hours=0.5)
    g = run.arrays["grid_w"][300:1700]  # PV surplus within the charge caps, after the start
    assert np.median(np.abs(g)) < 150


def test_a_grid_loss_with_backup_is_carried_and_without_it_is_a_blackout():
    loss = [{"start_s": 2400, "end_s": 3000}]  # 4 kW load, no PV
    with_backup = run_short(hours=1.0, grid_loss=loss, backup=True).arrays
    t = with_backup["t_s"]
    lost = (t > 2400) & (t <= 3000)  # the steps that end inside the loss
    assert np.array_equal(with_backup["island"] == 1, lost) and np.all(with_backup["grid_w"][lost] == 0.0)
    # the nodes' inverters (backup hardware) form the grid by themselves from the first step of the
    # loss; the leader sees it at the end of that step and runs the island from the next one
    carried = lost
    assert np.all(with_backup["grid_forming"][lost][1:] == 1) and np.all(with_backup["unserved_w"][carried] == 0.0)
    assert np.allclose(with_backup["p_w"][:, carried].sum(axis=0), with_backup["load_w"][carried])
    assert with_backup["grid_forming"][~lost].sum() <= 10 + 1  # the grid is back: resync, then the mode resumes
    blackout = run_short(hours=1.0, grid_loss=loss).arrays
    assert np.allclose(blackout["unserved_w"][lost], blackout["load_w"][lost])
    assert np.all(blackout["p_w"][:, lost] == 0.0) and not blackout["grid_forming"].any()
    assert np.all(blackout["unserved_w"][~lost] == 0.0)


def test_metric_definitions_on_a_known_series():
    assert metrics.sign_changes(np.array([100.0, 20.0, -100.0, -30.0, 200.0, 60.0, -60.0])) == 3
    t = np.arange(3600.0)
    oscillating = 500.0 * np.sin(2 * np.pi * t / 8.0)  # flips every 4 s for the whole hour
    assert metrics.flipping_max_s(oscillating, 1.0) > 3500
    noisy = np.where((t // 60) % 2 == 0, 200.0, -200.0)  # a flip a minute: not an oscillation
    assert metrics.flipping_max_s(noisy, 1.0) == 0.0


# --- plant physics the simulation relies on ---------------------------------------------------------

def _plant(soc=0.5, response_s=0.0):
    return Plant(Battery(capacity_wh=10_000, soc=soc), Inverter(rated_w=5000, response_s=response_s), Grid(),
                 Solar(0.0), Load(500.0))


def test_inverter_without_lag_jumps_and_with_a_lag_follows_exponentially():
    plain, lagged = _plant(), _plant(response_s=2.0)
    for p in (plain, lagged):
        p.inverter.run_requested, p.inverter.setpoint_p_w = True, 4000.0
        p.step(1.0, 1.0)
    assert plain.inverter.p_w == 4000.0
    assert lagged.inverter.p_w == pytest.approx(4000.0 * (1 - np.exp(-0.5)))


def test_cell_summary_matches_the_per_cell_values():
    b = Battery(capacity_wh=10_000, soc=0.5, racks=3)
    b.seed_spread(random.Random(1))
    b.pack_a, b.temp_c = 40.0, [24.0, 26.0, 25.0]
    for soc in (0.0, 0.049, 0.2, 0.5001, 0.8, 0.95, 1.0):
        b.soc = soc
        cells = [v for r in range(3) for v in b.cell_v(r)]
        temps = [t for r in range(3) for t in b.cell_t(r)]
        expected = (b.pack_v, min(cells), max(cells), sum(cells) / len(cells), min(temps), max(temps))
        assert b.cell_summary() == pytest.approx(expected, abs=1e-9)


def test_site_island_shares_the_load_by_window_and_curtails_surplus_pv():
    site = SitePlant(Grid(), Solar(0.0), Load(3000.0))
    for i in range(2):
        node = _plant()
        node.inverter.run_requested = True
        node.grid, node.solar, node.load, node.site = site.grid, site.solar, site.load, site
        site.nodes[f"n{i}"] = node
    site.grid.lost = True
    for node in site.nodes.values():
        node.inverter.grid_forming = True
    site.windows = {"n0": (1000.0, 1000.0), "n1": (3000.0, 500.0)}
    site.load.power_w = lambda wall: 3000.0
    site.step(1.0, 1.0)
    assert [n.inverter.p_w for n in site.nodes.values()] == pytest.approx([1000.0, 500.0])
    assert site.unserved_w == pytest.approx(1500.0) and site.grid_p_w == 0.0  # 3000 W asked, 1500 W possible
    site.solar.power_w = lambda wall: 6000.0  # 3000 W surplus, 4000 W of charge windows
    site.step(1.0, 2.0)
    assert [n.inverter.p_w for n in site.nodes.values()] == pytest.approx([-750.0, -2250.0])
    assert site.unserved_w == 0.0 and site.curtailed_w == 0.0
    site.solar.power_w = lambda wall: 0.0
    site.nodes["n0"].inverter.grid_forming = False  # only n1 forms the grid: it carries what it can alone
    site.step(1.0, 3.0)
    assert [n.inverter.p_w for n in site.nodes.values()] == pytest.approx([0.0, 500.0]) and site.unserved_w == 2500.0
    site.nodes["n1"].inverter.grid_forming = False
    site.step(1.0, 4.0)
    assert [n.inverter.p_w for n in site.nodes.values()] == [0.0, 0.0] and site.unserved_w == 3000.0


def test_runs_in_separate_processes_with_other_hash_seeds_agree(tmp_path):
    import os
    import subprocess
    import sys

    texts = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"p{hash_seed}"
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        subprocess.run([sys.executable, "-m", "sitecontroller.cli", "simulate", "--scenario", "mixed_soc",
                        "--hours", "0.2", "--no-plots", "--out", str(out)], check=True, env=env, capture_output=True)
        m = json.loads((out / "metrics.json").read_text())
        m.pop("wall_s")
        texts.append(json.dumps(m, sort_keys=True))
    assert texts[0] == texts[1]
