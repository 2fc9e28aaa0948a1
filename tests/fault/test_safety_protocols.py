"""Safety behaviour with faults injected through the simulators' knobs (issue: device layer §6).

Each test runs a node with the real protocol drivers (CAN + DBC, Modbus TCP)
against the simulators, injects one fault, and asserts the outcome and the
time it took. They run on virtual time (sitecontroller/vtime.py): drivers,
simulators and node share one event loop whose clock jumps to the next timer,
so reaction times are asserted exactly, in cycles of the node's clock, and do
not depend on the load of the machine running the tests.
"""
import asyncio

import pytest

pytestmark = pytest.mark.vtime

EPS_S = 1e-6  # float rounding of virtual times, not slack


async def cycle_when(n, predicate, timeout_s, what):
    """Wait until `predicate` holds; return the start of the cycle that made it hold.

    `until` polls every 5 ms, a fraction of a cycle, so the node's latest image is that cycle's."""
    await n.until(predicate, timeout_s, what)
    return n.node.image.t


async def holds_throughout(n, predicate, window_s, what):
    """Fail at the first 5 ms sample (several per cycle) in `window_s` where `predicate` does not hold."""
    end = n.clock.monotonic() + window_s
    while n.clock.monotonic() < end:
        assert predicate(), f"{what}: violated at t={n.clock.monotonic():.3f}; status: {n.node.status()}"
        await asyncio.sleep(0.005)


async def running_at(live_node, p_w):
    ack = await live_node.command(type="set_power", p_w=p_w, hold_s=120)
    assert ack.status == "done", ack
    await live_node.until(lambda: abs(live_node.plant.inverter.p_w - p_w) < 1, 5, f"inverter at {p_w} W")
    return ack


async def test_inverter_comm_lost_means_zero_within_one_cycle_after_the_limit(live):
    n = await live()
    await running_at(n, 3000)
    n.sims["inverter"].mute()
    t_zero = await cycle_when(n, lambda: n.node.setpoint_w == 0.0, 5, "setpoint 0 W")
    last_reading = n.devices.inverter.latest().t  # the last reading the driver got before the silence
    limit, period = n.params.staleness.inverter_s, n.params.cycle.period_s
    late = (t_zero - last_reading) - limit
    # the first cycle that sees the reading older than its limit commands 0 W: within one cycle
    assert -EPS_S <= late <= period + EPS_S, f"0 W came {late * 1000:.1f} ms after the staleness limit"
    assert "INV_STALE" in n.error_ids and n.node.states.state == "run"
    # the node resumes only when readings are fresh again
    n.sims["inverter"].unmute()
    await n.until(lambda: n.node.setpoint_w == 3000.0, 10, "setpoint back at 3000 W")
    await n.until(lambda: abs(n.plant.inverter.p_w - 3000) < 1, 5, "inverter back at 3000 W")


async def test_bms_silent_is_critical_opens_contactors_and_stops(live):
    n = await live()
    await running_at(n, 3000)
    n.sims["bms"].drop()
    t_drop = n.clock.monotonic()
    t_error = await cycle_when(n, lambda: n.node.states.state == "error", 6, "state error")
    assert "BMS_STALE" in n.error_ids
    took = t_error - t_drop
    # the last frame came at most one frame period before the drop; the first cycle after its timeout acts
    timeout_s, period, frame_s = n.params.devices.bms.timeout_s, n.params.cycle.period_s, n.sims["bms"].period_s
    assert timeout_s - frame_s - EPS_S <= took <= timeout_s + period + EPS_S, f"took {took:.3f} s"
    await n.until(lambda: n.plant.inverter.p_w == 0.0, 1, "inverter at 0 W")
    await n.until(lambda: not n.plant.battery.contactor_closed, 2, "contactors opened by command")
    n.sims["bms"].resume()
    await n.until(lambda: n.node.image.bms is not None, 3, "BMS data again")
    # the cause is gone, but nobody acknowledged it: error, 0 W and open contactors at every sample
    await holds_throughout(n, lambda: n.node.states.state == "error" and n.node.setpoint_w == 0.0
                           and n.plant.inverter.p_w == 0.0 and not n.plant.battery.contactor_closed, 5,
                           "error holds 0 W with open contactors until acknowledged")


@pytest.mark.parametrize("knob,value,code", [
    ("cell_v_fault_v", 0.5, "CELL_OVERVOLTAGE"),
    ("cell_v_fault_v", -0.6, "CELL_UNDERVOLTAGE"),
    ("temp_fault_c", 40.0, "CELL_OVERTEMP"),
])
async def test_cell_limits_are_critical_open_contactors_and_stop(live, knob, value, code):
    n = await live()
    await running_at(n, 2000)
    setattr(n.plant.battery, knob, value)
    t_fault = n.clock.monotonic()
    t_error = await cycle_when(n, lambda: n.node.states.state == "error", 3, f"state error on {code}")
    assert code in n.error_ids
    # the next frame carries the fault, the next cycle after it acts
    took, bound = t_error - t_fault, n.sims["bms"].period_s + n.params.cycle.period_s
    assert took <= bound + EPS_S, f"took {took * 1000:.1f} ms, more than a frame and a cycle ({bound * 1000:.0f} ms)"
    await n.until(lambda: n.plant.inverter.p_w == 0.0, 1, "inverter at 0 W")
    await n.until(lambda: not n.plant.battery.contactor_closed, 2, "contactors open")
    # cleared and acknowledged: back to run
    setattr(n.plant.battery, knob, 0.0)
    # an active critical error cannot be acknowledged in advance: wait until the BMS frames show it gone
    await n.until(lambda: not n.node.errors.is_active(code), 3, f"{code} cause cleared")
    ack = await n.command(type="ack_error", code="all")
    assert ack.status == "done"
    await n.until(lambda: n.node.states.state == "run", 5, "back in run")


async def test_meter_stale_keeps_the_local_setpoint_and_reports_the_meter_absent(live):
    n = await live()
    await running_at(n, 1500)
    n.plant.meter_stopped = True
    limit, period = n.params.staleness.meter_s, n.params.cycle.period_s
    # the local setpoint does not depend on the meter: it is held at every sample, before and after the limit
    await holds_throughout(n, lambda: n.node.states.state == "run" and n.node.setpoint_w == 1500.0, limit + 1,
                           "the local setpoint held while the meter is silent")
    # raised by the first cycle that saw the last reading older than its limit
    stale = next((e for e in n.node.errors.listed() if e.id == "METER_STALE"), None)
    assert stale is not None, n.error_ids
    t_raised = stale.first_wall - (n.clock.wall() - n.clock.monotonic())
    late = t_raised - (n.devices.meter.latest().t + limit)
    assert -1e-5 <= late <= period + 1e-5, f"METER_STALE came {late * 1000:.1f} ms after the staleness limit"
    status = n.node.status()
    assert status["grid_p_w"] is None and "meter" in status["absent"]
    assert status["state"] == "run" and n.plant.inverter.p_w == pytest.approx(1500)
    n.plant.meter_stopped = False
    await n.until(lambda: n.node.status()["grid_p_w"] is not None, 5, "meter back")


async def test_a_setpoint_outside_the_window_is_clamped_and_the_ack_says_so(live):
    n = await live(battery={"max_discharge_w": 2500})
    ack = await n.command(type="set_power", p_w=4000)
    assert ack.status == "done" and ack.result["applied_w"] == 2500
    assert "clamped" in ack.detail and "2500 W allowed" in ack.detail
    await n.until(lambda: abs(n.plant.inverter.p_w - 2500) < 1, 5, "inverter at 2500 W")
    await holds_throughout(n, lambda: n.plant.inverter.p_w <= 2500 + 1 and n.node.setpoint_w <= 2500, 5,
                           "never above the 2500 W window")


async def test_an_inverter_trip_holds_zero_until_the_fault_clears(live):
    n = await live()
    await running_at(n, 2000)
    n.sims["inverter"].trip("GRID_FAULT")
    await n.until(lambda: "INV_FAULT" in n.error_ids, 3, "inverter fault reported")
    await n.until(lambda: n.node.setpoint_w == 0.0, 1, "setpoint 0 W")
    await holds_throughout(n, lambda: n.node.setpoint_w == 0.0 and n.plant.inverter.p_w == 0.0, 5,
                           "0 W held while the inverter reports its fault")
    n.plant.inverter.reset()
    await n.until(lambda: n.node.setpoint_w == 2000.0, 5, "setpoint back")
