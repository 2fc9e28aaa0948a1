"""SCADA: a Modbus TCP server on every node (issue 11, DESIGN §6).

- `registers.toml`: the register map as data (SunSpec 1/103/123/124/802/704 + vendor 64900),
  from which the server, `REGISTERS.md` (`python -m sitecontroller.scada.docs`) and the tests come;
- `values.py`: the status snapshot -> the served quantities (pure);
- `server.py`: the pymodbus server, client allow-list; `control.py`: guarded writes -> Commands /
  setpoint source, heartbeat and fallback; `meter_gateway.py`: the site meter as an EM24;
- `service.py`: the runtime service (`scada.enabled`); `config.py`: the `scada` parameters.
"""
