"""`sitecontroller cluster keygen|status|mode|setpoint|service|backup-test|add|remove`: the operator's view of the cluster."""
from __future__ import annotations

import argparse
import json
import sys


def cmd_keygen(args) -> int:
    from sitecontroller.cli import _load_or_exit

    from . import keys

    params = _load_or_exit(args.params)
    directory = params.data_dir
    if (directory / keys.SECRET_FILE).exists() and not args.force:
        public, _ = keys.load(directory)
        print(f"sitecontroller cluster keygen: {directory / keys.SECRET_FILE} exists (public key {public}); "
              "--force replaces it, and every member's parameter file must then list the new public key",
              file=sys.stderr)
        return 1
    public = keys.generate(directory)
    print(public)
    print(f"key pair written to {directory} (the secret stays there); list this public key as "
          f"{params.identity.node_id}'s public_key in cluster.members of every member's parameter file",
          file=sys.stderr)
    return 0


def _line(c: dict) -> str:
    lease = " (lease)" if c["has_lease"] else ""
    target = "n/a" if c["target_w"] is None else f"{c['target_w']:.0f} W"
    running = f" (running {c['mode_running']})" if c["mode_running"] and c["mode_running"] != c["mode"] else ""
    return (f"cluster: leader {c['leader'] or 'none'} term {c['term']}  mode {c['mode']}{running}  target {target}  "
            f"actual {c['actual_w']:.0f} W  unplaced {c['unplaced_w'] or 0:.0f} W  (asked {c['node_id']}, "
            f"{c['role']}{lease})")


def cmd_status(args) -> int:
    from sitecontroller.cli import _ask

    c = _ask(args, {"op": "cluster_status"})["cluster"]
    if args.json:
        print(json.dumps(c))
        return 0
    print(_line(c))
    for m in c["members"]:
        if m["state"] is None:
            print(f"  {m['node_id']:<10} never heard")
            continue
        soc = "n/a" if m["soc"] is None else f"{m['soc'] * 100:5.1f}%"
        p = "n/a" if m["p_w"] is None else f"{m['p_w']:+6.0f} W"
        lim = m["limits"]
        reserve = "".join(f"  {k} {v:.0f} W" for k, v in (m.get("reserve") or {}).items())
        print(f"  {m['node_id']:<10} {'online ' if m['online'] else 'OFFLINE'} {m['state']:<11} soc {soc}  p {p}  "
              f"setpoint {m['setpoint_w']:+6.0f} W  allowed -{lim['charge_w']:.0f}..+{lim['discharge_w']:.0f} W"
              + (f"  reserve:{reserve}" if reserve else ""))
    for name, svc in (c.get("services") or {}).items():
        print(f"  service {name}: {svc['capacity_w']:.0f} W contracted  {json.dumps(svc['params'], sort_keys=True)}")
    return 0


def cmd_setpoint(args) -> int:
    from sitecontroller.cli import _command

    from .service import PROPOSE_TIMEOUT_S

    return _command(args, {"type": "cluster_setpoint", "target_w": args.w, "hold_s": args.hold},
                    wait_s=PROPOSE_TIMEOUT_S + 0.5)


def _assignment(text: str) -> tuple[str, object]:
    """``key=value``: the value as JSON when it parses (numbers, true, null, lists), else as text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def cmd_mode(args) -> int:
    from sitecontroller.cli import _ask, _command

    from .control import MODES
    from .service import PROPOSE_TIMEOUT_S

    if args.show or args.name is None:
        c = _ask(args, {"op": "cluster_status"})["cluster"]
        if args.json:
            print(json.dumps({k: c[k] for k in ("mode", "mode_params", "mode_running", "mode_note", "target_w",
                                                "actual_w", "leader", "term", "version")}))
            return 0
        print(_line(c))
        print(f"  parameters: {json.dumps(c['mode_params'], sort_keys=True)}")
        if c["mode_note"]:
            print(f"  leader says: {c['mode_note']}")
        return 0
    if args.name not in MODES:
        print(f"error: unknown mode {args.name!r}; known: {', '.join(sorted(MODES))}", file=sys.stderr)
        return 2
    params = dict(args.set or [])
    if args.params_json:
        try:
            params = {**json.loads(args.params_json), **params}
        except json.JSONDecodeError as exc:
            print(f"error: --params-json: not JSON ({exc})", file=sys.stderr)
            return 2
    return _command(args, {"type": "cluster_mode", "mode": args.name, "params": params}, wait_s=PROPOSE_TIMEOUT_S + 0.5)


def cmd_service(args) -> int:
    from sitecontroller.cli import _command
    from sitecontroller.control.services import SERVICES

    from .service import PROPOSE_TIMEOUT_S

    if args.name not in SERVICES:
        print(f"error: unknown service {args.name!r}; known: {', '.join(SERVICES)}", file=sys.stderr)
        return 2
    if args.off == (args.capacity_w is not None):
        print("error: give --capacity-w W to hold the service, or --off to end it", file=sys.stderr)
        return 2
    return _command(args, {"type": "cluster_service", "service": args.name, "capacity_w": 0.0 if args.off
                           else args.capacity_w, "params": dict(args.set or [])}, wait_s=PROPOSE_TIMEOUT_S + 0.5)


def _new_member(args) -> dict:
    """The member to add: from the new node's parameter file (its own entry of cluster.members)
    or from --id/--raft/--data/--public-key; one clear line and exit 2 otherwise."""
    from sitecontroller.cli import _load_or_exit

    fields = {"node_id": args.id, "raft": args.raft, "data": args.data, "public_key": args.public_key}
    if args.member_params:
        if any(v is not None for v in fields.values()):
            print("sitecontroller cluster add: give --member-params FILE or --id/--raft/--data/--public-key, not both",
                  file=sys.stderr)
            sys.exit(2)
        params = _load_or_exit(args.member_params)
        me = params.identity.node_id
        entry = next((m for m in params.cluster.members if m.node_id == me), None)
        if entry is None:
            print(f"sitecontroller cluster add: {args.member_params}: cluster.members does not list this node ({me})",
                  file=sys.stderr)
            sys.exit(2)
        return entry.model_dump()
    missing = [f"--{k.replace('_', '-')}" for k, v in (("id", args.id), ("raft", args.raft), ("data", args.data),
                                                       ("public_key", args.public_key)) if v is None]
    if missing:
        print(f"sitecontroller cluster add: missing {', '.join(missing)} (or give --member-params FILE)",
              file=sys.stderr)
        sys.exit(2)
    return fields


def cmd_add(args) -> int:
    from sitecontroller.cli import _command

    from .service import PROPOSE_TIMEOUT_S

    member = _new_member(args)
    return _command(args, {"type": "cluster_add_member", "member": member}, wait_s=PROPOSE_TIMEOUT_S + 0.5)


def cmd_remove(args) -> int:
    from sitecontroller.cli import _command

    from .service import PROPOSE_TIMEOUT_S

    return _command(args, {"type": "cluster_remove_member", "node_id": args.member_id},
                    wait_s=PROPOSE_TIMEOUT_S + 0.5)


def add_cluster_parser(sub, talk) -> None:
    from sitecontroller.cli import _watts

    cluster = sub.add_parser("cluster", help="the site cluster: keys, status, mode, target, grid services (a node without features.CLUSTER is a cluster of one)")
    csub = cluster.add_subparsers(dest="cluster_cmd", required=True, metavar="COMMAND",
                                  help="what to do (each has its own --help)")
    p = csub.add_parser("keygen", help="create this node's CurveZMQ key pair in its data directory; prints the public key")
    p.add_argument("--params", required=True, metavar="FILE", help="the node's parameter file (for its data directory)")
    p.add_argument("--force", action="store_true", help="replace an existing key pair")
    p.set_defaults(func=cmd_keygen)
    p = talk("status", "leader, term, mode, target, actual and every member (from any member)", cmd_status, csub)
    p.add_argument("--json", action="store_true",
                   help="one JSON object (leader, term, mode, target_w, actual_w, unplaced_w, members, ...)")
    from .control import MODES

    p = talk("mode", "show the cluster's operating mode (--show) or switch it: NAME [--set key=value ...], through "
             "the Raft log; parameters not given take their defaults, a bad one is rejected naming the field. "
             f"Modes: {', '.join(sorted(MODES))}", cmd_mode, csub)
    p.add_argument("name", nargs="?", metavar="NAME", help="the mode to switch to (omit, or --show, to show the mode)")
    p.add_argument("--set", action="append", type=_assignment, metavar="KEY=VALUE",
                   help="a mode parameter; VALUE is JSON when it parses (e.g. --set grid_target_w=200 "
                        "--set windows='[{\"start\": \"22:00\", \"end\": \"06:00\"}]'); repeatable")
    p.add_argument("--params-json", metavar="JSON", help="all parameters as one JSON object (--set wins)")
    p.add_argument("--show", action="store_true", help="show the mode, its parameters and what the leader does")
    p.add_argument("--json", action="store_true", help="with --show: one JSON object")
    p = talk("setpoint", "a local request for the cluster's power (positive = discharge): puts the cluster in mode "
             "local, which follows it for --hold seconds unless it is sent again, then falls back to 0 W",
             cmd_setpoint, csub)
    p.add_argument("--w", type=_watts, required=True, metavar="W", help="watts for the whole cluster, e.g. 6000 or -4000")
    p.add_argument("--hold", type=float, default=600.0, metavar="S",
                   help="how long the request holds without being sent again, 1..3600 s (default 600)")
    from sitecontroller.control.services import SERVICES

    p = talk("service", "hold a grid service (frequency reserve) with a contracted capacity, or end it; the "
             "leader allocates it over the nodes, which respond to their own frequency measurement. Services: "
             + "; ".join(f"{s.name} ({s.what})" for s in SERVICES.values()), cmd_service, csub)
    p.add_argument("name", metavar="NAME", help=f"one of {', '.join(SERVICES)}")
    p.add_argument("--capacity-w", type=_watts, metavar="W", help="the contracted capacity for the whole cluster, W")
    p.add_argument("--off", action="store_true", help="end the service (its reserve is released)")
    p.add_argument("--set", action="append", type=_assignment, metavar="KEY=VALUE",
                   help="a service parameter, e.g. --set activation_hz=49.5 (ffr) or --set f1_hz=49.6 (droop); "
                        "repeatable; those not given take their defaults")
    from .backup_test import cmd_backup_test

    p = talk("backup-test", "a blackout on purpose: open the simulated site's grid for --seconds, check that the "
             "inverters form the grid and carry the load, close it and check that the mode resumes "
             "(a simulated site: scripts/run-sim --nodes N --backup; no real grid relay driver yet)",
             cmd_backup_test, csub)
    p.add_argument("--seconds", type=float, default=30.0, metavar="S", help="how long the grid stays open (default 30)")
    p.add_argument("--sim-endpoint", metavar="URL", help="the site simulator's endpoint (default: from the site index "
                   "run-sim writes)")
    p.add_argument("--json", action="store_true", help="one JSON object with the figures and 'passed'")
    p = talk("add", "add a running node to the cluster (Raft membership change, through any member); start the new "
             "node first with every member, itself too, in its cluster.members", cmd_add, csub)
    p.add_argument("--member-params", metavar="FILE",
                   help="the NEW node's parameter file: its own entry of cluster.members is added")
    p.add_argument("--id", metavar="ID", help="the new node's id (instead of --member-params)")
    p.add_argument("--raft", metavar="IP:PORT", help="its Raft address")
    p.add_argument("--data", metavar="IP:PORT", help="its data-plane (status/dispatch) address")
    p.add_argument("--public-key", metavar="KEY", help="its CurveZMQ public key (`cluster keygen` printed it)")
    p = talk("remove", "remove a node from the cluster (through any other member); it gets no more setpoints "
             "and ramps to 0 W", cmd_remove, csub)
    p.add_argument("member_id", metavar="ID", help="the node id to remove")
