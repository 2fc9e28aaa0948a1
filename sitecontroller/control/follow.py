"""The follow check: does the inverter do what it was told? (DESIGN §4 safety invariants)

An inverter that still answers polls but ignores or refuses writes (local
override, read-back mismatch, a lost write) keeps its last power while the
node believes it commanded 0 W: the battery drains past its limits. So each
cycle, three independent measures are compared with what was commanded in
the previous cycle:

- `inverter`   the inverter's own active power;
- `battery`    the BMS pack power (a second opinion that does not trust the inverter);
- `read-back`  the setpoint the inverter reports back, where its profile has one.

An inverter answers a new setpoint after a lag (1–2 s is common), so each
measure is compared with *every* command of the last `lag_s` seconds: the
measure may be anywhere between the lowest and the highest of them. The
tolerance is `tolerance_w + tolerance_frac × |command|` (conversion losses grow
with power: the battery's DC power differs from the AC setpoint by them).

The *allowed band* reaches from 0 W to the commands, widened by the tolerance:
less power in the commanded direction is allowed (a derating inverter is not
dangerous), more, or power in the other direction, is not. A measure outside
the band for longer than `limit_s` is the critical `INV_NOT_FOLLOWING`
(contactors open, state `error`), and so are writes that keep failing for that
long (`write_failing`: the inverter refuses every setpoint). A measure that
stays more than the tolerance short of the commands for that long is the
warning `INV_UNDERDELIVERING`. The timers reset as soon as all is back in range.

An inverter that forms the grid (backup, the grid lost) carries the site's load,
not its setpoint: while it does (`forming` = the limiter's charge/discharge window),
the commands it is compared with are that whole window, so it may carry anything
inside it and nothing outside; there is no under-delivery then. The window stays
among the recent commands for `lag_s`, while it resynchronises to the setpoint.

Stateful only in its timers and its window of recent commands; `now` is passed
in, so it is pure in time.
"""
from __future__ import annotations

from collections import deque

from ..process_image import ProcessImage

NOT_FOLLOWING, UNDERDELIVERING = "INV_NOT_FOLLOWING", "INV_UNDERDELIVERING"


class FollowMonitor:
    def __init__(self, tolerance_w: float, tolerance_frac: float, limit_s: float, lag_s: float):
        self.tolerance_w = tolerance_w
        self.tolerance_frac = tolerance_frac
        self.limit_s = limit_s
        self.lag_s = lag_s
        self._recent: deque[tuple[float, float]] = deque()  # (time, command) of the last lag_s
        self._over_since: float | None = None
        self._under_since: float | None = None
        self._failing_since: float | None = None

    def reset(self) -> None:
        self._over_since = self._under_since = self._failing_since = None
        self._recent.clear()

    def check(self, now: float, image: ProcessImage, commanded_w: float | None,
              write_failing: bool = False, forming: tuple[float, float] | None = None) -> dict[str, str]:
        """Errors present (code -> text). `commanded_w`: what the inverter was told last
        cycle (0 W when it was told to stop); None before the first command. `forming`:
        (charge_w, discharge_w) while the inverter forms the grid."""
        if commanded_w is None:
            self.reset()
            return {}
        self._recent.append((now, commanded_w))
        if forming is not None:
            self._recent.extend(((now, -forming[0]), (now, forming[1])))
        while now - self._recent[0][0] > self.lag_s:
            self._recent.popleft()
        low = min(c for _, c in self._recent)
        high = max(c for _, c in self._recent)
        measures = {}
        if image.inverter is not None:
            measures["inverter"] = image.inverter.p_w
            if image.inverter.setpoint_p_w is not None:
                measures["read-back"] = image.inverter.setpoint_p_w
        if image.bms is not None:
            measures["battery"] = image.bms.pack_w
        tol = self.tolerance_w + self.tolerance_frac * max(abs(low), abs(high))
        lo, hi = min(0.0, low) - tol, max(0.0, high) + tol
        over = {k: v for k, v in measures.items() if not lo <= v <= hi}
        under = {} if over or forming else {k: v for k, v in measures.items()
                                 if k != "read-back" and not low - tol <= v <= high + tol}
        self._over_since = _since(self._over_since, now, bool(over))
        self._under_since = _since(self._under_since, now, bool(under))
        self._failing_since = _since(self._failing_since, now, write_failing)
        out = {}
        if over and now - self._over_since >= self.limit_s:
            out[NOT_FOLLOWING] = (
                f"{_describe(over)} while {commanded_w:.0f} W is commanded, for {now - self._over_since:.1f} s "
                f"(allowed {lo:.0f}..{hi:.0f} W): the inverter does not follow; opening contactors"
            )
        elif write_failing and now - self._failing_since >= self.limit_s:
            out[NOT_FOLLOWING] = (
                f"every write to the inverter has failed for {now - self._failing_since:.1f} s: "
                "it cannot be controlled; opening contactors"
            )
        if under and now - self._under_since >= self.limit_s:
            out[UNDERDELIVERING] = (
                f"{_describe(under)} while {commanded_w:.0f} W is commanded, for {now - self._under_since:.1f} s"
            )
        return out


def _since(since: float | None, now: float, condition: bool) -> float | None:
    """When a condition that holds now began (None while it does not hold)."""
    if not condition:
        return None
    return now if since is None else since


def _describe(measures: dict[str, float]) -> str:
    return ", ".join(f"{name} {w:.0f} W" for name, w in measures.items())
