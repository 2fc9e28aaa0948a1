"""Error registry: severities, latching, acknowledgement, persistence across a restart."""
import json

from sitecontroller.clock import SimClock
from sitecontroller.errors import NODE_CODES, ErrorRegistry, catalog


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
    for code, (severity, text) in catalog().items():
        assert severity in ("warning", "error", "critical"), code
        assert text, code
