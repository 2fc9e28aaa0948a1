"""The site parameter schema: every section and key of a node's parameter file.

Loading a file and reporting its problems is `sitecontroller.params`.
"""
from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator, model_validator

from .cloud.config import CloudParams
from .drivers.bms.config import BmsConfig
from .drivers.inverter.config import InverterConfig
from .drivers.meter.config import MeterConfig
from .scada.config import ScadaParams
from .schema_base import ID_PATTERN, ClusterMember, Strict  # noqa: F401  (ID_PATTERN: params.py)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5550"
DEFAULT_SIM_ENDPOINT = "tcp://127.0.0.1:5560"


class Identity(Strict):
    node_id: str = Field(..., pattern=ID_PATTERN)
    site_id: str = Field(..., pattern=ID_PATTERN)


class CycleParams(Strict):
    period_s: float = Field(0.1, ge=0.01, le=10.0, description="control cycle period")


class BatteryParams(Strict):
    capacity_wh: float = Field(..., gt=0, le=100_000_000)
    max_charge_w: float = Field(..., gt=0, le=10_000_000)
    max_discharge_w: float = Field(..., gt=0, le=10_000_000)


class SafetyParams(Strict):
    soc_min: float = Field(0.05, ge=0, le=1, description="never discharge below")
    soc_max: float = Field(0.95, ge=0, le=1, description="never charge above")
    soc_reserve: float = Field(0.10, ge=0, le=1, description="kept for backup; normal modes stop here")
    cell_v_min_v: float = Field(2.9, ge=1.0, le=5.0)
    cell_v_max_v: float = Field(3.6, ge=1.0, le=5.0)
    cell_v_taper_v: float = Field(0.05, ge=0, le=0.5, description="power tapers to 0 within this of a cell limit")
    cell_t_min_c: float = Field(0.0, ge=-40, le=60)
    cell_t_max_c: float = Field(50.0, ge=-40, le=80)
    cell_t_derate_c: float = Field(5.0, ge=0, le=30, description="power derates to 0 within this of a temp limit")
    ramp_w_per_s: float = Field(5000.0, gt=0, le=10_000_000)
    follow_tolerance_w: float = Field(
        300.0, ge=10, le=1_000_000,
        description="the inverter may differ from its setpoint by this plus follow_tolerance_frac x setpoint",
    )
    follow_tolerance_frac: float = Field(0.1, ge=0, le=1, description="share of the setpoint added to the tolerance")
    follow_s: float = Field(
        5.0, gt=0, le=60,
        description="more power than commanded (or the other direction) this long: critical INV_NOT_FOLLOWING",
    )
    follow_lag_s: float = Field(2.0, ge=0, le=30, description="the inverter may still follow commands this old")

    @model_validator(mode="after")
    def _ordered(self):
        problems = []
        if self.soc_min >= self.soc_max:
            problems.append(f"soc_min ({self.soc_min}) must be below soc_max ({self.soc_max})")
        if not self.soc_min <= self.soc_reserve < self.soc_max:
            problems.append(
                f"soc_reserve ({self.soc_reserve}) must lie in [soc_min, soc_max) = [{self.soc_min}, {self.soc_max})"
            )
        if self.cell_v_min_v >= self.cell_v_max_v:
            problems.append(f"cell_v_min_v ({self.cell_v_min_v}) must be below cell_v_max_v ({self.cell_v_max_v})")
        if self.cell_t_min_c >= self.cell_t_max_c:
            problems.append(f"cell_t_min_c ({self.cell_t_min_c}) must be below cell_t_max_c ({self.cell_t_max_c})")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class DevicesParams(Strict):
    bms: BmsConfig
    inverter: InverterConfig
    meter: MeterConfig | None = Field(None, description="null: this node has no grid meter")


class Features(Strict):
    CLUSTER: bool = False
    BACKUP: bool = False
    CELL_BALANCE: bool = False


class PidGains(Strict):
    kp: float = Field(0.5, ge=0, le=100)
    ki: float = Field(0.1, ge=0, le=100)
    kd: float = Field(0.0, ge=0, le=100)


class PidParams(Strict):
    grid: PidGains = PidGains()


class TelemetryParams(Strict):
    enabled: bool = True
    interval_s: float = Field(10.0, ge=1, le=3600)


class StalenessParams(Strict):
    """A reading older than its limit is absent (DESIGN §2.4)."""

    bms_s: float = Field(2.0, gt=0, le=60)
    inverter_s: float = Field(1.0, gt=0, le=60)
    meter_s: float = Field(3.0, gt=0, le=60)
    setpoint_s: float = Field(5.0, gt=0, le=600, description="a local/cluster setpoint expires after this")

    def by_source(self) -> dict[str, float]:
        return {"bms": self.bms_s, "inverter": self.inverter_s, "meter": self.meter_s}


class ControlParams(Strict):
    """The local control endpoint has no authentication: it listens on loopback only."""

    endpoint: str = Field(DEFAULT_ENDPOINT, description="tcp://127.x.x.x:PORT, tcp://localhost:PORT or ipc://PATH")

    @field_validator("endpoint")
    @classmethod
    def _loopback_only(cls, v: str) -> str:
        m = re.fullmatch(r"tcp://([^:/]+):(\d{1,5})", v)
        ok = (v.startswith("ipc://") and len(v) > len("ipc://")) or (
            m is not None and (m[1] == "localhost" or re.fullmatch(r"127\.\d{1,3}\.\d{1,3}\.\d{1,3}", m[1]))
            and 1 <= int(m[2]) <= 65535
        )
        if not ok:
            raise ValueError(
                'text "tcp://127.0.0.1:PORT" (loopback, port 1..65535) or "ipc://PATH": the endpoint is not authenticated'
            )
        return v


class StorageParams(Strict):
    data_dir: str = Field("var/{node_id}", min_length=1, description="errors, audit log; {node_id} is replaced")


class SimulationParams(Strict):
    """Plant used by the simulators (`sitecontroller run --simulate`, `python -m sitecontroller.sim`)."""

    initial_soc: float = Field(0.5, ge=0, le=1)
    pv_peak_w: float = Field(4000.0, ge=0, le=10_000_000)
    load_avg_w: float = Field(800.0, ge=0, le=10_000_000)
    cells_per_rack: int = Field(16, ge=1, le=400)
    seed: int = 1
    endpoint: str = Field(DEFAULT_SIM_ENDPOINT, description="the simulator process's control endpoint (fault knobs)")

    @field_validator("endpoint")
    @classmethod
    def _loopback_only(cls, v: str) -> str:
        return ControlParams._loopback_only(v)


class ClusterParams(Strict):
    members: list[ClusterMember] = Field(default_factory=list, description="every node of the cluster, this one too")
    lease_s: float = Field(1.5, ge=0.2, le=10, description="a leader dispatches only while it heard a quorum this recently")
    dispatch_valid_s: float = Field(0.3, ge=0.1, le=10, description="a node executes a cluster setpoint this long")
    status_stale_s: float = Field(1.0, gt=0, le=30, description="a member silent this long is offline")
    reserve_valid_s: float = Field(300.0, ge=10, le=3600, description="a node keeps its grid-service allocation "
                                   "this long after it last heard a leader")

    @field_validator("members")
    @classmethod
    def _distinct(cls, members: list[ClusterMember]) -> list[ClusterMember]:
        for what, values in (("node_id", [m.node_id for m in members]),
                             ("address", [a for m in members for a in (m.raft, m.data)]),
                             ("public_key", [m.public_key for m in members])):
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise ValueError(f"two members share the {what} {', '.join(twice)}")
        return members


class SiteParams(Strict):
    identity: Identity
    cycle: CycleParams = CycleParams()
    battery: BatteryParams
    safety: SafetyParams = SafetyParams()
    devices: DevicesParams
    features: Features = Features()
    pid: PidParams = PidParams()
    telemetry: TelemetryParams = TelemetryParams()
    staleness: StalenessParams = StalenessParams()
    control: ControlParams = ControlParams()
    storage: StorageParams = StorageParams()
    simulation: SimulationParams | None = None
    cluster: ClusterParams = ClusterParams()
    scada: ScadaParams = ScadaParams()
    cloud: CloudParams | None = Field(None, description="Azure IoT Hub (null: no cloud)")

    @field_validator("cluster")
    @classmethod
    def _cluster_has_me(cls, cluster: ClusterParams, info: ValidationInfo) -> ClusterParams:
        identity, features = info.data.get("identity"), info.data.get("features")
        if identity is None or features is None or not features.CLUSTER:
            return cluster
        ids = [m.node_id for m in cluster.members]
        if identity.node_id not in ids:
            raise ValueError(f"with features.CLUSTER on, members must list this node {identity.node_id!r} "
                             f"(they list {', '.join(ids) or 'none'})")
        return cluster

    @property
    def data_dir(self) -> Path:
        return Path(self.storage.data_dir.replace("{node_id}", self.identity.node_id))
