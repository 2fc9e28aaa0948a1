"""CAN BMS drivers: python-can + cantools, one DBC per protocol in the package's dbc/ folder.

`make_bms(config, clock)` builds the driver a `devices.bms` section asks for
(the CAN models `bess_sim` and `pylontech`; `inproc` is built by the driver
factory). `ISSUE_CODES` lists the issues these drivers report, for the node's
error registry: code -> (severity, description).

Faults and alarms the BMS itself reports (cell over-voltage...) are not issues:
they travel in `BmsReading.faults` / `.alarms` as names (see profiles.py) and
the node decides what they mean.
"""
from __future__ import annotations

from ..base import BmsDriver
from .config import BmsConfig

CAN_MODELS = ("bess_sim", "pylontech")

ISSUE_CODES: dict[str, tuple[str, str]] = {
    "BMS_TIMEOUT": (
        "error",
        "No BMS rack is online: no complete, fresh set of frames within timeout_s (or every alive counter is "
        "stuck). The node has no battery data and must hold 0 W. Check the BMS power, CAN wiring, termination "
        "and bitrate.",
    ),
    "BMS_RACK_TIMEOUT": (
        "error",
        "One or more configured racks sent no complete set of frames within timeout_s. Their share of the "
        "current limits is 0 (the node's limits count only online racks); their last known SOC still bounds the "
        "SOC window (the rack may still be connected); where the protocol addresses racks (bess_sim) their "
        "contactors are commanded open, Pylontech cannot isolate a rack. Check that rack's BMS and its CAN "
        "connection.",
    ),
    "BMS_ALIVE_STUCK": (
        "error",
        "A rack keeps sending frames but its alive counter has not moved for alive_timeout_s: its BMS "
        "application hangs, its data is not used (as for a silent rack: no share of the limits, isolated where "
        "the protocol allows).",
    ),
    "BMS_VALUE_OUT_OF_RANGE": (
        "critical",
        "The BMS sends a value outside the range its DBC declares (e.g. an SOC above 100 %, a negative current "
        "limit). The value is used as sent, never clamped or dropped, so the node's protection sees it; the BMS "
        "data cannot be trusted until it stops. Check the BMS and that the configured model/DBC matches it.",
    ),
    "BMS_BUS_ERROR": (
        "warning",  # a lasting bus failure makes the BMS data stale: BMS_STALE is the critical error
        "The CAN bus cannot be opened, reports bus-off/error frames, or a send failed; the driver reopens the "
        "bus. Check the interface (ip link), wiring, termination and bitrate.",
    ),
    "BMS_DECODE_ERRORS": (
        "warning",
        "Frames with a known BMS id could not be decoded (too short); they are counted and dropped. Check that "
        "the configured model/DBC matches the BMS.",
    ),
    "BMS_CELL_DATA_DERIVED": (
        "warning",
        "The BMS does not send cell voltages/temperatures (e.g. Pylontech without the 0x373 extension): they "
        "are derived from the pack voltage and temperature, so cell imbalance is invisible.",
    ),
    "BMS_CMD_UNSUPPORTED": (
        "warning",
        "The node asks for a contactor or sleep state that this BMS protocol cannot command.",
    ),
    "BMS_CMD_NOT_APPLIED": (
        "error",
        "The BMS does not report the commanded contactor/balancing/sleep state back within the timeout "
        "(it refuses, e.g. because of a fault, or does not receive the command).",
    ),
}


def make_bms(config: BmsConfig, clock) -> BmsDriver:
    """The driver for a CAN `config.model` (not started: call `await bms.start()`)."""
    if config.model in CAN_MODELS:
        from .can_bms import CanBmsDriver

        return CanBmsDriver(config, clock)
    raise ValueError(f"BMS model {config.model!r} has no CAN driver; CAN models: {', '.join(CAN_MODELS)}")


__all__ = ["CAN_MODELS", "ISSUE_CODES", "BmsConfig", "make_bms"]
from ...errors import register_codes; register_codes(ISSUE_CODES)  # noqa: E402,E702  (the core keeps one catalog)
