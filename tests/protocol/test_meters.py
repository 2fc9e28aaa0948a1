"""Meter drivers against their simulators over real loopback sockets.

Each meter (EM24 and EM340 on Modbus TCP, HomeWizard P1 on HTTP) is checked
for values, sign (positive = import), per-phase data, frequency, timeouts,
malformed payloads (an issue, never a crash) and communication loss
(latest() stops updating, METER_COMM_LOST raised, then cleared on recovery).
"""
from __future__ import annotations

import asyncio

import pytest

from sitecontroller.clock import RealClock
from sitecontroller.drivers.meter import ISSUE_CODES, make_meter
from sitecontroller.drivers.meter.config import MeterConfig
from sitecontroller.sim.meter import SimModbusMeter, SimP1Meter, meter_values
from sitecontroller.sim.plant import Battery, Grid, Inverter, Load, Plant, Solar
from tests.util import async_wait_until, free_tcp_port

NOON = 12 * 3600.0


def make_plant(inverter_w: float = 0.0) -> Plant:
    plant = Plant(
        Battery(capacity_wh=10_000), Inverter(rated_w=20_000), Grid(), Solar(peak_w=8_000), Load(avg_w=2_000),
        seed=7, wall_s=NOON,
    )
    plant.inverter.p_w = inverter_w  # set directly: the sims never step physics, neither do we
    plant.grid.freq_offset_hz = 0.123
    return plant


MODELS = {
    "em24": dict(model="em24", transport="tcp", unit_id=1),
    "em340": dict(model="em340", transport="tcp", unit_id=3),
    "homewizard_p1": dict(model="homewizard_p1", transport="http"),
}
# resolution of each protocol: (W, V, A, Hz)
TOL = {
    "em24": (0.1, 0.1, 0.001, 0.1),
    "em340": (0.1, 0.1, 0.001, 0.1),
    "homewizard_p1": (1.0, 0.1, 0.001, 0.001),
}


def config_for(model: str, **kw) -> MeterConfig:
    base = dict(MODELS[model], host="127.0.0.1", port=free_tcp_port(), poll_s=0.05, timeout_s=0.3, comm_lost_after=2)
    base.update(kw)
    return MeterConfig(**base)


def make_sim(model: str, plant: Plant, config: MeterConfig):
    return SimP1Meter(plant, config) if model == "homewizard_p1" else SimModbusMeter(plant, config)


@pytest.fixture
async def rig(request):
    """(plant, sim, driver, config) for the parametrised model, torn down afterwards."""
    model = request.param
    plant = make_plant()
    config = config_for(model)
    sim = make_sim(model, plant, config)
    await sim.start()
    driver = make_meter(config, RealClock())
    try:
        await driver.start()
        yield plant, sim, driver, config
    finally:
        await driver.close()
        await sim.close()


ALL = pytest.mark.parametrize("rig", list(MODELS), indirect=True)


def codes(driver) -> set[str]:
    return {i.code for i in driver.issues()}


async def next_reading(driver, after=None, timeout_s=3.0):
    """The first reading newer than `after`."""
    t0 = after.t if after is not None else float("-inf")
    return await async_wait_until(
        lambda: (r := driver.latest()) is not None and r.t > t0 and r, timeout_s=timeout_s, what="a new reading"
    )


@ALL
async def test_values_sign_phases_frequency(rig):
    plant, sim, driver, config = rig
    tol_w, tol_v, tol_a, tol_hz = TOL[config.model]
    for inverter_w in (-15_000.0, 15_000.0):  # charging: import; discharging at noon: export
        plant.inverter.p_w = inverter_w
        first = await next_reading(driver)
        reading = await next_reading(driver, after=first)  # certainly polled after the change
        want = meter_values(plant)
        assert reading.p_w == pytest.approx(want["p_w"], abs=tol_w)
        assert (reading.p_w > 0) == (want["p_w"] > 0)
        assert len(reading.phase_p_w) == len(reading.phase_v) == len(reading.phase_a) == 3
        for got, exp in zip(reading.phase_p_w, want["phase_p_w"]):
            assert got == pytest.approx(exp, abs=tol_w)
        for got, exp in zip(reading.phase_v, want["phase_v"]):
            assert got == pytest.approx(exp, abs=tol_v)
        for got, exp in zip(reading.phase_a, want["phase_a"]):
            assert abs(got) == pytest.approx(abs(exp), abs=tol_a)
        assert reading.freq_hz == pytest.approx(want["freq_hz"], abs=tol_hz)
        assert (want["p_w"] > 0) == (inverter_w < 0), "charging must import, discharging at noon export"
    assert driver.issues() == []
    stats = driver.stats()
    assert stats["readings"] >= 3 and stats["comm_errors"] == 0


@ALL
async def test_comm_loss_stops_updates_and_raises_issue(rig):
    plant, sim, driver, config = rig
    await next_reading(driver)
    plant.meter_stopped = True
    await async_wait_until(lambda: "METER_COMM_LOST" in codes(driver), what="METER_COMM_LOST")
    frozen = driver.latest()
    await async_wait_until(lambda: driver.stats()["unanswered"] >= config.comm_lost_after + 1, what="one more poll")
    assert driver.latest() is frozen, "a silent meter must not produce readings"
    issue = next(i for i in driver.issues() if i.code == "METER_COMM_LOST")
    assert "127.0.0.1" in issue.text and config.model in issue.text
    plant.meter_stopped = False
    await next_reading(driver, after=frozen)
    await async_wait_until(lambda: "METER_COMM_LOST" not in codes(driver), what="recovery")


@ALL
async def test_sim_flag_stops_answering(rig):
    plant, sim, driver, config = rig
    await next_reading(driver)
    sim.faults.stopped = True
    await async_wait_until(lambda: "METER_COMM_LOST" in codes(driver), what="METER_COMM_LOST")
    sim.faults.stopped = False
    await async_wait_until(lambda: driver.issues() == [], what="recovery")


@ALL
async def test_slow_answers_time_out(rig):
    plant, sim, driver, config = rig
    await next_reading(driver)
    sim.faults.delay_s = config.timeout_s * 3
    await async_wait_until(lambda: "METER_COMM_LOST" in codes(driver), what="timeouts")
    assert codes(driver) == {"METER_COMM_LOST"}, "a late answer is no answer, not bad data"
    frozen = driver.latest()
    polls = driver.stats()["polls"]
    while driver.stats()["polls"] < polls + 3:  # every poll of the window: no reading gets through
        assert driver.latest() is frozen
        await asyncio.sleep(0.01)
    sim.faults.delay_s = config.timeout_s / 10  # slow but inside the timeout: readings again
    reading = await next_reading(driver, after=frozen, timeout_s=5.0)
    assert reading.p_w == pytest.approx(meter_values(plant)["p_w"], abs=TOL[config.model][0])
    await async_wait_until(lambda: driver.issues() == [], what="recovery")


@ALL
async def test_malformed_payload_is_an_issue_not_a_crash(rig):
    plant, sim, driver, config = rig
    good = await next_reading(driver)
    sim.faults.malformed = "range"
    await async_wait_until(lambda: "METER_DECODE" in codes(driver), what="METER_DECODE")
    assert "METER_COMM_LOST" not in codes(driver)
    last = driver.latest()
    assert last.t >= good.t and last.freq_hz is not None
    decode_errors = driver.stats()["decode_errors"]
    while driver.stats()["decode_errors"] < decode_errors + 3:  # never a reading from bad data: every sample
        assert driver.latest() is last and "METER_DECODE" in codes(driver)
        await asyncio.sleep(0.01)
    sim.faults.malformed = None
    await next_reading(driver, after=last)
    await async_wait_until(lambda: driver.issues() == [], what="decode issue cleared")


@pytest.mark.parametrize("rig", ["homewizard_p1"], indirect=True)
@pytest.mark.parametrize("kind, says", [("json", "body is not JSON"),
                                        ("type", "'active_power_w' must be a number"),
                                        ("missing", "'active_power_w' is missing")])
async def test_p1_malformed_kinds(rig, kind, says):
    plant, sim, driver, config = rig
    await next_reading(driver)
    sim.faults.malformed = kind
    await async_wait_until(lambda: "METER_DECODE" in codes(driver), what=f"METER_DECODE for {kind}")
    text = next(i.text for i in driver.issues() if i.code == "METER_DECODE")
    assert says in text, text


@pytest.mark.parametrize("rig", ["homewizard_p1"], indirect=True)
async def test_p1_frozen_telegram_goes_stale(rig):
    """A P1 that answers with the same telegram (same meter timestamp) gives no new reading:
    reading.t stops advancing although every poll is answered, so the reading goes stale."""
    plant, sim, driver, config = rig
    await next_reading(driver)
    sim.faults.frozen = True
    plant.inverter.p_w = 9_000.0  # the grid changes; a frozen telegram does not show it
    # two polls later the frozen telegram is certainly the one the driver saw last
    polls = driver.stats()["polls"]
    await async_wait_until(lambda: driver.stats()["polls"] >= polls + 2, what="two polls of the frozen telegram")
    stuck = driver.latest()
    t_end = asyncio.get_running_loop().time() + 2.5  # more than two telegram periods
    while asyncio.get_running_loop().time() < t_end:  # every sample: no new reading, no comm issue
        assert driver.latest() is stuck
        assert "METER_COMM_LOST" not in codes(driver)
        await asyncio.sleep(0.02)
    assert driver.stats()["comm_errors"] == 0  # the device answered all along
    sim.faults.frozen = False
    fresh = await next_reading(driver, after=stuck)
    assert fresh.p_w == pytest.approx(meter_values(plant)["p_w"], abs=1.0)


@pytest.mark.parametrize("rig", ["homewizard_p1"], indirect=True)
async def test_p1_api_disabled_is_rejected_with_hint(rig):
    plant, sim, driver, config = rig
    sim.faults.http_status = 403
    await async_wait_until(lambda: "METER_REJECTED" in codes(driver), what="METER_REJECTED")
    assert "local API" in next(i.text for i in driver.issues() if i.code == "METER_REJECTED")
    sim.faults.http_status = 200
    await async_wait_until(lambda: driver.issues() == [], what="cleared")


async def test_p1_device_info_and_missing_frequency():
    import aiohttp

    plant = make_plant()
    config = config_for("homewizard_p1")
    sim = SimP1Meter(plant, config, with_frequency=False)
    await sim.start()
    driver = make_meter(config, RealClock())
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{config.port}/api") as resp:
                info = await resp.json()
        assert info["product_type"] == "HWE-P1" and info["api_version"] == "v1"
        await driver.start()
        reading = await next_reading(driver)
        assert reading.freq_hz is None and len(reading.phase_p_w) == 3
    finally:
        await driver.close()
        await sim.close()


@pytest.mark.parametrize("model", list(MODELS))
async def test_nothing_listening_raises_comm_lost_without_crashing(model):
    config = config_for(model)  # a free port: nobody answers
    driver = make_meter(config, RealClock())
    await driver.start()
    try:
        await async_wait_until(lambda: "METER_COMM_LOST" in codes(driver), what="METER_COMM_LOST")
        assert driver.latest() is None
    finally:
        await driver.close()


def test_issue_codes_registry():
    assert set(ISSUE_CODES) >= {"METER_COMM_LOST", "METER_DECODE", "METER_REJECTED"}
    for code, (severity, text) in ISSUE_CODES.items():
        assert severity in ("warning", "error", "critical") and text


def test_factory_rejects_unknown_model():
    with pytest.raises(ValueError, match="no driver"):
        make_meter(MeterConfig(model="inproc", transport="inproc"), RealClock())


# --- pure decoding (no sockets) -------------------------------------------------------


@pytest.mark.parametrize(
    "body, problem",
    [
        (b'{"active_power_w": -543, "active_power_l1_w": -676, "active_power_l2_w": 133}', None),
        (b'{"active_power_w": 12.5, "active_frequency_hz": 49.98}', None),
        (b"[1, 2]", "JSON object"),
        (b"{\"active_power_w\": ", "not JSON"),
        (b'{"active_power_w": true}', "must be a number"),
        (b'{"active_power_w": 1, "active_voltage_l1_v": "230"}', "active_voltage_l1_v"),
        (b'{"active_power_w": 1, "active_voltage_l1_v": 5000}', "L1 voltage"),
        (b'{"active_power_w": 1, "active_frequency_hz": 0}', "frequency"),
        (b'{"active_power_w": 1e12}', "p_w"),
    ],
)
def test_p1_parse_table(body, problem):
    from sitecontroller.drivers.meter.homewizard import parse_data
    from sitecontroller.drivers.meter.polling import MeterDecodeError, check_plausible

    if problem is None:
        reading = check_plausible(parse_data(body, t=42.0))
        assert reading.t == 42.0
        if b"-543" in body:  # the API's own example: export is negative, as ours
            assert reading.p_w == -543 and reading.phase_p_w == (-676, 133) and reading.freq_hz is None
        return
    with pytest.raises(MeterDecodeError, match=problem):
        check_plausible(parse_data(body, t=42.0))


@pytest.mark.parametrize("model", ["em24", "em340"])
def test_profiles_load_with_little_endian_int32(model):
    from sitecontroller.drivers.meter.modbus_meter import meter_profile

    profile = meter_profile(config_for(model))
    assert profile.kind == "meter" and profile.word_order == "little"
    w = profile.point(profile.reading["p_w"])
    assert (w.address, w.type, w.scale, w.sign) == (0x0028, "int32", 0.1, 1)
    hz = profile.point(profile.reading["freq_hz"])
    assert (hz.address, hz.scale) == (0x0033, 0.1)
    assert len(profile.reading_points("phase_p_w")) == 3
