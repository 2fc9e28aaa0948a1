"""mastercontroller: the cluster (consensus, data plane, dispatch); runs on every node.

pysyncobj 0.3.17 replaces `socket.inet_ntop` with a Windows-only version on every OS
(pysyncobj/win_inet_pton.py, last line), which breaks anything else in the process that
formats an IPv4/IPv6 address (psutil's socket listing, for one). Import it once here and
put the real function back.
"""
import socket as _socket

_inet_ntop = _socket.inet_ntop
import pysyncobj.win_inet_pton  # noqa: E402,F401  (the import that does the damage)

_socket.inet_ntop = _inet_ntop
