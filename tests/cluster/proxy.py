"""A TCP relay on loopback that a test can cut and heal: one per directed link (src -> dst) makes a
real network partition between processes (tests/cluster/test_consensus.py, test_site_partition.py)."""
from __future__ import annotations

import socket
import threading


class Proxy:
    """A TCP relay 127.0.0.1:port -> 127.0.0.1:target that the test can cut and heal.
    Cut: every relayed connection is closed and new ones are accepted and closed at once."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.lsock.settimeout(0.05)
        self.port = self.lsock.getsockname()[1]
        self._cut = False
        self._closed = False
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._start(self._accept_loop)

    def _start(self, target, *args):
        t = threading.Thread(target=target, args=args, daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()]
        self._threads.append(t)
        t.start()

    def _accept_loop(self):
        while not self._closed:
            try:
                client, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self._cut or self._closed:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=1.0)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._socks |= {client, upstream}
            self._start(self._pump, client, upstream)
            self._start(self._pump, upstream, client)

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self):
        self._cut = True
        with self._lock:
            socks, self._socks = self._socks, set()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def heal(self):
        self._cut = False

    def close(self):
        self._closed = True
        self.cut()
        self.lsock.close()
        for t in self._threads:
            t.join(1.0)
