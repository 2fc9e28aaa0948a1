"""Pure control decisions (DESIGN §2.1): protection, setpoint sources and the arbiter,
the follow check, and `decide`. Nothing here does I/O or reads a clock."""
from .arbiter import CONTROL_MODES, Choice, arbitrate
from .decide import ControlInput, Decision, Response, decide, limits_for, q_headroom_var
from .follow import FollowMonitor
from .protection import protection
from .sources import SOURCE_NAMES, SetpointInbox, SetpointReading, SetpointSources

__all__ = [
    "CONTROL_MODES", "Choice", "ControlInput", "Decision", "FollowMonitor", "Response", "SOURCE_NAMES",
    "SetpointInbox", "SetpointReading", "SetpointSources", "arbitrate", "decide", "limits_for", "protection",
    "q_headroom_var",
]
