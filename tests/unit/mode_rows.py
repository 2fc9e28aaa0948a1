"""Helpers for mode table tests: images and a row runner (one row per cycle)."""
from __future__ import annotations

from mastercontroller.control.base import ClusterImage
from mastercontroller.dispatch import NodeView

WALL0 = 1_780_000_000.0


def nodes(*socs, cap_w=5000.0, p_w=0.0, usable_wh=10_000.0):
    return tuple(NodeView(f"n{i + 1}", True, "run", s, usable_wh, cap_w, cap_w, p_w) for i, s in enumerate(socs))


def image(t, grid_w=None, *, grid_t="t", ns=None, dt_s=1.0, **kw):
    """An image at t; grid_t defaults to t (a new sample every cycle)."""
    ns = nodes(0.5, 0.5) if ns is None else ns
    return ClusterImage(t, WALL0 + t, dt_s, ns, grid_w=grid_w, grid_t=t if grid_t == "t" else grid_t, **kw)


def run_rows(mode, params, rows):
    """rows: (image, check(result)) ; returns the results."""
    memory = mode.start(rows[0][0], params)
    out = []
    for i, (img, check) in enumerate(rows):
        result = mode.step(img, params, memory)
        memory = result.memory
        assert check(result), f"row {i}: {result}"
        out.append(result)
    return out
