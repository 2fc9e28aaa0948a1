"""A simulated day as data: the scenario file (JSON) and its one validation.

A scenario names the site (load and PV profiles, prices, frequency, grid losses), the nodes
(battery size, limits, starting SOC) and what the cluster runs (``mode`` + ``mode_params``, the
replicated state ``ClusterState(mode=..., mode_params=...)``). Packaged scenarios live in
``scenarios/*.json`` next to this file; ``load_scenario`` takes one of their names or a path.

Profiles are 24 hourly or 96 quarter-hourly values for the day from ``start``, each the value
at the start of its interval, linearly interpolated in between; a run longer than a day repeats
them (prices handed to a mode with ``"prices": "scenario"`` cover two days). ``dispatch``
optionally overrides the leader's ``DispatchParams`` (default: what the field runs). Every problem
is reported as ``ScenarioError`` naming the field (``nodes[0].soc0: ...``).
"""
from __future__ import annotations

import json
import math
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..control import MODES, parse_params
from ..state import ClusterState

DAY_S = 86_400
FROM_SCENARIO = "scenario"   # mode_params {"prices": "scenario", ...}: filled from the scenario (cluster_params)

Watts = Annotated[float, Field(ge=0, le=10_000_000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _day_values(values: list[float]) -> list[float]:
    if len(values) not in (24, 96):
        raise ValueError(f"needs 24 hourly or 96 quarter-hourly values, got {len(values)}")
    return values


class NodeSpec(_Strict):
    soc0: float = Field(0.5, ge=0, le=1, description="starting SOC, 0..1")
    capacity_wh: float = Field(10_000.0, gt=0, le=100_000_000)
    max_charge_w: float = Field(5_000.0, gt=0, le=10_000_000)
    max_discharge_w: float = Field(5_000.0, gt=0, le=10_000_000)
    rated_w: float = Field(5_000.0, gt=0, le=10_000_000, description="inverter rating")


def _default_nodes() -> list[NodeSpec]:
    return [NodeSpec(soc0=s) for s in (0.2, 0.5, 0.8)]


class _DayProfile(_Strict):
    w: list[Watts] = Field(..., description="24 hourly or 96 quarter-hourly values, W")

    @field_validator("w")
    @classmethod
    def _day(cls, v):
        return _day_values(v)


class LoadProfile(_DayProfile):
    noise: float = Field(0.05, ge=0, le=1, description="seeded noise, relative amplitude (about 1 sigma)")


class PvProfile(_DayProfile):
    """``w``: clear sky x weather."""

    cloud: float = Field(0.0, ge=0, le=1, description="passing clouds: share of PV a cloud takes away (0: none)")


class Prices(_Strict):
    currency: str = Field("EUR", min_length=1, max_length=8)
    import_per_kwh: list[float] = Field(..., description="24 hourly or 96 quarter-hourly import prices")
    export_per_kwh: float | list[float] = Field(0.0, description="one price or one per interval (default 0)")

    @field_validator("import_per_kwh")
    @classmethod
    def _day(cls, v):
        return _day_values(v)

    @field_validator("export_per_kwh")
    @classmethod
    def _export(cls, v):
        return v if isinstance(v, float) else _day_values(v)

    @model_validator(mode="after")
    def _same_length(self):
        if isinstance(self.export_per_kwh, list) and len(self.export_per_kwh) != len(self.import_per_kwh):
            raise ValueError("export_per_kwh needs as many values as import_per_kwh")
        return self


class FrequencyStep(_Strict):
    at_s: float = Field(..., ge=0, description="seconds from the start")
    hz: float = Field(..., ge=40, le=70)


class GridLoss(_Strict):
    start_s: float = Field(..., ge=0)
    end_s: float = Field(..., gt=0)

    @model_validator(mode="after")
    def _ordered(self):
        if self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s}) must be after start_s ({self.start_s})")
        return self


class DispatchSettings(_Strict):
    """Overrides of ``dispatch.DispatchParams`` (unset: the field defaults the leader runs with)."""

    balance_horizon_s: float | None = Field(None, gt=0, le=1e7, description="SOC balancing horizon")
    sleep_enabled: bool | None = Field(None, description="consolidation: park nodes at low power")
    min_efficient_w: float | None = Field(None, ge=0, le=1e7)
    swap_margin: float | None = Field(None, ge=0, le=1, description="SOC advantage for a parked node to swap in")
    min_dwell_s: float = Field(5.0, ge=0, le=3600, description="between two consolidation changes")


class Scenario(_Strict):
    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")
    description: str = Field(..., min_length=1, max_length=120, pattern=r"^[^\n\r]*$", description="one line")
    start: AwareDatetime = Field(..., description="the day's start, ISO 8601 with a time zone")
    nodes: list[NodeSpec] = Field(default_factory=_default_nodes, min_length=1, max_length=64)
    load: LoadProfile
    pv: PvProfile
    prices: Prices | None = None
    frequency: list[FrequencyStep] = Field(default_factory=list)
    grid_loss: list[GridLoss] = Field(default_factory=list)
    meter_period_s: float = Field(1.0, ge=0.1, le=60, description="the site meter's sample interval")
    response_s: float = Field(1.0, ge=0, le=60, description="inverter first-order response time")
    mode: str = Field(..., min_length=1, max_length=64)
    mode_params: dict[str, Any] = Field(default_factory=dict)
    backup: bool = Field(False, description="the cluster may form the grid on grid loss")
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    seed: int = Field(1, ge=0, le=2**32 - 1)

    @model_validator(mode="after")
    def _mode(self):
        if self.mode_params.get("prices") == FROM_SCENARIO and self.prices is None:
            raise ValueError('mode_params.prices is "scenario" but the scenario has no prices')
        for key in ("load_w", "pv_w"):
            if self.mode_params.get(key) == FROM_SCENARIO and self.mode_params.get("prices") != FROM_SCENARIO:
                raise ValueError(f'mode_params.{key} is "scenario": only with mode_params.prices "scenario"')
        if self.mode not in MODES:
            raise ValueError(f"mode: unknown mode {self.mode!r}; known: {', '.join(sorted(MODES))}")
        try:
            parse_params(self.mode, self.cluster_params())
        except ValueError as exc:  # "<mode>: <field>: <problem>"
            raise ValueError(f"mode_params: {exc}") from None
        return self

    # --- what the engine uses -------------------------------------------------------------
    def cluster_params(self) -> dict:
        """``mode_params`` with the scenario's own data where it says ``"scenario"``: ``prices``
        becomes the import prices as ``[{"start": ISO, "price": x}]`` for two days (today's repeated:
        day-ahead prices are known past midnight) with ``slot_s``; then ``load_w`` / ``pv_w``
        become the profiles' means over each price slot (a perfect forecast, without the noise)."""
        params = json.loads(json.dumps(self.mode_params))
        if params.get("prices") != FROM_SCENARIO:
            return params
        values = self.prices.import_per_kwh
        slot = DAY_S // len(values)
        params["prices"] = [{"start": (self.start + timedelta(seconds=i * slot)).isoformat(), "price": p}
                            for i, p in enumerate(values + values)]
        params.setdefault("slot_s", slot)
        for key, profile in (("load_w", self.load.w), ("pv_w", self.pv.w)):
            if params.get(key) == FROM_SCENARIO:
                params[key] = [round(v, 1) for v in _slot_means(profile, slot)] * 2
        return params

    def cluster_state(self) -> ClusterState:
        return ClusterState(mode=self.mode, mode_params=self.cluster_params())

    @property
    def start_wall(self) -> float:
        return self.start.timestamp()


def _slot_means(values: list[float], slot_s: int) -> list[float]:
    """Means of the linearly interpolated day profile over each slot of ``slot_s`` (exact: trapezoids)."""
    n, step = len(values), DAY_S / len(values)
    per = 16  # sub-intervals per slot (the profile is linear between its points)
    out = []
    for k in range(DAY_S // slot_s):
        xs = [(k * slot_s + j * slot_s / per) / step for j in range(per + 1)]
        ys = [values[math.floor(x) % n] + (values[(math.floor(x) + 1) % n] - values[math.floor(x) % n])
              * (x - math.floor(x)) for x in xs]
        out.append(sum((ys[j] + ys[j + 1]) / 2 for j in range(per)) / per)
    return out


class ScenarioError(ValueError):
    """A scenario that cannot be used; the message names the file or name and the field."""


def _where(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "scenario"


def _keys_at(loc: tuple) -> list[str]:
    """The keys the model at ``loc`` (a path into a scenario) accepts."""
    model: Any = Scenario
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            inner = getattr(candidate, "__args__", (candidate,))[0] if getattr(candidate, "__origin__", None) else candidate
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                model = inner
                break
    return list(model.model_fields)


def parse_scenario(data: Any, source: str = "<scenario>") -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: expected a JSON object, got {type(data).__name__}")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown key; allowed: {', '.join(_keys_at(err['loc'][:-1]))}"
            problems.append(f"{_where(err['loc'])}: {msg}")
        raise ScenarioError(f"{source}: " + "; ".join(problems)) from None


def _packaged() -> dict[str, Any]:
    folder = resources.files(__package__) / "scenarios"
    return {p.name[:-5]: p for p in sorted(folder.iterdir(), key=lambda p: p.name) if p.name.endswith(".json")}


def scenario_names() -> list[str]:
    return list(_packaged())


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A packaged scenario by name, or a scenario file by path; ScenarioError naming what is wrong."""
    packaged = _packaged()
    text_name = str(name_or_path)
    if text_name in packaged:
        source, text = text_name, packaged[text_name].read_text(encoding="utf-8")
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ScenarioError(f"unknown scenario {text_name!r}: not a packaged scenario ({', '.join(packaged)}) "
                                f"and no such file")
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise ScenarioError(f"{source}: cannot be read ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"{source}: not valid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})") from None
    return parse_scenario(data, source)


def list_scenarios() -> list[tuple[str, str]]:
    """(name, description) of every packaged scenario; a broken one says so in its description."""
    out = []
    for name in _packaged():
        try:
            out.append((name, load_scenario(name).description))
        except ScenarioError as exc:
            out.append((name, f"(invalid: {exc})"))
    return out


def price_at(prices: Prices | None, seconds_from_start: float, export: bool = False) -> float:
    """The import (or export) price at this many seconds after the start (0 without prices)."""
    if prices is None:
        return 0.0
    values = prices.export_per_kwh if export else prices.import_per_kwh
    if isinstance(values, float):
        return values
    slot = DAY_S / len(values)
    return values[int(math.floor(seconds_from_start / slot)) % len(values)]
