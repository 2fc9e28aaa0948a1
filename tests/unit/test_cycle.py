"""Cycle deadlines and overrun counting on the simulated clock."""
import asyncio

import pytest

from sitecontroller.clock import SimClock
from sitecontroller.cycle import CycleStats, Deadlines, run_cycles


def run(work_s_per_cycle, cycles=10, period=0.1):
    """Run `cycles` cycles where cycle k's work takes work_s_per_cycle[k] seconds."""
    clock = SimClock(start_mono=0.0)
    stats = CycleStats()
    stop = asyncio.Event()
    starts = []

    def step():
        k = len(starts)
        starts.append(round(clock.monotonic(), 9))
        clock.advance(work_s_per_cycle[k] if k < len(work_s_per_cycle) else 0.0)
        if len(starts) >= cycles:
            stop.set()

    asyncio.run(run_cycles(clock, period, step, stop, stats))
    return starts, stats


def test_absolute_deadlines_do_not_drift():
    # every cycle takes 30 ms of a 100 ms period: starts stay on the grid t0 + k*period
    starts, stats = run([0.03] * 50, cycles=50)
    assert starts == [pytest.approx(k * 0.1, abs=1e-9) for k in range(50)]
    assert stats.overruns == 0 and stats.missed_slots == 0
    assert stats.percentile_ms(50) == pytest.approx(100.0)
    assert stats.percentile_ms(99) == pytest.approx(100.0)


@pytest.mark.parametrize(
    "work,expected_starts,overruns,missed",
    [
        # one cycle takes 150 ms: slot 0.1 is missed, the next cycle starts on 0.2 (no burst, no drift)
        ([0.0, 0.15, 0.0, 0.0], [0.0, 0.1, 0.3, 0.4], 1, 1),
        # one cycle takes 350 ms: three slots skipped
        ([0.35, 0.0, 0.0], [0.0, 0.4, 0.5], 1, 3),
        # exactly on the deadline is not an overrun
        ([0.1, 0.0, 0.0], [0.0, 0.1, 0.2], 0, 0),
        # two separate overruns
        ([0.12, 0.0, 0.21, 0.0], [0.0, 0.2, 0.3, 0.6], 2, 3),
    ],
)
def test_overruns_are_counted_and_missed_slots_skipped(work, expected_starts, overruns, missed):
    starts, stats = run(work, cycles=len(expected_starts))
    assert starts == [pytest.approx(s, abs=1e-9) for s in expected_starts]
    assert (stats.overruns, stats.missed_slots) == (overruns, missed)


def test_statistics_report_p50_p99_max():
    stats = CycleStats()
    t = 0.0
    for k in range(101):
        stats.started(t)
        t += 0.1 if k != 50 else 0.25
    s = stats.summary()
    assert s["period_ms_p50"] == pytest.approx(100.0)
    assert s["period_ms_max"] == pytest.approx(250.0)
    assert s["cycles"] == 101


def test_deadlines_reject_a_zero_period():
    with pytest.raises(ValueError):
        Deadlines(0.0, 0.0)
