"""`sitecontroller`: run a node, check parameters, and talk to a running node.

Exit status: 0 ok, 1 the node did not answer or refused, 2 bad input
(parameters or arguments). A running node exits 0 after SIGTERM/SIGINT,
75 for a requested restart and 76 for a requested reboot.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid

from .params import DEFAULT_ENDPOINT, ParamsError, load

EPILOG = """\
Without --params, status/setpoint/ack-error/state/estop/restart talk to the
node that scripts/run-sim starts ({endpoint}).

examples:
  sitecontroller run --params site_parameters/sim_node1.json --simulate
  sitecontroller check-params site_parameters/sim_node1.json
  sitecontroller status --json
  sitecontroller setpoint --w 3000          # discharge 3 kW (negative = charge)
  sitecontroller ack-error BMS_STALE         # or: ack-error all
  sitecontroller state sleep
  sitecontroller state-diagram > states.mmd
""".format(endpoint=DEFAULT_ENDPOINT)


def _load_or_exit(path: str):
    try:
        return load(path)
    except ParamsError as exc:
        for line in exc.problems:
            print(f"{exc.source}: {line}", file=sys.stderr)
        sys.exit(2)


def _endpoint(args) -> str:
    if args.endpoint:
        return args.endpoint
    if args.params:
        return _load_or_exit(args.params).control.endpoint
    return DEFAULT_ENDPOINT


def cmd_run(args) -> int:
    from .app import run_node, setup_logging

    params = _load_or_exit(args.params)
    setup_logging(params, args.log_level)
    try:
        return asyncio.run(run_node(params, simulate=args.simulate, summary=args.summary))
    except OSError as exc:  # e.g. the endpoint is taken, a CAN interface is missing
        print(f"sitecontroller: cannot start: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"sitecontroller: cannot start: {exc}", file=sys.stderr)
        return 2


def cmd_check_params(args) -> int:
    params = _load_or_exit(args.file)
    print(f"{args.file}: ok (node {params.identity.node_id} of site {params.identity.site_id})")
    return 0


def _ask(args, payload: dict, timeout_s: float = 2.0) -> dict:
    from .control_endpoint import NodeUnreachable, request

    endpoint = _endpoint(args)
    try:
        reply = request(endpoint, payload, timeout_s)
    except NodeUnreachable as exc:
        print(f"sitecontroller: {exc}", file=sys.stderr)
        sys.exit(1)
    if not reply.get("ok"):
        print(f"sitecontroller: node refused the request: {reply.get('error')}", file=sys.stderr)
        sys.exit(1)
    return reply


def cmd_status(args) -> int:
    status = _ask(args, {"op": "status"})["status"]
    if args.json:
        print(json.dumps(status))
        return 0
    from .app import summary_line

    print(summary_line(status))
    print(f"  note: {status['note']}")
    if status["limits"]:
        for reason in status["limits"]["reasons"]:
            print(f"  limit: {reason}")
    for e in status["errors"]:
        flags = ("active" if e["active"] else "cleared") + ("" if e["acknowledged"] else ", not acknowledged")
        print(f"  {e['severity'].upper():8} {e['id']}: {e['text']} ({flags})")
    if status["absent"]:
        print(f"  absent (no fresh data): {', '.join(status['absent'])}")
    return 0


def _command(args, command: dict) -> int:
    command.setdefault("id", uuid.uuid4().hex)
    command["source"] = "cli"
    ack = _ask(args, {"op": "command", "command": command, "wait_s": 2.0}, timeout_s=4.0)["ack"]
    text = f"{ack['type'] or command['type']} {ack['status']}" + (f": {ack['detail']}" if ack["detail"] else "")
    print(text)
    return 0 if ack["status"] == "done" else 1


def cmd_setpoint(args) -> int:
    cmd = {"type": "set_power", "p_w": args.w}
    if args.hold is not None:
        cmd["hold_s"] = args.hold
    return _command(args, cmd)


def cmd_ack_error(args) -> int:
    return _command(args, {"type": "ack_error", "code": args.id})


def cmd_state(args) -> int:
    return _command(args, {"type": "set_state", "target": args.target})


def cmd_estop(args) -> int:
    return _command(args, {"type": "estop", "engaged": args.action == "engage"})


def cmd_restart(args) -> int:
    return _command(args, {"type": "restart", "reboot": args.reboot})


def cmd_state_diagram(args) -> int:
    from .state_machine import diagram

    out = diagram(args.format)
    if args.format == "mermaid":
        sys.stdout.write(out)
    else:
        try:
            with open(args.out, "wb") as f:
                f.write(out)
        except OSError as exc:
            print(f"sitecontroller: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
            return 1
        print(f"wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="sitecontroller",
        description="Site controller of one battery node: run it, check its parameters, talk to it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run a node in the foreground (SIGTERM/Ctrl-C: orderly stop)")
    p.add_argument("--params", required=True, metavar="FILE", help="site parameter file (JSON)")
    p.add_argument("--simulate", action="store_true",
                   help="also start simulated devices (speaking the real protocols) for this file's devices")
    p.add_argument("--summary", action="store_true", help="print a one-line summary every second")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-params", help="validate a parameter file: exit 0 if good, 2 with one line per problem")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_check_params)

    def talk(name, help_text, func):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--params", metavar="FILE", help="the node's parameter file (for its control endpoint)")
        p.add_argument("--endpoint", help=f"the node's control endpoint (default {DEFAULT_ENDPOINT})")
        p.set_defaults(func=func)
        return p

    p = talk("status", "print the running node's state, power, SOC, errors and cycle timing", cmd_status)
    p.add_argument("--json", action="store_true", help="one JSON object (node_id, state, soc, p_w, grid_p_w, errors, cycle, ...)")
    p = talk("setpoint", "request local active power (positive = discharge, negative = charge)", cmd_setpoint)
    p.add_argument("--w", type=float, required=True, help="watts, positive = discharge")
    p.add_argument("--hold", type=float, metavar="S", help="seconds the request holds (default: staleness.setpoint_s)")
    p = talk("ack-error", "acknowledge a listed error (or 'all')", cmd_ack_error)
    p.add_argument("id", help="error id as shown by status, or 'all'")
    p = talk("state", "request a node state", cmd_state)
    p.add_argument("target", choices=["run", "sleep", "maintenance"])
    p = talk("estop", "engage or release the emergency stop (engaged: 0 W, contactors open, state error)", cmd_estop)
    p.add_argument("action", choices=["engage", "release"])
    p = talk("restart", "orderly restart of the node process (exit 75), or --reboot (exit 76)", cmd_restart)
    p.add_argument("--reboot", action="store_true")

    p = sub.add_parser("state-diagram", help="draw the node state machine (mermaid text, or png/svg with graphviz)")
    p.add_argument("--format", default="mermaid", choices=["mermaid", "png", "svg"])
    p.add_argument("--out", default="states.png", help="output file for png/svg")
    p.set_defaults(func=cmd_state_diagram)

    from .sim.cli import add_sim_parser  # `sitecontroller sim faults|fault|state` (simulator process)

    add_sim_parser(sub)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
