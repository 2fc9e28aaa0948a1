"""Shared base for every parameter model (unknown keys are errors, never ignored), the field
patterns, and the cluster member, which parameters and commands (`cluster_add_member`) share."""
from __future__ import annotations

from typing import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


def parse_named(kind: str, name: str, models: Mapping[str, type[BaseModel]], raw) -> BaseModel:
    """`raw` validated as the parameters of `name` (a cluster mode, a grid service, ...), or ValueError
    naming it, the field and the rule."""
    if name not in models:
        raise ValueError(f"{kind}: unknown {kind} {name!r}; known: {', '.join(sorted(models))}")
    if not isinstance(raw, dict):
        raise ValueError(f"{name}: parameters must be an object")
    try:
        return models[name].model_validate(raw)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'parameters'}: {e['msg']}" for e in exc.errors()]
        raise ValueError(f"{name}: " + "; ".join(problems)) from None
