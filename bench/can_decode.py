"""Frames per second through the BMS driver's receive path vs plain cantools decoding.

    .venv/bin/python bench/can_decode.py [--seconds 6]

The frames are one rack's real bess_sim frames (built by the simulated BMS
from a plant, encoded with sitecontroller/drivers/bms/dbc/bess_sim.dbc). Two paths decode the same list
of `can.Message`s, alternating, several runs each:

- driver: `CanBmsDriver._on_frame` - the whole receive path of the driver
  (id lookup with rack offset, cantools decode, not-available sentinels, DBC range check, per-rack
  bookkeeping with the clock's time, counters); no bus involved;
- cantools: `db.decode_message(frame_id, data)` - the library alone.

Figures are medians over the runs; ratio = driver / cantools (1.0 = the
driver adds nothing over decoding).
"""
from __future__ import annotations

import argparse
import statistics
import time

from sitecontroller.clock import RealClock
from sitecontroller.drivers.bms.can_bms import CanBmsDriver
from sitecontroller.drivers.bms.config import BmsConfig
from sitecontroller.sim.bms import SimBms
from sitecontroller.sim.plant import Battery, Grid, Inverter, Load, Plant, Solar


def _frames(model: str = "bess_sim"):
    config = BmsConfig(model=model, can={"interface": "virtual", "channel": "bench-can-decode"}, racks=1)
    plant = Plant(Battery(capacity_wh=15_000, soc=0.6), Inverter(rated_w=10_000), Grid(), Solar(0), Load(0))
    sim = SimBms(plant, config, RealClock())  # not started: only its frame builder is used
    frames = [sim.codec.encode(name, values, 0) for name, values in sim.frames(0, info=True).items()]
    return config, frames


def _rate(fn, frames, seconds: float) -> float:
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        for msg in frames:
            fn(msg)
        n += len(frames)
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - t0)


def measure(seconds: float = 6.0, runs: int = 5, model: str = "bess_sim") -> dict:
    """Decode rates (frames/s, medians of `runs` alternating runs) within about `seconds` in total."""
    config, frames = _frames(model)
    driver = CanBmsDriver(config, RealClock())  # not started: no bus, the receive path only
    db = driver.db

    def via_driver(msg):
        driver._on_frame(msg)

    def via_cantools(msg):
        db.decode_message(msg.arbitration_id, msg.data)

    slot = seconds / (2 * runs)
    _rate(via_driver, frames, min(0.2, slot))  # warm-up (caches, first decode)
    _rate(via_cantools, frames, min(0.2, slot))
    drv_rates, raw_rates = [], []
    for _ in range(runs):
        drv_rates.append(_rate(via_driver, frames, slot))
        raw_rates.append(_rate(via_cantools, frames, slot))
    stats = driver.stats()
    if stats["decode_errors"] or not stats["frames_decoded"]:
        raise RuntimeError(f"benchmark frames did not decode cleanly: {stats}")
    drv, raw = statistics.median(drv_rates), statistics.median(raw_rates)
    return {
        "model": model,
        "frames_in_set": len(frames),
        "runs": runs,
        "driver_fps": drv,
        "cantools_fps": raw,
        "ratio": drv / raw,
        "driver_us_per_frame": 1e6 / drv,
        "cantools_us_per_frame": 1e6 / raw,
        "driver_fps_runs": drv_rates,
        "cantools_fps_runs": raw_rates,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--model", default="bess_sim", choices=["bess_sim", "pylontech"])
    args = ap.parse_args()
    m = measure(args.seconds, args.runs, args.model)
    print(f"CAN BMS decode, {m['model']}, {m['frames_in_set']} distinct frames, median of {m['runs']} runs")
    print(f"  driver receive path  {m['driver_fps']:>10,.0f} frames/s  ({m['driver_us_per_frame']:.1f} us/frame)")
    print(f"  cantools decode      {m['cantools_fps']:>10,.0f} frames/s  ({m['cantools_us_per_frame']:.1f} us/frame)")
    print(f"  ratio driver/cantools {m['ratio']:.2f}")


if __name__ == "__main__":
    main()
