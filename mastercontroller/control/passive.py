"""``passive``: 0 W, monitoring only. The cluster keeps reporting; no node exchanges power."""
from __future__ import annotations

from .base import ClusterImage, ModeParams, ModeResult

NAME = "passive"


class Params(ModeParams):
    pass


def start(image: ClusterImage, params: Params) -> None:
    return None


def step(image: ClusterImage, params: Params, memory: None) -> ModeResult:
    return ModeResult(0.0, None, "passive: 0 W, monitoring only")
