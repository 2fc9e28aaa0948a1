"""pymodbus's Modbus TCP server classes, imported without aiohttp (about 9 MB RSS less).

`pymodbus.server`'s `__init__` imports pymodbus's HTTP simulator (`pymodbus.server.simulator.http_server`),
which imports `aiohttp.web` if it can: pymodbus treats aiohttp as optional and suppresses the ImportError.
Nothing here runs that HTTP simulator, but importing aiohttp (with yarl, multidict, attrs, its C parsers,
`http.cookies`, ...) for nothing made a node serving Modbus (the simulated devices, the SCADA server) about
9 MB larger. So `pymodbus.server` is first imported as if aiohttp were not installed, the case pymodbus
supports; `aiohttp` itself stays importable afterwards (the HomeWizard and Indevolt code use it). If aiohttp
is already loaded when this runs, the import is the plain one and nothing changes. The only difference:
`pymodbus.server.ModbusSimulatorServer` (pymodbus's web simulator, not used) cannot start in such a process.
"""
from __future__ import annotations

import sys

if "pymodbus.server" not in sys.modules and "aiohttp" not in sys.modules:
    sys.modules["aiohttp"] = None  # type: ignore[assignment]  (`import aiohttp` -> ImportError, suppressed)
    try:
        import pymodbus.server  # noqa: F401
    finally:
        if "aiohttp" in sys.modules and sys.modules["aiohttp"] is None:
            del sys.modules["aiohttp"]

from pymodbus.server import ModbusTcpServer  # noqa: E402
from pymodbus.server.requesthandler import ServerRequestHandler  # noqa: E402

__all__ = ["ModbusTcpServer", "ServerRequestHandler"]
