"""`sitecontroller`: run a node, check parameters, and talk to a running node.

Exit status: 0 ok, 1 the node did not answer or refused, 2 bad input
(parameters or arguments). A running node exits 0 after SIGTERM/SIGINT,
75 for a requested restart and 76 for a requested reboot.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import uuid

from .params import DEFAULT_ENDPOINT, ParamsError, load

EPILOG = """\
Without --params/--endpoint, status/setpoint/ack-error/state/estop/restart
talk to the node on {endpoint} (the one scripts/run-sim starts),
or else to the only node running on this machine. With a site running
(scripts/run-sim --nodes N), --node ID picks one of its nodes; without it,
the first of its nodes that answers.

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
        exc.report()
        sys.exit(2)


HOW_TO_CHOOSE = "choose one with --params FILE or --endpoint tcp://HOST:PORT"


def _endpoint(args) -> str:
    """--endpoint, else the endpoint in --params, else --node's, else the default one or the only node running here."""
    if getattr(args, "node", None) and (args.endpoint or args.params):
        print("sitecontroller: give one of --node, --params and --endpoint", file=sys.stderr)
        sys.exit(2)
    if args.endpoint:
        return args.endpoint
    if args.params:
        return _load_or_exit(args.params).control.endpoint
    if getattr(args, "node", None):
        return node_endpoint(args.node)
    from .running import describe, running_nodes

    first = _first_site_node_answering()
    if first:
        return first
    nodes = running_nodes()
    if not nodes or any(n["endpoint"] == DEFAULT_ENDPOINT for n in nodes):
        return DEFAULT_ENDPOINT
    if len(nodes) == 1:
        return nodes[0]["endpoint"]
    print(f"sitecontroller: several nodes run here, none on {DEFAULT_ENDPOINT}: {describe(nodes)}; {HOW_TO_CHOOSE}",
          file=sys.stderr)
    sys.exit(1)


def known_nodes() -> tuple[list[dict], str]:
    """The nodes `--node ID` can name: the site scripts/run-sim --nodes N runs (its index), else every node
    running on this machine; and where they were found (for messages)."""
    from .running import run_dir, running_nodes
    from .sim.site_index import read_site_index, site_index_path

    index = read_site_index()
    if index is not None:
        return [n for n in index["nodes"] if isinstance(n, dict)], f"the site index {site_index_path()}"
    return running_nodes(), f"the nodes running on this machine ({run_dir()})"


def node_endpoint(node_id: str) -> str:
    """The control endpoint of node `node_id` of the running site; an unknown node: one line, exit 1."""
    nodes, where = known_nodes()
    for n in nodes:
        if n.get("node_id") == node_id and isinstance(n.get("endpoint"), str):
            return n["endpoint"]
    ids = ", ".join(dict.fromkeys(str(n.get("node_id")) for n in nodes))
    if ids:
        print(f"sitecontroller: unknown node {node_id!r}; known nodes: {ids} (from {where})", file=sys.stderr)
    else:
        print(f"sitecontroller: unknown node {node_id!r}; known nodes: none (no site or node runs here: "
              "scripts/run-sim --nodes N starts a site)", file=sys.stderr)
    sys.exit(1)


def _first_site_node_answering() -> str | None:
    """With a site running (run-sim --nodes N): the endpoint of the first of its nodes that answers."""
    from .control_endpoint import NodeUnreachable, request
    from .sim.site_index import read_site_index

    index = read_site_index()
    for n in (index or {}).get("nodes", []):
        endpoint = n.get("endpoint") if isinstance(n, dict) else None
        if not isinstance(endpoint, str):
            continue
        try:
            if request(endpoint, {"op": "status"}, 0.5).get("ok"):
                return endpoint
        except NodeUnreachable:
            continue
    return None


def cmd_run(args) -> int:
    from .app import run_node
    from .logs import setup_logging
    from .preflight import run_preflight
    from .running import announce

    params = _load_or_exit(args.params)
    if params.cloud is not None and params.cloud.enabled:
        from .cloud.twin import with_cached

        params = with_cached(params)  # the node starts as the cloud's device twin left it
    problems = run_preflight(params, simulate=args.simulate)
    for line in problems:
        print(f"sitecontroller: cannot start: {line}", file=sys.stderr)
    if problems:
        return 1
    setup_logging(params, args.log_level)
    try:
        with announce(params.identity.node_id, params.control.endpoint, args.params):
            return asyncio.run(run_node(params, simulate=args.simulate, summary=args.summary))
    except OSError as exc:  # e.g. the endpoint is taken, a CAN interface is missing
        print(f"sitecontroller: cannot start: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"sitecontroller: cannot start: {exc}", file=sys.stderr)
        return 2


def cmd_check_params(args) -> int:
    params = _load_or_exit(args.file)
    from .cloud.config import file_problems
    from .preflight import cluster_key_problems

    problems = cluster_key_problems(params) + file_problems(params)
    if problems:
        print("\n".join(f"{args.file}: {line}" for line in problems), file=sys.stderr)
        return 2
    print(f"{args.file}: ok (node {params.identity.node_id} of site {params.identity.site_id})")
    return 0


def _ask(args, payload: dict, timeout_s: float = 2.0) -> dict:
    from .control_endpoint import NodeUnreachable, request

    endpoint = _endpoint(args)
    try:
        reply = request(endpoint, payload, timeout_s)
    except NodeUnreachable as exc:
        hint = ("" if args.endpoint or args.params or args.node
                else f"; a node started with another parameter file: {HOW_TO_CHOOSE}")
        print(f"sitecontroller: {exc}{hint}", file=sys.stderr)
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
    cloud = status.get("cloud")
    if cloud:
        from .cloud.telemetry import status_line

        print(f"  {status_line(cloud)}")
    return 0


def _command(args, command: dict, wait_s: float = 2.0) -> int:
    command.setdefault("id", uuid.uuid4().hex)
    command["source"] = "cli"
    ack = _ask(args, {"op": "command", "command": command, "wait_s": wait_s}, timeout_s=wait_s + 2.0)["ack"]
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


def add_talk_options(p) -> None:
    """How a talking command finds its node."""
    p.add_argument("--params", metavar="FILE", help="the node's parameter file (for its control endpoint)")
    p.add_argument("--endpoint", metavar="tcp://HOST:PORT",
                   help=f"the node's control endpoint (default: {DEFAULT_ENDPOINT}, or the only node running here)")
    p.add_argument("--node", metavar="ID",
                   help="a node of the site scripts/run-sim --nodes N runs (its node id, e.g. node2; "
                        "default: the first that answers)")


HOLD_MIN_S = 1.0  # at least one cycle, and long enough for the acknowledgement to arrive
HOLD_MAX_S = 86_400.0


def _watts(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"found {text!r}; allowed: a number of watts, e.g. 3000 or -3000") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"found {text!r}; allowed: a finite number of watts")
    return value


def _hold_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not HOLD_MIN_S <= value <= HOLD_MAX_S:
        raise argparse.ArgumentTypeError(f"found {text!r}; allowed: seconds from {HOLD_MIN_S:g} to {HOLD_MAX_S:g}")
    return value


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="sitecontroller",
        description="Site controller of one battery node: run it, check its parameters, talk to it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND", help="what to do (each has its own --help)")

    p = sub.add_parser("run", help="run a node in the foreground (SIGTERM/Ctrl-C: orderly stop)")
    p.add_argument("--params", required=True, metavar="FILE", help="site parameter file (JSON)")
    p.add_argument("--simulate", action="store_true",
                   help="also start simulated devices (speaking the real protocols) for this file's devices")
    p.add_argument("--summary", action="store_true", help="print a one-line summary every second")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="least severe log records written to stderr and node.log (default INFO)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-params", help="validate a parameter file: exit 0 if good, 2 with one line per problem")
    p.add_argument("file", metavar="FILE", help="site parameter file (JSON)")
    p.set_defaults(func=cmd_check_params)

    def talk(name, help_text, func, parent=sub):
        p = parent.add_parser(name, help=help_text)
        add_talk_options(p)
        p.set_defaults(func=func)
        return p

    p = talk("status", "print the running node's state, power, SOC, errors and cycle timing", cmd_status)
    p.add_argument("--json", action="store_true", help="one JSON object (node_id, state, soc, p_w, grid_p_w, errors, cycle, ...)")
    p = talk("setpoint", "request local active power (positive = discharge, negative = charge)", cmd_setpoint)
    p.add_argument("--w", type=_watts, required=True, metavar="W",
                   help="watts, positive = discharge, negative = charge (e.g. --w -3000)")
    p.add_argument("--hold", type=_hold_seconds, metavar="S",
                   help=f"seconds the request holds, {HOLD_MIN_S:g} to {HOLD_MAX_S:g} (default: staleness.setpoint_s)")
    p = talk("ack-error", "acknowledge a listed error (or 'all')", cmd_ack_error)
    p.add_argument("id", help="error id as shown by status, or 'all'")
    p = talk("state", "request a node state", cmd_state)
    p.add_argument("target", choices=["run", "sleep", "maintenance"], help="the state to go to")
    p = talk("estop", "engage or release the emergency stop (engaged: 0 W, contactors open, state error)", cmd_estop)
    p.add_argument("action", choices=["engage", "release"],
                   help="engage: stop now; release: allow a restart once the e-stop error is acknowledged")
    p = talk("restart", "orderly restart of the node process (exit 75), or --reboot (exit 76)", cmd_restart)
    p.add_argument("--reboot", action="store_true", help="ask the service manager to reboot the machine (exit 76)")

    p = sub.add_parser("state-diagram", help="draw the node state machine (mermaid text, or png/svg with graphviz)")
    p.add_argument("--format", default="mermaid", choices=["mermaid", "png", "svg"],
                   help="mermaid text to stdout (default), or a picture drawn with graphviz")
    p.add_argument("--out", default="states.png", help="output file for png/svg")
    p.set_defaults(func=cmd_state_diagram)

    from .sim.cli import add_sim_parser  # `sitecontroller sim faults|fault|state` (simulator process)

    add_sim_parser(sub)
    from mastercontroller.cli import add_cluster_parser  # `sitecontroller cluster keygen|status|setpoint`

    add_cluster_parser(sub, talk)
    from .grid_events import add_parser as add_grid_event_parser  # `sitecontroller grid-event` (evidence)

    add_grid_event_parser(sub)
    from mastercontroller.simulate.cli import add_simulate_parser  # `sitecontroller simulate` (a simulated day)

    add_simulate_parser(sub)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `sitecontroller status | head`: the reader went away, which is not our error
        _silence_stdout()
        return 1
    except KeyboardInterrupt:
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that flushing it at exit does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
