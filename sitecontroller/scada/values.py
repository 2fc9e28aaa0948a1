"""The live values the SCADA map serves, from the node's latest status snapshot (pure).

`live_values(status, cluster)` turns `status --json` (a `NodeStatus.to_dict()`) and the
cluster status (`cluster status --json`, None without a cluster) into {quantity: value}, the names the map's `sim` keys use
(registers.toml). A quantity that is unknown (no fresh BMS data, no cluster) is left
out: its register reads as SunSpec "not implemented". Signs stay ours (SunSpec's too):
power + = discharge; limits are magnitudes.
"""
from __future__ import annotations

import zlib
from importlib.metadata import PackageNotFoundError, version

MAP_VERSION = 2  # bump on any change of an address, type, scale or meaning in registers.toml
MANUFACTURER = "BESS cluster controller"
MODEL = "battery node"
MAX_ERRORS = 8  # Err1..Err8
SEVERITY_ORDER = {"critical": 0, "error": 1, "warning": 2}

# The node's state as a SunSpec operating state (model 103 St) and battery state (802 State).
INVERTER_STATE = {"init": "starting", "run": "running", "sleep": "sleeping", "maintenance": "standby",
                  "error": "fault", "restart": "shutting_down", "reboot": "shutting_down"}


# Our error ids as SunSpec 802 Evt1 alarm names (registers.toml Bat_Evt1), while active.
BATTERY_EVENTS = {"BMS_STALE": "COMMUNICATION_ERROR", "CELL_OVERTEMP": "OVER_TEMP_ALARM",
                  "CELL_UNDERTEMP": "UNDER_TEMP_ALARM", "CELL_OVERVOLTAGE": "OVER_VOLT_ALARM",
                  "CELL_UNDERVOLTAGE": "UNDER_VOLT_ALARM", "BMS_FAULT": "OTHER_ALARM",
                  "BMS_DATA_INVALID": "OTHER_ALARM", "BMS_ALARM": "OTHER_WARNING"}


def error_code(error_id: str) -> int:
    """A stable 16-bit number for an error id (CRC-32 folded; REGISTERS.md lists them all)."""
    crc = zlib.crc32(error_id.encode())
    return ((crc >> 16) ^ crc) & 0xFFFF or 1


def software_version() -> str:
    try:
        return version("bess-controller")
    except PackageNotFoundError:
        return "dev"


def live_values(status: dict, cluster: dict | None, *, rated_w: float,
                capacity_wh: float) -> dict:
    lim = status.get("limits") or {}
    bat = status.get("battery")
    errors = sorted(status.get("errors", []), key=lambda e: (SEVERITY_ORDER.get(e["severity"], 3), e["id"]))
    out = {
        "manufacturer": MANUFACTURER, "model": MODEL, "version": software_version(),
        "node_id": status["node_id"], "map_version": MAP_VERSION,
        "state": status["state"], "inv_state": INVERTER_STATE.get(status["state"], "standby"),
        "control_mode": status["control_mode"], "role": status.get("role", "alone"),
        "term": status.get("term"), "rated_w": rated_w, "capacity_wh": capacity_wh,
        "error_count": len(errors), "error_codes": [error_code(e["id"]) for e in errors[:MAX_ERRORS]]
                                                   + [0] * (MAX_ERRORS - min(MAX_ERRORS, len(errors))),
        "bat_events": frozenset(BATTERY_EVENTS[e["id"]] for e in errors if e["active"] and e["id"] in BATTERY_EVENTS),
    }
    _put(out, "p_w", status.get("p_w"))
    if status.get("soc") is not None:
        out["soc_pct"] = 100.0 * status["soc"]
    if lim:
        out["charge_limit_w"], out["discharge_limit_w"] = lim["charge_w"], lim["discharge_w"]
    if bat is not None:
        out.update(dc_v=bat["pack_v"], dc_a=abs(bat["pack_a"]), dc_a_signed=bat["pack_a"],
                   dc_w=bat["pack_v"] * bat["pack_a"], soh_pct=100.0 * bat["soh"],
                   cell_v_max_v=bat["cell_v_max_v"], cell_v_min_v=bat["cell_v_min_v"],
                   cell_t_max_c=bat["cell_t_max_c"], cell_t_min_c=bat["cell_t_min_c"],
                   bat_state="connected" if bat["contactor_closed"] else "disconnected")
    if cluster is not None:
        out.update(_cluster_values(cluster))
    return out


def _cluster_values(cluster: dict) -> dict:
    online = [m for m in cluster.get("members", []) if m["online"]]
    socs = [m["soc"] for m in online if m["soc"] is not None]
    lims = [m["limits"] for m in online if m["limits"]]
    out = {"leader_id": cluster.get("leader") or "", "term": cluster.get("term"),
           "cluster_mode": cluster.get("mode"), "cluster_p_w": cluster.get("actual_w"),
           "cluster_charge_w": sum(x["charge_w"] for x in lims), "cluster_discharge_w": sum(x["discharge_w"] for x in lims)}
    if socs:
        out["cluster_soc_pct"] = 100.0 * sum(socs) / len(socs)
    _put(out, "cluster_target_w", cluster.get("target_w"))
    _put(out, "cluster_unplaced_w", cluster.get("unplaced_w"))
    _put(out, "cluster_request_w", cluster.get("request_w"))
    return out


def _put(out: dict, key: str, value) -> None:
    if value is not None:
        out[key] = value
