"""The node's local control endpoint: status and commands over ZeroMQ (JSON).

Requests: {"op": "status"}, {"op": "cluster_status"} (a cluster member) or
{"op": "command", "command": {...}, "wait_s": 2}.
Replies: {"ok": true, "status": {...}} or {"ok": true, "ack": {...}}, or
{"ok": false, "error": "..."}. A command reply carries its final
acknowledgement as soon as the node has carried it out; if that takes longer
than `wait_s`, the reply carries the current acknowledgement (`accepted`) with
a detail saying so.

The endpoint listens on loopback by default (site parameters: control.endpoint).
"""
from __future__ import annotations

from typing import Any

from .json_endpoint import JsonEndpoint, ask


class ControlServer(JsonEndpoint):
    what = "control endpoint"
    listen_hint = " (is another node running?)"

    def __init__(self, endpoint: str, node):
        super().__init__(endpoint)
        self.node = node

    async def handle(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            return {"ok": False, "error": "request must be a JSON object"}
        op = request.get("op")
        if op == "status":
            return {"ok": True, "status": self.node.status()}
        if op == "command":
            wait_s = request.get("wait_s", 2.0)
            if isinstance(wait_s, bool) or not isinstance(wait_s, (int, float)) or not 0 <= wait_s <= 10:
                return {"ok": False, "error": f"wait_s: found {wait_s!r}; allowed: a number of seconds 0..10"}
            commands = self.node.commands
            ack = commands.submit(request.get("command"))
            if not ack.final and wait_s > 0:
                ack = await commands.wait_final(ack.id, wait_s)  # woken by the executor's finish()
            return {"ok": True, "ack": ack.to_dict()}
        if op == "cluster_status":
            if self.node.cluster is None:
                return {"ok": False, "error": "this node runs no cluster service"}
            return {"ok": True, "cluster": self.node.cluster.cluster_status()}
        return {"ok": False, "error": f"unknown op {op!r}; allowed: status, command, cluster_status"}


class NodeUnreachable(Exception):
    pass


def request(endpoint: str, payload: dict[str, Any], timeout_s: float = 2.0) -> dict[str, Any]:
    """Send one request to a node and return its reply (blocking, for the CLI)."""
    return ask(endpoint, payload, timeout_s, NodeUnreachable,
               "node at {endpoint} did not answer within {timeout_s:g} s (is it running?)")
