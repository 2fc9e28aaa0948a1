"""NodeRuntime on virtual time with the in-process plant: the order of start and stop,
services, the unclean-exit warning, and what status reports."""
import asyncio
import os

import pytest

from sitecontroller.drivers.factory import make_devices
from sitecontroller import runtime as runtime_module
from sitecontroller.runtime import NodeRuntime
from sitecontroller.sim.plant import Plant
from sitecontroller.vtime import VirtualClock

pytestmark = pytest.mark.vtime


class Service:
    def __init__(self, name, log):
        self.name, self.log = name, log

    async def start(self):
        self.log.append(f"start {self.name}")

    async def close(self):
        self.log.append(f"close {self.name}")


def runtime(params, services=()):
    clock = VirtualClock()
    plant = Plant.from_params(params, wall_s=clock.wall())
    rt = NodeRuntime(params, clock, make_devices(params, clock, plant=plant), services=services)
    return rt, plant, clock


async def stepping(plant, clock, period_s, seconds):
    """The plant's physics, stepped beside the node on the same (virtual) clock."""
    end = clock.monotonic() + seconds
    while clock.monotonic() < end:
        await clock.sleep_until(clock.monotonic() + period_s)
        plant.step(period_s, clock.wall())


async def test_services_start_after_the_node_and_close_before_the_devices(make_params):
    log = []
    rt, plant, clock = runtime(make_params(), [lambda node: Service("a", log), lambda node: Service("b", log)])
    await rt.start()
    assert log == ["start a", "start b"]
    await stepping(plant, clock, 0.1, 1.0)
    assert await rt.stop() == 0
    assert log == ["start a", "start b", "close b", "close a"]


async def test_an_orderly_stop_ends_at_zero_with_the_inverter_off_and_the_contactors_open(make_params):
    rt, plant, clock = runtime(make_params())
    await rt.start()
    physics = asyncio.create_task(stepping(plant, clock, 0.1, 30))
    await stepping(plant, clock, 0.1, 0.5)
    rt.node.commands.submit({"type": "set_power", "p_w": 4000, "hold_s": 600})
    await stepping(plant, clock, 0.1, 2.0)
    assert plant.inverter.p_w == pytest.approx(4000)
    t0 = clock.monotonic()
    assert await rt.stop() == 0
    assert clock.monotonic() - t0 <= 1.5 + 1e-6  # the stop budget (SIGTERM to exit within 2 s)
    assert (plant.inverter.p_w, plant.inverter.run_requested, plant.battery.contactor_closed) == (0.0, False, False)
    physics.cancel()


async def test_a_run_that_did_not_stop_cleanly_is_reported_at_the_next_start(make_params):
    params = make_params()
    first, _, _ = runtime(params)
    await first.start()  # ... and the process dies: no stop()
    first.stopping.set()
    await first.devices.close()
    first.node.errors.close()
    first.writer.close(2.0)
    second, _, _ = runtime(params)
    await second.start()
    assert second.node.errors.is_active("UNCLEAN_EXIT")
    assert f"pid {os.getpid()}" in {e.id: e.text for e in second.node.errors.listed()}["UNCLEAN_EXIT"]
    await second.stop()
    third, _, _ = runtime(params)
    await third.start()
    assert not any(e.id == "UNCLEAN_EXIT" for e in third.node.errors.listed())
    await third.stop()


async def test_status_reports_pid_source_setpoint_and_the_contactors_as_the_bms_sees_them(make_params):
    rt, plant, clock = runtime(make_params())
    await rt.start()
    await stepping(plant, clock, 0.1, 0.5)
    rt.node.commands.submit({"type": "set_power", "p_w": 1500, "hold_s": 600})
    await stepping(plant, clock, 0.1, 1.0)
    status = rt.node.status()
    assert status["pid"] == os.getpid() and status["control_mode"] == "local"
    assert (status["setpoint_source"], status["setpoint_w"], status["request_w"]) == ("local", 1500.0, 1500.0)
    assert status["contactors_closed"] is True and status["setpoints"]["local"]["p_w"] == 1500.0
    await rt.stop()
    assert rt.node.status()["setpoint_source"] is None


class Stubborn(Service):
    """A service whose close hangs and swallows its cancellation until released."""

    def __init__(self, log):
        super().__init__("stubborn", log)
        self.release = asyncio.Event()

    async def close(self):
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.log.append("cancel swallowed")


async def test_a_service_that_does_not_close_is_abandoned_within_its_budget(make_params, caplog):
    log = []
    stubborn = None

    def factory(node):
        nonlocal stubborn
        stubborn = Stubborn(log)
        return stubborn

    rt, plant, clock = runtime(make_params(), [factory])
    await rt.start()
    await stepping(plant, clock, 0.1, 0.5)
    t0 = clock.monotonic()
    assert await rt.stop() == 0
    assert clock.monotonic() - t0 <= 1.5 + runtime_module.CLOSE_BUDGET_S + 0.1
    assert "cancel swallowed" in log and "Stubborn did not close within" in caplog.text
    assert plant.battery.contactor_closed is False
    stubborn.release.set()  # let the abandoned task end before the loop closes
    await asyncio.sleep(0)


async def test_a_stop_that_does_not_finish_is_reported_at_the_next_start(make_params, monkeypatch):
    params = make_params()
    first, _, _ = runtime(params)
    await first.start()

    async def broken_drive(*args):
        raise RuntimeError("stop step failed")

    monkeypatch.setattr(runtime_module.orderly_stop, "drive", broken_drive)
    with pytest.raises(RuntimeError):
        await first.stop()
    monkeypatch.undo()
    second, _, _ = runtime(params)
    await second.start()
    assert second.node.errors.is_active("UNCLEAN_EXIT")
    await second.stop()
