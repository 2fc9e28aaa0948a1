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

    {"op": "frequency", "profile": {...}}   play a frequency profile (sim/frequency.py) from now
                                        -> {"ok": true, "name", "duration_s"};  {"op": "frequency"}: stop it
    {"op": "trace"}                     -> {"ok": true, "trace": {"name", "started_wall", "t_s": [...],
                                            "hz": [...], "p_w": {node: [...]}}} (the last profile played)

Errors: {"ok": false, "error": "one line that names the device, knob and allowed values"}.

A simulator of several nodes (a site behind one meter) also answers `ping` with
"nodes": [{"node_id", "params"}, ...]; `knobs`, `set`, `clear` and `plant` take an
optional "node": ID (one node's knobs and the shared meter and grid; its plant).
Without it, `knobs` lists every knob (each with its "node", null for the shared
ones), `clear` clears everything and `plant` describes the site:
{"grid_p_w", "pv_w", "load_w", "nodes_p_w", "freq_hz", "grid_lost", "unserved_w", "curtailed_w",
"nodes": {ID: {...as above}}}.
An unknown node is an error naming the known ones.
"""
from __future__ import annotations

import logging
import os

from ..json_endpoint import JsonEndpoint, ask
from . import frequency
from .knobs import KnobError

log = logging.getLogger("sitecontroller.sim.endpoint")


def plant_state(plant) -> dict:
    """What the simulated plant is doing right now (signs: battery + = discharge, grid + = import)."""
    b, inv = plant.battery, plant.inverter
    return {
        "soc": b.soc, "pack_v": b.pack_v, "pack_a": b.pack_a, "contactor_closed": b.contactor_closed,
        "sleeping": b.sleeping, "balancing": b.balancing, "temp_c": list(b.temp_c),
        "p_w": inv.p_w, "q_var": inv.q_var, "setpoint_p_w": inv.setpoint_p_w, "run_requested": inv.run_requested,
        "tripped": inv.tripped, "grid_forming": inv.grid_forming, "grid_p_w": plant.grid_p_w, "pv_w": plant.pv_w, "load_w": plant.load_w,
        "freq_hz": plant.grid.measured_hz,
    }


def site_state(site_plant) -> dict:
    """The whole site: the one meter's quantities and every node's plant."""
    return {
        "grid_p_w": site_plant.grid_p_w, "pv_w": site_plant.pv_w, "load_w": site_plant.load_w,
        "nodes_p_w": site_plant.nodes_p_w, "freq_hz": site_plant.grid.measured_hz,
        "grid_lost": site_plant.grid.lost, "unserved_w": site_plant.unserved_w, "curtailed_w": site_plant.curtailed_w,
        "nodes": {node: plant_state(plant) for node, plant in site_plant.nodes.items()},
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
        node = request.get("node")
        if node is not None and not isinstance(node, str):
            return {"ok": False, "error": "'node' must be a node id (text)"}
        if op == "ping":
            p = self.site.params
            reply = {"ok": True, "pid": os.getpid(), "params": self.params_file, "node_id": p.identity.node_id,
                     "devices": self.site.knobs.devices, "ready": self.ready}
            if self.site.site_plant is not None:
                files = self.params_file if isinstance(self.params_file, (list, tuple)) else [self.params_file]
                reply["params"] = ", ".join(map(str, files))
                reply["nodes"] = [{"node_id": q.identity.node_id, "params": str(f)}
                                  for q, f in zip(self.site.params_list, files)]
            return reply
        if op in ("frequency", "trace"):
            return self._frequency(op, request)
        if op not in ("knobs", "set", "clear", "plant"):
            return {"ok": False, "error": f"unknown op {op!r}; allowed: ping, knobs, set, clear, plant, frequency, trace"}
        knobs = self.site.knob_scope(node)  # an unknown node: KnobError, one line naming the known ones
        where = f" at {node}" if node else ""
        if op == "knobs":
            return {"ok": True, "knobs": knobs.describe()}
        if op == "set":
            device, knob = request.get("device"), request.get("knob")
            if not isinstance(device, str) or not isinstance(knob, str):
                return {"ok": False, "error": "set needs 'device' and 'knob' (text)"}
            result = await knobs.set(device, knob, request.get("value"))
            log.warning("fault knob set%s: %s %s = %s", where, device, knob, result["value"])
            return {"ok": True, "knob": result}
        if op == "clear":
            cleared = await knobs.clear()
            log.warning("fault knobs cleared%s: %s", where, ", ".join(cleared) or "none were set")
            return {"ok": True, "cleared": cleared}
        if node is None and self.site.site_plant is not None:
            return {"ok": True, "plant": site_state(self.site.site_plant)}
        return {"ok": True, "plant": plant_state(self.site.plants[node] if node else self.site.plant)}


    def _frequency(self, op: str, request: dict) -> dict:
        grid = (self.site.site_plant or self.site.plant).grid
        if op == "trace":
            player = grid.player
            if player is None:
                return {"ok": False, "error": "no frequency profile has been played"}
            nodes = sorted({k for _, _, p in player.trace for k in p})
            return {"ok": True, "trace": {
                "name": player.profile.name, "started_wall": player.started_wall, "playing": grid.playing,
                "t_s": [t for t, _, _ in player.trace], "hz": [f for _, f, _ in player.trace],
                "p_w": {n: [p.get(n) for _, _, p in player.trace] for n in nodes}}}
        if request.get("profile") is None:
            grid.player = None
            log.warning("frequency profile stopped")
            return {"ok": True, "name": None, "duration_s": 0.0}
        try:
            profile = frequency.parse(request["profile"], str(request.get("name") or "profile"))
        except frequency.ProfileError as exc:
            return {"ok": False, "error": str(exc)}
        grid.player = frequency.Player(profile, self.site.clock.wall())
        log.warning("frequency profile %s playing (%.0f s)", profile.name, profile.duration_s)
        return {"ok": True, "name": profile.name, "duration_s": profile.duration_s}


class SimUnreachable(Exception):
    pass


def sim_request(endpoint: str, payload: dict, timeout_s: float = 2.0) -> dict:
    """Send one request to a simulator process and return its reply (blocking, for the CLI)."""
    return ask(endpoint, payload, timeout_s, SimUnreachable,
               "simulator at {endpoint} did not answer within {timeout_s:g} s (is it running? scripts/run-sim starts it)")
