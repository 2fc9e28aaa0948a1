"""A simulated Indevolt speaking its local HTTP RPC (Indevolt.GetData / Indevolt.SetData).

The same protocol as `sitecontroller.drivers.inverter.indevolt` (see its docstring for
the sources and the choices made where the public docs are silent). Values come from
the `Plant`; writes go into `plant.inverter.setpoint_p_w` / `run_requested`. It never
steps the physics: whoever owns the plant does that.

Behaviour: the device starts in mode 1 (self-consumption); 47015/47016/47017 are
accepted only in mode 4 (real-time control, as documented). Leaving mode 4 puts the
simulated inverter in standby (the sim does not model the device's own strategies).
Unknown points are left out of GetData replies; an invalid SetData answers
`{"result": false}`; a `config` that is not JSON answers HTTP 400.

Device-side fail-safe: the SOC limit written with 47015 (the third value) is enforced by
the device itself, every `WATCH_S`, also when nobody polls: a discharge ends at or below
it, a charge at or above it (the order drops to standby, `failsafe_fired` = "soc").
The public docs describe no communication timeout: without the node the device keeps
its last real-time order until that SOC limit.

Fault knobs (plain attributes, change them at any time):
  silent        hold every request unanswered (the client times out)
  delay_s       answer each request this much later
  reject_writes answer every SetData with {"result": false} and change nothing
  malformed     answer every request with a truncated JSON body
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

WATCH_S = 0.05  # how often the device checks its SOC limit
MODES = (1, 4, 5)
REALTIME = 4


class SimIndevolt:
    KNOBS = {  # `sitecontroller sim faults` lists these (sim/knobs.py)
        "silent": "every request is held unanswered (the client times out)",
        "delay_s": "every answer comes this many seconds late",
        "reject_writes": "the inverter refuses writes: every SetData answers result false and changes nothing",
        "malformed": "every answer is a truncated JSON body",
    }

    def __init__(self, plant, config, *, host: str | None = None, port: int | None = None):
        self.plant = plant
        self.rated_w = float(config.rated_w)
        self.host = host or config.host or "127.0.0.1"
        self.port = port if port is not None else (config.port or 0)
        # device state
        self.mode = 1
        self.order = 0
        self.power_w = 0
        self.end_soc_pct = 5
        # knobs
        self.delay_s = 0.0
        self.reject_writes = False
        self.malformed = False
        self._silent = False
        # counters
        self.requests = 0
        self.writes: list[tuple[int, list[int]]] = []  # accepted SetData (point, values)
        self._release = asyncio.Event()
        self._release.set()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._watcher: asyncio.Task | None = None
        self.failsafe_fired: str | None = None

    @property
    def silent(self) -> bool:
        return self._silent

    @silent.setter
    def silent(self, value: bool) -> None:
        self._silent = bool(value)
        if self._silent:
            self._release.clear()
        else:
            self._release.set()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/rpc/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._watcher = asyncio.create_task(self._watch(), name="sim indevolt SOC limit")

    def check_failsafe(self) -> None:
        """End a discharge at or below the SOC limit, a charge at or above it (the device's own stop)."""
        if self.mode != REALTIME or self.order not in (1, 2):
            return
        soc_pct = 100.0 * self.plant.battery.soc
        if (self.order == 2 and soc_pct <= self.end_soc_pct) or (self.order == 1 and soc_pct >= self.end_soc_pct):
            self.order = 0
            self.failsafe_fired = "soc"
            self._apply()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_S)
            self.check_failsafe()

    async def close(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        self._closing = True
        self._release.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # --- HTTP --------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self._silent:
            await self._release.wait()
            if self._closing:
                return web.Response(status=503)
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        if self.malformed:
            return web.Response(text='{"2275": 1', content_type="application/json")
        method = request.match_info["method"]
        raw = request.query.get("config")
        if raw is None and request.can_read_body:
            raw = await request.text()
        if method == "Sys.GetConfig":
            return web.json_response({"device": {"type": "CMS-SIM", "sn": "SIM0001", "fw": "sim"}})
        try:
            cfg = json.loads(raw or "")
            if not isinstance(cfg, dict):
                raise ValueError
        except ValueError:
            return web.json_response({"error": "config must be a JSON object"}, status=400)
        if method == "Indevolt.GetData":
            return web.json_response(self.get_data(cfg.get("t")))
        if method == "Indevolt.SetData":
            return web.json_response({"result": self.set_data(cfg)})
        return web.json_response({"error": f"unknown method {method}"}, status=404)

    # --- the data points ---------------------------------------------------------------------
    def points(self) -> dict[int, Any]:
        inv, bat, grid = self.plant.inverter, self.plant.battery, self.plant.grid
        p = inv.p_w
        if inv.tripped:
            state = 7
        elif inv.running and self.order in (1, 2):
            state = 9 if self.order == 1 else 10
        else:
            state = 8
        fault = (4 if "GRID_FAULT" in inv.faults else 7) if inv.tripped else 0
        pack_v = bat.pack_v
        return {
            2275: round(-p, 1) + 0.0,  # AC power, positive = charging
            6000: round(pack_v * bat.pack_a, 1),  # battery power, positive = discharging
            6001: 1001 if p < -1 else (1002 if p > 1 else 1000),
            6002: round(bat.soc * 100, 1),
            9405: round(bat.soc * 100, 1),
            2600: round(grid.nominal_v, 1),
            2612: round(grid.measured_hz, 3),
            2097: round(inv.q_var, 1),
            9004: round(pack_v, 2),
            11032: self.rated_w,
            11006: state,
            8100: fault,
            7101: self.mode,
            6107: self.order,
            6108: self.end_soc_pct,
            6109: self.power_w,
        }

    def get_data(self, wanted) -> dict[str, Any]:
        known = self.points()
        out: dict[str, Any] = {}
        for t in wanted if isinstance(wanted, list) else []:
            try:
                key = int(t)
            except (TypeError, ValueError):
                continue
            if key in known:
                out[str(key)] = known[key]
        return out

    def set_data(self, cfg: dict[str, Any]) -> bool:
        t, v = cfg.get("t"), cfg.get("v")
        if cfg.get("f") != 16 or not isinstance(t, int) or not isinstance(v, list) or not v:
            return False
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            return False
        if self.reject_writes:
            return False
        if t == 47005 and len(v) == 1 and v[0] in MODES:
            self.mode = v[0]
            if self.mode != REALTIME:
                self.order, self.power_w = 0, 0
        elif t == 47015 and self.mode == REALTIME and len(v) in (1, 3) and v[0] in (0, 1, 2):
            if len(v) == 3:
                action, watts, soc = v
                if not 0 <= watts <= self.rated_w or not (action == 0 or 5 <= soc <= 100):
                    return False
                self.power_w, self.end_soc_pct = watts, soc if action else self.end_soc_pct
            self.order = v[0]
        elif t == 47016 and self.mode == REALTIME and len(v) == 1 and 0 <= v[0] <= self.rated_w:
            self.power_w = v[0]
        elif t == 47017 and self.mode == REALTIME and len(v) == 1 and 5 <= v[0] <= 100:
            self.end_soc_pct = v[0]
        else:
            return False
        self.writes.append((t, list(v)))
        self._apply()
        return True

    def _apply(self) -> None:
        inv = self.plant.inverter
        sign = {1: -1.0, 2: 1.0}.get(self.order, 0.0) if self.mode == REALTIME else 0.0
        inv.setpoint_p_w = sign * self.power_w
        inv.run_requested = sign != 0.0
