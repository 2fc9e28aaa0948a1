"""The nodes' journals of executed dispatches (`<data_dir>/dispatch.jsonl`, mastercontroller/service.py),
read after the site stopped: no two terms may ever have been executed at the same time."""
from __future__ import annotations

import json
from pathlib import Path

SCHEDULING_S = 0.05  # the stamps are arrival times on one machine: allow this much for scheduling


def read_windows(site_dir: Path, nodes, killed: dict[int, float] | None = None) -> list[dict]:
    """Every executed-term window of every node: {term, leader, first_wall, last_wall, until_wall, count,
    node_id, pid}. A journal line is either a whole window (`event` "end"), or the `start` of one; a start
    with no end is a node killed while executing the term: its window ends at the kill (`killed`: pid ->
    time.time() of its SIGKILL; the process executes nothing after it), or has no known end (no `until_wall`)."""
    killed = killed or {}
    windows, starts = [], []
    for n in nodes:
        path = Path(site_dir) / "var" / n / "dispatch.jsonl"
        for line in path.read_text().splitlines():
            if line.strip():
                w = json.loads(line)
                (starts if w.get("event") == "start" else windows).append(w)
    ended = {(w["node_id"], w["pid"], w["term"], w["first_wall"]) for w in windows}
    open_ = [w for w in starts if (w["node_id"], w["pid"], w["term"], w["first_wall"]) not in ended]
    return windows + [{**w, "until_wall": killed[w["pid"]]} if w["pid"] in killed else w for w in open_]


def assert_terms_never_overlap(windows: list[dict], min_terms: int = 2) -> list[int]:
    """Across all nodes, a window of a lower term ends (its last setpoint's validity) before any window of a
    higher term begins; returns the executed terms, in order."""
    terms = sorted({w["term"] for w in windows})
    assert len(terms) >= min_terms, f"expected at least {min_terms} executed terms, found {terms}: {windows}"
    overlaps = [(lower, higher) for lower in windows if "until_wall" in lower for higher in windows
                if higher["term"] > lower["term"] and lower["until_wall"] > higher["first_wall"] + SCHEDULING_S]
    if overlaps:
        lower, higher = max(overlaps, key=lambda o: o[0]["until_wall"] - o[1]["first_wall"])
        raise AssertionError(
            f"{len(overlaps)} overlapping pair(s) of executed terms; the worst: term {lower['term']} on "
            f"{lower['node_id']} valid until {lower['until_wall'] - higher['first_wall']:+.3f} s after term "
            f"{higher['term']} began on {higher['node_id']}: {lower} / {higher}")
    return terms
