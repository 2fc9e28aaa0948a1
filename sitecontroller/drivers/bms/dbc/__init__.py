"""The DBC files of the supported CAN BMS protocols (package data, read with importlib.resources)."""
