"""Evidence for the grid operator: a log per frequency event, and its plot (`sitecontroller grid-event`).

An *event* begins when the node's frequency leaves the normal band (49.9..50.1 Hz) or an FFR
activation begins while the node holds a grid service, and ends EVENT_TAIL_S after both are
over (at most MAX_EVENT_S). Every cycle of it is one line of `events/<node>-<UTC start>.jsonl`
in the node's data directory, the PRE_S before it included: wall time, frequency, the base
setpoint, each service's requested power, the setpoint sent and the power the inverter
delivered — at cycle resolution, the shape a prequalification test asks for. Lines go through
the node's background writer: the cycle never waits on the disk.

    sitecontroller grid-event --list [--node ID | --params FILE]
    sitecontroller grid-event [EVENT] --plot OUT.png [--node ID ...]   # the last one by default;
                                                                      # every node of a run-sim site
"""
from __future__ import annotations

import json
import sys
from collections import deque
from datetime import datetime, timezone
from pathlib import Path

NORMAL_BAND = (49.9, 50.1)
PRE_S, EVENT_TAIL_S, MAX_EVENT_S = 2.0, 10.0, 900.0


class EventRecorder:
    def __init__(self, node_id: str, data_dir: Path | None, writer, period_s: float):
        self.node_id, self.writer = node_id, writer
        self.dir = None if data_dir is None else Path(data_dir) / "events"
        self.pre: deque[dict] = deque(maxlen=max(1, round(PRE_S / period_s)))
        self.path: Path | None = None
        self.started = self.quiet_since = None
        self.count = 0

    def observe(self, wall: float, now: float, freq_hz: float | None, decision, p_w: float | None,
                responses) -> None:
        if not responses and self.path is None:
            self.pre.clear()
            return
        terms = dict(decision.terms) if decision is not None else {}
        line = {"wall": round(wall, 3), "hz": freq_hz, "base_w": None if decision is None else round(decision.base_w, 1),
                "requested_w": {r.name: round(r.last_w, 1) for r in responses},
                "applied_w": {k: round(v, 1) for k, v in terms.items()},
                "setpoint_w": None if decision is None else round(decision.setpoint_w, 1),
                "p_w": None if p_w is None else round(p_w, 1)}
        outside = freq_hz is not None and not NORMAL_BAND[0] <= freq_hz <= NORMAL_BAND[1]
        ffr = any(getattr(r.controller, "phase", "idle") == "support" for r in responses)
        if self.path is None:
            self.pre.append(line)
            if (outside or ffr) and self.dir is not None:
                self._start(wall, now, freq_hz)
            return
        self._write(line)
        self.quiet_since = None if (outside or ffr) else (self.quiet_since or now)
        if (self.quiet_since is not None and now - self.quiet_since >= EVENT_TAIL_S) or now - self.started >= MAX_EVENT_S:
            self._write({"end": True, "wall": round(wall, 3), "cycles": self.count})
            self.path = None

    def _start(self, wall: float, now: float, freq_hz: float) -> None:
        stamp = datetime.fromtimestamp(wall, timezone.utc).strftime("%Y%m%dT%H%M%S")
        self.path = self.dir / f"{self.node_id}-{stamp}.jsonl"
        self.started, self.quiet_since, self.count = now, None, 0
        self._write({"event": self.path.stem, "node_id": self.node_id, "start_wall": round(wall, 3), "hz": freq_hz})
        for line in self.pre:
            self._write(line)
        self.pre.clear()

    def _write(self, line: dict) -> None:
        self.count += 1
        self.writer.append(self.path, json.dumps(line))


# --- the report ------------------------------------------------------------------------------
def read_event(path: Path) -> dict:
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    head, samples = lines[0], [x for x in lines[1:] if "end" not in x]
    return {**head, "samples": samples, "complete": any("end" in x for x in lines)}


def plot(events: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = min(e["start_wall"] for e in events)
    fig, (ax_f, ax_p) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.5))
    for e in events:
        t = [s["wall"] - t0 for s in e["samples"]]
        ax_f.plot(t, [s["hz"] for s in e["samples"]], label=e["node_id"], linewidth=1)
        requested = [sum(s["requested_w"].values()) + (s["base_w"] or 0.0) for s in e["samples"]]
        line, = ax_p.plot(t, requested, "--", linewidth=1, label=f"{e['node_id']} requested")
        ax_p.plot(t, [s["p_w"] for s in e["samples"]], color=line.get_color(), linewidth=1.5,
                  label=f"{e['node_id']} delivered")
    for lim in NORMAL_BAND:
        ax_f.axhline(lim, color="grey", linewidth=0.5, linestyle=":")
    ax_f.set_ylabel("frequency, Hz")
    ax_p.set_ylabel("power, W (+ = discharge)")
    ax_p.set_xlabel(f"s from {datetime.fromtimestamp(t0, timezone.utc).isoformat(timespec='milliseconds')}")
    ax_f.legend(fontsize=8)
    ax_p.legend(fontsize=8, ncol=2)
    fig.suptitle(f"grid event {events[0]['event']}: requested (base + services) and delivered, per node")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _data_dirs(args) -> dict[str, Path]:
    from .params import ParamsError, load

    files = []
    if args.params:
        files = [args.params]
    else:
        from .sim.site_index import read_site_index

        index = read_site_index() or {}
        files = [n["params"] for n in index.get("nodes", []) if not args.node or n["node_id"] in args.node]
        if not files:
            from .running import running_nodes

            files = [n["params"] for n in running_nodes() if n.get("params")
                     and (not args.node or n.get("node_id") in args.node)]
    out = {}
    for f in files:
        try:
            p = load(f)
        except ParamsError as exc:
            exc.report()
            continue
        out[p.identity.node_id] = p.data_dir
    return out


def cmd_grid_event(args) -> int:
    dirs = _data_dirs(args)
    if not dirs:
        print("sitecontroller grid-event: no node found (give --params FILE, or run a site with scripts/run-sim)",
              file=sys.stderr)
        return 2
    files = sorted((f for d in dirs.values() for f in (d / "events").glob("*.jsonl")), key=lambda f: f.name[-20:])
    if args.list:
        for f in files:
            e = read_event(f)
            hz = [s["hz"] for s in e["samples"] if s["hz"] is not None]
            print(f"{e['event']:<36} {len(e['samples']):5d} cycles  min {min(hz, default=float('nan')):.3f} Hz"
                  f"{'' if e['complete'] else '  (still open)'}")
        return 0
    if not files:
        print("sitecontroller grid-event: no grid event recorded yet", file=sys.stderr)
        return 1
    stamp = args.event.split("-")[-1] if args.event else files[-1].stem.split("-")[-1]
    chosen = [f for f in files if f.stem.split("-")[-1][:13] == stamp[:13]]  # every node's, same minute-ish start
    if not chosen:
        print(f"sitecontroller grid-event: no event {args.event!r} (--list shows them)", file=sys.stderr)
        return 1
    events = [read_event(f) for f in chosen]
    if args.plot:
        plot(events, Path(args.plot))
        print(f"wrote {args.plot}: {', '.join(e['event'] for e in events)}")
    if args.json:
        print(json.dumps(events))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("grid-event", help="the evidence of frequency events: list them, plot one (every node of a "
                       "run-sim site together), or print its samples as JSON")
    p.add_argument("event", nargs="?", metavar="EVENT", help="an event name from --list (default: the last one)")
    p.add_argument("--list", action="store_true", help="one line per recorded event")
    p.add_argument("--plot", metavar="OUT.png", help="write a PNG: frequency, and per node requested vs delivered")
    p.add_argument("--json", action="store_true", help="print the event's samples (every node) as JSON")
    p.add_argument("--params", metavar="FILE", help="a node's parameter file (its data directory holds the events)")
    p.add_argument("--node", action="append", metavar="ID", help="only this node of a run-sim site (repeatable)")
    p.set_defaults(func=cmd_grid_event)
