"""Adding and removing members: what is refused before anything reaches the Raft log, with
one clear line (the command, the consensus, the command line). The end-to-end change with
real processes is tests/cluster/test_site_membership.py."""
import json
import subprocess
import sys

import pytest

from mastercontroller import keys
from mastercontroller.consensus import ClusterConsensus, Member
from sitecontroller.commands import parse_command
from tests.util import REPO, free_tcp_port, wait_until

CLI = [sys.executable, "-m", "sitecontroller.cli"]


def test_membership_commands_are_validated_field_by_field(tmp_path):
    key = keys.generate(tmp_path / "k")
    good = {"node_id": "node4", "raft": "127.0.0.1:15065", "data": "127.0.0.1:15066", "public_key": key}
    cmd = parse_command({"type": "cluster_add_member", "member": good})
    assert cmd.scope == "cluster" and cmd.member.node_id == "node4"
    for field, bad in (("raft", "nowhere"), ("data", "127.0.0.1"), ("public_key", "short"), ("node_id", "-x")):
        with pytest.raises(ValueError, match=f"member.{field}"):
            parse_command({"type": "cluster_add_member", "member": {**good, field: bad}})
    with pytest.raises(ValueError, match="member.extra"):
        parse_command({"type": "cluster_add_member", "member": {**good, "extra": 1}})
    assert parse_command({"type": "cluster_remove_member", "node_id": "node4"}).scope == "cluster"
    with pytest.raises(ValueError, match="node_id"):
        parse_command({"type": "cluster_remove_member", "node_id": ""})


def test_a_cluster_of_one_refuses_a_duplicate_member_address_or_key_and_itself(tmp_path):
    pub = keys.generate(tmp_path / "a")
    pub, sec = keys.load(tmp_path / "a")
    other = keys.generate(tmp_path / "b")
    me = Member("a", f"127.0.0.1:{free_tcp_port()}", pub, f"127.0.0.1:{free_tcp_port()}")
    with ClusterConsensus("a", [me], tmp_path / "d", secret_key=sec, public_key=pub) as node:
        wait_until(lambda: node.role == "leader", 5, 0.02, "a cluster of one leads itself")
        assert node.members() == [me]
        with pytest.raises(ValueError, match="'a' is already a member"):
            node.add_member(Member("a", f"127.0.0.1:{free_tcp_port()}", other))
        with pytest.raises(ValueError, match=f"address {me.address} is a's"):
            node.add_member(Member("b", me.address, other))
        with pytest.raises(ValueError, match=f"address {me.data} is a's"):
            node.add_member(Member("b", f"127.0.0.1:{free_tcp_port()}", other, me.data))
        with pytest.raises(ValueError, match="public key is a's"):
            node.add_member(Member("b", f"127.0.0.1:{free_tcp_port()}", pub))
        with pytest.raises(ValueError, match="cannot remove itself"):
            node.remove_member("a")
        with pytest.raises(ValueError, match="'zz' is not a member"):
            node.remove_member("zz")
        assert node.members() == [me]


def _cli(*args):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, cwd=REPO, timeout=30)


def test_cluster_add_needs_one_complete_member_and_says_what_is_missing(tmp_path):
    r = _cli("cluster", "add", "--id", "node4", "--raft", "127.0.0.1:1")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == "sitecontroller cluster add: missing --data, --public-key (or give --member-params FILE)"
    r = _cli("cluster", "add", "--id", "node4", "--member-params", str(tmp_path / "x.json"))
    assert r.returncode == 2 and "not both" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"identity": {"node_id": "n"}}))
    r = _cli("cluster", "add", "--member-params", str(bad))
    assert r.returncode == 2 and str(bad) in r.stderr  # the parameter file's own problems, with its path
