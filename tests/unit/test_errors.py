"""Error registry: severities, latching, acknowledgement, persistence across a restart."""
import json
import subprocess
import sys

import pytest

from sitecontroller.clock import SimClock
from sitecontroller.errors import NODE_CODES, ErrorRegistry, catalog, register_codes
from sitecontroller.writer import BackgroundWriter
from tests.util import REPO


def registry(tmp_path=None):
    return ErrorRegistry(SimClock(), tmp_path / "errors.json" if tmp_path else None, codes=dict(NODE_CODES))


def ids(reg):
    return [e.id for e in reg.listed()]


def test_warning_disappears_with_its_cause():
    reg = registry()
    reg.raise_("METER_STALE", "protection")
    assert ids(reg) == ["METER_STALE"] and reg.run_blocker() is None
    reg.clear("METER_STALE")
    assert ids(reg) == []


def test_error_is_latched_until_acknowledged():
    reg = registry()
    reg.raise_("INV_STALE", "protection")
    reg.clear("INV_STALE")
    assert ids(reg) == ["INV_STALE"]
    assert reg.acknowledge("INV_STALE") is None
    assert ids(reg) == []


def test_an_active_critical_error_cannot_be_acknowledged_in_advance():
    reg = registry()
    reg.raise_("CELL_OVERTEMP", "protection", "52 °C")
    reason = reg.acknowledge("CELL_OVERTEMP")
    assert "cannot be acknowledged while its cause is active (52 °C)" in reason
    assert reg.acknowledge("all").startswith("nothing to acknowledge: causes still active: CELL_OVERTEMP")
    reg.clear("CELL_OVERTEMP")
    assert reg.error_blocker() == "not acknowledged: CELL_OVERTEMP"
    assert reg.acknowledge("CELL_OVERTEMP") is None
    assert ids(reg) == [] and reg.error_blocker() is None


def test_ack_all_acknowledges_what_it_can_and_skips_active_criticals():
    reg = registry()
    reg.raise_("ESTOP", "operator")
    reg.raise_("INV_STALE", "protection")  # an active *error* may be acknowledged
    reg.raise_("BMS_STALE", "protection")
    reg.clear("BMS_STALE")
    assert reg.acknowledge("all") is None
    assert {e.id: e.acknowledged for e in reg.listed()} == {"ESTOP": False, "INV_STALE": True}


def test_a_live_value_in_the_text_does_not_rewrite_the_file(tmp_path):
    reg = registry(tmp_path)
    reg.raise_("CELL_OVERTEMP", "protection", "51.0 °C")
    before = (tmp_path / "errors.json").stat().st_mtime_ns
    reg.raise_("CELL_OVERTEMP", "protection", "51.3 °C")
    assert (tmp_path / "errors.json").stat().st_mtime_ns == before
    assert reg.listed()[0].text == "51.3 °C"


def test_a_disk_that_fails_keeps_the_errors_in_memory(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    reg = ErrorRegistry(SimClock(), blocker / "errors.json", codes=dict(NODE_CODES))
    reg.raise_("BMS_STALE", "protection")  # must not raise
    assert ids(reg) == ["BMS_STALE"] and reg.run_blocker()


def test_critical_blocks_run_and_leaving_error_needs_clear_and_ack():
    reg = registry()
    reg.raise_("BMS_STALE", "protection")
    assert reg.run_blocker() == "critical error listed: BMS_STALE"
    assert reg.error_blocker() == "cause still active: BMS_STALE"
    reg.clear("BMS_STALE")
    assert reg.error_blocker() == "not acknowledged: BMS_STALE"
    assert reg.run_blocker() is not None
    reg.acknowledge("all")
    assert reg.error_blocker() is None and reg.run_blocker() is None


def test_unknown_id_cannot_be_acknowledged_and_the_reason_lists_what_is_there():
    reg = registry()
    reg.raise_("ESTOP", "operator")
    assert reg.acknowledge("NOPE") == "no listed error 'NOPE' (listed: ESTOP)"


def test_sync_raises_new_and_clears_gone_for_one_source_only():
    reg = registry()
    reg.raise_("ESTOP", "operator")
    reg.sync("protection", {"CELL_OVERVOLTAGE": "3.70 V", "METER_STALE": "x"})
    assert set(ids(reg)) == {"ESTOP", "CELL_OVERVOLTAGE", "METER_STALE"}
    reg.sync("protection", {})
    assert set(ids(reg)) == {"ESTOP", "CELL_OVERVOLTAGE"}  # ESTOP untouched; CELL_OVERVOLTAGE latched
    assert not reg.is_active("CELL_OVERVOLTAGE")


def test_listed_errors_come_back_after_a_restart(tmp_path):
    reg = registry(tmp_path)
    reg.raise_("CELL_OVERVOLTAGE", "protection", "cell #3 at 3.71 V")
    reg.raise_("INV_STALE", "protection")
    reg.clear("INV_STALE")  # latched, unacknowledged: must survive too
    reg.raise_("METER_STALE", "protection")

    again = registry(tmp_path)  # a new process reading the same file
    restored = {e.id: e for e in again.listed()}
    assert set(restored) == {"CELL_OVERVOLTAGE", "INV_STALE", "METER_STALE"}
    assert restored["CELL_OVERVOLTAGE"].text == "cell #3 at 3.71 V"
    assert restored["CELL_OVERVOLTAGE"].severity == "critical"
    assert restored["INV_STALE"].active is False and restored["INV_STALE"].acknowledged is False
    assert again.run_blocker() == "critical error listed: CELL_OVERVOLTAGE"
    # critical errors listed first
    assert again.listed()[0].id == "CELL_OVERVOLTAGE"


def test_acknowledged_and_cleared_errors_are_gone_after_a_restart(tmp_path):
    reg = registry(tmp_path)
    reg.raise_("ESTOP", "operator")
    reg.clear("ESTOP")
    reg.acknowledge("ESTOP")
    assert ids(registry(tmp_path)) == []
    assert json.loads((tmp_path / "errors.json").read_text())["errors"] == []


def test_a_damaged_error_file_is_itself_a_critical_error(tmp_path):
    (tmp_path / "errors.json").write_text("{ half a file")
    reg = registry(tmp_path)
    assert ids(reg) == ["ERRORS_FILE_DAMAGED"]
    assert reg.run_blocker() is not None


def test_every_catalog_entry_has_a_known_severity_and_a_description():
    import sitecontroller.drivers.bms  # noqa: F401  (each family registers its ids at import)
    import sitecontroller.drivers.inverter  # noqa: F401
    import sitecontroller.drivers.meter  # noqa: F401

    codes = catalog()
    assert {"ESTOP", "BMS_TIMEOUT", "INV_COMM_LOST", "METER_COMM_LOST"} <= set(codes)
    for code, (severity, text) in codes.items():
        assert severity in ("warning", "error", "critical"), code
        assert text, code


def test_the_error_core_imports_without_the_drivers():
    code = ("import sys; from sitecontroller import clock, commands, errors; "
            "errors.catalog(); errors.ErrorRegistry(clock.SimClock()).raise_('ESTOP', 'test'); "
            "print(sorted(m for m in sys.modules if m.startswith('sitecontroller.drivers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_a_subsystem_registers_its_codes_and_a_conflict_is_refused():
    register_codes({"TEST_ONLY_CODE": ("warning", "a code for this test")})
    register_codes({"TEST_ONLY_CODE": ("warning", "a code for this test")})  # the same again: harmless
    assert catalog()["TEST_ONLY_CODE"] == ("warning", "a code for this test")
    with pytest.raises(ValueError, match="registered twice"):
        register_codes({"TEST_ONLY_CODE": ("critical", "another meaning")})
    with pytest.raises(ValueError, match="severity 'fatal'"):
        register_codes({"TEST_BAD_CODE": ("fatal", "x")})


def test_a_code_registered_after_the_registry_was_made_is_known_to_it():
    reg = ErrorRegistry(SimClock())
    register_codes({"TEST_LATE_CODE": ("critical", "registered late")})
    assert reg.severity_of("TEST_LATE_CODE") == "critical"
    assert reg.raise_("TEST_LATE_CODE", "test").text == "registered late"


def test_writes_can_go_through_a_background_writer(tmp_path):
    writer = BackgroundWriter()
    reg = ErrorRegistry(SimClock(), tmp_path / "errors.json", writer=writer)
    for _ in range(20):  # many changes: only the newest content matters
        reg.raise_("INV_STALE", "protection")
        reg.clear("INV_STALE")
    reg.raise_("ESTOP", "operator")
    assert reg.flush(5.0)
    stored = json.loads((tmp_path / "errors.json").read_text())["errors"]
    assert {e["id"] for e in stored} == {"INV_STALE", "ESTOP"}
    assert reg.close() and writer.close()


# --- damaged errors.json (issue 6, 1.6) -----------------------------------------------------
# One row per kind of damage. The file holds a sound latched INV_STALE and a damaged
# CELL_OVERVOLTAGE entry. Whatever the damage: loading never raises, status never fails,
# ERRORS_FILE_DAMAGED (critical) names what was wrong, the sound entry is kept, and the
# damaged entry is never weakened: kept as critical and unacknowledged, or reported lost.

SOUND = {"id": "INV_STALE", "severity": "error", "source": "protection", "text": "inverter stale",
         "first_wall": 1.0, "last_wall": 2.0, "active": False, "acknowledged": False, "count": 1}
DAMAGED = {"id": "CELL_OVERVOLTAGE", "severity": "critical", "source": "protection", "text": "3.71 V",
           "first_wall": 1.0, "last_wall": 2.0, "active": False, "acknowledged": False, "count": 1}
KEPT, LOST = "kept", "lost"


def with_entry(**change):
    return {"version": 1, "errors": [SOUND, {**DAMAGED, **change}]}


def without(key):
    return {"version": 1, "errors": [SOUND, {k: v for k, v in DAMAGED.items() if k != key}]}


@pytest.mark.parametrize("content,fragment,outcome", [
    pytest.param(with_entry(severity="CRITICAL"), 'errors[1].severity: found "CRITICAL"', KEPT, id="upper-case-severity"),
    pytest.param(with_entry(severity="bogus"), 'errors[1].severity: found "bogus"', KEPT, id="unknown-severity"),
    pytest.param(with_entry(severity=None), "errors[1].severity: found null", KEPT, id="null-severity"),
    pytest.param(without("severity"), "errors[1].severity: missing", KEPT, id="missing-severity"),
    pytest.param(with_entry(first_wall="yesterday"), 'errors[1].first_wall: found "yesterday"', KEPT, id="text-timestamp"),
    pytest.param(with_entry(last_wall=None), "errors[1].last_wall: found null", KEPT, id="null-timestamp"),
    pytest.param(with_entry(acknowledged="false"), 'errors[1].acknowledged: found "false"', KEPT, id="text-boolean"),
    pytest.param(with_entry(acknowledged=1), "errors[1].acknowledged: found 1", KEPT, id="number-boolean"),
    pytest.param(with_entry(active="yes"), 'errors[1].active: found "yes"', KEPT, id="text-active"),
    pytest.param(with_entry(count="many"), 'errors[1].count: found "many"', KEPT, id="text-count"),
    pytest.param(with_entry(source=None), "errors[1].source: found null", KEPT, id="null-source"),
    pytest.param(with_entry(colour="red"), "errors[1].colour: unknown key", KEPT, id="unknown-key"),
    pytest.param(with_entry(id=None), "errors[1].id: found null", LOST, id="null-id"),
    pytest.param(with_entry(id=["CELL_OVERVOLTAGE"]), "errors[1].id: found [", LOST, id="list-id"),
    pytest.param(with_entry(id=""), "errors[1].id", LOST, id="empty-id"),
    pytest.param("[1, 2]", "found [1, 2] at the top", LOST, id="list-at-top"),
    pytest.param('{"version": 1, "errors": {"a": 1}}', "errors: found {", LOST, id="errors-not-a-list"),
    pytest.param('{"version": 1}', "errors: missing", LOST, id="errors-missing"),
    pytest.param("{ half a file", "not valid JSON", LOST, id="torn-file"),
    pytest.param({"version": 1, "errors": [SOUND, "CELL_OVERVOLTAGE"]}, 'errors[1]: found "CELL_OVERVOLTAGE"', LOST,
                 id="entry-not-an-object"),
])
def test_a_damaged_error_file_is_a_critical_error_that_weakens_nothing(tmp_path, content, fragment, outcome):
    path = tmp_path / "errors.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    reg = registry(tmp_path)

    # status never fails (what Node.status reports, and what the CLI prints)
    status = [{"id": e.id, "severity": e.severity, "text": e.text, "active": e.active,
               "acknowledged": e.acknowledged} for e in reg.listed()]
    json.dumps(status)
    listed = {e.id: e for e in reg.listed()}

    damaged = listed["ERRORS_FILE_DAMAGED"]
    assert damaged.severity == "critical" and not damaged.acknowledged
    assert fragment in damaged.text, damaged.text
    assert "errors.json was damaged" in damaged.text and "acknowledge" in damaged.text
    assert reg.run_blocker() is not None and reg.error_blocker() is not None
    if outcome == KEPT:
        assert listed["INV_STALE"].severity == "error" and not listed["INV_STALE"].acknowledged
        entry = listed["CELL_OVERVOLTAGE"]
        assert entry.severity == "critical" and not entry.acknowledged
        assert isinstance(entry.first_wall, float) and isinstance(entry.last_wall, float)
        assert entry.active in (True, False) and isinstance(entry.count, int)
        assert "(CELL_OVERVOLTAGE kept as critical, not acknowledged)" in damaged.text
    else:
        assert "CELL_OVERVOLTAGE" not in listed
        assert "lost" in damaged.text

    # acknowledging it later works, and a restart reads a sound file again
    reg.raise_("BMS_STALE", "protection")
    assert reg.acknowledge("all") is None
    again = {e.id: e for e in registry(tmp_path).listed()}
    assert set(again) == set(reg_ids := {e.id for e in reg.listed()}) and "ERRORS_FILE_DAMAGED" not in reg_ids


def test_a_damaged_file_is_kept_for_inspection(tmp_path):
    (tmp_path / "errors.json").write_text('{"version": 1, "errors": [{"id": null}]}')
    reg = registry(tmp_path)
    assert "copy kept in errors.json.damaged" in reg.listed()[0].text
    assert (tmp_path / "errors.json.damaged").read_text() == '{"version": 1, "errors": [{"id": null}]}'


def test_a_stored_severity_weaker_than_the_catalog_is_raised_to_it(tmp_path):
    (tmp_path / "errors.json").write_text(json.dumps({"version": 1, "errors": [{**DAMAGED, "severity": "warning"}]}))
    assert registry(tmp_path).listed()[0].severity == "critical"
