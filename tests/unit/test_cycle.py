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


@pytest.mark.parametrize("wall,offset,expected_wait", [
    (1_780_000_000.00, 0.0, 0.0),     # on the grid: start now
    (1_780_000_000.03, 0.0, 0.07),    # 30 ms past a wall-clock tenth: wait 70 ms
    (1_780_000_000.03, -0.01, 0.06),  # the leader's dispatch, 10 ms before the members' cycles
    (1_780_000_000.095, -0.01, 0.095),
])
def test_members_start_their_cycles_on_the_same_wall_clock_grid(wall, offset, expected_wait):
    from sitecontroller.cycle import aligned_start

    clock = SimClock(start_mono=50.0, start_wall=wall)
    assert aligned_start(clock, 0.1, offset) == pytest.approx(50.0 + expected_wait, abs=1e-6)


def test_a_first_cycle_at_t0_and_then_on_its_grid():
    clock = SimClock(start_mono=0.0)
    stop, starts = asyncio.Event(), []

    def step():
        starts.append(round(clock.monotonic(), 9))
        if len(starts) == 3:
            stop.set()

    asyncio.run(run_cycles(clock, 0.1, step, stop, CycleStats(), t0=0.042))
    assert starts == [pytest.approx(0.042 + k * 0.1) for k in range(3)]


def test_setpoint_age_counts_each_new_reading_once_and_only_with_an_origin_decision():
    from sitecontroller.control.sources import SetpointAge, SetpointInbox

    age, inbox = SetpointAge(), SetpointInbox("cluster", 1.0)
    assert age.summary() is None
    for k in range(100):
        r = inbox.put(1000.0, float(k), meta={"decided_wall": 500.0 + k})
        age.observe(r, 500.0 + k + (0.012 if k < 99 else 0.090))
        age.observe(r, 600.0 + k)  # the same reading again (the next cycle): not a new sample
    age.observe(inbox.put(1000.0, 200.0), 900.0)  # no origin decision (a local request): nothing
    age.observe(None, 901.0)
    assert age.summary() == {"p50": 12.0, "p99": 12.0, "max": 90.0, "n": 100}
