"""A cluster of one (DESIGN §5): a node without ``features.CLUSTER`` runs the cluster's modes on itself.

The cluster modes, grid services and their commands (``cluster mode``, ``cluster setpoint``,
``cluster service``; the cloud's ``GoToMode_*``; SCADA's mode select) work on a single node as
on a cluster: it is the cluster service (``service.py``) with two parts replaced:

- ``SoloConsensus`` in place of Raft: the node is its only member and always leads. A change is
  validated and applied as a committed Raft entry is (``state.validate_change``, ``state.apply``)
  and written to ``<data_dir>/cluster_state.json`` (fsynced, then atomically replaced) before it is
  acknowledged, so the node starts again in the mode it had. An unreadable file: ``passive``, said
  in the log, never a crash.
- no data plane: the node's status and its own dispatch stay in the process.

Who steers the node: the mode's dispatch is the node's ``cluster`` setpoint source, which in the
node's ``local`` control mode ranks below a technician (CLI), SCADA and a cloud setpoint
(``control/arbiter.py``): a person's fresh request overrides the mode, and the mode takes over
again when the request expires. In ``passive`` the mode does not steer the node at all (its source
is withdrawn), so a node that was never given a mode behaves as before this existed. Limits,
protection and the state machine narrow the mode's setpoint as they narrow every source.

Members cannot be added to a cluster of one: a cluster is set up with ``features.CLUSTER`` and the
member list on every node.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from sitecontroller.commands import REJECTED
from sitecontroller.control.sources import CLUSTER

from .service import ClusterService
from .state import ClusterState, apply, validate_change

log = logging.getLogger("mastercontroller")

STATE_FILE = "cluster_state.json"


@dataclass(frozen=True)
class _Me:
    node_id: str


class SoloConsensus:
    """The consensus of a cluster of one: the same interface as ``consensus.ClusterConsensus``."""

    role = "alone"
    term = 1

    def __init__(self, self_id: str, path: Path):
        self.self_id = self.leader_id = self_id
        self.path = Path(path)
        self._lock = threading.Lock()  # propose runs on worker threads
        self._state = self._load()

    def _load(self) -> ClusterState:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            state = apply(ClusterState(), validate_change({k: doc[k] for k in ("mode", "mode_params", "target_w",
                                                                               "target_wall", "limits")}))
            for name, svc in (doc.get("services") or {}).items():
                state = apply(state, validate_change({"service": {"name": name, **svc}}))
            return dataclasses.replace(state, version=int(doc["version"]))
        except FileNotFoundError:
            return ClusterState()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s unreadable (%s): the node starts in mode passive", self.path, exc)
            return ClusterState()

    def start(self) -> None:
        if self._state.mode != "passive" or self._state.services:
            log.info("cluster of one: mode %s (version %d) from %s", self._state.mode, self._state.version, self.path)

    def close(self) -> None:
        pass

    def members(self) -> list[_Me]:
        return [_Me(self.self_id)]

    def lease_remaining(self) -> float:
        return math.inf

    def has_lease(self) -> bool:
        return True

    def state(self) -> ClusterState:
        return self._state.copy()

    def propose(self, change: dict, timeout_s: float = 2.0) -> ClusterState:
        with self._lock:
            state = apply(self._state, validate_change(change))
            self._write(state)
            self._state = state
            return state.copy()

    def _write(self, state: ClusterState) -> None:
        doc = {k: getattr(state, k) for k in ("mode", "mode_params", "target_w", "target_wall", "limits",
                                              "services", "version")}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class _NoPlane:
    """A cluster of one has nobody to tell."""

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def publish(self, msg) -> None:
        pass

    def stats(self) -> dict:
        return {}


class SoloService(ClusterService):
    """The cluster service of a node that is a cluster of one."""

    _overridden = False  # a person's request owned the node's setpoint at the last tick

    def _connect(self, params):
        return SoloConsensus(self.me, params.data_dir / STATE_FILE), _NoPlane()

    def tick(self, now: float) -> None:
        d = self.node.decision
        overridden = d is not None and d.source not in (None, CLUSTER)
        if self._overridden and not overridden:  # the mode steers again: restart it bumplessly from the
            self.runner.reset()                  # measured power, not from what it wound up meanwhile
        self._overridden = overridden
        super().tick(now)

    def handle(self, cmd, image):
        if cmd.type in ("cluster_add_member", "cluster_remove_member"):
            return REJECTED, ("this node is a cluster of one (features.CLUSTER is off): a cluster is set up with "
                              "features.CLUSTER and cluster.members on every node"), {}
        return super().handle(cmd, image)

    def _on_dispatch(self, msg) -> None:
        super()._on_dispatch(msg)  # grid-service reserve and the journal as in any cluster
        if msg.mode == "passive":  # the mode does not steer: the node's own sources do
            self.node.sources[CLUSTER].withdraw()
