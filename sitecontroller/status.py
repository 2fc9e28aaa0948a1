"""The node's status as a typed snapshot (what `status`, the summary line and later
telemetry and SCADA read). `NodeStatus.to_dict()` is the JSON of `status --json`."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from .control.services import frequency_hz


@dataclass(frozen=True, slots=True)
class LimitsStatus:
    charge_w: float
    discharge_w: float
    reasons: list[str]


@dataclass(frozen=True, slots=True)
class BatteryStatus:
    pack_v: float
    pack_a: float
    soh: float
    cell_v_min_v: float
    cell_v_max_v: float
    cell_t_max_c: float
    contactor_closed: bool
    racks_online: int
    racks_total: int
    cell_t_min_c: float


@dataclass(frozen=True, slots=True)
class ErrorStatus:
    id: str
    severity: str
    text: str
    source: str
    active: bool
    acknowledged: bool


@dataclass(frozen=True, slots=True)
class TransitionStatus:
    wall: float
    from_: str
    to: str
    cause: str


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node_id: str
    site_id: str
    pid: int
    state: str
    control_mode: str  # "local" | "cluster"
    soc: float | None
    p_w: float | None  # inverter active power, positive = discharge
    grid_p_w: float | None  # grid meter, positive = import
    setpoint_w: float  # what the inverter is told now
    setpoint_source: str | None  # the source that owns the base setpoint (None: none, 0 W)
    request_w: float | None  # the owning source's requested power
    contactors_closed: bool | None  # as the BMS reports them (None: no fresh BMS data)
    note: str
    limits: LimitsStatus | None
    battery: BatteryStatus | None
    absent: list[str]
    errors: list[ErrorStatus]
    cycle: dict[str, Any]
    devices: dict[str, Any]
    transitions: list[TransitionStatus]
    wall: float
    setpoints: dict[str, Any] = field(default_factory=dict)  # every fresh source: {name: {p_w, origin, valid_s}}
    role: str = "alone"  # "leader" | "follower" | "candidate" in a cluster; "alone" without one
    term: int | None = None  # the Raft term this node is in (None: no cluster)
    setpoint_age_ms: dict[str, float] | None = None  # origin's decision -> inverter command: p50, p99, max, n
    grid_services: dict[str, Any] | None = None  # the node's reserve allocation and responses (None: none)
    freq_hz: float | None = None  # the node's frequency measurement (inverter, else meter)
    cloud: dict[str, Any] | None = None  # IoT Hub link and offline queue (None: no cloud section)
    parameters: dict[str, Any] = field(default_factory=dict)  # the run-time site parameters in effect (live_params)
    parameters_changed: dict[str, Any] | None = None  # the last run-time change: wall, origin, keys [old, new]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["transitions"] = [{"wall": t.wall, "from": t.from_, "to": t.to, "cause": t.cause} for t in self.transitions]
        return d


def snapshot(node) -> NodeStatus:
    img, dec = node.image, node.decision
    bms = img.bms if img else None
    inv = img.inverter if img else None
    meter = img.meter if img else None
    now = node.clock.monotonic()
    setpoints = {} if img is None else {
        name: {"p_w": r.p_w, "origin": r.origin, "valid_s": round(max(0.0, r.valid_until - now), 2)}
        for name, r in img.setpoints.items()
    }
    source = dec.source if dec else None
    return NodeStatus(
        node_id=node.params.identity.node_id,
        site_id=node.params.identity.site_id,
        pid=os.getpid(),
        state=node.states.state,
        control_mode=node.mode,
        soc=None if bms is None else round(bms.soc, 4),
        p_w=None if inv is None else round(inv.p_w, 1),
        grid_p_w=None if meter is None else round(meter.p_w, 1),
        setpoint_w=round(node.setpoint_w, 1),
        setpoint_source=source,
        request_w=setpoints[source]["p_w"] if source in setpoints else None,
        contactors_closed=None if bms is None else bms.contactor_closed,
        note=dec.note if dec else "starting",
        limits=None if dec is None else LimitsStatus(
            round(dec.limits.charge_w, 1), round(dec.limits.discharge_w, 1), list(dec.limits.reasons)),
        battery=None if bms is None else BatteryStatus(
            round(bms.pack_v, 2), round(bms.pack_a, 2), bms.soh, round(bms.cell_v_min_v, 4),
            round(bms.cell_v_max_v, 4), round(bms.cell_t_max_c, 2), bms.contactor_closed,
            bms.racks_online, bms.racks_total, round(bms.cell_t_min_c, 2)),
        absent=sorted(k for k in ("bms", "inverter", "meter") if img is None or getattr(img, k) is None),
        errors=[ErrorStatus(e.id, e.severity, e.text, e.source, e.active, e.acknowledged)
                for e in node.errors.listed()],
        cycle=node.stats.summary(),
        devices={drv.kind: drv.stats() for drv in node.devices.all()},
        transitions=[TransitionStatus(t.wall, t.source, t.dest, t.cause) for t in list(node.states.history)[-5:]],
        wall=img.wall if img else node.clock.wall(),
        setpoints=setpoints,
        role="alone" if node.cluster is None else node.cluster.role,
        term=None if node.cluster is None else node.cluster.consensus.term,
        setpoint_age_ms=node.setpoint_age.summary(),
        grid_services=node.grid_services.status(now) if node.grid_services.term is not None else None,
        freq_hz=None if img is None else frequency_hz(img),
        cloud=None if node.cloud is None else node.cloud.status(),
        parameters=node.live.in_effect,
        parameters_changed=node.live.last_change,
    )
