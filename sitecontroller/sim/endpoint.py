"""The simulator process's control endpoint: fault knobs and plant state over ZeroMQ (JSON).

Loopback only (site parameters: `simulation.endpoint`), one JSON object per
request and per reply, like the node's control endpoint:

    {"op": "ping"}                      -> {"ok": true, "pid": N, "params": FILE, "node_id": ID, "devices": [...],
                                            "ready": true once every simulated device listens}
    {"op": "knobs"}                     -> {"ok": true, "knobs": [{"device", "knob", "kind", "type", "value",
                                                                   "default", "help"}, ...]}
    {"op": "set", "device": D, "knob": K, "value": V}   (V optional: true / the action's default)
                                        -> {"ok": true, "knob": {...as listed, with the new value}}
    {"op": "clear"}                     -> {"ok": true, "cleared": ["bms silent", ...]}
    {"op": "plant"}                     -> {"ok": true, "plant": {"soc", "p_w", "setpoint_p_w", "grid_p_w",
                                                                  "contactor_closed", ...}}

Errors: {"ok": false, "error": "one line that names the device, knob and allowed values"}.
"""
from __future__ import annotations

import logging
import os

from ..json_endpoint import JsonEndpoint, ask
from .knobs import KnobError

log = logging.getLogger("sitecontroller.sim.endpoint")


def plant_state(plant) -> dict:
    """What the simulated plant is doing right now (signs: battery + = discharge, grid + = import)."""
    b, inv = plant.battery, plant.inverter
    return {
        "soc": b.soc, "pack_v": b.pack_v, "pack_a": b.pack_a, "contactor_closed": b.contactor_closed,
        "sleeping": b.sleeping, "balancing": b.balancing, "temp_c": list(b.temp_c),
        "p_w": inv.p_w, "setpoint_p_w": inv.setpoint_p_w, "run_requested": inv.run_requested,
        "tripped": inv.tripped, "grid_p_w": plant.grid_p_w, "pv_w": plant.pv_w, "load_w": plant.load_w,
        "freq_hz": plant.grid.measured_hz,
    }


class SimControlServer(JsonEndpoint):
    what = "simulator endpoint"
    user_errors = (KnobError,)

    def __init__(self, endpoint: str, site, params_file: str = ""):
        super().__init__(endpoint)
        self.site = site
        self.params_file = params_file
        self.ready = False  # set once every simulated device listens

    async def handle(self, request) -> dict:
        if not isinstance(request, dict):
            return {"ok": False, "error": "request must be a JSON object"}
        op = request.get("op")
        knobs = self.site.knobs
        if op == "ping":
            p = self.site.params
            return {"ok": True, "pid": os.getpid(), "params": self.params_file, "node_id": p.identity.node_id,
                    "devices": knobs.devices, "ready": self.ready}
        if op == "knobs":
            return {"ok": True, "knobs": knobs.describe()}
        if op == "set":
            device, knob = request.get("device"), request.get("knob")
            if not isinstance(device, str) or not isinstance(knob, str):
                return {"ok": False, "error": "set needs 'device' and 'knob' (text)"}
            result = await knobs.set(device, knob, request.get("value"))
            log.warning("fault knob set: %s %s = %s", device, knob, result["value"])
            return {"ok": True, "knob": result}
        if op == "clear":
            cleared = await knobs.clear()
            log.warning("fault knobs cleared: %s", ", ".join(cleared) or "none were set")
            return {"ok": True, "cleared": cleared}
        if op == "plant":
            return {"ok": True, "plant": plant_state(self.site.plant)}
        return {"ok": False, "error": f"unknown op {op!r}; allowed: ping, knobs, set, clear, plant"}


class SimUnreachable(Exception):
    pass


def sim_request(endpoint: str, payload: dict, timeout_s: float = 2.0) -> dict:
    """Send one request to a simulator process and return its reply (blocking, for the CLI)."""
    return ask(endpoint, payload, timeout_s, SimUnreachable,
               "simulator at {endpoint} did not answer within {timeout_s:g} s (is it running? scripts/run-sim starts it)")
