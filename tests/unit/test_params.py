"""Site parameter validation (DESIGN §2.9: clear errors, never tracebacks).

One table row per bad file: a mutation of the good example (or raw text) -> the
problem lines expected, each as (JSON path, fragments of the line). Every row is
written to a file and read back through `params.load`, the same path `sitecontroller
run` and `check-params` take. Each problem line must name the JSON path, the value
found and what is allowed; any exception other than ParamsError fails the test.
"""
from __future__ import annotations

import copy
import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from sitecontroller import params as P
from sitecontroller.params import ParamsError, SiteParams, load, parse

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "site_parameters").glob("*.json"))
GOOD = REPO / "site_parameters" / "sim_node1_inproc.json"
README = REPO / "site_parameters" / "README.md"

# "<$path>: found <value>; allowed: <rule>" -- the shape of every problem line about content.
LINE = re.compile(r'^\$(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\]|\["[^"]*"\])*: (found|not valid JSON) .+; allowed: .+$')


def good() -> dict[str, Any]:
    return json.loads(GOOD.read_text())


# --- mutations -------------------------------------------------------------------------------


def _walk(data: dict, dotted: str) -> tuple[dict, str]:
    *parents, last = dotted.split(".")
    for key in parents:
        data = data[key]
    return data, last


def set_(dotted: str, value: Any) -> Callable[[dict], None]:
    def apply(data: dict) -> None:
        parent, key = _walk(data, dotted)
        parent[key] = value

    return apply


def drop(dotted: str) -> Callable[[dict], None]:
    def apply(data: dict) -> None:
        parent, key = _walk(data, dotted)
        del parent[key]

    return apply


def both(*mutations: Callable[[dict], None]) -> Callable[[dict], None]:
    def apply(data: dict) -> None:
        for m in mutations:
            m(data)

    return apply


MODBUS_INVERTER = {"model": "sunspec", "transport": "tcp", "host": "192.168.1.20", "port": 502, "rated_w": 5000}


def inverter(**over: Any) -> Callable[[dict], None]:
    return set_("devices.inverter", {**MODBUS_INVERTER, **over})


@dataclass
class Bad:
    id: str
    change: Callable[[dict], None] | None = None  # mutation of the good example
    raw: str | None = None  # or the whole file text
    expect: list[tuple[str, list[str]]] = field(default_factory=list)  # (JSON path, fragments) per line

    def text(self) -> str:
        if self.raw is not None:
            return self.raw
        data = good()
        assert self.change is not None
        self.change(data)
        return json.dumps(data, indent=2)  # NaN/Infinity become JSON-ish literals, as a hand edit would


ALLOWED_TOP = "a JSON object with at least the sections identity, battery, devices"

BAD = [
    # --- not JSON / not an object ---------------------------------------------------------
    Bad("trailing-comma", raw='{"identity": {"node_id": "a",}}',
        expect=[("$", ["not valid JSON at line 1 column 30", 'found: {"identity": {"node_id": "a",}', "no trailing commas"])]),
    Bad("missing-comma-line-3", raw='{\n  "identity": {}\n  "battery": {}\n}',
        expect=[("$", ["line 3 column 3", "Expecting ',' delimiter", 'found: "battery": {}', ALLOWED_TOP])]),
    Bad("comment", raw='// node 1\n{}', expect=[("$", ["line 1 column 1", "found: // node 1", "no comments"])]),
    Bad("single-quotes", raw="{'identity': {}}", expect=[("$", ["not valid JSON", "double quotes"])]),
    Bad("truncated", raw='{"identity": {"node_id": "n1"', expect=[("$", ["not valid JSON at line 1", "allowed:"])]),
    Bad("empty-file", raw="", expect=[("$", ["found an empty file", ALLOWED_TOP])]),
    Bad("whitespace-only", raw="  \n\t \n", expect=[("$", ["found a file with only whitespace", ALLOWED_TOP])]),
    Bad("top-level-array", raw="[1, 2]", expect=[("$", ["found [1, 2] (an array)", ALLOWED_TOP])]),
    Bad("top-level-string", raw='"sim_node1"', expect=[("$", ['found "sim_node1" (a string)', ALLOWED_TOP])]),
    Bad("top-level-null", raw="null", expect=[("$", ["found null;", ALLOWED_TOP])]),
    Bad("empty-object", raw="{}", expect=[
        ("$.identity", ["found nothing", "required key is missing", "keys node_id, site_id"]),
        ("$.battery", ["found nothing", "keys capacity_wh, max_charge_w, max_discharge_w"]),
        ("$.devices", ["found nothing", "keys bms, inverter"]),
    ]),
    Bad("duplicate-key", raw='{"identity": {"node_id": "a", "site_id": "s", "node_id": "b"}}', expect=[
        ("$.identity.node_id", ["found this key more than once", "each key once"]),
        ("$.battery", ["found nothing"]),
        ("$.devices", ["found nothing"]),
    ]),
    # --- wrong type ---------------------------------------------------------------------------
    Bad("string-for-number", set_("battery.capacity_wh", "10000"),
        expect=[("$.battery.capacity_wh", ['found "10000" (a string)', "allowed: a number > 0 and <= 100000000"])]),
    Bad("number-for-bool", set_("features.BACKUP", 1),
        expect=[("$.features.BACKUP", ["found 1 (a whole number)", "allowed: true or false"])]),
    Bad("string-for-bool", set_("telemetry.enabled", "yes"),
        expect=[("$.telemetry.enabled", ['found "yes" (a string)', "allowed: true or false"])]),
    Bad("bool-for-number", set_("battery.max_charge_w", True),
        expect=[("$.battery.max_charge_w", ["found true (a boolean)", "allowed: a number > 0 and <= 10000000"])]),
    Bad("array-for-section", set_("cycle", [0.1]),
        expect=[("$.cycle", ["found [0.1] (an array)", "allowed: a JSON object"])]),
    Bad("string-for-section", set_("battery", "10 kWh"),
        expect=[("$.battery", ['found "10 kWh" (a string)', "a JSON object with the keys capacity_wh"])]),
    Bad("object-for-number", set_("cycle.period_s", {"value": 0.1}),
        expect=[("$.cycle.period_s", ['found {"value": 0.1} (an object)', "allowed: a number from 0.01 to 10"])]),
    Bad("fraction-for-int", set_("simulation.cells_per_rack", 16.5),
        expect=[("$.simulation.cells_per_rack", ["found 16.5 (a number)", "allowed: a whole number from 1 to 400"])]),
    Bad("string-for-int", set_("simulation.seed", "1"),
        expect=[("$.simulation.seed", ['found "1" (a string)', "allowed: a whole number"])]),
    Bad("null-for-required-number", set_("battery.capacity_wh", None),
        expect=[("$.battery.capacity_wh", ["found null", "allowed: a number > 0"])]),
    Bad("number-for-nullable-section", set_("devices.meter", 5),
        expect=[("$.devices.meter", ["found 5 (a whole number)", "a JSON object with the key model, or null"])]),
    Bad("number-for-text", set_("identity.site_id", 7),
        expect=[("$.identity.site_id", ["found 7 (a whole number)", "allowed: text of 1 to 64 letters"])]),
    # --- unknown keys (a typo must never fall back to a default) ------------------------------
    Bad("typo-top-level", both(set_("safty", {"soc_min": 0.1})),
        expect=[("$.safty", ['found unknown key "safty"', 'did you mean "safety"?', "only the keys identity, cycle"])]),
    Bad("typo-nested", set_("safety.soc_mni", 0.1),
        expect=[("$.safety.soc_mni", ['found unknown key "soc_mni" (value 0.1)', 'did you mean "soc_min"?',
                                      "allowed: only the keys soc_min, soc_max, soc_reserve"])]),
    Bad("typo-device-key", set_("devices.inverter.rated_kw", 5),
        expect=[("$.devices.inverter.rated_kw", ['did you mean "rated_w"?', "(value 5)"])]),
    Bad("wrong-case-key", set_("pid.grid.Kp", 0.5),
        expect=[("$.pid.grid.Kp", ['did you mean "kp"?', "only the keys kp, ki, kd"])]),
    Bad("key-with-space", set_("safety.soc min", 0.1),
        expect=[('$.safety["soc min"]', ['found unknown key "soc min"', 'did you mean "soc_min"?'])]),
    Bad("typo-required-section", both(set_("identty", {"node_id": "n1", "site_id": "s"}), drop("identity")), expect=[
        ("$.identity", ["found nothing", "keys node_id, site_id"]),
        ("$.identty", ['did you mean "identity"?']),
    ]),
    # --- out of range ------------------------------------------------------------------------
    Bad("negative-capacity", set_("battery.capacity_wh", -10000),
        expect=[("$.battery.capacity_wh", ["found -10000;", "allowed: a number > 0 and <= 100000000"])]),
    Bad("zero-capacity", set_("battery.capacity_wh", 0),
        expect=[("$.battery.capacity_wh", ["found 0;", "> 0"])]),
    Bad("soc-above-1", set_("safety.soc_max", 1.5),
        expect=[("$.safety.soc_max", ["found 1.5;", "allowed: a number from 0 to 1"])]),
    Bad("period-zero", set_("cycle.period_s", 0),
        expect=[("$.cycle.period_s", ["found 0;", "allowed: a number from 0.01 to 10"])]),
    Bad("port-70000", inverter(port=70000),
        expect=[("$.devices.inverter.port", ["found 70000;", "allowed: a whole number from 1 to 65535, or null"])]),
    Bad("unit-id-300", inverter(unit_id=300),
        expect=[("$.devices.inverter.unit_id", ["found 300;", "from 0 to 247"])]),
    Bad("discharge-too-big", set_("battery.max_discharge_w", 1e9),
        expect=[("$.battery.max_discharge_w", ["found 1000000000.0;", "<= 10000000"])]),
    Bad("cold-limit-too-low", set_("safety.cell_t_min_c", -50),
        expect=[("$.safety.cell_t_min_c", ["found -50;", "from -40 to 60"])]),
    Bad("empty-data-dir", set_("storage.data_dir", ""),
        expect=[("$.storage.data_dir", ['found "";', "allowed: text of at least 1 character"])]),
    Bad("bms-racks-0", set_("devices.bms.racks", 0),
        expect=[("$.devices.bms.racks", ["found 0;", "from 1 to 16"])]),
    # --- not finite (Python's JSON parser accepts these literals; they must be rejected) -------
    Bad("nan", set_("battery.capacity_wh", math.nan),
        expect=[("$.battery.capacity_wh", ["found NaN;", "allowed: a finite number > 0 and <= 100000000"])]),
    Bad("infinity", set_("safety.ramp_w_per_s", math.inf),
        expect=[("$.safety.ramp_w_per_s", ["found Infinity;", "a finite number > 0"])]),
    Bad("minus-infinity", set_("safety.cell_t_min_c", -math.inf),
        expect=[("$.safety.cell_t_min_c", ["found -Infinity;", "a finite number from -40 to 60"])]),
    Bad("nan-for-int", set_("simulation.seed", math.nan),
        expect=[("$.simulation.seed", ["found NaN", "a whole number"])]),
    Bad("huge-float-is-infinity", raw=GOOD.read_text().replace('"capacity_wh": 10000', '"capacity_wh": 1e400'),
        expect=[("$.battery.capacity_wh", ["found Infinity;", "a finite number"])]),
    # --- min above max, and the reserve window -------------------------------------------------
    Bad("soc-min-equals-max", both(set_("safety.soc_min", 0.95), set_("safety.soc_reserve", 0.95)), expect=[
        ("$.safety", ["found soc_min = 0.95, soc_max = 0.95", "allowed: soc_min (0.95) must be below soc_max (0.95)"]),
        ("$.safety", ["soc_reserve = 0.95", "soc_reserve (0.95) must lie in [soc_min, soc_max)"]),
    ]),
    Bad("cell-v-min-above-max", set_("safety.cell_v_min_v", 3.7), expect=[
        ("$.safety", ["found cell_v_min_v = 3.7, cell_v_max_v = 3.6", "cell_v_min_v (3.7) must be below cell_v_max_v (3.6)"]),
    ]),
    Bad("cell-t-min-equals-max", both(set_("safety.cell_t_min_c", 45), set_("safety.cell_t_max_c", 45)), expect=[
        ("$.safety", ["cell_t_min_c = 45", "cell_t_max_c = 45", "cell_t_min_c (45.0) must be below cell_t_max_c (45.0)"]),
    ]),
    Bad("reserve-below-min", set_("safety.soc_reserve", 0.01), expect=[
        ("$.safety", ["soc_reserve = 0.01", "soc_min = 0.05", "soc_reserve (0.01) must lie in [soc_min, soc_max) = [0.05, 0.95)"]),
    ]),
    Bad("reserve-at-max", set_("safety.soc_reserve", 0.95), expect=[
        ("$.safety", ["soc_reserve = 0.95", "must lie in [soc_min, soc_max)"]),
    ]),
    Bad("reserve-default-outside-window", lambda d: d.__setitem__("safety", {"soc_min": 0.2}), expect=[
        ("$.safety", ["soc_min = 0.2", "soc_reserve not set (default 0.1)", "soc_reserve (0.1) must lie in"]),
    ]),
    # --- missing required ---------------------------------------------------------------------
    Bad("missing-identity", drop("identity"),
        expect=[("$.identity", ["found nothing (this required key is missing)", "a JSON object with the keys node_id, site_id"])]),
    Bad("missing-battery", drop("battery"), expect=[("$.battery", ["found nothing", "capacity_wh"])]),
    Bad("missing-devices", drop("devices"), expect=[("$.devices", ["found nothing", "keys bms, inverter"])]),
    Bad("missing-inverter", drop("devices.inverter"),
        expect=[("$.devices.inverter", ["found nothing", "a JSON object with the keys model, rated_w"])]),
    Bad("missing-node-id", drop("identity.node_id"),
        expect=[("$.identity.node_id", ["found nothing", "allowed: text of 1 to 64 letters"])]),
    Bad("missing-rated-w", drop("devices.inverter.rated_w"),
        expect=[("$.devices.inverter.rated_w", ["found nothing", "a number > 0 and <= 10000000"])]),
    # --- bad choice ---------------------------------------------------------------------------
    Bad("inverter-model-abb", set_("devices.inverter.model", "abb"), expect=[
        # no "(a string)" after the value: its type is right, the value is not
        ("$.devices.inverter.model", ['found "abb";', 'allowed: one of "inproc", "abb_esi", "abb_pqstorl"', '"indevolt"']),
    ]),
    Bad("transport-udp", set_("devices.meter.transport", "udp"),
        expect=[("$.devices.meter.transport", ['found "udp";', 'one of "inproc", "tcp", "serial", "http"'])]),
    Bad("stopbits-3", inverter(stopbits=3), expect=[("$.devices.inverter.stopbits", ["found 3;", "one of 1, 2"])]),
    Bad("stopbits-as-text", inverter(stopbits="1"),
        expect=[("$.devices.inverter.stopbits", ['found "1" (a string)', "one of 1, 2"])]),
    Bad("can-interface", set_("devices.bms", {"model": "bess_sim", "can": {"interface": "socketcan0"}}),
        expect=[("$.devices.bms.can.interface", ['found "socketcan0"', 'one of "socketcan", "virtual"'])]),
    # --- transport / model mismatch -------------------------------------------------------------
    Bad("modbus-model-over-http", inverter(transport="http"), expect=[
        ("$.devices.inverter", ['found model = "sunspec", transport = "http"',
                                "allowed: model 'sunspec' speaks Modbus: transport must be 'tcp' or 'serial'"]),
    ]),
    Bad("tcp-without-host", inverter(host=None), expect=[
        ("$.devices.inverter", ['transport = "tcp"', "host = null", "port = 502", "transport 'tcp' needs 'host' and 'port'"]),
    ]),
    Bad("tcp-without-host-key", lambda d: d["devices"].__setitem__("inverter", {"model": "sunspec", "port": 502, "rated_w": 5000}), expect=[
        ("$.devices.inverter", ['transport not set (default "tcp")', "host not set (default null)", "needs 'host' and 'port'"]),
    ]),
    Bad("inproc-model-default-transport", drop("devices.inverter.transport"), expect=[
        ("$.devices.inverter", ['model = "inproc"', 'transport not set (default "tcp")', "model 'inproc' needs transport 'inproc'"]),
    ]),
    Bad("http-meter-over-tcp", set_("devices.meter", {"model": "homewizard_p1", "transport": "tcp", "host": "p1", "port": 80}),
        expect=[("$.devices.meter", ['model = "homewizard_p1"', "speaks HTTP: transport must be 'http'"])]),
    Bad("serial-without-port", inverter(transport="serial"),
        expect=[("$.devices.inverter", ['transport = "serial"', "serial_port not set (default null)",
                                        "transport 'serial' needs 'serial_port'"])]),
    Bad("can-bms-without-can", set_("devices.bms", {"model": "pylontech"}), expect=[
        ("$.devices.bms", ['model = "pylontech"', "can not set (default null)", "a 'can' section is required"]),
    ]),
    # --- patterns -----------------------------------------------------------------------------
    Bad("node-id-with-space", set_("identity.node_id", "node 1"), expect=[
        ("$.identity.node_id", ['found "node 1";', 'letters, digits, "_", "." or "-"', "pattern ^[A-Za-z0-9]"]),
    ]),
    Bad("node-id-too-long", set_("identity.node_id", "n" * 65), expect=[("$.identity.node_id", ['found "nnnn', "1 to 64"])]),
    Bad("endpoint-without-scheme", set_("control.endpoint", "127.0.0.1:5550"), expect=[
        ("$.control.endpoint", ['found "127.0.0.1:5550";', 'allowed: text "tcp://127.0.0.1:PORT"']),
    ]),
    Bad("endpoint-not-loopback", set_("control.endpoint", "tcp://0.0.0.0:5550"), expect=[
        ("$.control.endpoint", ['found "tcp://0.0.0.0:5550";', "loopback", "not authenticated"]),
    ]),
    Bad("endpoint-port-out-of-range", set_("control.endpoint", "tcp://127.0.0.1:99999"), expect=[
        ("$.control.endpoint", ['found "tcp://127.0.0.1:99999";', "port 1..65535"]),
    ]),
    # --- several problems at once -> one line each -------------------------------------------------
    Bad("several-problems", both(
        set_("identity.node_id", ""),
        set_("battery.capacity_wh", -1),
        set_("cycle.period_s", "fast"),
        set_("features.CLUSTR", True),
        set_("devices.inverter.model", "abb"),
        set_("safety.cell_v_min_v", 4.0),
    ), expect=[
        ("$.identity.node_id", ['found ""']),
        ("$.cycle.period_s", ['found "fast" (a string)']),
        ("$.battery.capacity_wh", ["found -1;"]),
        ("$.safety", ["cell_v_min_v (4.0) must be below cell_v_max_v (3.6)"]),
        ("$.devices.inverter.model", ['found "abb"']),
        ("$.features.CLUSTR", ['did you mean "CLUSTER"?']),
    ]),
]


def test_enough_distinct_bad_files():
    ids = [b.id for b in BAD]
    assert len(set(ids)) == len(ids)
    texts = {b.text() for b in BAD}
    assert len(texts) == len(BAD) >= 20


@pytest.mark.parametrize("bad", BAD, ids=lambda b: b.id)
def test_bad_file(bad: Bad, tmp_path):
    path = tmp_path / f"{bad.id}.json"
    path.write_text(bad.text(), encoding="utf-8")
    with pytest.raises(ParamsError) as info:  # anything else (a traceback) fails the test
        load(path)
    err = info.value
    assert err.source == str(path)
    problems = err.problems
    for line in problems:
        assert "\n" not in line
        assert LINE.match(line), f"not '<$path>: found ...; allowed: ...': {line}"
        assert "Traceback" not in line and "pydantic" not in line.lower() and "Input should" not in line
    assert len(problems) == len(bad.expect), "\n".join(problems)
    unmatched = list(problems)
    for path_, fragments in bad.expect:
        hits = [line for line in unmatched
                if line.startswith(f"{path_}: ") and all(f in line for f in fragments)]
        assert hits, f"no line for {path_} with {fragments}:\n" + "\n".join(problems)
        unmatched.remove(hits[0])


def test_nan_rows_really_contain_json_literals():
    """The NaN/Infinity rows must exercise the literal a hand edit would produce."""
    texts = {b.id: b.text() for b in BAD}
    assert '"capacity_wh": NaN' in texts["nan"]
    assert '"ramp_w_per_s": Infinity' in texts["infinity"]
    assert '"cell_t_min_c": -Infinity' in texts["minus-infinity"]


# --- good files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_file_validates(example):
    params = load(example)
    assert isinstance(params, SiteParams)
    assert params.identity.node_id


def test_example_values_are_read_not_defaulted():
    params = load(GOOD)
    raw = good()
    assert params.battery.capacity_wh == raw["battery"]["capacity_wh"]
    assert params.staleness.setpoint_s == raw["staleness"]["setpoint_s"]
    assert params.features.CELL_BALANCE is raw["features"]["CELL_BALANCE"]


def test_minimal_file_takes_defaults(tmp_path):
    data = {k: good()[k] for k in ("identity", "battery", "devices")}
    del data["devices"]["meter"]
    path = tmp_path / "minimal.json"
    path.write_text(json.dumps(data))
    params = load(path)
    assert params.devices.meter is None and params.simulation is None
    assert params.cycle.period_s == 0.1 and params.safety.soc_reserve == 0.10


def test_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.read_bytes())
    assert load(path).identity.node_id == good()["identity"]["node_id"]


def test_whole_number_where_a_number_is_expected_is_fine(tmp_path):
    data = good()
    data["cycle"]["period_s"] = 1  # an int for a float
    data["safety"]["cell_t_max_c"] = 45
    assert parse(data).cycle.period_s == 1.0


# --- files that cannot be read ------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ParamsError) as info:
        load(tmp_path / "nope.json")
    assert info.value.problems == ["found no such file; allowed: the path of a JSON parameter file"]


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ParamsError) as info:
        load(tmp_path)
    assert "found a path that cannot be read" in info.value.problems[0]


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('{"identity": {"node_id": "n\xf6de"}}'.encode("latin-1"))
    with pytest.raises(ParamsError) as info:
        load(path)
    assert info.value.problems == ["found bytes that are not UTF-8 text (at byte 27); allowed: a UTF-8 JSON file"]


@pytest.mark.parametrize("text", [
    "[" * 100_000 + "]" * 100_000,  # deeper than the parser's recursion limit
    '{"identity": ' + "[" * 900 + "]" * 900 + "}",  # deep but parseable, under a key
    '{"seed": ' + "9" * 5000 + "}",  # more digits than Python converts
], ids=["nested-too-deep", "nested-value", "huge-integer"])
def test_pathological_files_are_problems_not_crashes(text, tmp_path):
    path = tmp_path / "odd.json"
    path.write_text(text)
    with pytest.raises(ParamsError) as info:
        load(path)
    assert all(LINE.match(line) for line in info.value.problems), info.value.problems


# --- every value replaced by an odd one: a ParamsError or a valid result, never a crash ---------

ODD_VALUES = [None, "", "x", 0, -1, 1.5, 1e308, True, [], {}, [1], {"a": 1}, math.nan]


def _leaves(node: Any, path: tuple = ()):
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, path + (key,))


def test_any_key_with_any_odd_value_gives_clear_lines():
    base = good()
    seen = 0
    for path in _leaves(base):
        if not path:
            continue
        for odd in ODD_VALUES:
            data = copy.deepcopy(base)
            node = data
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = odd
            try:
                parse(data)
            except ParamsError as exc:
                assert exc.problems
                for line in exc.problems:
                    assert LINE.match(line), line
                seen += 1
    assert seen > 300


# --- the command line ----------------------------------------------------------------------------


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "sitecontroller"
    if script.exists():
        return [str(script)]
    found = shutil.which("sitecontroller")
    return [found] if found else [sys.executable, "-c", "from sitecontroller.cli import main; raise SystemExit(main())"]


def _check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*_cli(), "check-params", str(path)], capture_output=True, text=True, timeout=30)


def test_cli_good_file_exits_0():
    out = _check(GOOD)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{GOOD}: ok (node node1 of site sim-site)"
    assert out.stderr == ""


def test_cli_bad_file_exits_2_with_one_line_per_problem(tmp_path):
    bad = next(b for b in BAD if b.id == "several-problems")
    path = tmp_path / "node.json"
    path.write_text(bad.text())
    out = _check(path)
    assert out.returncode == 2
    assert out.stdout == ""
    assert "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == len(bad.expect)
    for line in lines:
        assert line.startswith(f"{path}: $")
        assert LINE.match(line.removeprefix(f"{path}: "))


@pytest.mark.parametrize("text", ["", "{not json", "[" * 100_000])
def test_cli_unreadable_content_exits_2_without_traceback(text, tmp_path):
    path = tmp_path / "x.json"
    path.write_text(text)
    out = _check(path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert len(out.stderr.splitlines()) == 1 and out.stderr.startswith(f"{path}: $: ")


def test_cli_missing_file_exits_2(tmp_path):
    out = _check(tmp_path / "missing.json")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip() == f"{tmp_path / 'missing.json'}: found no such file; allowed: the path of a JSON parameter file"


# --- the reference a technician reads --------------------------------------------------------------


def _schema_keys(model=SiteParams, prefix=""):
    for key, fi in model.model_fields.items():
        yield prefix, key
        sub = P._model_of(fi.annotation)
        if sub is not None:
            yield from _schema_keys(sub, f"{prefix}.{key}" if prefix else key)


def _readme_tables() -> dict[str, set[str]]:
    """`### \\`section\\`` headings -> the keys in the table below each."""
    tables: dict[str, set[str]] = {}
    section = None
    for line in README.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^### `([A-Za-z_.]+)`", line)
        if heading:
            section = heading.group(1)
            tables[section] = set()
        elif section and (row := re.match(r"^\| `([A-Za-z_]+)` \|", line)):
            tables[section].add(row.group(1))
    return tables


def test_readme_documents_every_key():
    tables = _readme_tables()
    schema: dict[str, set[str]] = {}
    for prefix, key in _schema_keys():
        schema.setdefault(prefix, set()).add(key)
    top = schema.pop("")
    assert set(tables) >= set(top), "sections missing from site_parameters/README.md"
    for section, keys in schema.items():
        assert tables.get(section) == keys, f"README table for {section} is out of date with the schema"


def test_readme_minimal_file_validates(tmp_path):
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- minimal-file -->\s*```json\n(.*?)```", text, re.S)
    assert block
    path = tmp_path / "minimal.json"
    path.write_text(block.group(1))
    params = load(path)
    assert params.devices.meter is None


def test_readme_sample_output_is_what_the_loader_prints(tmp_path):
    """The sample bad file and its error lines in the README are real: re-run them."""
    text = README.read_text(encoding="utf-8")
    sample = re.search(r"<!-- sample-bad-file -->\s*```json\n(.*?)```", text, re.S)
    output = re.search(r"<!-- sample-output -->\s*```text\n(.*?)```", text, re.S)
    assert sample and output
    path = tmp_path / "node7.json"
    path.write_text(sample.group(1))
    with pytest.raises(ParamsError) as info:
        load(path)
    shown = [line for line in output.group(1).splitlines() if line.startswith("node7.json: ")]
    assert shown == [f"node7.json: {line}" for line in info.value.problems]


# --- sections checked together: each device and endpoint on its own host:port ---------------------


def _protocol_example() -> dict[str, Any]:
    return json.loads((REPO / "site_parameters" / "sim_node1.json").read_text())


def test_two_devices_on_one_host_port_are_reported():
    data = _protocol_example()
    data["devices"]["meter"]["port"] = data["devices"]["inverter"]["port"]
    data["devices"]["meter"]["unit_id"] = data["devices"]["inverter"]["unit_id"]
    with pytest.raises(ParamsError) as info:
        parse(data)
    assert info.value.problems == [
        "$.devices.meter.port: found 127.0.0.1:15020, already used by $.devices.inverter.port; allowed: a host:port "
        "that no other device or endpoint of this node uses (two Modbus devices behind one gateway: distinct unit_id)"
    ]


def test_localhost_and_127_0_0_1_are_the_same_host():
    data = _protocol_example()
    data["devices"]["meter"].update(host="localhost", port=5550)  # the control endpoint's port
    with pytest.raises(ParamsError) as info:
        parse(data)
    assert info.value.problems[0].startswith("$.devices.meter.port: found 127.0.0.1:5550, already used by "
                                             "$.control.endpoint;")


def test_two_modbus_devices_behind_one_gateway_are_fine():
    data = _protocol_example()
    data["devices"]["meter"].update(port=data["devices"]["inverter"]["port"], unit_id=2)
    assert parse(data).devices.meter.unit_id == 2


def test_an_http_device_cannot_share_a_modbus_port():
    data = json.loads((REPO / "site_parameters" / "sim_node2_pylontech_lux_p1.json").read_text())
    data["devices"]["meter"]["port"] = data["devices"]["inverter"]["port"]
    with pytest.raises(ParamsError, match=r"\$\.devices\.meter\.port: found 127\.0\.0\.1:15030, already used by"):
        parse(data)


def test_check_params_reports_a_port_clash_in_one_line(tmp_path):
    data = _protocol_example()
    data["devices"]["meter"]["port"] = data["devices"]["inverter"]["port"]
    path = tmp_path / "clash.json"
    path.write_text(json.dumps(data))
    r = subprocess.run([sys.executable, "-m", "sitecontroller.cli", "check-params", str(path)],
                       capture_output=True, text=True, cwd=REPO, timeout=30)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "already used by $.devices.inverter.port" in r.stderr


# --- where the data directory is ---------------------------------------------------------------------


def test_a_relative_data_dir_is_relative_to_the_parameter_file(tmp_path, monkeypatch):
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "node.json"
    data = good()
    data["storage"] = {"data_dir": "state/{node_id}"}
    path.write_text(json.dumps(data))
    monkeypatch.chdir(tmp_path)
    assert load("etc/node.json").data_dir == tmp_path / "etc" / "state" / "node1"


def test_an_absolute_data_dir_is_kept(tmp_path):
    path = tmp_path / "node.json"
    data = good()
    data["storage"] = {"data_dir": "/srv/bess/{node_id}"}
    path.write_text(json.dumps(data))
    assert str(load(path).data_dir) == "/srv/bess/node1"


def test_example_files_do_not_share_a_data_directory():
    dirs = {ex.name: load(ex).data_dir for ex in EXAMPLES}
    assert len(set(dirs.values())) == len(dirs), dirs
    assert all(d.is_relative_to(REPO / "var") for d in dirs.values()), "examples keep their data in the ignored var/"


def _cluster(data, n=3, **over):
    import zmq
    members = [{"node_id": f"node{i}", "raft": f"127.0.0.1:{17100 + i}", "data": f"127.0.0.1:{17200 + i}",
                "public_key": zmq.curve_keypair()[0].decode()} for i in range(1, n + 1)]
    data["identity"]["node_id"] = "node1"
    data["features"] = {**data.get("features", {}), "CLUSTER": True}
    data["cluster"] = {"members": members, **over}
    return data


def test_a_cluster_member_list_validates():
    params = parse(_cluster(good()))
    assert [m.node_id for m in params.cluster.members] == ["node1", "node2", "node3"]
    assert params.cluster.lease_s == 1.5


@pytest.mark.parametrize("change, fragments", [
    (lambda d: d["cluster"]["members"].pop(0),
     ["$.cluster: found members = [", "members must list this node 'node1' (they list node2, node3)"]),
    (lambda d: d["cluster"]["members"][1].update(node_id="node1"), ["$.cluster.members", "share the node_id node1"]),
    (lambda d: d["cluster"]["members"][2].update(data="127.0.0.1:17101"),
     ["$.cluster.members", "share the address 127.0.0.1:17101"]),
    (lambda d: d["cluster"]["members"][0].update(public_key="short"), ["$.cluster.members[0].public_key", "found \"short\""]),
    (lambda d: d["cluster"]["members"][0].update(raft="17101"), ["$.cluster.members[0].raft", "found \"17101\""]),
    (lambda d: d["cluster"]["members"][0].update(raft="127.0.0.1:5550"),
     ["$.cluster.members[0].raft: found 127.0.0.1:5550, already used by $.control.endpoint"]),
    (lambda d: d["cluster"].update(lease_s=0), ["$.cluster.lease_s: found 0", "from 0.2 to 10"]),
])
def test_a_bad_cluster_member_list_is_one_clear_line(change, fragments):
    data = _cluster(good())
    change(data)
    with pytest.raises(ParamsError) as info:
        parse(data)
    assert len(info.value.problems) == 1, info.value.problems
    for fragment in fragments:
        assert fragment in info.value.problems[0], info.value.problems[0]
