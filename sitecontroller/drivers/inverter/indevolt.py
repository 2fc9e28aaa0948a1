"""Indevolt inverter (SolidFlex / PowerFlex) over its local HTTP RPC ("OpenData" HTTP API).

Protocol, as publicly described (summarised in our own words):
- Indevolt API reference, "Indevolt.GetData / Indevolt.SetData" and the cJSON point
  tables: https://github.com/INDEVOLT/indevolt-doc  docs/hardware/open-data/http-api.md
  (published at docs.indevolt.com/docs/hardware/open-data/http-api/).
- Xirt/indevolt-api (the client library behind the Home Assistant integration):
  indevolt_api/client.py and const.py, which use the same calls and constants.
- evcc's Indevolt templates (docs.evcc.io/en/meters/indevolt-solidflex-2000): HTTP on port 8080.

Calls: `POST http://host:port/rpc/Indevolt.GetData?config={"t":[p1,p2,...]}` answers a
flat JSON object `{"p1": value, ...}`; `POST .../rpc/Indevolt.SetData?config=
{"f":16,"t":<point>,"v":[values]}` answers `{"result": true}` (false = rejected).
The `config` object travels URL-encoded in the query string.

Points this driver uses (from the PG1000/2000/3000 table):
  read   2275 INV AC power, W, positive = AC input (charging)  -> p_w = -value
         2600 grid voltage V, 2612 grid frequency Hz, 2097 reactive power var,
         9004 pack voltage V, 11032 on-grid rated power W,
         11006 system operating state (7 = INV fault), 8100 inverter fault code,
         7101 system mode (1 self-consumption, 4 real-time control, 5 schedule),
         6107 real-time order (0 standby, 1 charge, 2 discharge), 6109 real-time power W.
  write  47005 mode [4] (real-time control);
         47015 real-time control [action, watts, soc_limit] (action 0 standby,
         1 charge, 2 discharge; the docs say state, power and SOC are written together).

Where the public docs are silent we chose, and the simulator does the same:
- A point the device does not know is left out of the GetData reply. 2275, 7101,
  6107 and 6109 are required (a reply without them is INV_DECODE); the others are optional.
- The SOC limit in 47015 is the device-side fail-safe, not the node's safety layer
  (the node's limiter is): discharging stops at the node's `soc_reserve` (at least
  the documented minimum 5 %), charging at its `soc_max` (`soc_window`; without it
  5 % and 100 %). The device keeps that limit when the node dies. [0, 0, 0] is
  standby (as the reference client does). Standby is also used for
  run=False and for a setpoint that rounds to 0 W. Watts are whole numbers,
  capped at the configured rating.
- A write counts as acknowledged only if every SetData replies `{"result": true}`
  and a read-back of 7101/6107/6109 shows mode 4 and the requested order and power
  (within 1 W). Anything else is INV_WRITE_FAILED, retried at the next poll.
- A non-200 status or an unparsable body is INV_DECODE (the device answered, but
  not usefully); no answer within `timeout_s` twice in a row is INV_COMM_LOST.
- If a later poll shows the device left real-time control or changed the order
  or power (e.g. someone used the app), the command is written again.

Signs (DESIGN §4): positive = discharge; the device's 2275 is the opposite.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any

import aiohttp

from ...process_image import InverterReading
from ..base import InverterCommand, InverterDriver
from ..polling import PollingDriver, raise_if_cancelling

log = logging.getLogger("sitecontroller.drivers.inverter.indevolt")

P_AC_IN_W, P_GRID_V, P_GRID_HZ, P_Q_VAR = 2275, 2600, 2612, 2097
P_PACK_V, P_RATED_W, P_SYS_STATE, P_INV_FAULT = 9004, 11032, 11006, 8100
P_MODE, P_RT_ORDER, P_RT_POWER = 7101, 6107, 6109
POLL_POINTS = [P_AC_IN_W, P_GRID_V, P_GRID_HZ, P_Q_VAR, P_PACK_V, P_RATED_W,
               P_SYS_STATE, P_INV_FAULT, P_MODE, P_RT_ORDER, P_RT_POWER]
REQUIRED = (P_AC_IN_W, P_MODE, P_RT_ORDER, P_RT_POWER)
READBACK_POINTS = [P_MODE, P_RT_ORDER, P_RT_POWER]

W_MODE, W_REALTIME = 47005, 47015
MODE_SELF, MODE_REALTIME, MODE_SCHEDULE = 1, 4, 5
STANDBY, CHARGE, DISCHARGE = 0, 1, 2
SOC_LIMIT_CHARGE_PCT, SOC_LIMIT_DISCHARGE_PCT = 100, 5
FUNCTION_WRITE = 16
COMM_LOST_AFTER = 2  # consecutive polls without an answer
READBACK_TOLERANCE_W = 1.0

SYS_STATES = {1: "off", 2: "sleep", 3: "starting", 4: "mppt", 5: "current_limiting", 6: "shutting_down",
              7: "fault", 8: "standby", 9: "grid_charging", 10: "grid_discharging", 11: "offgrid_charging",
              12: "offgrid_discharging", 13: "low_battery_charging", 14: "deep_sleep", 15: "full_charge",
              16: "offgrid_deep_sleep"}
SYS_STATE_FAULT = 7
INV_FAULTS = {1: "DC overvoltage", 2: "AC disconnected", 3: "DC disconnected", 4: "grid disconnected",
              5: "ground fault", 6: "AC output short circuit", 7: "overtemperature", 8: "overfrequency",
              9: "underfrequency", 10: "AC input overvoltage", 11: "AC input undervoltage",
              12: "input short circuit", 13: "low temperature"}

INV_COMM_LOST, INV_DECODE, INV_WRITE_FAILED, INV_FAULT = "INV_COMM_LOST", "INV_DECODE", "INV_WRITE_FAILED", "INV_FAULT"


class _NoAnswer(Exception):
    """The device did not answer (refused, reset, timed out)."""


class _BadAnswer(Exception):
    """The device answered, but not with what the protocol promises."""


def target_of(cmd: InverterCommand, rated_w: float,
              soc_window_pct: tuple[int, int] = (SOC_LIMIT_DISCHARGE_PCT, SOC_LIMIT_CHARGE_PCT)) -> tuple[int, int, int]:
    """The 47015 value [action, watts, soc_limit] that carries out `cmd` (positive = discharge).

    `soc_window_pct` = (stop discharging at, stop charging at), in whole percent: the device's own
    SOC limit, which holds even when the node is gone (from the node's soc_reserve and soc_max)."""
    p = cmd.p_w
    if not cmd.run or p is None or not math.isfinite(p):
        return (STANDBY, 0, 0)
    watts = int(round(min(abs(p), rated_w)))
    if watts == 0:
        return (STANDBY, 0, 0)
    low, high = soc_window_pct
    return (DISCHARGE, watts, low) if p > 0 else (CHARGE, watts, high)


def soc_window_pct(soc_reserve: float, soc_max: float) -> tuple[int, int]:
    """The device's SOC limits from the node's fractions: discharge stops at soc_reserve (rounded up,
    at least the documented 5 %), charge stops at soc_max (rounded down)."""
    low = max(SOC_LIMIT_DISCHARGE_PCT, min(100, math.ceil(round(soc_reserve * 100, 6))))
    high = max(low, min(SOC_LIMIT_CHARGE_PCT, math.floor(round(soc_max * 100, 6))))
    return low, high


def _number(data: dict[str, Any], point: int, required: bool = False) -> float | None:
    value = data.get(str(point))
    if value is None:
        if required:
            raise _BadAnswer(f"point {point} missing from the reply")
        return None
    if isinstance(value, bool):
        raise _BadAnswer(f"point {point}: {value!r} is not a number")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise _BadAnswer(f"point {point}: {value!r} is not a number") from None
    if not math.isfinite(out):
        raise _BadAnswer(f"point {point}: {value!r} is not finite")
    return out


class IndevoltInverter(PollingDriver, InverterDriver):
    """Polls an Indevolt over HTTP every `poll_s`; writes commands in real-time control mode."""

    comm_lost_code = INV_COMM_LOST

    def __init__(self, config, clock, soc_window: tuple[float, float] | None = None):
        """`soc_window` = the node's (soc_reserve, soc_max) as fractions; the device's own SOC limit."""
        if config.host is None or config.port is None:
            raise ValueError("the indevolt inverter needs 'host' and 'port'")
        super().__init__(clock, poll_s=config.poll_s, comm_lost_s=0.0, comm_lost_polls=COMM_LOST_AFTER)
        self._cfg = config
        self._clock = clock
        self._soc_pct = (SOC_LIMIT_DISCHARGE_PCT, SOC_LIMIT_CHARGE_PCT) if soc_window is None \
            else soc_window_pct(*soc_window)
        self._base = f"http://{config.host}:{config.port}/rpc/"
        self._session: aiohttp.ClientSession | None = None
        self._latest: InverterReading | None = None
        self._device: tuple[int, int, float] | None = None  # (mode, order, power) of the last good poll
        self._acked: tuple[int, int, int] | None = None
        self._attempted: tuple[int, int, int] | None = None
        self._stats = {"poll_errors": 0.0, "decode_errors": 0.0, "rtt_s": 0.0}

    @property
    def endpoint(self) -> str:
        return f"{self._cfg.host}:{self._cfg.port}"

    # --- driver interface ------------------------------------------------------------------
    def set_soc_window(self, soc_reserve: float, soc_max: float) -> None:
        """The device's own SOC stop, carried by every write: the next command() writes the new one."""
        self._soc_pct = soc_window_pct(soc_reserve, soc_max)

    async def _open(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._cfg.timeout_s))

    async def _close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def latest(self) -> InverterReading | None:
        return self._latest

    def stats(self) -> dict[str, float]:
        return dict(super().stats(), **self._stats)

    def _internal_code(self) -> str:
        return INV_DECODE

    async def _rpc(self, method: str, config: dict[str, Any]) -> dict[str, Any]:
        assert self._session is not None
        t0 = self._clock.monotonic()
        params = {"config": json.dumps(config, separators=(",", ":"))}
        try:
            async with self._session.post(self._base + method, params=params) as resp:
                body = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise_if_cancelling()
            raise _NoAnswer(f"{method}: {type(exc).__name__} {exc}".strip()) from None
        self._stats["rtt_s"] = self._clock.monotonic() - t0
        if status != 200:
            raise _BadAnswer(f"{method}: HTTP {status}")
        try:
            data = json.loads(body)
        except ValueError:
            raise _BadAnswer(f"{method}: reply is not JSON: {body[:60]!r}") from None
        if not isinstance(data, dict):
            raise _BadAnswer(f"{method}: reply is not a JSON object: {body[:60]!r}")
        return data

    async def _poll(self) -> bool:
        """One GetData round trip; True if it produced a reading."""
        try:
            data = await self._rpc("Indevolt.GetData", {"t": POLL_POINTS})
            self._answered()
            reading = self._decode(data)
        except _NoAnswer as exc:
            self._stats["poll_errors"] += 1
            self._no_answer(str(exc))
            return False
        except _BadAnswer as exc:
            self._stats["decode_errors"] += 1
            self._raise(INV_DECODE, str(exc))
            return False
        self._clear(INV_DECODE)
        self._latest = reading
        if reading.faults:
            self._raise(INV_FAULT, "inverter reports " + ", ".join(sorted(reading.faults)))
        else:
            self._clear(INV_FAULT)
        return True

    def _decode(self, data: dict[str, Any]) -> InverterReading:
        ac_in = _number(data, P_AC_IN_W, required=True)
        mode = int(_number(data, P_MODE, required=True))
        order = int(_number(data, P_RT_ORDER, required=True))
        power = _number(data, P_RT_POWER, required=True)
        grid_v = _number(data, P_GRID_V)
        rated = _number(data, P_RATED_W)
        state_code = _number(data, P_SYS_STATE)
        fault_code = _number(data, P_INV_FAULT)
        faults = set()
        if fault_code:
            code = int(fault_code)
            faults.add(f"EVT1_{code} {INV_FAULTS.get(code, 'unknown fault')}")
        if state_code == SYS_STATE_FAULT:
            faults.add("SYSTEM_STATE_FAULT")
        self._device = (mode, order, power)
        realtime = mode == MODE_REALTIME
        setpoint = None
        if realtime:
            setpoint = {DISCHARGE: power, CHARGE: -power}.get(order, 0.0)
        state = "unknown" if state_code is None else SYS_STATES.get(int(state_code), f"state_{int(state_code)}")
        return InverterReading(
            t=self._clock.monotonic(),
            p_w=-ac_in + 0.0,
            q_var=_number(data, P_Q_VAR) or 0.0,
            freq_hz=_number(data, P_GRID_HZ),
            phase_v=() if grid_v is None else (grid_v,),
            dc_v=_number(data, P_PACK_V),
            running=realtime and order in (CHARGE, DISCHARGE) and not faults,
            state=state,
            faults=frozenset(faults),
            rated_w=rated if rated else self._cfg.rated_w,
            setpoint_p_w=setpoint,
        )

    # --- writes ----------------------------------------------------------------------------
    def _matches(self, want: tuple[int, int, int], mode: int, order: int, power: float) -> bool:
        if mode != MODE_REALTIME or order != want[0]:
            return False
        return want[0] == STANDBY or abs(power - want[1]) <= READBACK_TOLERANCE_W

    async def _write(self, cmd: InverterCommand, due: bool) -> bool:
        """Write `cmd` unless the device already holds it; a failed write is retried at the next
        poll (`due`), not at every wake-up. True once the device acknowledged it."""
        want = target_of(cmd, self._cfg.rated_w, self._soc_pct)
        if want == self._acked and self._device is not None and self._matches(want, *self._device):
            return True
        if not due and want == self._attempted:
            return False
        self._base_stats["writes"] += 1
        self._attempted = want
        try:
            if self._device is None or self._device[0] != MODE_REALTIME:
                await self._set(W_MODE, [MODE_REALTIME])
            await self._set(W_REALTIME, list(want))
            back = await self._rpc("Indevolt.GetData", {"t": READBACK_POINTS})
            mode = int(_number(back, P_MODE, required=True))
            order = int(_number(back, P_RT_ORDER, required=True))
            power = _number(back, P_RT_POWER, required=True)
        except (_NoAnswer, _BadAnswer) as exc:
            self._write_failed(want, str(exc))
            return False
        self._device = (mode, order, power)
        if not self._matches(want, mode, order, power):
            self._write_failed(want, f"read back mode {mode}, order {order}, power {power:.0f} W")
            return False
        self._acked = want
        self._clear(INV_WRITE_FAILED)
        return True

    async def _set(self, point: int, values: list[int]) -> None:
        reply = await self._rpc("Indevolt.SetData", {"f": FUNCTION_WRITE, "t": point, "v": values})
        if reply.get("result") is not True:
            raise _BadAnswer(f"SetData {point}={values} not accepted: {json.dumps(reply)[:60]}")

    def _write_failed(self, want: tuple[int, int, int], why: str) -> None:
        self._acked = None
        self._base_stats["write_failures"] += 1
        self._raise(INV_WRITE_FAILED, f"writing [action, W, soc] = {list(want)} failed: {why}")
