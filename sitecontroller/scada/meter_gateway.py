"""The meter gateway: the site meter re-served read-only in the Carlo Gavazzi EM24 layout.

Devices that already read an EM24 (a second inverter, an EV charger's load balancing) can
read the site's grid meter through the node: same port as the SCADA map, unit id
`scada.meter_unit_id`, the registers of `drivers/meter/profiles/em24.toml` (W sys at 0x0028,
INT32 least significant word first, 0.1 W, + = import; V, A, W per phase; Hz at 0x0033).

Values come from the node's latest frozen process image (`node.image.meter`), refreshed with
the SCADA map. While the node has no fresh meter reading every read is answered with
exception 0x0B (gateway target failed to respond), never with old numbers; quantities the
node's meter does not measure (line-to-line voltages) read 0. Every register is read-only.
"""
from __future__ import annotations

from pymodbus.constants import ExcCodes

from ..drivers.modbus import load_profile
from ..sim.modbus_server import ProfileServer


def meter_values(reading) -> dict:
    """The EM24 profile's quantities from a MeterReading (None: no fresh reading -> {})."""
    if reading is None:
        return {}
    out = {"p_w": reading.p_w, "phase_p_w": reading.phase_p_w, "phase_v": reading.phase_v,
           "phase_a": tuple(abs(a) for a in reading.phase_a)}
    if reading.freq_hz is not None:
        out["freq_hz"] = reading.freq_hz
    return out


class MeterGateway(ProfileServer):
    def __init__(self, *, unit_id: int, source):
        super().__init__(load_profile("em24", kind="meter"), port=0, unit_id=unit_id, source=source)

    async def _action(self, fc, start_address, address, count, registers, set_values):
        if not self.source():
            return ExcCodes.GATEWAY_NO_RESPONSE
        return await super()._action(fc, start_address, address, count, registers, set_values)
