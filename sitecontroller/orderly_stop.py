"""The orderly stop: ramp to 0 W, stop the inverter, then open the contactors (DESIGN §4).

`OrderlyStop` is the stop's state (its phase and ramp rate); the decision rules
act on it each cycle (`control.decide`), so a critical error or an e-stop during
the stop still wins at once. `drive()` runs the stop on a live node after its
cycle task has ended (SIGTERM, restart, reboot) within a time budget, and
flushes the last commands to the devices before they are closed.
"""
from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("sitecontroller.node")

STOP_RAMP_S = 0.8  # an orderly stop ramps to 0 W in about this long, whatever the ramp parameter
PHASES = ("ramp", "off", "open")


class OrderlyStop:
    def __init__(self):
        self.phase: str | None = None
        self.ramp_w_per_s: float | None = None
        self.keep_open = False  # the contactors were open when the stop began: no phase closes them

    def begin(self, setpoint_w: float, ramp_w_per_s: float, *, contactors_open: bool) -> bool:
        """Start ramping to 0 W, linearly within about STOP_RAMP_S. False if already stopping."""
        if self.phase is not None:
            return False
        self.phase = "ramp"
        self.keep_open = contactors_open
        self.ramp_w_per_s = max(ramp_w_per_s, abs(setpoint_w) / STOP_RAMP_S)
        if contactors_open:
            log.info("orderly stop: contactors are open and stay open")
        else:
            log.info("orderly stop: ramping %.0f W to 0 W at %.0f W/s", setpoint_w, self.ramp_w_per_s)
        return True

    def advance(self, phase: str) -> None:
        if phase not in PHASES or (self.phase is not None and PHASES.index(phase) < PHASES.index(self.phase)):
            raise ValueError(f"orderly stop cannot go from {self.phase!r} to {phase!r}")
        self.phase = phase


async def drive(node, clock, budget_s: float, flush_s: float = 0.2) -> None:
    """Step `node` through the stop within `budget_s`: ramp, inverter off, contactors open."""
    node.begin_stop()
    period = node.params.cycle.period_s
    idle_w = max(50.0, 0.01 * node.rated_w)
    ramp_until = clock.monotonic() + budget_s - 2 * flush_s - period  # time left for the two last steps
    while clock.monotonic() < ramp_until:
        node.step()
        inv = node.image.inverter if node.image else None
        if node.setpoint_w == 0.0 and (inv is None or abs(inv.p_w) < idle_w):
            break
        await clock.sleep_until(clock.monotonic() + period)
    for phase in ("off", "open"):
        inv = node.image.inverter if node.image else None
        if phase == "open" and inv is not None and abs(inv.p_w) >= idle_w and not node.stop.keep_open:
            log.error("opening the contactors while the inverter still carries %.0f W: "
                      "it did not ramp down within the %.1f s stop budget", inv.p_w, budget_s)
        node.stop.advance(phase)
        node.step()
        results = await asyncio.gather(*(d.flush(flush_s) for d in node.devices.all()), return_exceptions=True)
        for driver, ok in zip(node.devices.all(), results):
            if ok is not True:
                log.warning("stop step %r may not have reached the %s (%s)", phase, driver.kind,
                            ok if isinstance(ok, Exception) else "no confirmation in time")
