"""Simulated grid meters that speak the real protocols, with values live from the plant.

- `SimModbusMeter`: a Carlo Gavazzi EM24/EM340 on Modbus TCP, serving the
  meter's register-map profile through the generic simulated Modbus server.
- `SimP1Meter`: a HomeWizard P1 meter on HTTP (`/api` and `/api/v1/data`).

Both only *read* the plant (they never step its physics) and share the fault
knobs of `MeterFaults`: stop answering (also `plant.meter_stopped`), delay
every answer, or answer with a malformed payload.
"""
from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..drivers.meter.config import MeterConfig
from ..drivers.modbus import load_profile
from .modbus_server import ProfileServer

if TYPE_CHECKING:  # aiohttp is imported by the P1 meter when it runs: a Modbus meter does without it (~9 MB)
    from aiohttp import web


@dataclass
class MeterFaults:
    """Fault knobs a test (or the simulator CLI) sets on a simulated meter.

    stopped:   the meter is silent (no answer at all) while this or
               `plant.meter_stopped` is set;
    delay_s:   every answer comes this much later;
    malformed: None, or the kind of broken answer to give —
               P1: "json" (truncated body), "type" (power as a string),
               "missing" (no active_power_w), "range" (voltage 5000 V);
               Modbus: any value serves a frequency no grid has (655 Hz);
    http_status: P1 only: answer with this HTTP status instead of 200
               (403 is what a P1 with its local API disabled answers);
    frozen:    P1 only: the dongle keeps serving its last telegram (same
               values, same `timestamp`), as a stuck meter or dongle does.
    """

    stopped: bool = False
    delay_s: float = 0.0
    malformed: str | None = None
    http_status: int = 200
    frozen: bool = False


def meter_values(plant) -> dict:
    """What an ideal meter at the connection point measures right now (positive = import)."""
    total = plant.grid_p_w
    phase_p = plant.phase_split(total)
    phase_v = plant.phase_v()
    return {
        "p_w": total,
        "phase_p_w": phase_p,
        "phase_v": phase_v,
        "phase_a": tuple(p / v for p, v in zip(phase_p, phase_v)),
        "freq_hz": plant.grid.measured_hz,
        # line-to-line: phases 120 degrees apart, |Va - Vb| = sqrt(Va² + Vb² + Va·Vb)
        "line_v": tuple(
            math.sqrt(a * a + b * b + a * b) for a, b in zip(phase_v, phase_v[1:] + phase_v[:1])
        ) if len(phase_v) == 3 else (),
    }


class _SimMeterBase:
    # `sitecontroller sim faults` lists these and every field of MeterFaults (sim/knobs.py)
    KNOBS = {"silent": ("faults.stopped", "the meter does not answer at all")}

    def __init__(self, plant, config: MeterConfig) -> None:
        if config.host is None or config.port is None:
            raise ValueError("a simulated meter needs 'host' and 'port'")
        self.plant = plant
        self.config = config
        self.faults = MeterFaults()

    @property
    def silent(self) -> bool:
        return self.faults.stopped or bool(getattr(self.plant, "meter_stopped", False))


class SimP1Meter(_SimMeterBase):
    """A HomeWizard P1 meter (HWE-P1, local API v1) on `config.host:config.port`."""

    PRODUCT = {
        "product_type": "HWE-P1",
        "product_name": "P1 Meter",
        "serial": "5c2faf000001",
        "firmware_version": "5.18",
        "api_version": "v1",
    }

    def __init__(self, plant, config: MeterConfig, *, with_frequency: bool = True) -> None:
        super().__init__(plant, config)
        self.with_frequency = with_frequency
        self.requests = 0  # requests received (answered or not)
        self.telegram_s = 1.0  # a DSMR 5 meter sends one telegram a second
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._last_doc: dict | None = None

    def telegram_stamp(self) -> int:
        """The current telegram's time as DSMR writes it (YYMMDDhhmmss, local time)."""
        t = time.time()
        t -= t % self.telegram_s
        return int(time.strftime("%y%m%d%H%M%S", time.localtime(t)))

    def payload(self) -> dict:
        """The `/api/v1/data` document for the plant's present state (W to 1 W, V to 0.1 V)."""
        v = meter_values(self.plant)
        doc = {
            "wifi_ssid": "sim",
            "wifi_strength": 100,
            "smr_version": 50,
            "meter_model": "SIM P1",
            "timestamp": self.telegram_stamp(),
            "active_power_w": round(v["p_w"]),
        }
        for i, (p, volts, amps) in enumerate(zip(v["phase_p_w"], v["phase_v"], v["phase_a"]), start=1):
            doc[f"active_power_l{i}_w"] = round(p)
            doc[f"active_voltage_l{i}_v"] = round(volts, 1)
            doc[f"active_current_l{i}_a"] = round(amps, 3)
        if self.with_frequency:
            doc["active_frequency_hz"] = round(v["freq_hz"], 3)
        return doc

    async def _api(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(lambda: json.dumps(self.PRODUCT))

    async def _data(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(self._data_body)

    def _data_body(self) -> str:
        if self.faults.frozen and self._last_doc is not None:
            doc = dict(self._last_doc)
        else:
            doc = self._last_doc = self.payload()
            doc = dict(doc)
        kind = self.faults.malformed
        if kind == "json":
            return json.dumps(doc)[:-7]
        if kind == "type":
            doc["active_power_w"] = str(doc["active_power_w"])
        elif kind == "missing":
            del doc["active_power_w"]
        elif kind == "range":
            doc["active_voltage_l1_v"] = 5000.0
        return json.dumps(doc)

    async def _hold(self) -> bool:
        """Stay silent while told to, then wait `delay_s`; False if the sim closes meanwhile."""
        while self.silent:
            try:
                await asyncio.wait_for(self._closing.wait(), timeout=0.02)
                return False
            except asyncio.TimeoutError:
                pass
        if self.faults.delay_s > 0:
            try:
                await asyncio.wait_for(self._closing.wait(), timeout=self.faults.delay_s)
                return False
            except asyncio.TimeoutError:
                pass
        return not self._closing.is_set()

    async def _answer(self, body) -> web.StreamResponse:
        from aiohttp import web

        self.requests += 1
        if not await self._hold():
            return web.Response(status=503)
        status = self.faults.http_status
        if status != 200:
            return web.json_response({"error": {"id": "sim:error", "description": "simulated"}}, status=status)
        return web.Response(text=body(), content_type="application/json")

    async def start(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/api", self._api)
        app.router.add_get("/api/v1/data", self._data)
        self._closing.clear()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, reuse_address=True)
        await site.start()

    async def close(self) -> None:
        self._closing.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


class MeterServer(ProfileServer):
    """A ProfileServer whose silence and delay follow a simulated meter's fault knobs."""

    def __init__(self, sim: "SimModbusMeter", profile, **kw) -> None:
        self._sim = sim  # first: ProfileServer.__init__ sets muted and delay_s
        super().__init__(profile, **kw)

    @property
    def muted(self) -> bool:
        return self._sim.silent

    @muted.setter
    def muted(self, value: bool) -> None:
        self._sim.faults.stopped = bool(value)

    @property
    def delay_s(self) -> float:
        return self._sim.faults.delay_s

    @delay_s.setter
    def delay_s(self, value: float) -> None:
        self._sim.faults.delay_s = float(value)


class SimModbusMeter(_SimMeterBase):
    """A Carlo Gavazzi EM24/EM340 on Modbus TCP at `config.host:port`, unit `config.unit_id`.

    The registers are the meter's profile (`config.profile`, else the model's
    built-in one, or the `profile` given), served by the generic
    `ProfileServer` from `quantities()`.
    """

    def __init__(self, plant, config: MeterConfig, profile=None) -> None:
        super().__init__(plant, config)
        if profile is None or isinstance(profile, str):
            profile = load_profile(profile or config.profile or config.model, kind="meter")
        self.profile = profile
        self.server = MeterServer(
            self, profile, host=config.host, port=config.port, unit_id=config.unit_id, source=self.quantities
        )

    def quantities(self) -> dict:
        """The live values the profile's `sim` hints name (currents as RMS magnitudes)."""
        v = meter_values(self.plant)
        v["phase_a"] = tuple(abs(a) for a in v["phase_a"])
        if self.faults.malformed:  # "range": a frequency no grid has (decodes, but is implausible)
            v["freq_hz"] = 655.0
        return v

    @property
    def requests(self) -> int:
        """Requests received (answered or not)."""
        return self.server.requests

    async def start(self) -> None:
        await self.server.start()

    async def close(self) -> None:
        await self.server.close()
