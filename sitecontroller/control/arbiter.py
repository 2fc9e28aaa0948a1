"""The arbiter: which setpoint source owns the base setpoint this cycle (DESIGN §4).

Pure. The node's *control mode* says who may steer it:

- `local`: the node runs on its own. A technician at the node (`local`, the
  CLI) outranks SCADA, which outranks a cloud request, which outranks the
  node's own cluster-of-one mode (`cluster`, mastercontroller/solo.py): a
  person's fresh request overrides the mode while it lasts.
- `cluster`: the node is one rack of a cluster. Only the leader's dispatch
  steers it; with no fresh dispatch the node holds 0 W (DESIGN §2.4: it never
  keeps executing a stale command).

The first *fresh* source in the mode's order wins; a stale one is absent, so
the next one takes over at once. No fresh source at all means 0 W.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .sources import CLOUD, CLUSTER, LOCAL, SCADA, SetpointReading

PRIORITY: dict[str, tuple[str, ...]] = {
    "local": (LOCAL, SCADA, CLOUD, CLUSTER),
    "cluster": (CLUSTER,),
}
CONTROL_MODES = tuple(PRIORITY)


@dataclass(frozen=True, slots=True)
class Choice:
    source: str | None  # None: no fresh source, hold 0 W
    p_w: float
    why: str


def arbitrate(mode: str, setpoints: Mapping[str, SetpointReading]) -> Choice:
    order = PRIORITY[mode]
    for name in order:
        reading = setpoints.get(name)
        if reading is not None:
            return Choice(name, reading.p_w, f"{mode} mode: {name} owns the setpoint")
    if mode == "cluster":
        return Choice(None, 0.0, "cluster mode: no fresh dispatch from the leader: 0 W")
    return Choice(None, 0.0, "no request: idle at 0 W")


def accepts(mode: str, source: str) -> bool:
    """Whether a request from this source may own the setpoint in this mode (edges reject early).
    Only the cluster service fills the `cluster` source of a node in `local` mode."""
    return source in PRIORITY[mode] and not (mode == "local" and source == CLUSTER)
