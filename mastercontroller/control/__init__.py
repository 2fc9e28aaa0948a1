"""Cluster operating modes: one module each (see ``base.py`` for what a mode is).

``MODES`` maps a mode's name to its module; ``parse_params`` is the one validation of a
mode's parameters, used when a mode change is proposed (the command edge) and again when
the leader enters the mode.
"""
from __future__ import annotations

from sitecontroller.schema_base import parse_named

from . import (charge_only, cost_saving, external_control, grid_forming, load_matching, local, passive,
               self_consumption)

MODES = {m.NAME: m for m in (self_consumption, load_matching, external_control, cost_saving, charge_only,
                             grid_forming, local, passive)}


def parse_params(mode: str, raw: dict):
    """The mode's validated parameters, or ValueError naming the mode, the field and the allowed range."""
    return parse_named("mode", mode, {name: m.Params for name, m in MODES.items()}, raw)
