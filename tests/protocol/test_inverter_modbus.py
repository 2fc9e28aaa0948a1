"""Each Modbus inverter model's driver against the simulated inverter over a real TCP socket."""
from __future__ import annotations

import contextlib
import sys
import types
from dataclasses import dataclass, replace
from types import MappingProxyType

import pytest

from sitecontroller.clock import RealClock
from sitecontroller.drivers.base import InverterCommand
from sitecontroller.drivers.inverter import ISSUE_CODES, make_inverter
from sitecontroller.drivers.inverter.config import InverterConfig
from sitecontroller.drivers.inverter.modbus_inverter import ModbusInverter
from sitecontroller.drivers.modbus import DeviceError, ModbusClient, load_profile
from sitecontroller.drivers.modbus.codec import encode_raw, raw_from_value
from sitecontroller.sim.inverter import SimModbusInverter, inverter_quantities
from sitecontroller.sim.plant import Battery, Grid, Inverter, Load, Plant, Solar
from tests.util import async_wait_until, free_tcp_port

MODELS = InverterConfig.MODBUS_MODELS
RATED_W = 5000.0
# reading resolution per model: (W, V, A, Hz, degC)
TOL = {
    "luxpowertek": (3.0, 0.1, 0.011, 0.011, 1.0),
    "abb_pqstorl": (0.01, 0.001, 0.001, 0.001, 0.001),
}
SUNSPEC_TOL = (1.0, 0.1, 0.011, 0.011, 0.1)


def make_plant() -> Plant:
    return Plant(Battery(capacity_wh=10_000, soc=0.6), Inverter(rated_w=RATED_W), Grid(), Solar(0.0), Load(500.0))


@dataclass
class Rig:
    plant: Plant
    config: InverterConfig
    sim: SimModbusInverter
    drv: ModbusInverter

    def codes(self) -> set[str]:
        return {i.code for i in self.drv.issues()}


@contextlib.asynccontextmanager
async def rig(model: str, *, profile=None, server_profile=None, start_driver: bool = True):
    plant = make_plant()
    cfg = InverterConfig(model=model, host="127.0.0.1", port=free_tcp_port(), rated_w=RATED_W,
                         poll_s=0.05, timeout_s=0.2, comm_lost_s=0.4)
    sim = SimModbusInverter(plant, cfg, server_profile)
    await sim.start()
    drv = ModbusInverter(cfg, RealClock(), profile)
    try:
        if start_driver:
            await drv.start()
        yield Rig(plant, cfg, sim, drv)
    finally:
        await drv.close()
        await sim.close()


async def first_reading(r: Rig):
    return await async_wait_until(r.drv.latest, what="a first reading")


# --- decode, scaling, sign --------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
async def test_reading_matches_the_plant_with_our_signs(model):
    w_tol, v_tol, a_tol, hz_tol, t_tol = TOL.get(model, SUNSPEC_TOL)
    async with rig(model) as r:
        inv = r.plant.inverter
        inv.p_w, inv.q_var, inv.temp_c = -1234.0, 321.0, 41.7  # charging
        r.plant.grid.freq_offset_hz = 0.123
        reading = await async_wait_until(
            lambda: (x := r.drv.latest()) is not None and abs(x.p_w - inv.p_w) <= w_tol and x, what="p_w"
        )
        q = inverter_quantities(r.plant)
        assert reading.p_w < 0, "charging must read negative"
        assert reading.q_var == pytest.approx(321.0, abs=max(w_tol, 1.0))
        assert reading.freq_hz == pytest.approx(r.plant.grid.measured_hz, abs=hz_tol)
        assert reading.phase_v == pytest.approx(r.plant.phase_v(), abs=v_tol)
        assert reading.phase_a == pytest.approx(q["phase_a"], abs=a_tol)
        assert reading.dc_v == pytest.approx(r.plant.battery.pack_v, abs=v_tol)
        assert reading.temp_c == pytest.approx(41.7, abs=t_tol)
        assert reading.rated_w == RATED_W and not reading.running and reading.faults == frozenset()
        assert r.codes() == set()
        inv.p_w = 2345.0  # discharging reads positive
        await async_wait_until(lambda: abs(r.drv.latest().p_w - 2345.0) <= w_tol, what="positive p_w")


# --- setpoint write + read-back, run/stop ------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
async def test_setpoints_reach_the_plant_and_read_back(model):
    async with rig(model) as r:
        await first_reading(r)
        inv = r.plant.inverter
        for p in (2000.0, -1500.0):
            r.drv.command(InverterCommand(p_w=p, q_var=0.0, run=True))
            await async_wait_until(lambda: inv.run_requested and abs(inv.setpoint_p_w - p) <= 5, what=f"P={p}")
            await async_wait_until(
                lambda: abs((r.drv.latest().setpoint_p_w or 0) - p) <= 5, what="the setpoint read back")
        assert r.codes() == set()
        assert r.drv.stats()["writes"] >= 2 and r.drv.stats()["write_failures"] == 0


@pytest.mark.parametrize("model", MODELS)
async def test_grid_forming_is_written_where_the_profile_can_and_island_is_reported(model):
    """Backup over the protocol: a model that can form the grid gets the enable with the
    command (never with a stop) and reports a lost grid; the others say they cannot."""
    async with rig(model) as r:
        await first_reading(r)
        inv, can = r.plant.inverter, model == "sunspec_backup"
        assert r.drv.can_form_grid is can
        r.drv.command(InverterCommand(p_w=500.0, run=True, grid_forming=True))
        await async_wait_until(lambda: inv.run_requested and inv.setpoint_p_w > 490, what="run")
        assert inv.grid_forming is can
        r.plant.grid.lost = True
        await async_wait_until(lambda: r.drv.latest().island is (True if can else None), what="island reported")
        r.drv.command(InverterCommand(p_w=500.0, run=False, grid_forming=True))  # a stop never forms a grid
        await async_wait_until(lambda: not inv.run_requested, what="stop")
        assert inv.grid_forming is False and r.codes() == set()


@pytest.mark.parametrize("model", MODELS)
async def test_run_and_stop(model):
    async with rig(model) as r:
        await first_reading(r)
        inv = r.plant.inverter
        r.drv.command(InverterCommand(p_w=1000.0, run=True))
        await async_wait_until(lambda: inv.run_requested and inv.setpoint_p_w > 990, what="run")
        r.plant.step(1.0)
        await async_wait_until(lambda: r.drv.latest().running, what="running state")
        r.drv.command(InverterCommand(p_w=1000.0, run=False))
        await async_wait_until(lambda: not inv.run_requested and inv.setpoint_p_w == 0.0, what="stop")
        r.plant.step(0.1)
        await async_wait_until(lambda: not r.drv.latest().running and r.drv.latest().setpoint_p_w == 0.0,
                               what="stopped state")
        assert r.codes() == set()


# --- faults -------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
async def test_a_trip_is_reported_as_a_fault_and_clears(model):
    async with rig(model) as r:
        await first_reading(r)
        r.sim.trip()
        await async_wait_until(lambda: "INV_FAULT" in r.codes(), what="INV_FAULT")
        reading = r.drv.latest()
        assert reading.faults and not reading.running
        if "fault_states" in r.drv.profile.reading:
            await async_wait_until(lambda: r.drv.latest().state == "fault", what="fault state")
        assert ISSUE_CODES["INV_FAULT"][0] == "error"
        r.plant.inverter.reset()
        await async_wait_until(lambda: "INV_FAULT" not in r.codes(), what="fault cleared")
        assert r.drv.latest().faults == frozenset()


# --- communication --------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
async def test_silence_is_comm_lost_and_the_reading_goes_stale(model):
    async with rig(model) as r:
        await first_reading(r)
        r.sim.mute()
        await async_wait_until(lambda: "INV_COMM_LOST" in r.codes(), what="INV_COMM_LOST")
        assert RealClock().monotonic() - r.drv.latest().t >= r.config.comm_lost_s
        r.sim.unmute()
        await async_wait_until(lambda: "INV_COMM_LOST" not in r.codes(), what="recovery")
        t = r.drv.latest().t
        await async_wait_until(lambda: r.drv.latest().t > t, what="fresh readings again")


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
async def test_slow_answers_time_out_and_a_dropped_link_reconnects(model):
    async with rig(model) as r:
        await first_reading(r)
        r.sim.delay_s = 0.5  # > timeout_s
        await async_wait_until(lambda: "INV_COMM_LOST" in r.codes(), what="timeouts -> INV_COMM_LOST")
        r.sim.delay_s = 0.0
        await async_wait_until(lambda: "INV_COMM_LOST" not in r.codes(), what="recovery after delay")
        await r.sim.drop()
        await async_wait_until(lambda: "INV_COMM_LOST" in r.codes(), what="link dropped")
        await r.sim.resume()
        await async_wait_until(lambda: "INV_COMM_LOST" not in r.codes(), timeout_s=8, what="reconnected")
        assert r.drv.stats()["modbus_connects"] >= 2


# --- failed writes are never silent ----------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
async def test_a_rejected_write_is_an_issue_until_a_write_succeeds(model):
    async with rig(model) as r:
        await first_reading(r)
        r.sim.reject_writes = True
        r.drv.command(InverterCommand(p_w=1000.0, run=True))
        await async_wait_until(lambda: "INV_WRITE_FAILED" in r.codes(), what="INV_WRITE_FAILED")
        assert "refused" in next(i.text for i in r.drv.issues() if i.code == "INV_WRITE_FAILED")
        assert not r.plant.inverter.run_requested
        r.sim.reject_writes = False
        await async_wait_until(lambda: "INV_WRITE_FAILED" not in r.codes(), what="write retried")
        assert r.plant.inverter.setpoint_p_w == pytest.approx(1000.0, abs=5)


def stuck_profile(model: str):
    """The model's profile, but its first power setpoint register always reads 0 (ignores writes)."""
    prof = load_profile(model)
    name = next(w.point for w in prof.writes if w.source in ("p_w", "window_out_pct", "discharge_pct"))
    points = dict(prof.points)
    points[name] = replace(points[name], sim="stuck")
    return replace(prof, points=MappingProxyType(points))


@pytest.mark.parametrize("model", MODELS)
async def test_a_read_back_that_differs_is_an_issue(model):
    async with rig(model, server_profile=stuck_profile(model)) as r:
        r.sim.server.source = lambda: {**inverter_quantities(r.plant), "stuck": 0.0}
        await first_reading(r)
        r.drv.command(InverterCommand(p_w=2000.0, run=True))
        await async_wait_until(lambda: "INV_WRITE_FAILED" in r.codes(), what="read-back mismatch")
        assert "read-back differs" in next(i.text for i in r.drv.issues() if i.code == "INV_WRITE_FAILED")


@pytest.mark.parametrize("model", MODELS)
async def test_simulator_refuses_out_of_range_and_read_only_writes(model):
    async with rig(model, start_driver=False) as r:
        server = r.sim.server
        prof = server.profile
        limited = next(p for p in prof.points.values() if p.writable and p.max is not None and p.mask is None)
        client = ModbusClient(host="127.0.0.1", port=r.config.port, timeout_s=1.0)
        try:
            sf = server._sf.get(limited.sf) if limited.sf else None
            too_big = encode_raw(limited, raw_from_value(limited, limited.max + 1, sf))
            with pytest.raises(DeviceError) as exc:
                await client.write(limited.address, too_big)
            assert exc.value.code == 3  # ILLEGAL_VALUE
            img = server._regs["holding"]
            ro = next(img["start"] + i for i, w in enumerate(server._writable["holding"]) if not w)
            with pytest.raises(DeviceError) as exc:
                await client.write(ro, [1])
            assert exc.value.code == 2  # ILLEGAL_ADDRESS
        finally:
            client.close()
        assert r.plant.inverter.setpoint_p_w == 0.0


# --- keep-alive and model specifics -----------------------------------------------------------------
@pytest.mark.parametrize("model", ["sunspec", "abb_pqstorl"])
async def test_unchanged_setpoints_are_rewritten_as_keep_alive(model):
    prof = replace(load_profile(model), keepalive_s=0.1)
    async with rig(model, profile=prof) as r:
        await first_reading(r)
        r.drv.command(InverterCommand(p_w=500.0, run=True))
        await async_wait_until(lambda: r.sim.applied > 0, what="first write")
        seen = set()
        if model == "abb_pqstorl":
            def beats():
                seen.add(r.sim.server.values(["Heartbeat"])["Heartbeat"])
                return len(seen) >= 3
            await async_wait_until(beats, what="a changing heartbeat")
        n = r.drv.stats()["writes"]
        await async_wait_until(lambda: r.drv.stats()["writes"] >= n + 3, what="keep-alive writes")
        assert r.codes() == set()


async def test_luxpower_flag_writes_keep_the_other_function_bits():
    async with rig("luxpowertek") as r:
        await first_reading(r)
        r.drv.command(InverterCommand(p_w=1500.0, run=True))
        await async_wait_until(lambda: r.plant.inverter.setpoint_p_w == pytest.approx(1500.0), what="discharge")
        func = int(r.sim.server.values(["FuncEn"])["FuncEn"])
        assert func & (1 << 4) and func & (1 << 6), "bits the driver does not own must be kept"
        assert func & (1 << 9) and func & (1 << 10) and not func & (1 << 7)
        r.drv.command(InverterCommand(p_w=-1000.0, run=True))
        await async_wait_until(lambda: r.plant.inverter.setpoint_p_w == pytest.approx(-1000.0), what="charge")
        func = int(r.sim.server.values(["FuncEn"])["FuncEn"])
        assert func & (1 << 7) and not func & (1 << 10) and func & (1 << 4)


async def test_sunspec_models_are_discovered_wherever_the_device_puts_them():
    std = load_profile("sunspec")
    moved = replace(std, sunspec_bases=(0,), sunspec_models=tuple(reversed(std.sunspec_models)))
    async with rig("sunspec", server_profile=moved) as r:
        r.plant.inverter.p_w = 777.0
        await async_wait_until(lambda: (x := r.drv.latest()) is not None and x.p_w == 777.0, what="reading")
        assert r.drv.device.sunspec_models[103] != 40070 and r.codes() == set()


async def test_sunspec_device_without_a_needed_model_is_a_decode_issue():
    std = load_profile("sunspec")
    keep = {n: p for n, p in std.points.items() if p.model != 124}
    lacking = replace(std, points=MappingProxyType(keep), writes=(), ref_w="rated",
                      sunspec_models=tuple(m for m in std.sunspec_models if m[0] != 124))
    async with rig("sunspec", server_profile=lacking) as r:
        await async_wait_until(lambda: "INV_DECODE" in r.codes(), what="INV_DECODE")
        assert "model 124" in next(i.text for i in r.drv.issues() if i.code == "INV_DECODE")
        assert r.drv.latest() is None


# --- factory ----------------------------------------------------------------------------------------
def test_factory_dispatches_every_model(monkeypatch):
    for model in MODELS:
        cfg = InverterConfig(model=model, host="127.0.0.1", port=1502, rated_w=RATED_W)
        assert isinstance(make_inverter(cfg, RealClock()), ModbusInverter)
    fake = types.ModuleType("sitecontroller.drivers.inverter.indevolt")

    class IndevoltInverter:
        def __init__(self, config, clock):
            self.config = config

    fake.IndevoltInverter = IndevoltInverter
    monkeypatch.setitem(sys.modules, "sitecontroller.drivers.inverter.indevolt", fake)
    cfg = InverterConfig(model="indevolt", transport="http", host="127.0.0.1", port=8080, rated_w=RATED_W)
    assert isinstance(make_inverter(cfg, RealClock()), IndevoltInverter)
    with pytest.raises(ValueError, match="inproc"):
        make_inverter(InverterConfig(model="inproc", transport="inproc", rated_w=RATED_W), RealClock())
    assert set(ISSUE_CODES) == {"INV_COMM_LOST", "INV_FAULT", "INV_DECODE", "INV_WRITE_FAILED"}
    assert all(sev in ("warning", "error", "critical") for sev, _ in ISSUE_CODES.values())


async def test_single_register_writes_when_the_profile_asks_for_function_6():
    prof = replace(load_profile("luxpowertek"), write_function=6)
    async with rig("luxpowertek", profile=prof) as r:
        await first_reading(r)
        r.drv.command(InverterCommand(p_w=-2000.0, run=True))
        await async_wait_until(lambda: r.plant.inverter.setpoint_p_w == pytest.approx(-2000.0), what="FC6 writes")
        assert r.codes() == set()


async def test_an_rtu_link_that_cannot_open_is_a_comm_error():
    from sitecontroller.drivers.modbus import CommError

    client = ModbusClient(transport="serial", serial_port="/dev/nonexistent-tty", timeout_s=0.2)
    with pytest.raises(CommError):
        await client.read("holding", 0, 1)
    client.close()


# --- one connection per physical link -------------------------------------------------------------
async def test_devices_on_one_link_share_one_connection():
    """Two devices behind one host:port (a gateway, or one RS-485 line) use one connection and one
    lock; closing one leaves the other's link up."""
    async with rig("sunspec") as r:
        await first_reading(r)
        other = ModbusInverter(r.config, RealClock())  # a second device on the same link
        await other.start()
        try:
            await async_wait_until(other.latest, what="the second device's reading")
            assert r.drv.client.shared_by == 2 and r.drv.client._link is other.client._link
            assert r.drv.stats()["modbus_connects"] == 1 == other.stats()["modbus_connects"]
            polls = r.drv.stats()["polls"], other.stats()["polls"]
            await async_wait_until(lambda: r.drv.stats()["polls"] > polls[0] + 5 and
                                   other.stats()["polls"] > polls[1] + 5, what="both polling")
            assert r.codes() == set() and other.issues() == []
        finally:
            await other.close()
        assert r.drv.client.shared_by == 1
        t = r.drv.latest().t
        await async_wait_until(lambda: r.drv.latest().t > t, what="the first device still polling")
        assert r.drv.stats()["modbus_connects"] == 1


# --- writes at once, flush --------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["sunspec", "luxpowertek"])
async def test_a_changed_setpoint_is_written_at_once_not_at_the_next_poll(model):
    async with rig(model) as r:
        slow = r.config.model_copy(update={"poll_s": 5.0})  # the next poll tick is seconds away
        drv = ModbusInverter(slow, RealClock())
        await drv.start()
        try:
            await async_wait_until(drv.latest, what="first reading")
            t0 = RealClock().monotonic()
            drv.command(InverterCommand(p_w=1800.0))
            await async_wait_until(lambda: r.plant.inverter.setpoint_p_w == pytest.approx(1800.0, abs=5),
                                   timeout_s=1.0, what="the write, long before the next poll")
            assert RealClock().monotonic() - t0 < 1.0 and drv.stats()["polls"] == 1
        finally:
            await drv.close()


@pytest.mark.parametrize("model", MODELS)
async def test_flush_puts_the_last_command_on_the_device_before_it_returns(model):
    async with rig(model) as r:
        await first_reading(r)
        r.drv.command(InverterCommand(p_w=2000.0))
        assert await r.drv.flush(2.0)
        assert r.plant.inverter.setpoint_p_w == pytest.approx(2000.0, abs=5)  # no waiting: it is there
        r.drv.command(InverterCommand(p_w=0.0, run=False))  # the orderly stop's last command
        assert await r.drv.flush(2.0)
        assert not r.plant.inverter.run_requested and r.plant.inverter.setpoint_p_w == 0.0
        assert await r.drv.flush(0.0)  # nothing pending


async def test_flush_gives_up_at_its_timeout_when_the_device_does_not_take_the_write():
    async with rig("sunspec") as r:
        await first_reading(r)
        r.sim.reject_writes = True
        r.drv.command(InverterCommand(p_w=1000.0))
        t0 = RealClock().monotonic()
        assert not await r.drv.flush(0.3)
        assert RealClock().monotonic() - t0 < 0.6
        r.sim.mute()
        r.drv.command(InverterCommand(p_w=0.0, run=False))
        t0 = RealClock().monotonic()
        assert not await r.drv.flush(0.3)
        assert RealClock().monotonic() - t0 < 0.6


def test_backup_needs_an_inverter_that_can_form_the_grid():
    import json
    from pathlib import Path

    from sitecontroller import params as site_params
    from sitecontroller.drivers.factory import make_devices

    data = json.loads((Path(__file__).parents[2] / "site_parameters" / "sim_node1.json").read_text())
    data["features"]["BACKUP"] = True
    with pytest.raises(ValueError, match=r"features.BACKUP: inverter model 'sunspec' cannot be told to form the grid"):
        make_devices(site_params.parse(data), RealClock())
    data["devices"]["inverter"]["model"] = "sunspec_backup"
    assert make_devices(site_params.parse(data), RealClock()).inverter.can_form_grid
