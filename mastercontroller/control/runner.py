"""Runs the active cluster mode every cycle and splits its target (DESIGN §2.3, §5).

The same object runs on the leader (``service.py``) and in the day simulation
(``mastercontroller/simulate``), so what the simulation measures is what the cluster does.

Each cycle: parse the mode parameters of the replicated state (once per change; a state the
mode cannot read, e.g. written by another version, falls back to ``passive`` and says why),
start the mode bumplessly when the mode or its parameters changed or this node just became
leader, step it on the image with the cluster limits in it and each node's caps less the
headroom its grid-service reserve holds (``reserve.py``; so a loop's window is the real one),
then narrow: a non-finite target is 0 W, the cluster limits cap it, each node's mode
constraint (``node_limits``) can only lower that node's own limits, and ``dispatch.py``
respects every node's limits exactly. A mode that raises is a bug: the cluster goes to
``passive`` (0 W, the error logged once and in the note) and keeps dispatching, so every node
still gets a fresh setpoint and nothing hangs on a stale one.

With ``backup`` (the site can form its own grid), any mode hands the cluster over to the
island behaviour of ``grid_forming`` when the grid is lost, and gets it back, restarted
bumplessly from the measured power, once the grid has been healthy for its resync time.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

from ..dispatch import Dispatch, DispatchParams, dispatch, dispatch_reactive
from ..reserve import Reserve, allocate, without_reserve
from ..state import ClusterState
from . import MODES, grid_forming, parse_params
from .base import ClusterImage, ModeResult

log = logging.getLogger("mastercontroller.mode")


@dataclass(frozen=True, slots=True)
class Step:
    mode: str              # the mode that ran (``passive`` when the state's could not be read;
                           # ``grid_forming`` while a backup site is islanded)
    result: ModeResult     # what the mode asked
    target_w: float        # after the cluster limits
    dispatch: Dispatch     # the split over the nodes
    q_setpoints: dict[str, float]  # the mode's reactive power over the nodes that can give it, var
    unplaced_var: float = 0.0
    reserve: Reserve = Reserve()  # the grid services' allocation (its headroom is kept from the dispatch)


class ModeRunner:
    def __init__(self, dispatch_params: DispatchParams = DispatchParams(), *, backup: bool = False):
        self.dispatch_params = dispatch_params
        self.backup = backup
        self._island: grid_forming.Island | None = None  # a backup site islanded under another mode
        self._failed: str | None = None  # why the mode that raised was replaced by passive (logged once)
        self._key: tuple | None = None   # (mode, params as given) the memory belongs to
        self._version: int | None = None  # the state version the key was last checked at
        self._mode = None
        self._params = None
        self._memory = None
        self._dispatch: Dispatch | None = None

    @staticmethod
    def prepare(state: ClusterState) -> None:
        """On every member, leader or not: let the replicated mode get ready to run (a mode's optional
        ``prepare()``, e.g. loading a solver in the background), so that a new leader runs it at once."""
        prepare = getattr(MODES.get(state.mode), "prepare", None)
        if prepare is not None:
            prepare()

    def reset(self) -> None:
        """Forget the mode's memory (e.g. this node lost the lease): the next step starts afresh."""
        self._key = self._version = None
        self._dispatch = self._island = None

    def step(self, state: ClusterState, image: ClusterImage) -> Step:
        if state.limits is not None:
            image = replace(image, limit_charge_w=state.limits["charge_w"], limit_discharge_w=state.limits["discharge_w"])
        reserve = allocate(state.services, image.nodes)
        if reserve.held:
            image = replace(image, nodes=without_reserve(image.nodes, reserve))  # the mode sees what it may use
        try:
            if state.version != self._version or self._key is None:  # parameters change only with the version
                self._version = state.version
                key = (state.mode, repr(sorted(state.mode_params.items())))
                if key != self._key:
                    self._key = key  # set first: a mode whose start raises is not entered again every cycle
                    self._enter(state, image)
            result, name = self._island_step(image), grid_forming.NAME
            if result is None:
                result, name = self._mode.step(image, self._params, self._memory), self._mode.NAME
                self._memory = result.memory
        except Exception as exc:  # a bug in a mode: 0 W, keep dispatching, say it
            name = getattr(self._mode, "NAME", state.mode)
            if self._failed is None:
                log.exception("cluster mode %s failed: passive, 0 W until the mode or its parameters change", name)
            self._failed = f"mode {name} failed ({type(exc).__name__}: {exc}): 0 W"
            self._mode, self._params, self._memory = MODES["passive"], MODES["passive"].Params(), None
            result, name = ModeResult(0.0), "passive"
        if self._failed is not None and name == "passive":
            result = replace(result, note=self._failed)
        target = result.target_w
        if not isinstance(target, (int, float)) or not math.isfinite(target):
            log.error("mode %s returned a non-finite target %r: 0 W", name, target)
            target = 0.0
        if state.limits is not None:
            target = min(state.limits["discharge_w"], max(-state.limits["charge_w"], target))
        nodes = _narrow(image, result.node_limits)
        self._dispatch = dispatch(target, nodes, self.dispatch_params, self._dispatch)
        q_setpoints, unplaced_var = dispatch_reactive(result.target_var, nodes)
        return Step(name, result, target, self._dispatch, q_setpoints, unplaced_var, reserve)

    def _island_step(self, image: ClusterImage) -> ModeResult | None:
        if not self.backup or self._mode is grid_forming:
            return None
        params = grid_forming.Params()
        if self._island is None:
            why = grid_forming.grid_lost(image, params)
            if why is None:
                return None
            log.warning("grid lost (%s): the cluster forms the grid; mode %s resumes when it is back",
                        why, self._mode.NAME)
            self._island = grid_forming.start_island(image, params)
        result = grid_forming.island(image, params, self._island)
        if result is None:
            log.info("grid back: mode %s resumes", self._mode.NAME)
            self._island = None
            self._memory = self._mode.start(image, self._params)
            return None
        self._island = result.memory
        return result

    def _enter(self, state: ClusterState, image: ClusterImage) -> None:
        try:
            mode = MODES[state.mode]
            params = parse_params(state.mode, state.mode_params)
        except (KeyError, ValueError) as exc:
            log.error("cluster mode %r cannot run (%s): passive, 0 W", state.mode, exc)
            mode, params = MODES["passive"], MODES["passive"].Params()
        self._mode, self._params, self._island, self._failed = mode, params, None, None
        self._memory = mode.start(image, params)
        log.info("cluster mode %s (parameters %s), starting from %.0f W measured",
                 mode.NAME, params.model_dump(mode="json"), image.battery_w)


def _narrow(image: ClusterImage, node_limits) -> tuple:
    if not node_limits:
        return image.nodes
    out = []
    for n in image.nodes:
        caps = node_limits.get(n.node_id)
        if caps is not None:
            n = replace(n, charge_w=min(n.charge_w, max(0.0, caps[0])), discharge_w=min(n.discharge_w, max(0.0, caps[1])))
        out.append(n)
    return tuple(out)
