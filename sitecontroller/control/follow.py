"""The follow check: does the inverter do what it was told? (DESIGN §4 safety invariants)

An inverter that still answers polls but ignores or refuses writes (local
override, read-back mismatch, a lost write) keeps its last power while the
node believes it commanded 0 W: the battery drains past its limits. So each
cycle, three independent measures are compared with what was commanded in
the previous cycle:

- `inverter`   the inverter's own active power;
- `battery`    the BMS pack power (a second opinion that does not trust the inverter);
- `read-back`  the setpoint the inverter reports back, where its profile has one.

The tolerance is `tolerance_w + tolerance_frac × |commanded|` (conversion losses
grow with power: the battery's DC power differs from the AC setpoint by them).
The *allowed band* is [min(0, commanded) − tolerance, max(0, commanded) + tolerance]:
less power in the commanded direction is allowed (a derating inverter is not
dangerous), more, or power in the other direction, is not. A measure outside
the band for longer than `limit_s` is the critical `INV_NOT_FOLLOWING`
(contactors open, state `error`). A measure that stays more than the
tolerance short of the command for that long is the warning
`INV_UNDERDELIVERING`. The timers reset as soon as the measure is back in range.

Stateful only in its two timers; `now` is passed in, so it is pure in time.
"""
from __future__ import annotations

from ..process_image import ProcessImage

NOT_FOLLOWING, UNDERDELIVERING = "INV_NOT_FOLLOWING", "INV_UNDERDELIVERING"


class FollowMonitor:
    def __init__(self, tolerance_w: float, tolerance_frac: float, limit_s: float):
        self.tolerance_w = tolerance_w
        self.tolerance_frac = tolerance_frac
        self.limit_s = limit_s
        self._over_since: float | None = None
        self._under_since: float | None = None

    def reset(self) -> None:
        self._over_since = self._under_since = None

    def check(self, now: float, image: ProcessImage, commanded_w: float | None) -> dict[str, str]:
        """Errors present (code -> text). `commanded_w`: what the inverter was told last
        cycle (0 W when it was told to stop); None before the first command."""
        if commanded_w is None:
            self.reset()
            return {}
        measures = {}
        if image.inverter is not None:
            measures["inverter"] = image.inverter.p_w
            if image.inverter.setpoint_p_w is not None:
                measures["read-back"] = image.inverter.setpoint_p_w
        if image.bms is not None:
            measures["battery"] = image.bms.pack_w
        tol = self.tolerance_w + self.tolerance_frac * abs(commanded_w)
        lo, hi = min(0.0, commanded_w) - tol, max(0.0, commanded_w) + tol
        over = {k: v for k, v in measures.items() if not lo <= v <= hi}
        under = {k: v for k, v in measures.items() if k != "read-back" and abs(v - commanded_w) > tol} if not over else {}
        self._over_since = (self._over_since if self._over_since is not None else now) if over else None
        self._under_since = (self._under_since if self._under_since is not None else now) if under else None
        out = {}
        if over and now - self._over_since >= self.limit_s:
            out[NOT_FOLLOWING] = (
                f"{_describe(over)} while {commanded_w:.0f} W is commanded, for {now - self._over_since:.1f} s "
                f"(allowed {lo:.0f}..{hi:.0f} W): the inverter does not follow; opening contactors"
            )
        if under and now - self._under_since >= self.limit_s:
            out[UNDERDELIVERING] = (
                f"{_describe(under)} while {commanded_w:.0f} W is commanded, for {now - self._under_since:.1f} s"
            )
        return out


def _describe(measures: dict[str, float]) -> str:
    return ", ".join(f"{name} {w:.0f} W" for name, w in measures.items())
