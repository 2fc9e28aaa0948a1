"""The Modbus engine shared by inverter and meter drivers (format and API: PROFILES.md).

- `profile`: load and check a TOML profile;
- `layout`: SunSpec layout/address resolution and batched read planning;
- `codec`: registers <-> engineering values (pure);
- `setpoints`: command <-> control point values (pure);
- `client`: asyncio pymodbus client (TCP / RTU) with timeouts and reconnect backoff, one
  connection per physical link shared by every device on it;
- `device`: a profile-driven device (SunSpec discovery, read, write, verify).
"""
from .client import CommError, DeviceError, ModbusClient
from .codec import CodecError, decode_point, encode_point
from .device import DecodeError, ModbusDevice
from .layout import Block, plan_reads, resolve_sunspec, sunspec_layout
from .profile import ControlWrite, Point, Profile, ProfileError, load_profile
from .setpoints import Failsafe, Setpoint, decode_command, encode_command

__all__ = [
    "Block", "CodecError", "CommError", "ControlWrite", "Failsafe", "DecodeError", "DeviceError", "ModbusClient",
    "ModbusDevice", "Point", "Profile", "ProfileError", "Setpoint", "decode_command", "decode_point",
    "encode_command", "encode_point", "load_profile", "plan_reads", "resolve_sunspec", "sunspec_layout",
]
