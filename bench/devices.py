"""Device-layer figures: CAN decode rate, Modbus round trips, and a node with every driver.

    .venv/bin/python bench/devices.py [--seconds 30]

1. CAN frames decoded per second by the BMS driver's receive path against raw
   cantools `decode_message` on the same frames (ratio; median of runs).
2. Modbus TCP read round trip p50/p99 of our client against the simulated
   inverter, per inverter profile.
3. A node running with every protocol driver (sim_node1.json: BMS over CAN,
   SunSpec inverter and EM24 meter over Modbus TCP, simulators in-process):
   cycle p50/p99/max, overruns, CPU and peak RSS; and for comparison the same
   node with in-process devices (ratio within this run).
"""
from __future__ import annotations

import argparse

import can_decode
import modbus_rtt
from _node import measure_node

from sitecontroller.drivers.inverter.config import InverterConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="how long each node runs")
    ap.add_argument("--modbus-reads", type=int, default=1000)
    args = ap.parse_args()

    print("1. CAN BMS decode (frames/s, median of 5 runs)")
    for model in ("bess_sim", "pylontech"):
        m = can_decode.measure(6.0, 5, model)
        print(f"  {model:10s} driver {m['driver_fps']:>9,.0f}/s  cantools {m['cantools_fps']:>9,.0f}/s"
              f"  ratio driver/cantools {m['ratio']:.2f}")

    print(f"2. Modbus TCP round trip on loopback, n={args.modbus_reads}")
    for model in InverterConfig.MODBUS_MODELS:
        r = modbus_rtt.measure(args.modbus_reads, model)
        print(f"  {model:14s} read {r['read_registers']:3d} regs p50 {r['read_p50_ms']:.3f} ms p99 {r['read_p99_ms']:.3f} ms"
              f" | full poll ({r['requests_per_poll']} req) p50 {r['poll_p50_ms']:.3f} ms p99 {r['poll_p99_ms']:.3f} ms")

    print(f"3. node cycle over {args.seconds:g} s, 2 kW request, period target 100 ms")
    rows = {}
    for label, example in (("all protocol drivers", "sim_node1.json"), ("in-process devices", "sim_node1_inproc.json")):
        m = measure_node(example, args.seconds)
        rows[label] = m
        c = m["cycle"]
        print(f"  {label:22s} p50 {c['period_ms_p50']:.2f} ms  p99 {c['period_ms_p99']:.2f} ms  max {c['period_ms_max']:.2f} ms"
              f"  overruns {c['overruns']}  CPU {m['cpu_percent']:.1f} %  peak RSS {m['peak_rss_mb']:.1f} MB"
              f"  errors {','.join(m['errors']) or 'none'}")
    a, b = rows["all protocol drivers"], rows["in-process devices"]
    print(f"  ratio protocol/in-process: CPU {a['cpu_percent'] / max(b['cpu_percent'], 0.01):.1f}x,"
          f" RSS {a['peak_rss_mb'] / b['peak_rss_mb']:.2f}x,"
          f" cycle p99 {a['cycle']['period_ms_p99'] / b['cycle']['period_ms_p99']:.3f}x")
    print("  (the protocol node's process also runs the simulators, so its CPU and RSS include them)")


if __name__ == "__main__":
    main()
