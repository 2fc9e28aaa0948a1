"""The cluster data plane on real loopback sockets: status and dispatch reach the members,
CurveZMQ keeps strangers out, invalid and spoofed messages are dropped and counted; and the
pure parts it feeds (membership, the term fence)."""
import asyncio
import random

import pytest
import zmq

from mastercontroller.dataplane import DataPlane, Peer
from mastercontroller.fence import TermFence
from mastercontroller.membership import Membership
from mastercontroller.messages import DispatchMessage, StatusMessage, decode
from tests.util import async_wait_until, free_tcp_port


def status(node_id, **kw):
    return StatusMessage(node_id=node_id, state="run", soc=0.5, usable_wh=10_000, **kw)


def dispatch(term, seq, **setpoints):
    return DispatchMessage(leader="a", term=term, seq=seq, valid_s=0.3, target_w=sum(setpoints.values()),
                           setpoints=setpoints)


def planes(ids, keys=None, stranger=None):
    keys = keys or {i: zmq.curve_keypair() for i in ids}
    peers = [Peer(i, f"127.0.0.1:{free_tcp_port()}", keys[i][0].decode()) for i in ids]
    got = {i: [] for i in ids}
    out = []
    for p in peers:
        public, secret = keys[p.node_id]
        bind = p.data
        if stranger == p.node_id:  # a process with its own key pair at a member's address list
            public, secret = zmq.curve_keypair()
            bind = f"127.0.0.1:{free_tcp_port()}"
        out.append(DataPlane(p.node_id, bind, peers, public_key=public.decode(), secret_key=secret.decode(),
                             on_status=got[p.node_id].append, on_dispatch=got[p.node_id].append))
    return out, got


async def test_status_and_dispatch_reach_every_other_member():
    (a, b, c), got = planes(["a", "b", "c"])
    try:
        for plane in (a, b, c):
            await plane.start()

        def heard_all():
            for plane in (a, b, c):
                plane.publish(status(plane.self_id))
            return all({m.node_id for m in got[i] if isinstance(m, StatusMessage)} == {"a", "b", "c"} - {i}
                       for i in "abc")
        await async_wait_until(heard_all, 5, what="every member hears every other")
        a.publish(dispatch(3, 1, a=100.0, b=200.0, c=300.0))
        await async_wait_until(lambda: all(any(isinstance(m, DispatchMessage) for m in got[i]) for i in "bc"),
                               5, what="dispatch at b and c")
    finally:
        for plane in (a, b, c):
            await plane.close()


async def test_a_stranger_key_is_refused_and_hears_nothing(caplog):
    (a, b), got = planes(["a", "b"], stranger="b")  # b holds a key that is not in the member list
    try:
        await a.start()
        await b.start()
        await async_wait_until(lambda: a.stats()["refused_keys"] > 0, 5, what="a refuses b's key")
        loop = asyncio.get_running_loop()
        end = loop.time() + 0.5
        while loop.time() < end:  # "never": every sample of the window
            a.publish(status("a"))
            b.publish(status("b"))
            assert got["a"] == [] and got["b"] == []
            await asyncio.sleep(0.02)
        assert caplog.text.count("not a cluster member") == 1  # logged once per key
    finally:
        await a.close()
        await b.close()


def test_invalid_messages_do_not_decode():
    for topic, payload in ((b"status", b"{"), (b"status", b'{"node_id": "a"}'), (b"nope", b"{}"),
                           (b"dispatch", b'{"leader": "a", "term": -1, "seq": 0, "valid_s": 1, "target_w": 0, '
                                         b'"setpoints": {}}'),
                           (b"status", b'{"node_id": "a", "state": "run", "usable_wh": NaN}')):
        try:
            decode(topic, payload)
        except ValueError:
            continue
        raise AssertionError(f"decoded {payload!r}")


def test_the_fence_ignores_older_terms_and_repeats():
    fence = TermFence("b")
    assert fence.admit(dispatch(2, 5, b=100.0)) == 100.0
    assert fence.admit(dispatch(2, 5, b=999.0)) is None  # repeated
    assert fence.admit(dispatch(2, 4, b=999.0)) is None  # reordered
    assert fence.admit(dispatch(3, 1, b=200.0)) == 200.0  # a new leader starts its own sequence
    assert fence.admit(dispatch(2, 9, b=999.0)) is None  # the deposed leader, late
    assert fence.admit(dispatch(3, 2, a=1.0)) is None  # nothing for b
    fence.observe_term(5)
    assert fence.admit(dispatch(4, 1, b=999.0)) is None
    assert fence.ignored == {"not newer": 2, "older term": 2, "not for this node": 1}


def test_membership_marks_silent_members_offline():
    m = Membership(["a", "b", "c"], stale_s=1.0)
    m.update(status("a"), now=10.0)
    m.update(status("b"), now=10.5)
    m.update(status("x"), now=10.5)
    views = {v.node_id: v for v in m.image(now=11.2)}
    assert (views["a"].online, views["b"].online, views["c"].online) == (False, True, False)
    assert views["c"].age_s is None and m.ignored["not a member"] == 1


def test_importing_the_cluster_leaves_the_socket_module_intact():
    import socket

    import mastercontroller.consensus  # noqa: F401  (pysyncobj patches socket.inet_ntop on import)
    assert socket.inet_ntop(socket.AF_INET, bytes([127, 0, 0, 1])) == "127.0.0.1"


@pytest.mark.parametrize("seed", range(20))
def test_the_fence_never_executes_an_older_term_or_a_repeat_over_random_deliveries(seed):
    """Leaders of rising terms, each sending a rising sequence; the network delays, repeats and
    reorders them, and the node learns terms from Raft too: whatever arrives, the executed
    (term, seq) rise strictly and never fall below a term the node has seen."""
    rng = random.Random(seed)
    sent = [dispatch(term, seq, b=float(term * 1000 + seq)) for term in range(1, 6) for seq in range(1, 30)]
    arrivals = sorted(sent + rng.sample(sent, 40), key=lambda m: (m.term + rng.uniform(-1.5, 0.5), m.seq))
    fence, executed, seen = TermFence("b"), [], 0
    for msg in arrivals:
        if rng.random() < 0.05:
            raft_term = rng.randint(0, 6)
            fence.observe_term(raft_term)
            seen = max(seen, raft_term)
        if fence.admit(msg) is not None:
            assert msg.term >= seen, (msg, seen)
            assert not executed or (msg.term, msg.seq) > executed[-1], (msg, executed[-1])
            executed.append((msg.term, msg.seq))
            seen = max(seen, msg.term)
    assert executed  # the property was exercised
