"""What nodes say to each other on the cluster data plane (DESIGN §5), as validated JSON.

Two messages, each on its own ZeroMQ topic:

- `status`   every node, every cycle: its state, SOC, usable energy, limits, power,
  errors and local frequency; the leader builds the cluster process image from them.
- `dispatch` the leader, every cycle: one setpoint per node, fenced by the Raft term
  and a sequence number, valid for `valid_s` from the moment a node receives it.

Raft's own messages are pickled by pysyncobj and travel on the consensus transport;
nothing here is pickled. A message that does not validate is dropped and counted by
the receiver: a peer may be a newer or a broken version, never a reason to crash.
"""
from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, ValidationError

STATUS, DISPATCH = b"status", b"dispatch"


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    def encode(self) -> bytes:
        return self.model_dump_json().encode()


class StatusMessage(_Message):
    node_id: str
    state: str
    soc: float | None = Field(None, ge=0, le=1)
    usable_wh: float = Field(..., ge=0)  # capacity × SOH
    charge_w: float = Field(0.0, ge=0)  # the node's charge limit now
    discharge_w: float = Field(0.0, ge=0)
    p_w: float | None = None  # actual inverter power, positive = discharge
    q_var: float | None = None  # actual reactive power, positive = delivered
    q_max_var: float = Field(0.0, ge=0)  # reactive power it can give now, either sign (0: cannot be told)
    setpoint_w: float = 0.0
    freq_hz: float | None = None
    grid_w: float | None = None  # this node's site meter reading, + = import (None: no fresh reading)
    grid_t: float | None = None  # when that reading arrived, this node's monotonic s: one value per sample
    grid_v: float | None = None  # mean phase voltage at the meter
    island: bool | None = None  # this node's inverter reports the grid lost (None: it does not say)
    errors: tuple[str, ...] = ()  # listed error ids
    term_seen: int = Field(0, ge=0)  # the highest dispatch term this node has seen


class DispatchMessage(_Message):
    leader: str
    term: int = Field(..., ge=0)
    seq: int = Field(..., ge=0)
    valid_s: float = Field(..., gt=0, le=60)
    target_w: float
    unplaced_w: float = 0.0
    setpoints: dict[str, float]
    q_setpoints: dict[str, float] = {}  # reactive power, var, for the nodes that get some
    reserve: dict[str, dict[str, float]] = {}  # grid services: node -> service -> allocated W
    reserve_params: dict[str, dict] = {}  # service -> its parameters
    reserve_valid_s: float = Field(300.0, gt=0, le=3600)  # a node keeps its allocation this long
    decided_wall: float = 0.0  # the leader's wall clock when it decided (a node measures the setpoint's age)
    mode: str = ""  # the mode that decided (``grid_forming`` while islanded) and why, for status
    note: str = Field("", max_length=300)
    grid_forming: bool = False  # the leader runs the cluster as an island (the grid is lost), for status


def decode(topic: bytes, payload: bytes) -> StatusMessage | DispatchMessage:
    """The message of a topic; ValueError with the reason when it does not validate."""
    model = {STATUS: StatusMessage, DISPATCH: DispatchMessage}.get(topic)
    if model is None:
        raise ValueError(f"unknown topic {topic[:20]!r}")
    try:
        return model.model_validate(json.loads(payload))
    except (ValidationError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"invalid {topic.decode(errors='replace')} message: {exc}") from None
