"""The virtual-time event loop (sitecontroller/vtime.py): timers, timeouts, sockets, threads, determinism."""
import asyncio
import threading
import time

import can
import pytest

from sitecontroller import vtime
from sitecontroller.cycle import CycleStats, run_cycles


def test_an_hour_of_sleep_takes_milliseconds_of_real_time():
    async def main():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(3600)
        return loop.time() - t0

    t_real = time.perf_counter()
    assert vtime.run(main) == pytest.approx(3600.0)
    assert time.perf_counter() - t_real < 0.5


def test_timers_fire_in_order_at_their_exact_times():
    async def main():
        loop = asyncio.get_running_loop()
        fired = []
        t0 = loop.time()
        for delay in (5.0, 0.25, 1.0, 0.25, 60.0):
            loop.call_later(delay, lambda d=delay: fired.append((d, loop.time() - t0)))
        await asyncio.sleep(61)
        return fired

    fired = vtime.run(main)
    assert [d for d, _ in fired] == [0.25, 0.25, 1.0, 5.0, 60.0]
    assert all(at == pytest.approx(d, abs=1e-9) for d, at in fired)


def test_wait_for_times_out_in_virtual_time():
    async def main():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), timeout=30.0)
        t_timeout = loop.time() - t0
        # a result that comes in time is not a timeout
        assert await asyncio.wait_for(asyncio.sleep(2.0, result="in time"), timeout=3.0) == "in time"
        return t_timeout, loop.time() - t0

    assert vtime.run(main) == (pytest.approx(30.0), pytest.approx(32.0))


def test_the_clock_adapter_reads_virtual_time_and_sleeps_to_exact_deadlines():
    async def main():
        clock = vtime.VirtualClock()
        start_mono, start_wall = clock.monotonic(), clock.wall()
        await clock.sleep_until(start_mono + 0.1 * 7)
        assert clock.monotonic() == start_mono + 0.1 * 7  # exactly the deadline, no rounding
        await clock.sleep_until(start_mono)  # a deadline in the past returns at once
        return clock.monotonic() - start_mono, clock.wall() - start_wall

    assert vtime.run(main) == (pytest.approx(0.7), pytest.approx(0.7))


def test_the_clock_adapter_refuses_a_real_loop():
    async def main():
        vtime.VirtualClock().monotonic()

    with pytest.raises(RuntimeError, match="VirtualTimeLoop"):
        asyncio.run(main())


def test_the_control_cycle_keeps_its_deadlines_on_virtual_time():
    async def main():
        clock = vtime.VirtualClock()
        stats, stop, starts = CycleStats(), asyncio.Event(), []

        def step():
            starts.append(clock.monotonic() - t0)
            if len(starts) == 36_000:  # one hour at 100 ms
                stop.set()

        t0 = clock.monotonic()
        await run_cycles(clock, 0.1, step, stop, stats)
        return starts, stats

    t_real = time.perf_counter()
    starts, stats = vtime.run(main)
    assert time.perf_counter() - t_real < 10
    assert starts[-1] == pytest.approx(3599.9) and stats.overruns == 0
    assert stats.percentile_ms(99) == pytest.approx(100.0)


async def _echo_exchange(n_messages):
    """A TCP echo server and client on loopback in this loop; returns the virtual time it took."""
    loop = asyncio.get_running_loop()

    async def echo(reader, writer):
        while data := await reader.read(1024):
            writer.write(data)
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = loop.time()
    for k in range(n_messages):
        writer.write(f"ping {k};".encode())
        # a timer is pending all the while: the answer must come before the clock jumps to it
        answer = await asyncio.wait_for(reader.readexactly(len(f"ping {k};")), timeout=1.0)
        assert answer == f"ping {k};".encode()
    took = loop.time() - t0
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    return took


def test_loopback_sockets_between_coroutines_take_zero_virtual_time():
    assert vtime.run(_echo_exchange(200)) == 0.0


def test_executor_jobs_run_in_real_time_and_take_zero_virtual_time():
    async def main():
        loop = asyncio.get_running_loop()
        ticker = loop.call_later(0.001, lambda: None)  # a timer the clock could jump to
        t0 = loop.time()
        result = await asyncio.to_thread(lambda: time.sleep(0.05) or 42)
        ticker.cancel()
        return result, loop.time() - t0

    assert vtime.run(main) == (42, 0.0)


def test_python_can_virtual_frames_arrive_before_the_clock_moves():
    """A Notifier thread delivers each frame before the next timer: frames take zero virtual time."""

    async def main():
        loop = asyncio.get_running_loop()
        channel = f"vtime-test-{id(loop)}"
        received = []
        rx = can.Bus(interface="virtual", channel=channel)
        tx = can.Bus(interface="virtual", channel=channel)
        notifier = can.Notifier(rx, [lambda m: loop.call_soon_threadsafe(received.append, (m.arbitration_id, loop.time()))],
                                timeout=0.02)
        try:
            t0 = loop.time()
            for k in range(50):
                tx.send(can.Message(arbitration_id=k, data=b"\x00"))
                await asyncio.sleep(0.1)
            return [(i, round(t - t0, 9)) for i, t in received]
        finally:
            notifier.stop()
            rx.shutdown()
            tx.shutdown()

    received = vtime.run(main)
    assert received == [(k, round(k * 0.1, 9)) for k in range(50)]


def test_a_busy_check_holds_the_clock_until_the_thread_is_done():
    async def main():
        loop = asyncio.get_running_loop()
        done = threading.Event()
        loop.add_busy_check("worker", lambda: not done.is_set())
        threading.Thread(target=lambda: (time.sleep(0.05), done.set())).start()
        t0 = loop.time()
        await asyncio.sleep(1.0)  # the jump to +1 s waits for the worker
        loop.remove_busy_check("worker")
        return done.is_set(), loop.time() - t0

    assert vtime.run(main) == (True, 1.0)


def _trace_of_a_busy_scenario():
    """Timers, socket traffic and cancellations interleaved; the trace is what happened, when."""

    async def main():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        trace = []

        async def worker(name, period):
            for k in range(20):
                await asyncio.sleep(period)
                trace.append((round(loop.time() - t0, 9), name, k))

        async def pinger():
            took = await _echo_exchange(30)
            trace.append((round(loop.time() - t0, 9), "echo", took))

        tasks = [asyncio.create_task(worker("a", 0.1)), asyncio.create_task(worker("b", 0.07)),
                 asyncio.create_task(pinger())]
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=1.0)
        except TimeoutError:
            trace.append((round(loop.time() - t0, 9), "timeout", None))
        return trace

    return vtime.run(main)


def test_two_runs_give_the_same_trace():
    first = _trace_of_a_busy_scenario()
    assert ("timeout" in {name for _, name, _ in first}) and len(first) > 20
    assert _trace_of_a_busy_scenario() == first


def test_a_thread_stuck_busy_is_reported_not_waited_for_forever():
    async def main():
        loop = asyncio.get_running_loop()
        loop.busy_limit_s = 0.05
        loop.add_busy_check("stuck", lambda: True)
        await asyncio.sleep(1.0)

    with pytest.raises(RuntimeError, match="stuck"):
        vtime.run(main)


@pytest.mark.vtime
async def test_the_marker_runs_an_async_test_on_virtual_time(clock):
    t0 = clock.monotonic()
    await asyncio.sleep(600)
    assert clock.monotonic() - t0 == pytest.approx(600.0)
    assert isinstance(asyncio.get_running_loop(), vtime.VirtualTimeLoop)


async def test_unmarked_async_tests_stay_on_the_real_clock():
    assert not isinstance(asyncio.get_running_loop(), vtime.VirtualTimeLoop)


def _node_trace(workdir, seconds=20.0):
    """A whole node with CAN and Modbus TCP drivers against its simulators: (t, state, setpoint, inverter, SOC)
    at every cycle while it follows a setpoint, then loses its inverter link."""
    from tests.live import LiveNode, protocol_params

    async def main():
        n = LiveNode(protocol_params(workdir, "sim_node1.json"), vtime.VirtualClock())
        await n.start()
        trace = []
        try:
            await n.until(lambda: n.node.states.state == "run", 10, "node in run")
            await n.command(type="set_power", p_w=2500, hold_s=120)
            end = n.clock.monotonic() + seconds
            while n.clock.monotonic() < end:
                if n.clock.monotonic() >= end - seconds / 2 and not n.sims["inverter"].server.muted:
                    n.sims["inverter"].mute()
                img = n.node.image
                sample = (round(img.t, 6), n.node.states.state, n.node.setpoint_w,
                          round(n.plant.inverter.p_w, 3), round(n.plant.battery.soc, 9))
                if not trace or trace[-1] != sample:
                    trace.append(sample)
                await asyncio.sleep(0.01)
        finally:
            await n.close()
        return trace

    return vtime.run(main)


def test_a_whole_node_scenario_runs_fast_and_twice_the_same(tmp_path):
    t_real = time.perf_counter()
    first = _node_trace(tmp_path / "one")
    took_real = time.perf_counter() - t_real
    assert len(first) > 150 and first[0][1] == "run"
    assert first[-1][2] == 0.0  # the muted inverter: 0 W (and, silent for long, the error state)
    assert took_real < 20.0, f"20 s of node time took {took_real:.1f} s of real time"
    assert _node_trace(tmp_path / "two") == first
