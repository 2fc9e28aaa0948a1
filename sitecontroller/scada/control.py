"""SCADA control writes: the guard, the mapping to Commands/setpoint sources, the heartbeat.

Every accepted write of a control register becomes a validated, audited `Command`
(`source="scada"`) or a setpoint-source update; nothing here decides power:

- `WrEna` (0/1) opens and closes the gate; with it closed every other control write is
  refused (ILLEGAL_ADDRESS, 02) and changes nothing;
- `NodeWSet`, or the SunSpec setpoint points (models 124/704/123, decoded exactly as our
  SunSpec inverter driver encodes them, `decode_command`) -> `set_power` into the `scada`
  setpoint source, held for `heartbeat_timeout_s`;
- `ClTgtWSet` -> `cluster_setpoint`, `ModeSel` (+ `ModeParW`/`ModeParSoC`) -> `cluster_mode`:
  through the Raft log from whichever node SCADA talks to;
- `Hb`: a new value keeps the control alive: the `scada` source is extended, a cluster
  target is re-proposed when half its hold has passed.

`check()` runs first and synchronously (range and gate: 02/03, nothing stored); `apply()`
awaits the command's final acknowledgement: rejected or failed -> DEVICE_FAILURE (04),
so a write the node did not carry out is never reported as done.

Heartbeat: once SCADA has written a setpoint or a mode, `Hb` must change within
`heartbeat_timeout_s`; otherwise the fallback (`hold_zero`: 0 W for the node, `passive` for
the cluster; `previous_mode`: the node's other sources, the cluster mode that was in force
before SCADA's first write) is applied, the warning SCADA_HEARTBEAT_LOST is raised and
the audit log records the fallback commands. Only a fresh control write resumes control.
"""
from __future__ import annotations

import asyncio
import logging
import uuid

from pymodbus.constants import ExcCodes

from ..commands import DONE
from ..drivers.modbus import decode_command
from ..errors import WARNING, register_codes

log = logging.getLogger("sitecontroller.scada")

HEARTBEAT_LOST = "SCADA_HEARTBEAT_LOST"
register_codes({HEARTBEAT_LOST: (WARNING, "SCADA stopped its heartbeat: the SCADA fallback is applied")})

ACK_TIMEOUT_S = 4.0  # a cluster change waits for the Raft commit (PROPOSE_TIMEOUT_S 3 s)
HOLD_ZERO_S = 86_400.0  # hold_zero: SCADA's 0 W stays until a fresh write
HOLD_MARGIN_S = 1.0  # the scada source outlives the heartbeat deadline: the watchdog acts first
IDLE, CONTROLLING, FALLBACK = "idle", "controlling", "fallback"
# ModeSel: which mode parameter ModeParW / ModeParSoC fill (None: not used; 0 = the mode's default).
MODE_PARAMS = {
    "passive": (None, None),
    "self_consumption": ("grid_target_w", "reserve_soc"),
    "load_matching": ("import_limit_w", "reserve_soc"),
    "charge_only": ("max_charge_w", "target_soc"),
    "grid_forming": ("charge_w", "backup_reserve_soc"),
    "local": (None, None),
}
# SunSpec control points whose write is a power request (reactive power, revert times: stored only)
POWER_SOURCES = ("p_w", "p_enable", "p_pct", "window_out_pct", "window_in_pct", "run", "stop")
COMMAND_POINTS = frozenset({"NodeWSet", "ClTgtWSet", "ModeSel"})  # each write of one is one command
STORED_POINTS = ("ModeParW", "ModeParSoC")  # kept for the next ModeSel write


class ScadaControl:
    def __init__(self, node, params, profile, *, values):
        """`values(names)`: the decoded control registers as they are served now."""
        self.node = node
        self.params = params
        self.profile = profile
        self.values = values
        self.timeout_s = params.heartbeat_timeout_s
        self.sunspec_points = frozenset(w.point for w in profile.writes)  # what decode_command reads
        self.power_points = frozenset(w.point for w in profile.writes if w.source in POWER_SOURCES)
        self.write_enable = False
        self.state = IDLE
        self.deadline: float | None = None
        self.last_beat: int | None = None
        self.holding: set[str] = set()  # "node" and/or "cluster": what SCADA steers now
        self.previous_mode: tuple[str, dict] | None = None
        self.request_w: float | None = None  # SCADA's node setpoint in force (None: none)
        self._cluster_request: tuple[float, float] | None = None  # (target_w, sent at)

    # --- what the map shows --------------------------------------------------------------
    def served(self) -> dict:
        out = {"write_enable": int(self.write_enable), "control_state": self.state,
               "heartbeat_timeout_s": self.timeout_s}
        if self.request_w is not None:
            out["scada_request_w"] = self.request_w
        return out

    # --- the synchronous guard -----------------------------------------------------------
    def check(self, written: dict) -> ExcCodes | None:
        if set(written) - {"WrEna"} and not (self.write_enable or written.get("WrEna") == 1):
            return ExcCodes.ILLEGAL_ADDRESS
        sp = self._sunspec_setpoint(written)
        if len(COMMAND_POINTS & set(written)) + (sp is not None) > 1:  # one request, one command: all or nothing
            return ExcCodes.ILLEGAL_VALUE
        rated = self.node.rated_w
        if "NodeWSet" in written and abs(written["NodeWSet"]) > rated:
            return ExcCodes.ILLEGAL_VALUE
        if "ModeSel" in written and self._mode_command(written) is None:
            return ExcCodes.ILLEGAL_VALUE
        if sp is not None and abs(sp) > rated + 1e-6:
            return ExcCodes.ILLEGAL_VALUE
        return None

    # --- carrying it out -----------------------------------------------------------------
    async def apply(self, written: dict, client: str) -> ExcCodes | None:
        if "WrEna" in written:
            self.write_enable = bool(written["WrEna"])
            log.warning("SCADA %s: control writes %s", client, "enabled" if self.write_enable else "disabled")
        raws = []
        if "NodeWSet" in written:
            raws.append(("node", self._set_power(written["NodeWSet"])))
        sp = self._sunspec_setpoint(written)
        if sp is not None:
            raws.append(("node", self._set_power(sp)))
        if "ClTgtWSet" in written:
            raws.append(("cluster", self._cluster_target(written["ClTgtWSet"])))
        if "ModeSel" in written:
            raws.append(("cluster", self._mode_command(written) | {"id": _cmd_id(), "source": "scada"}))
        if raws and self.state == CONTROLLING:  # a write under way is activity: no fallback meanwhile
            self.deadline = self.node.clock.monotonic() + self.timeout_s
        for what, raw in raws:
            if what == "cluster" and "cluster" not in self.holding and self.node.cluster is not None:
                st = self.node.cluster.consensus.state()
                self.previous_mode = (st.mode, dict(st.mode_params))
            ack = await self._submit(raw)
            if ack.status != DONE:
                log.warning("SCADA %s: write refused by the node: %s", client, ack.detail)
                return ExcCodes.DEVICE_FAILURE
            if raw["type"] == "set_power":
                self.request_w = raw["p_w"]
            self._take_control(what)
        if "Hb" in written:
            self.beat(int(written["Hb"]))
        return None

    def _set_power(self, p_w: float) -> dict:
        return {"type": "set_power", "id": _cmd_id(), "source": "scada", "p_w": float(p_w),
                "hold_s": self.timeout_s + HOLD_MARGIN_S}

    def _cluster_target(self, target_w: float) -> dict:
        self._cluster_request = (float(target_w), self.node.clock.monotonic())
        return {"type": "cluster_setpoint", "id": _cmd_id(), "source": "scada", "target_w": float(target_w),
                "hold_s": self._cluster_hold_s()}

    def _cluster_hold_s(self) -> float:
        return min(3600.0, max(1.0, 2 * self.timeout_s))

    def _mode_command(self, written: dict) -> dict | None:
        from mastercontroller.control import parse_params

        name = self.profile.state_name("ModeSel", int(written["ModeSel"]))
        if name not in MODE_PARAMS:
            return None
        current = {**self.values(STORED_POINTS), **{k: v for k, v in written.items() if k in STORED_POINTS}}
        w_key, soc_key = MODE_PARAMS[name]
        params = {}
        if w_key and current.get("ModeParW"):
            params[w_key] = float(current["ModeParW"])
        if soc_key and current.get("ModeParSoC"):
            params[soc_key] = round(current["ModeParSoC"] / 100.0, 4)
        try:
            parse_params(name, params)
        except ValueError as exc:
            log.warning("SCADA: mode %s refused: %s", name, exc)
            return None
        return {"type": "cluster_mode", "mode": name, "params": params}

    def _sunspec_setpoint(self, written: dict) -> float | None:
        """The power the SunSpec control points ask for after this write (None: none written)."""
        if not self.power_points & set(written):
            return None
        merged = {**self.values(sorted(self.sunspec_points)), **written}
        sp = decode_command(self.profile, merged, self.node.rated_w)
        return None if sp is None else (sp.p_w if sp.run else 0.0)

    async def _submit(self, raw: dict):
        book = self.node.commands
        ack = book.submit(raw)
        return ack if ack.final else await book.wait_final(ack.id, ACK_TIMEOUT_S)

    # --- heartbeat -----------------------------------------------------------------------
    def _take_control(self, what: str) -> None:
        if self.state != CONTROLLING:
            log.warning("SCADA takes control (%s): heartbeat every < %g s", what, self.timeout_s)
        self.holding.add(what)
        self.state = CONTROLLING
        self.deadline = self.node.clock.monotonic() + self.timeout_s
        if self.node.errors.is_active(HEARTBEAT_LOST):
            self.node.errors.clear(HEARTBEAT_LOST)

    def beat(self, value: int) -> None:
        if value == self.last_beat:
            return
        self.last_beat = value
        if self.state != CONTROLLING:
            return  # after a fallback only a fresh write resumes control
        now = self.node.clock.monotonic()
        self.deadline = now + self.timeout_s
        inbox = self.node.sources["scada"]
        src = inbox.latest()
        if "node" in self.holding and src is not None and now < src.valid_until:
            inbox.put(src.p_w, now, valid_s=self.timeout_s + HOLD_MARGIN_S, origin=src.origin, meta=src.meta)
        req = self._cluster_request
        if "cluster" in self.holding and req is not None and now - req[1] > self._cluster_hold_s() / 2:
            self.node.commands.submit(self._cluster_target(req[0]))

    async def watch(self) -> None:
        """The watchdog: checks the heartbeat deadline ten times per timeout (at most every 0.1 s)."""
        while True:
            await asyncio.sleep(min(0.1, self.timeout_s / 10))
            if self.state == CONTROLLING and self.node.clock.monotonic() >= self.deadline:
                await self.fall_back()

    async def fall_back(self) -> None:
        how = self.params.fallback
        what = ", ".join(sorted(self.holding))
        log.warning("SCADA heartbeat lost (no new Hb within %g s): fallback %s for %s", self.timeout_s, how, what)
        self.node.errors.raise_(HEARTBEAT_LOST, "scada",
                                f"no SCADA heartbeat within {self.timeout_s:g} s: fallback {how} ({what})")
        self.state, holding, self.holding = FALLBACK, self.holding, set()
        raws = []
        if "node" in holding and how == "hold_zero":
            raws.append({"type": "set_power", "p_w": 0.0, "hold_s": HOLD_ZERO_S})
        elif "node" in holding:
            self.node.sources["scada"].withdraw()
            self.request_w = None
        if "cluster" in holding and how == "hold_zero":
            raws.append({"type": "cluster_mode", "mode": "passive"})
        elif "cluster" in holding and self.previous_mode is not None:
            raws.append({"type": "cluster_mode", "mode": self.previous_mode[0], "params": self.previous_mode[1]})
        self._cluster_request = None
        for raw in raws:
            ack = await self._submit(raw | {"id": _cmd_id("scada-fallback"), "source": "scada"})
            log.warning("SCADA fallback %s: %s %s", raw["type"], ack.status, ack.detail)
            if raw["type"] == "set_power" and ack.status == DONE:
                self.request_w = 0.0


def _cmd_id(prefix: str = "scada") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
