"""What the node tells the cloud: message bodies built from the node's status, and the events.

Every message is JSON (UTF-8) with the message property `type` for routing:
    SC_Spot_10s             every `cloud.telemetry_interval_s`: state, mode, role, SOC, SOH, power, limits, cells,
                            inverter and meter readings, frequency, active errors
    SC_state_event          a node state change (from, to, reason)
    SC_cluster_state_event  from the leader (or a cluster of one): leader, term, membership or mode changed
    SC_error_event          an error raised or cleared
    SC_command_event        the final status of a cloud command
The offline queue adds the per-node monotonic `seq`; `ts` is ISO-8601 UTC.
"""
from __future__ import annotations

import datetime as dt

SPOT, STATE, CLUSTER_STATE, ERROR, COMMAND = (
    "SC_Spot_10s", "SC_state_event", "SC_cluster_state_event", "SC_error_event", "SC_command_event")


def iso(wall: float) -> str:
    return dt.datetime.fromtimestamp(wall, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def properties(kind: str) -> dict:
    return {"type": kind}


def status_line(cloud: dict) -> str:
    """The cloud part of `sitecontroller status`, for a technician."""
    link = "connected" if cloud["connected"] else "NOT connected"
    since = f" (last connected {cloud['last_connected']})" if cloud["last_connected"] else ""
    oldest = f", oldest {cloud['oldest_queued_s']:.0f} s" if cloud["oldest_queued_s"] is not None else ""
    line = (f"cloud: {link}{since}; queued {cloud['queued']}{oldest}, sent {cloud['sent']}, "
            f"failed {cloud['failed']}, dropped {cloud['dropped']}")
    return line + (f"; {cloud['problem']}" if cloud["problem"] else "")


def cluster_mode(node) -> str:
    if node.cluster is None:
        return node.mode
    try:
        return node.cluster.consensus.state().mode
    except Exception:  # no state yet (joining): the node still reports
        return "unknown"


def spot(node, status: dict) -> dict:
    img = node.image
    inv = img.inverter if img else None
    meter = img.meter if img else None
    bms = img.bms if img else None
    freq = next((r.freq_hz for r in (meter, inv) if r is not None and r.freq_hz is not None), None)
    battery = status.get("battery") or {}
    return {
        "ts": iso(status["wall"]), "node_id": status["node_id"], "site_id": status["site_id"],
        "state": status["state"], "mode": cluster_mode(node), "role": status["role"],
        "soc": status["soc"], "soh": battery.get("soh"), "p_w": status["p_w"], "grid_p_w": status["grid_p_w"],
        "setpoint_w": status["setpoint_w"], "limits": status["limits"],
        "cell_v_min_v": battery.get("cell_v_min_v"), "cell_v_max_v": battery.get("cell_v_max_v"),
        "cell_t_min_c": getattr(bms, "cell_t_min_c", None), "cell_t_max_c": battery.get("cell_t_max_c"),
        "inverter": None if inv is None else {"p_w": inv.p_w, "q_var": inv.q_var, "dc_v": inv.dc_v,
                                              "temp_c": inv.temp_c, "state": inv.state, "running": inv.running},
        "meter": None if meter is None else {"p_w": meter.p_w, "phase_p_w": list(meter.phase_p_w),
                                             "phase_v": list(meter.phase_v)},
        "freq_hz": freq,
        "errors": [e["id"] for e in status["errors"] if e["active"]],
    }


class EventWatch:
    """Turns changes seen between two status snapshots into events (called every telemetry tick
    and more often: each second), so no state change or error escapes the cloud."""

    def __init__(self):
        self._transitions_seen: float | None = None
        self._errors: set[str] | None = None
        self._cluster: tuple | None = None

    def events(self, node, status: dict) -> list[tuple[str, dict]]:
        out: list[tuple[str, dict]] = []
        ts = iso(status["wall"])
        seen = self._transitions_seen
        for t in status["transitions"]:
            if seen is not None and t["wall"] > seen:  # the first snapshot only marks where history ends
                out.append((STATE, {"ts": iso(t["wall"]), "from": t["from"], "to": t["to"], "reason": t["cause"]}))
        self._transitions_seen = max([seen or 0.0] + [t["wall"] for t in status["transitions"]])
        active = {e["id"]: e for e in status["errors"] if e["active"]}
        if self._errors is not None:
            for code in sorted(active.keys() - self._errors):
                e = active[code]
                out.append((ERROR, {"ts": ts, "code": code, "raised": True, "severity": e["severity"], "text": e["text"]}))
            for code in sorted(self._errors - active.keys()):
                out.append((ERROR, {"ts": ts, "code": code, "raised": False}))
        self._errors = set(active)
        if node.cluster is not None and status["role"] in ("leader", "alone"):
            c = node.cluster.cluster_status()
            now = (c["leader"], c["term"], tuple(m["node_id"] for m in c["members"]), c["mode"])
            if now != self._cluster:
                out.append((CLUSTER_STATE, {"ts": ts, "leader": c["leader"], "term": c["term"],
                                            "members": list(now[2]), "mode": c["mode"]}))
            self._cluster = now
        return [(kind, {"node_id": status["node_id"], **body}) for kind, body in out]
