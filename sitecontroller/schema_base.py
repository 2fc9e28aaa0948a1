"""Shared base for every parameter model (unknown keys are errors, never ignored), the field
patterns, and the cluster member, which parameters and commands (`cluster_add_member`) share."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class Strict(BaseModel):
    """A typo in a parameter file must never silently fall back to a default."""

    # allow_inf_nan=False: NaN and Infinity (which Python's JSON parser accepts) are never a valid parameter.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


HOST_PORT = r"^[A-Za-z0-9.-]+:[0-9]{1,5}$"
Z85_KEY = r"^[0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$"


class ClusterMember(Strict):
    node_id: str = Field(..., pattern=ID_PATTERN)
    raft: str = Field(..., pattern=HOST_PORT, description="host:port of its Raft (consensus) socket")
    data: str = Field(..., pattern=HOST_PORT, description="host:port of its status/dispatch publisher")
    public_key: str = Field(..., pattern=Z85_KEY, description="its CurveZMQ public key (`sitecontroller cluster keygen`)")
