"""`sitecontroller sim ...`: talk to a running simulator process (fault knobs, plant state).

    sitecontroller sim faults                    # every knob: device, name, value, meaning
    sitecontroller sim fault bms silent 1        # rack 1 stops sending
    sitecontroller sim fault battery cell_v_fault_v 0.5
    sitecontroller sim fault --clear             # every knob back to normal
    sitecontroller sim state                     # SOC, power, contactors of the simulated plant
    sitecontroller sim fault --node node2 inverter tripped   # a site (run-sim --nodes N): one node's devices
    sitecontroller sim frequency step-49.5        # play a grid frequency profile (--list: the built-in ones)

Without --params/--endpoint these reach the simulator `scripts/run-sim` starts
(its default parameter file's `simulation.endpoint`, or the site simulator of
`scripts/run-sim --nodes N`, from its site index). In a site, `bms`, `inverter`
and `battery` are one per node (--node ID); `meter` and `grid` are the site's,
shared by every node. Exit status: 0 ok, 1 the simulator did not answer or
refused (an unknown node too), 2 bad input.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..params_schema import DEFAULT_SIM_ENDPOINT


def _endpoint(args) -> str:
    if args.endpoint:
        return args.endpoint
    if args.params:
        from ..params import ParamsError, load

        try:
            params = load(args.params)
        except ParamsError as exc:
            exc.report()
            sys.exit(2)
        return params.simulation.endpoint if params.simulation else DEFAULT_SIM_ENDPOINT
    from .site_index import read_site_index

    index = read_site_index()  # a site that run-sim --nodes N runs
    if index is not None and isinstance(index.get("sim_endpoint"), str):
        return index["sim_endpoint"]
    if args.node:  # a node run alone: its simulator is the one its parameter file names
        from ..running import running_nodes

        for n in running_nodes():
            if n.get("node_id") == args.node and n.get("params"):
                from ..params import ParamsError, load

                try:
                    params = load(n["params"])
                except ParamsError:
                    break
                return params.simulation.endpoint if params.simulation else DEFAULT_SIM_ENDPOINT
    return DEFAULT_SIM_ENDPOINT


def _ask(args, payload: dict) -> dict:
    from .endpoint import SimUnreachable, sim_request

    if args.node:
        payload = {**payload, "node": args.node}
    try:
        reply = sim_request(_endpoint(args), payload, timeout_s=2.0)
    except SimUnreachable as exc:
        print(f"sitecontroller sim: {exc}", file=sys.stderr)
        sys.exit(1)
    if not reply.get("ok"):
        print(f"sitecontroller sim: {reply.get('error')}", file=sys.stderr)
        sys.exit(1)
    return reply


def _show(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return str(value)


def cmd_faults(args) -> int:
    knobs = _ask(args, {"op": "knobs"})["knobs"]
    if args.json:
        print(json.dumps(knobs))
        return 0
    site = any("node" in k for k in knobs)  # a site of several nodes: which node each knob is at
    print(("NODE     " if site else "") + f"{'DEVICE':9} {'KNOB':20} {'VALUE':>8}  MEANING (type; default)")
    for k in knobs:
        value = "-" if k["kind"] == "action" else _show(k["value"])
        changed = "*" if k["kind"] != "action" and k["value"] != k["default"] else " "
        what = "action: set it to do it once" if k["kind"] == "action" else f"{k['type']}; default {_show(k['default'])}"
        node = f"{k.get('node') or 'site':8} " if site else ""
        print(f"{node}{k['device']:9} {k['knob']:20} {value:>8}{changed} {k['help']} ({what})")
    print("* = not at its default.  Set one: sitecontroller sim fault " + ("[--node ID] " if site else "")
          + "DEVICE KNOB [VALUE];  all back to normal: sitecontroller sim fault --clear")
    return 0


def cmd_fault(args) -> int:
    if args.clear:
        if args.device or args.knob:
            print("sitecontroller sim fault: give either --clear or DEVICE KNOB [VALUE], not both", file=sys.stderr)
            return 2
        cleared = _ask(args, {"op": "clear"})["cleared"]
        print(f"cleared: {', '.join(cleared)}" if cleared else "cleared: no knob was set")
        return 0
    if not args.device or not args.knob:
        print("sitecontroller sim fault: DEVICE and KNOB are needed (or --clear); "
              "`sitecontroller sim faults` lists them", file=sys.stderr)
        return 2
    k = _ask(args, {"op": "set", "device": args.device, "knob": args.knob, "value": args.value})["knob"]
    at = f"{k['node']} " if k.get("node") else ""
    if k["kind"] == "action":
        print(f"{at}{k['device']} {k['knob']}: done")
    else:
        print(f"{at}{k['device']} {k['knob']} = {_show(k['value'])}")
    return 0


def cmd_state(args) -> int:
    plant = _ask(args, {"op": "plant"})["plant"]
    if args.json:
        print(json.dumps(plant))
        return 0
    if "nodes" in plant:  # a site of several nodes, no --node
        lost = (f"  GRID LOST: unserved {plant['unserved_w']:.0f} W, curtailed {plant['curtailed_w']:.0f} W"
                if plant["grid_lost"] else "")
        print(f"site grid {plant['grid_p_w']:.0f} W  load {plant['load_w']:.0f} W  pv {plant['pv_w']:.0f} W  "
              f"nodes {plant['nodes_p_w']:.0f} W  {plant['freq_hz']:.3f} Hz{lost}")
        for node, p in plant["nodes"].items():
            print(f"  {node}: soc {p['soc'] * 100:.2f} %  inverter {p['p_w']:.0f} W (setpoint {p['setpoint_p_w']:.0f} W)"
                  f"  contactors {'closed' if p['contactor_closed'] else 'open'}{'  TRIPPED' if p['tripped'] else ''}"
                  f"{'  forming the grid' if p['grid_forming'] and plant['grid_lost'] else ''}")
        return 0
    print(f"soc {plant['soc'] * 100:.2f} %  inverter {plant['p_w']:.0f} W (setpoint {plant['setpoint_p_w']:.0f} W)  "
          f"grid {plant['grid_p_w']:.0f} W  contactors {'closed' if plant['contactor_closed'] else 'open'}"
          f"{'  TRIPPED' if plant['tripped'] else ''}")
    return 0


def cmd_frequency(args) -> int:
    from . import frequency

    if args.list:
        for name in frequency.names():
            print(f"{name:<16} {frequency.load(name).description}")
        return 0
    if args.trace:
        print(json.dumps(_ask(args, {"op": "trace"})["trace"]))
        return 0
    if args.stop:
        _ask(args, {"op": "frequency"})
        print("frequency profile stopped: the grid's own frequency again")
        return 0
    if not args.profile:
        print("sitecontroller sim frequency: name a PROFILE (--list shows them), or --stop / --trace", file=sys.stderr)
        return 2
    try:
        profile = frequency.load(args.profile)
    except frequency.ProfileError as exc:
        print(f"sitecontroller sim frequency: {exc}", file=sys.stderr)
        return 2
    reply = _ask(args, {"op": "frequency", "profile": profile.to_json(), "name": profile.name})
    print(f"playing {reply['name']} ({reply['duration_s']:.0f} s): {profile.description}")
    return 0


def add_sim_parser(sub) -> None:
    """Add the `sim` command (with faults, fault, state) to the `sitecontroller` subparsers."""
    sim = sub.add_parser("sim", help="talk to a running simulator process: fault knobs, plant state",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    simsub = sim.add_subparsers(dest="sim_cmd", required=True, metavar="SIMCOMMAND", help="what to do with the simulator (each has its own --help)")

    def talk(name, help_text, func):
        p = simsub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--params", metavar="FILE", help="the parameter file the simulator runs (for its endpoint)")
        p.add_argument("--endpoint", help=f"the simulator's endpoint (default {DEFAULT_SIM_ENDPOINT})")
        p.add_argument("--node", metavar="ID",
                       help="a site (scripts/run-sim --nodes N): this node's devices (bms, inverter, battery; "
                            "meter and grid are the site's)")
        p.set_defaults(func=func)
        return p

    p = talk("faults", "list every fault knob: device, name, present value and meaning", cmd_faults)
    p.add_argument("--json", action="store_true", help="one JSON array of knobs (device, knob, kind, type, value, default, help)")
    p = talk("fault", "set one fault knob (sim fault DEVICE KNOB [VALUE]), or --clear them all", cmd_fault)
    p.add_argument("device", nargs="?", help="bms, inverter, meter, battery or grid (see `sim faults`)")
    p.add_argument("knob", nargs="?", help="the knob's name (see `sim faults`)")
    p.add_argument("value", nargs="?",
                   help="new value: true/false, a number, a text, none, or racks (all, none, 0,1); "
                        "default true (actions: their default)")
    p.add_argument("--clear", action="store_true", help="put every knob back to its normal value")
    p = talk("frequency", "play a grid frequency profile on the simulator (every meter and inverter measures it); "
             "--trace: what the site did meanwhile (time, frequency, each inverter's power) as JSON", cmd_frequency)
    p.add_argument("profile", nargs="?", metavar="PROFILE", help="a built-in profile (--list) or a JSON file")
    p.add_argument("--list", action="store_true", help="the built-in profiles, one line each")
    p.add_argument("--stop", action="store_true", help="stop the profile playing")
    p.add_argument("--trace", action="store_true", help="print the trace of the last profile played (JSON)")
    p = talk("state", "print the simulated plant: SOC, inverter power, grid power, contactors", cmd_state)
    p.add_argument("--json", action="store_true", help="one JSON object (soc, p_w, setpoint_p_w, grid_p_w, ...)")
