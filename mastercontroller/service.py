"""The cluster service: what makes one node a member of the cluster (DESIGN §5).

A `NodeRuntime` service (`async start()`, `async close()`) built from the node (a node without
`features.CLUSTER` runs it as a cluster of one, `solo.py`: no Raft, no data plane):

- **consensus** (`consensus.py`, pysyncobj Raft over ZeroMQ/CURVE on its own thread):
  the replicated cluster state and leadership with a lease;
- **data plane** (`dataplane.py`, on the node's loop): every cycle this node publishes
  its status; every member's status feeds `Membership`, the cluster process image;
- **mode and dispatch**: while this node holds the lease it runs the cluster's operating mode
  (`control/`, through `control/runner.py`) on the cluster process image — every member's
  status and the site meter reading one of them reports — splits the mode's target over the
  members (`dispatch.py`) every cycle and publishes one setpoint per node, stamped with
  its Raft term, a sequence number and a validity of `cluster.dispatch_valid_s`, cut at the
  end of its lease. The mode and its parameters live in the replicated state, so a new leader
  continues the same mode, started bumplessly from the power the cluster measures;
- **execution**: a dispatch that passes the term fence (`fence.py`) goes into the
  node's `cluster` setpoint inbox, valid for `valid_s` from its arrival. It is a
  setpoint source like any other: the node's limiter, protection and state machine
  still narrow it. No fresh dispatch (leader lost) ⇒ the arbiter has no source and the
  node ramps to 0 W, saying why in its status;
- **members**: the data plane and the process image follow the Raft member list
  (`consensus.members()`), so a node added or removed at run time (`cluster_add_member`,
  `cluster_remove_member`) is heard and dispatched to, or dropped, by every member;
- **cluster commands** (`cluster_mode`, `cluster_setpoint`, `cluster_add_member`,
  `cluster_remove_member`): carried out through the Raft log from a worker thread; the
  command's final acknowledgement comes once the log has committed it. A mode change is
  checked against the mode's parameters first: a bad one is rejected naming the field, and
  nothing is proposed. `cluster_setpoint` is a local request: it puts the cluster in mode
  `local`, which follows it for `hold_s` unless it is sent again.

Every executed term is logged to `<data_dir>/dispatch.jsonl`: a `start` line when the node
executes the term's first setpoint, an `end` line when it stops executing it (leader,
first and last arrival, until when the last one was valid). A node killed mid-term leaves
a `start` without its `end`. So a test or a technician can check after the fact that terms
never overlapped.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time

from sitecontroller.commands import DONE, FAILED, REJECTED
from sitecontroller.control.services import parse_params as parse_service_params
from sitecontroller.control.sources import CLUSTER
from sitecontroller.cycle import aligned_start

from .control import parse_params
from .control.base import ClusterImage
from .control.runner import ModeRunner
from .dispatch import DispatchParams, NodeView
from .fence import TermFence
from .membership import Membership
from .messages import DispatchMessage, StatusMessage
from .reserve import refusal
from .state import ConsensusError

log = logging.getLogger("mastercontroller")

PROPOSE_TIMEOUT_S = 3.0
HOLD_S = 0.1  # a new leader's first dispatch waits this long (see __init__)
DISPATCH_LEAD_S = 0.01  # the leader dispatches this long before the members' cycles


class ClusterService:
    def __init__(self, node, *, dispatch_params: DispatchParams = DispatchParams()):
        params = node.params
        cluster = params.cluster
        self.node = node
        self.me = params.identity.node_id
        self.period_s = params.cycle.period_s
        self.valid_s = cluster.dispatch_valid_s
        self.reserve_valid_s = cluster.reserve_valid_s
        self.consensus, self.plane = self._connect(params)
        member_ids = [m.node_id for m in self.consensus.members()]
        self.membership = Membership(member_ids, cluster.status_stale_s)
        self._member_ids = set(member_ids)  # what the data plane and membership follow
        self.fence = TermFence(self.me)
        self.runner = ModeRunner(dispatch_params, backup=params.features.BACKUP)
        self.heard: DispatchMessage | None = None  # the last dispatch this node executed
        self._seq = 0
        self._lease_since: float | None = None
        # No two leaders' setpoints are ever valid at once: a dispatch is valid for `valid_s` but
        # never beyond the end of its leader's lease (tick), and no other node can win an election
        # before that end (vote stickiness, consensus.py), dead or cut-off old leader alike. A new
        # leader waits HOLD_S more: a node counts validity from a message's arrival, which a busy
        # event loop may delay.
        self.hold_s = HOLD_S
        self._journal = params.data_dir / "dispatch.jsonl"
        self._term_window: dict | None = None  # the term being executed: for dispatch.jsonl
        self._task: asyncio.Task | None = None
        node.executor.cluster_handler = self.handle
        node.cluster = self

    def _connect(self, params):
        """Raft and the data plane of a member of a cluster (features.CLUSTER); imported here, so
        a cluster of one (solo.py) never loads pysyncobj."""
        from . import keys
        from .consensus import ClusterConsensus, Member
        from .dataplane import DataPlane, Peer

        cluster = params.cluster
        public, secret = keys.load(params.data_dir)
        consensus = ClusterConsensus(
            self.me, [Member(m.node_id, m.raft, m.public_key, m.data) for m in cluster.members], params.data_dir,
            secret_key=secret, public_key=public, lease_s=cluster.lease_s)
        own = next(m for m in cluster.members if m.node_id == self.me)
        plane = DataPlane(self.me, own.data, [Peer(m.node_id, m.data, m.public_key) for m in cluster.members],
                          public_key=public, secret_key=secret, on_status=self._on_status, on_dispatch=self._on_dispatch)
        return consensus, plane

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.consensus.start)
        await self.plane.start()
        self._task = asyncio.create_task(self._run(), name="cluster")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._close_term()
        await self.plane.close()
        await asyncio.get_running_loop().run_in_executor(None, self.consensus.close)

    async def _run(self) -> None:
        clock = self.node.clock
        # DISPATCH_LEAD_S before the members' cycles (cycle.aligned_start): a dispatch reaches
        # every node just before its cycle writes the inverter.
        deadline = aligned_start(clock, self.period_s, -DISPATCH_LEAD_S)
        while True:
            await clock.sleep_until(deadline)
            try:
                await self._follow_members()
                self.tick(clock.monotonic())
            except Exception:  # a bug here must not end the node's cluster membership
                log.exception("cluster tick failed")
            deadline += self.period_s
            late = clock.monotonic() - deadline
            if late > 0:  # overran: skip the missed slots, keep the phase
                deadline += self.period_s * math.ceil(late / self.period_s)

    async def _follow_members(self) -> None:
        """The data plane and the process image follow the Raft member list (add/remove)."""
        members = {m.node_id: m for m in self.consensus.members()}
        if members.keys() == self._member_ids:
            return
        for node_id in sorted(self._member_ids - members.keys()):
            log.info("cluster member %s left: no longer heard or dispatched to", node_id)
            self.membership.remove(node_id)
            await self.plane.disconnect(node_id)
        for node_id in sorted(members.keys() - self._member_ids):
            m = members[node_id]
            self.membership.add(node_id)
            if m.data is None:  # a node added without its data address (not through our command)
                log.error("cluster member %s joined without a data address: it is not heard", node_id)
            else:
                from .dataplane import Peer

                self.plane.connect(Peer(node_id, m.data, m.public_key))
                log.info("cluster member %s joined (raft %s, data %s)", node_id, m.address, m.data)
        self._member_ids = set(members)

    # --- every cycle ------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        self.fence.observe_term(self.consensus.term)
        own = self.own_status()
        self.membership.update(own, now)
        self.plane.publish(own)
        if self._term_window and now > self._term_window["until_mono"]:
            self._close_term()  # expired: the leader is gone or no longer dispatches to us
        state = self.consensus.state()
        self.runner.prepare(state)
        lease_s = self.consensus.lease_remaining()
        if lease_s <= 0:
            if self._lease_since is not None:
                self.runner.reset()  # a later lease starts the mode afresh, from what is measured then
            self._lease_since = None
            return
        if self._lease_since is None:
            self._lease_since = now
            log.info("leading the cluster (term %d): dispatching in %.2f s", self.consensus.term, self.hold_s)
        if now - self._lease_since < self.hold_s:
            return
        step = self.runner.step(state, self.cluster_image(now, state))
        self._seq += 1
        msg = DispatchMessage(leader=self.me, term=self.consensus.term, seq=self._seq, valid_s=min(self.valid_s, lease_s),
                              decided_wall=self.node.clock.wall(), target_w=step.target_w,
                              unplaced_w=step.dispatch.unplaced_w, setpoints=step.dispatch.setpoints,
                              mode=step.mode, note=step.result.note[:300], grid_forming=step.result.grid_forming,
                              q_setpoints={k: v for k, v in step.q_setpoints.items() if v},
                              reserve={k: v for k, v in step.reserve.per_node.items() if v},
                              reserve_params=step.reserve.params, reserve_valid_s=self.reserve_valid_s)
        self.plane.publish(msg)
        self._on_dispatch(msg)  # a PUB does not deliver to itself

    def cluster_image(self, now: float, state) -> ClusterImage:
        """The cluster process image: every member's latest status; the site meter from the member
        with the lowest id that reports a fresh reading (one source, so its samples stay one series)."""
        views = self.membership.image(now)
        meter = next((v.status for v in sorted(views, key=lambda v: v.node_id)
                      if v.online and v.status is not None and v.status.grid_w is not None), None)
        return ClusterImage(
            now, self.node.clock.wall(), self.period_s, tuple(_node_view(v) for v in views),
            grid_w=None if meter is None else meter.grid_w, grid_t=None if meter is None else meter.grid_t,
            freq_hz=None if meter is None else meter.freq_hz, grid_v=None if meter is None else meter.grid_v,
            request_w=state.target_w if state.target_wall is not None else None, request_wall=state.target_wall,
            island=any(v.online and v.status is not None and v.status.island for v in views))

    def own_status(self) -> StatusMessage:
        node, image, decision = self.node, self.node.image, self.node.decision
        bms = image.bms if image else None
        inv = image.inverter if image else None
        meter = image.meter if image else None
        limits = decision.limits if decision else None
        soh = bms.soh if bms is not None else 1.0
        return StatusMessage(
            node_id=self.me, state=node.states.state,
            soc=None if bms is None else min(1.0, max(0.0, bms.soc)),
            usable_wh=node.params.battery.capacity_wh * max(0.0, min(1.0, soh)),
            charge_w=0.0 if limits is None else max(0.0, limits.charge_w),
            discharge_w=0.0 if limits is None else max(0.0, limits.discharge_w),
            p_w=None if inv is None else inv.p_w, setpoint_w=node.setpoint_w,
            q_var=None if inv is None else inv.q_var, q_max_var=node.q_max_var(),
            freq_hz=meter.freq_hz if meter is not None and meter.freq_hz is not None else (inv.freq_hz if inv else None),
            grid_w=None if meter is None else meter.p_w,
            grid_t=None if meter is None else meter.t,
            grid_v=sum(meter.phase_v) / len(meter.phase_v) if meter is not None and meter.phase_v else None,
            errors=tuple(e.id for e in node.errors.listed()), term_seen=self.fence.highest_term,
            island=None if inv is None else inv.island,
        )

    # --- the data plane's callbacks (on the node's loop) -----------------------------------
    def _on_status(self, msg: StatusMessage) -> None:
        self.membership.update(msg, self.node.clock.monotonic())

    def _on_dispatch(self, msg: DispatchMessage) -> None:
        self.fence.observe_term(self.consensus.term)
        p_w = self.fence.admit(msg)
        if p_w is None:
            return
        now = self.node.clock.monotonic()
        meta = {"decided_wall": msg.decided_wall, "q_var": msg.q_setpoints.get(self.me, 0.0)}
        self.node.sources[CLUSTER].put(p_w, now, valid_s=msg.valid_s, meta=meta,
                                       origin=f"leader {msg.leader} term {msg.term} seq {msg.seq}")
        self.node.grid_services.allocate(msg.reserve.get(self.me, {}), msg.reserve_params, msg.term, now,
                                         msg.reserve_valid_s)
        self.heard = msg
        self._note_term(msg, now)

    # --- the journal of executed terms ------------------------------------------------------
    def _note_term(self, msg: DispatchMessage, now: float) -> None:
        wall = time.time()
        w = self._term_window
        if w is not None and w["term"] != msg.term:
            self._close_term()
            w = None
        if w is None:
            log.info("executing dispatch of leader %s, term %d", msg.leader, msg.term)
            w = self._term_window = {"term": msg.term, "leader": msg.leader, "first_wall": wall, "count": 0}
            self._journal_line({"event": "start", "term": msg.term, "leader": msg.leader, "first_wall": wall})
        w.update(last_wall=wall, until_wall=wall + msg.valid_s, until_mono=now + msg.valid_s)
        w["count"] += 1

    def _close_term(self) -> None:
        w, self._term_window = self._term_window, None
        if w is None:
            return
        self._journal_line({"event": "end", **{k: w[k] for k in ("term", "leader", "first_wall", "last_wall",
                                                                  "until_wall", "count")}})

    def _journal_line(self, line: dict) -> None:
        line["node_id"], line["pid"] = self.me, os.getpid()
        if self.node.writer is not None:  # the node's background writer: the loop never waits on the disk
            self.node.writer.append(self._journal, json.dumps(line))

    # --- cluster commands ------------------------------------------------------------------
    def handle(self, cmd, image):
        if cmd.type == "cluster_mode":
            try:
                params = parse_params(cmd.mode, cmd.params).model_dump(mode="json")
            except ValueError as exc:
                return REJECTED, str(exc), {}

            def work():  # a local request does not outlive a mode change (it cannot come back later)
                state = self.consensus.propose({"mode": cmd.mode, "mode_params": params, "target_w": 0.0,
                                                "target_wall": None}, PROPOSE_TIMEOUT_S)
                return (f"cluster mode {state.mode} (version {state.version})",
                        {"mode": state.mode, "mode_params": state.mode_params, "version": state.version})
        elif cmd.type == "cluster_setpoint":
            wall = self.node.clock.wall()

            def work():
                now = self.consensus.state()
                params = {**(now.mode_params if now.mode == "local" else {}), "heartbeat_s": cmd.hold_s}
                state = self.consensus.propose({"mode": "local", "mode_params": params, "target_w": cmd.target_w,
                                                "target_wall": wall}, PROPOSE_TIMEOUT_S)
                return (f"mode local: cluster target {state.target_w:.0f} W for {cmd.hold_s:g} s "
                        f"(version {state.version})", {"target_w": state.target_w, "version": state.version})
        elif cmd.type == "cluster_service":
            try:
                params = parse_service_params(cmd.service, cmd.params).model_dump(mode="json")
            except ValueError as exc:
                return REJECTED, str(exc), {}
            if cmd.capacity_w > 0:
                nodes = [_node_view(v) for v in self.membership.image(self.node.clock.monotonic())]
                why = refusal(cmd.service, cmd.capacity_w, params, self.consensus.state().services, nodes)
                if why is not None:
                    return REJECTED, why, {}

            def work():
                state = self.consensus.propose({"service": {"name": cmd.service, "capacity_w": cmd.capacity_w,
                                                            "params": params}}, PROPOSE_TIMEOUT_S)
                what = f"{cmd.service} {cmd.capacity_w:.0f} W" if cmd.capacity_w > 0 else f"{cmd.service} off"
                return f"grid service {what} (version {state.version})", {"services": state.services or {},
                                                                          "version": state.version}
        elif cmd.type == "cluster_add_member":
            from .consensus import Member

            m = cmd.member
            member = Member(m.node_id, m.raft, m.public_key, m.data)

            def work():
                self.consensus.add_member(member, PROPOSE_TIMEOUT_S)
                return f"{m.node_id} added (raft {m.raft}, data {m.data})", {"members": self._member_list()}
        elif cmd.type == "cluster_remove_member":
            def work():
                self.consensus.remove_member(cmd.node_id, PROPOSE_TIMEOUT_S)
                return f"{cmd.node_id} removed", {"members": self._member_list()}
        else:
            return REJECTED, f"command type {cmd.type!r} is not handled by the cluster service", {}
        loop = asyncio.get_running_loop()
        commands = self.node.commands

        def run() -> None:  # a worker thread: the Raft calls block until committed
            try:
                detail, result = work()
            except ValueError as exc:
                outcome = (REJECTED, str(exc), {})
            except ConsensusError as exc:
                outcome = (FAILED, str(exc), {})
            else:
                outcome = (DONE, detail, result)
            loop.call_soon_threadsafe(lambda: commands.finish(cmd, outcome[0], outcome[1], **outcome[2]))

        loop.run_in_executor(None, run)
        return None  # finished by run() once the log has committed it

    def _member_list(self) -> list[str]:
        return [m.node_id for m in self.consensus.members()]

    # --- what the node and the CLI report ----------------------------------------------------
    @property
    def role(self) -> str:
        return self.consensus.role

    def cluster_status(self) -> dict:
        now = self.node.clock.monotonic()
        state = self.consensus.state()
        heard = self.heard
        members = []
        for v in self.membership.image(now):
            s = v.status
            members.append({
                "node_id": v.node_id, "online": v.online, "age_s": None if v.age_s is None else round(v.age_s, 2),
                "state": s.state if s else None, "soc": s.soc if s else None, "p_w": s.p_w if s else None,
                "setpoint_w": s.setpoint_w if s else None,
                "limits": {"charge_w": s.charge_w, "discharge_w": s.discharge_w} if s else None,
                "island": s.island if s else None, "q_var": s.q_var if s else None,
                "reserve": {} if heard is None else heard.reserve.get(v.node_id, {}),
            })
        actual = sum(m["p_w"] for m in members if m["online"] and m["p_w"] is not None)
        return {
            "node_id": self.me, "role": self.role, "leader": self.consensus.leader_id, "term": self.consensus.term,
            "has_lease": self.consensus.has_lease(), "mode": state.mode, "mode_params": state.mode_params,
            "mode_running": None if heard is None else heard.mode, "mode_note": None if heard is None else heard.note,
            "grid_forming": None if heard is None else heard.grid_forming, "backup": self.runner.backup,
            "services": state.services or {},
            "request_w": state.target_w, "target_w": None if heard is None else heard.target_w,
            "version": state.version, "actual_w": round(actual, 1),
            "unplaced_w": None if heard is None else heard.unplaced_w,
            "dispatch": None if heard is None else {"leader": heard.leader, "term": heard.term, "seq": heard.seq},
            "ignored_dispatches": dict(self.fence.ignored), "data_plane": self.plane.stats(),
            "members": members,
        }


def _node_view(v) -> NodeView:
    s = v.status
    if s is None or s.soc is None:
        return NodeView(v.node_id, False, "unknown" if s is None else s.state, 0.0, 1.0, 0.0, 0.0)
    return NodeView(v.node_id, v.online, s.state, s.soc, max(s.usable_wh, 1.0), s.charge_w, s.discharge_w,
                    s.p_w or 0.0, s.q_max_var)
