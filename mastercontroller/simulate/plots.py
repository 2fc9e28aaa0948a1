"""PNG plots of a simulated day (matplotlib, Agg backend: no display needed).

- ``overview.png``: grid exchange, PV, load, the cluster target and the battery power actually
  delivered, the price on a second axis; grid losses and grid forming shaded, the mode that ran
  written along the top;
- ``soc.png``: every node's SOC;
- ``nodes.png``: every node's power with its setpoint.

Long runs are thinned for drawing only (a 1 s day is drawn at about 10 s resolution, each point
the mean of its bin, so spikes are averaged, not dropped at random).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .engine import DayRun

MAX_POINTS = 8640


def _bin(x: np.ndarray, k: int) -> np.ndarray:
    if k <= 1:
        return x
    n = (x.shape[-1] // k) * k
    return x[..., :n].reshape(*x.shape[:-1], -1, k).mean(axis=-1)


def _spans(mask: np.ndarray, t_h: np.ndarray) -> list[tuple[float, float]]:
    """(start, end) hours of each run of True in ``mask``."""
    out, start = [], None
    for i, on in enumerate(mask):
        if on and start is None:
            start = t_h[i]
        elif not on and start is not None:
            out.append((start, t_h[i]))
            start = None
    if start is not None:
        out.append((start, t_h[-1]))
    return out


def _hours_axis(ax, t_h: np.ndarray) -> None:
    ax.set_xlim(0, max(t_h[-1], 1e-9))
    span = t_h[-1]
    ax.set_xticks(np.arange(0, span + 1e-9, 2 if span > 12 else (1 if span > 3 else 0.25)))
    ax.grid(True, alpha=0.3)


def plot_all(run: DayRun, out: str | Path) -> list[Path]:
    """Write the three PNGs into ``out`` (created if needed); return their paths."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    a = run.arrays
    k = max(1, a["t_s"].size // MAX_POINTS)
    t_h = _bin(a["t_s"], k) / 3600.0
    kw = dict(linewidth=0.8)
    title = f"{run.scenario.name} ({run.scenario.mode}, {len(run.node_ids)} nodes, {run.step_s:g} s steps)"
    paths = []

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(13, 8), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    ax.plot(t_h, _bin(a["load_w"], k) / 1000, color="tab:red", label="load", **kw)
    ax.plot(t_h, _bin(a["pv_w"], k) / 1000, color="tab:orange", label="PV", **kw)
    ax.plot(t_h, _bin(a["grid_w"], k) / 1000, color="black", label="grid (+ import)", **kw)
    if a["unserved_w"].any():
        ax.plot(t_h, _bin(a["unserved_w"], k) / 1000, color="tab:purple", label="unserved load", **kw)
    ax.set_ylabel("power (kW)")
    ax.set_title(title)
    ax2.plot(t_h, _bin(a["target_w"], k) / 1000, color="tab:blue", label="cluster target", **kw)
    ax2.plot(t_h, _bin(a["p_w"].sum(axis=0), k) / 1000, color="tab:green", linestyle="--",
             label="battery actual (+ discharge)", **kw)
    ax2.set_ylabel("battery power (kW)")
    ax2.set_xlabel("time (h from start)")
    if run.scenario.prices is not None:
        twin = ax2.twinx()
        twin.step(t_h, _bin(a["price"], k), where="post", color="tab:gray", alpha=0.7, label="import price", **kw)
        twin.set_ylabel(f"price ({run.scenario.prices.currency}/kWh)")
        twin.legend(loc="lower left", bbox_to_anchor=(1.07, 0.0), fontsize=8)
    full_t = a["t_s"] / 3600.0
    for axis in (ax, ax2):
        for s, e in _spans(a["island"] > 0, full_t):
            axis.axvspan(s, e, color="tab:red", alpha=0.12, label="grid lost" if axis is ax else None)
        for s, e in _spans(a["grid_forming"] > 0, full_t):
            axis.axvspan(s, e, color="tab:green", alpha=0.12, label="grid forming" if axis is ax else None)
        _hours_axis(axis, t_h)
        axis.axhline(0, color="gray", linewidth=0.5)
    modes = a["mode"].astype(int)
    changes = [0] + [i for i in range(1, modes.size) if modes[i] != modes[i - 1]]
    for i in changes:
        ax.annotate(run.mode_names[modes[i]], (full_t[i], 1.0), xycoords=("data", "axes fraction"),
                    xytext=(2, -12), textcoords="offset points", fontsize=8, color="tab:blue")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax2.legend(loc="upper left", bbox_to_anchor=(1.07 if run.scenario.prices else 1.01, 1.0), fontsize=8)
    fig.tight_layout()
    paths.append(_save(fig, out / "overview.png"))

    fig, ax = plt.subplots(figsize=(13, 4.5))
    soc = _bin(a["soc"], k)
    for i, node_id in enumerate(run.node_ids):
        ax.plot(t_h, soc[i] * 100, label=node_id, **kw)
    ax.axhline(run.soc_min * 100, color="gray", linestyle=":", linewidth=0.8, label=f"reserve {run.soc_min:.0%}")
    ax.axhline(run.soc_max * 100, color="gray", linestyle="--", linewidth=0.8, label=f"max {run.soc_max:.0%}")
    ax.set_ylim(0, 100)
    ax.set_ylabel("SOC (%)")
    ax.set_xlabel("time (h from start)")
    ax.set_title(f"{title}: SOC per node")
    _hours_axis(ax, t_h)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    paths.append(_save(fig, out / "soc.png"))

    n = len(run.node_ids)
    fig, axes = plt.subplots(n, 1, figsize=(13, 1.8 + 1.6 * n), sharex=True, squeeze=False)
    p, sp = _bin(a["p_w"], k), _bin(a["setpoint_w"], k)
    for i, node_id in enumerate(run.node_ids):
        axis = axes[i][0]
        axis.plot(t_h, sp[i] / 1000, color="tab:blue", label="setpoint", **kw)
        axis.plot(t_h, p[i] / 1000, color="tab:green", linestyle="--", label="actual", **kw)
        axis.set_ylabel(f"{node_id} (kW)")
        axis.axhline(0, color="gray", linewidth=0.5)
        _hours_axis(axis, t_h)
    axes[0][0].set_title(f"{title}: node power (+ discharge)")
    axes[0][0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    axes[-1][0].set_xlabel("time (h from start)")
    fig.tight_layout()
    paths.append(_save(fig, out / "nodes.png"))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path
