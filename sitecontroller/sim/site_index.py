"""The site index: which node of the site `scripts/run-sim --nodes N` runs answers where.

run-sim writes it (`write_site_index`) and removes it when it stops; `sitecontroller ... --node ID`,
`sim ...`, `grid-event` and `cluster backup-test` read it (`read_site_index`).
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


def site_index_path() -> Path:
    """`site.json` in a folder of the run directory (running.run_dir(): $SITECONTROLLER_RUN_DIR,
    $XDG_RUNTIME_DIR/sitecontroller or /tmp/sitecontroller-UID), where every running node is listed too."""
    from ..running import run_dir

    return run_dir() / "site" / "site.json"


def write_site_index(nodes: list[dict], sim_endpoint: str, site_dir: Path) -> Path:
    from ..running import _started_at

    path = site_index_path()
    data = {"pid": os.getpid(), "started_at": _started_at(os.getpid()), "sim_endpoint": sim_endpoint,
            "site_dir": str(site_dir), "nodes": nodes}
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".site.json.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return path


def remove_site_index() -> None:
    """Remove the index if this process wrote it (another run-sim may have written its own since)."""
    path = site_index_path()
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def read_site_index() -> dict | None:
    """The index of the site that runs now: {"pid", "sim_endpoint", "nodes": [{"node_id", "endpoint",
    "params"}, ...]}, or None (none, unreadable, or its run-sim is gone)."""
    from ..running import _alive

    try:
        data = json.loads(site_index_path().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list) or not _alive(data):
        return None
    return data
