"""The simulator's fault-knob registry: every example's knobs exist, set, refuse bad values and clear."""
from __future__ import annotations

import json

import pytest

from sitecontroller.clock import RealClock
from sitecontroller.params import parse
from sitecontroller.params_schema import DEFAULT_SIM_ENDPOINT
from sitecontroller.sim.knobs import KnobError, KnobRegistry
from sitecontroller.sim.run_sim import DEFAULT_PARAMS
from sitecontroller.sim.site import SimulatedSite
from tests.util import REPO, isolated_example

EXAMPLES = ["sim_node1.json", "sim_node2_pylontech_lux_p1.json", "sim_node3_indevolt_em340.json"]


def site(tmp_path, example="sim_node1.json") -> SimulatedSite:
    return SimulatedSite(parse(isolated_example(example, tmp_path)), RealClock())  # not started: no sockets


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_lists_the_knobs_a_tester_needs(tmp_path, example):
    knobs = {(k["device"], k["knob"]): k for k in site(tmp_path, example).knobs.describe()}
    for needed in [("bms", "silent"), ("bms", "internal_fault"), ("inverter", "silent"), ("inverter", "reject_writes"),
                   ("inverter", "tripped"), ("meter", "silent"), ("battery", "cell_v_fault_v"),
                   ("battery", "temp_fault_c"), ("grid", "freq_offset_hz")]:
        assert needed in knobs, f"{example}: {needed} missing"
    for k in knobs.values():
        assert len(k["help"]) > 15, k  # every knob says what it does
        assert k["kind"] in ("value", "action", "switch")
        json.dumps(k)  # the endpoint sends it as JSON


async def test_set_and_clear(tmp_path):
    s = site(tmp_path)
    reg, bms, battery = s.knobs, s.sims["bms"], s.plant.battery
    assert (await reg.set("bms", "silent", "1"))["value"] == [1]
    assert bms.silent == {1}
    await reg.set("bms", "alive_frozen")  # no value: every rack
    assert bms.alive_frozen == {0, 1}
    await reg.set("bms", "ignore_commands")  # no value: true
    await reg.set("battery", "cell_v_fault_v", "0.5")
    await reg.set("grid", "freq_offset_hz", "-0.8")
    await reg.set("meter", "silent", "on")
    await reg.set("inverter", "tripped", "true")
    assert bms.ignore_commands and battery.cell_v_fault_v == 0.5 and s.plant.grid.freq_offset_hz == -0.8
    assert s.sims["meter"].silent and s.plant.inverter.tripped
    cleared = await reg.clear()
    assert set(cleared) == {"bms silent", "bms alive_frozen", "bms ignore_commands", "battery cell_v_fault_v",
                            "grid freq_offset_hz", "meter silent", "inverter tripped"}
    assert not bms.silent and not bms.alive_frozen and not bms.ignore_commands and battery.cell_v_fault_v == 0
    assert not s.sims["meter"].silent and not s.plant.inverter.tripped
    assert await reg.clear() == []


@pytest.mark.parametrize("device, knob, value, says", [
    ("bmss", "silent", None, "no simulated device 'bmss'; devices: bms, inverter, meter, battery, grid"),
    ("bms", "sillent", None, "bms has no knob 'sillent'; its knobs: silent,"),
    ("bms", "silent", "7", "allowed: all, none, or rack numbers 0..1"),
    ("bms", "internal_fault", "maybe", "allowed: true or false"),
    ("battery", "cell_v_fault_v", "lots", "allowed: number"),
    ("battery", "cell_v_fault_v", "nan", "a finite number"),
    ("battery", "cell_v_fault_v", None, "a value is needed"),
    ("bms", "delay_s", "-1", "seconds >= 0"),
])
async def test_bad_requests_name_the_knob_and_what_is_allowed(tmp_path, device, knob, value, says):
    with pytest.raises(KnobError, match=None) as exc:
        await site(tmp_path).knobs.set(device, knob, value)
    assert says in str(exc.value)


async def test_actions_and_knobs_added_by_a_device_show_up():
    calls = []

    class Device:
        KNOBS = {"frozen": "values stop changing", "kick": ("kick(how)", "one kick now")}
        frozen = False
        racks = 1

        async def kick(self, how="soft"):
            calls.append(how)

    reg = KnobRegistry()
    reg.add("thing", Device())
    assert [k["knob"] for k in reg.describe()] == ["frozen", "kick"]
    await reg.set("thing", "kick")
    await reg.set("thing", "kick", "hard")
    assert calls == ["soft", "hard"]


def test_the_cli_default_reaches_the_simulator_run_sim_starts():
    """`sitecontroller sim fault ...` with no flags talks to scripts/run-sim's default file's simulator."""
    assert DEFAULT_PARAMS == REPO / "site_parameters" / "sim_node1.json"
    assert json.loads(DEFAULT_PARAMS.read_text())["simulation"]["endpoint"] == DEFAULT_SIM_ENDPOINT


def test_examples_do_not_share_simulator_ports():
    seen: dict[str, str] = {}
    for name in EXAMPLES:
        data = json.loads((REPO / "site_parameters" / name).read_text())
        ports = [data["simulation"]["endpoint"], data["devices"]["bms"]["can"]["channel"], data["control"]["endpoint"]]
        ports += [f"{d['host']}:{d['port']}" for d in (data["devices"]["inverter"], data["devices"]["meter"])]
        for p in ports:
            assert p not in seen, f"{name} and {seen[p]} both use {p}"
            seen[p] = name


def test_the_readme_knob_table_matches_the_simulators(tmp_path):
    import re

    text = (REPO / "README.md").read_text()
    table = {m[1]: set(re.findall(r"`(\w+)`", m[2])) for m in re.finditer(r"^\| `(\w+)` \| (.*) \|$", text, re.M)
             if m[1] in ("bms", "inverter", "meter", "battery", "grid")}
    real: dict[str, set[str]] = {}
    for example in EXAMPLES:
        for k in site(tmp_path, example).knobs.describe():
            real.setdefault(k["device"], set()).add(k["knob"])
    assert table == real


def test_a_knob_without_its_attribute_is_a_clear_error_at_once():
    class Device:
        KNOBS = {"ghost": "not there"}

    with pytest.raises(AttributeError, match=r"Device.KNOBS\['ghost'\]: target 'ghost'"):
        KnobRegistry().add("thing", Device())
