"""Grid frequency profiles the simulator plays: `sitecontroller sim frequency PROFILE`.

A profile is a JSON file (built-in ones in `frequency_profiles/`, or a path):

    {"description": "one line",
     "points": [[t_s, hz], ...],              # piecewise linear from t = 0; two points at one time: a step
     "noise": {"sigma_hz": 0.05, "tau_s": 300, "seed": 7}}   # optional: a slow random deviation on top

The noise is an Ornstein-Uhlenbeck process (standard deviation `sigma_hz`, correlation time
`tau_s`: minutes-long excursions, as the Nordic frequency shows). While a profile plays, the
grid's frequency is the profile's (plus the `freq_offset_hz` knob) and every meter and
inverter measures it; the simulator records a trace of (time, frequency, each node's inverter
power) at its physics step, which `sitecontroller sim frequency --trace` returns: the evidence
of how fast the nodes answered, measured where the power is.
"""
from __future__ import annotations

import bisect
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

PROFILE_DIR = Path(__file__).resolve().parent / "frequency_profiles"
MAX_TRACE = 200_000  # samples kept (50 ms steps: about 2.8 h)


class ProfileError(ValueError):
    """A profile that cannot be played; the text names the file and the field."""


@dataclass(frozen=True)
class FrequencyProfile:
    name: str
    description: str
    points: tuple[tuple[float, float], ...]
    sigma_hz: float = 0.0
    tau_s: float = 300.0
    seed: int = 1

    @property
    def duration_s(self) -> float:
        return self.points[-1][0]

    def base_hz(self, t: float) -> float:
        """The profile's frequency at `t` s (noise aside); at a step, the value after it."""
        times = [p[0] for p in self.points]
        i = bisect.bisect_right(times, t)
        if i == 0:
            return self.points[0][1]
        if i == len(self.points):
            return self.points[-1][1]
        (t0, f0), (t1, f1) = self.points[i - 1], self.points[i]
        return f0 if t1 == t0 else f0 + (f1 - f0) * (t - t0) / (t1 - t0)

    def to_json(self) -> dict:
        out = {"name": self.name, "description": self.description, "points": [list(p) for p in self.points]}
        if self.sigma_hz:
            out["noise"] = {"sigma_hz": self.sigma_hz, "tau_s": self.tau_s, "seed": self.seed}
        return out


def parse(data, name: str) -> FrequencyProfile:
    def need(cond, where, msg):
        if not cond:
            raise ProfileError(f"{name}: {where}: {msg}")

    need(isinstance(data, dict), "$", "expected an object with 'points'")
    unknown = set(data) - {"name", "description", "points", "noise"}
    need(not unknown, "$", f"unknown key(s) {sorted(unknown)}; allowed: description, points, noise")
    pts = data.get("points")
    need(isinstance(pts, list) and len(pts) >= 2, "points", "expected at least two [t_s, hz] pairs")
    out = []
    for i, p in enumerate(pts):
        ok = isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                          and math.isfinite(v) for v in p)
        need(ok, f"points[{i}]", f"expected [t_s, hz] numbers, got {p!r}")
        need(45.0 <= p[1] <= 55.0, f"points[{i}]", f"{p[1]} Hz is outside 45..55 Hz")
        need(not out or p[0] >= out[-1][0], f"points[{i}]", "times must not go back")
        out.append((float(p[0]), float(p[1])))
    need(out[0][0] == 0.0, "points[0]", "the profile starts at t = 0")
    need(out[-1][0] <= 14 * 86400, "points", "longer than 14 days")
    noise = data.get("noise") or {}
    need(isinstance(noise, dict) and set(noise) <= {"sigma_hz", "tau_s", "seed"}, "noise",
         "expected {sigma_hz, tau_s, seed}")
    sigma, tau, seed = noise.get("sigma_hz", 0.0), noise.get("tau_s", 300.0), noise.get("seed", 1)
    need(isinstance(sigma, (int, float)) and 0 <= sigma <= 0.5, "noise.sigma_hz", "expected 0..0.5 Hz")
    need(isinstance(tau, (int, float)) and 1 <= tau <= 86400, "noise.tau_s", "expected 1..86400 s")
    need(isinstance(seed, int), "noise.seed", "expected a whole number")
    return FrequencyProfile(data.get("name", name), str(data.get("description", "")), tuple(out), float(sigma),
                            float(tau), seed)


def load(name_or_path: str) -> FrequencyProfile:
    """A built-in profile by name, or a JSON file by path."""
    path = Path(name_or_path)
    if name_or_path in names():
        path = PROFILE_DIR / f"{name_or_path}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"no frequency profile {name_or_path!r} (built-in: {', '.join(names())})") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read it as JSON: {exc}") from None
    return parse(data, path.name.removesuffix(".json"))


def names() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


class Player:
    """One profile playing on a grid, from when it started; the trace of what the site did."""

    def __init__(self, profile: FrequencyProfile, started_wall: float):
        self.profile = profile
        self.started_wall = started_wall
        self.t = 0.0
        self.noise = 0.0
        self._rng = random.Random(profile.seed)
        self.trace: list[tuple[float, float, dict[str, float]]] = []

    @property
    def done(self) -> bool:
        return self.t > self.profile.duration_s

    def advance(self, dt_s: float) -> None:
        self.t += dt_s
        p = self.profile
        if p.sigma_hz:  # exact OU step: mean-reverting with correlation time tau
            a = math.exp(-dt_s / p.tau_s)
            self.noise = self.noise * a + p.sigma_hz * math.sqrt(1 - a * a) * self._rng.gauss(0, 1)

    @property
    def hz(self) -> float:
        return self.profile.base_hz(self.t) + self.noise

    def record(self, powers: dict[str, float]) -> None:
        if len(self.trace) < MAX_TRACE:
            self.trace.append((round(self.t, 4), round(self.hz, 5), {k: round(v, 1) for k, v in powers.items()}))
