"""Who may connect: the members' CurveZMQ public keys, for the Raft transport's ZAP handler
(transport.py) and the data plane's authenticator (dataplane.py) alike.

A key that is not a member's is refused at the socket: counted per key, and logged once
per key (a stranger retrying every 100 ms must not flood the log).
"""
from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger("mastercontroller")


class AllowedKeys:
    def __init__(self, what: str, keys: dict[str, str] | None = None):
        """`what`: who refuses, for the log; `keys`: z85 public key -> node id."""
        self.what = what
        self._keys: dict[str, str] = dict(keys or {})
        self.refused: Counter[str] = Counter()  # refused key (or mechanism) -> attempts
        self.first_address: dict[str, str] = {}  # refused key -> the address it first came from

    def allow(self, key: str, node_id: str) -> None:
        self._keys[key] = node_id

    def disallow(self, key: str, node_id: str) -> None:
        """Forget `key` if it is still `node_id`'s (another member may have taken it over)."""
        if self._keys.get(key) == node_id:
            del self._keys[key]

    def node_of(self, key: str) -> str | None:
        return self._keys.get(key)

    def refuse(self, who: str, address: str = "") -> None:
        if not self.refused[who]:
            self.first_address[who] = address
            log.warning("%s: refused peer with unknown key %s%s (not a cluster member; further attempts with "
                        "this key are counted, not logged)", self.what, who, f" from {address}" if address else "")
        self.refused[who] += 1

    def callback(self, domain: str, key: bytes) -> bool:
        """pyzmq's CURVE credentials provider."""
        text = key.decode(errors="replace")
        if text in self._keys:
            return True
        self.refuse(text)
        return False
