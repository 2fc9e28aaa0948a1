"""Shared base for every parameter model: unknown keys are errors, never ignored."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A typo in a parameter file must never silently fall back to a default."""

    # allow_inf_nan=False: NaN and Infinity (which Python's JSON parser accepts) are never a valid parameter.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)
