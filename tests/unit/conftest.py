import json
from pathlib import Path

import pytest

from sitecontroller import params as params_mod

EXAMPLE = Path(__file__).resolve().parents[2] / "site_parameters" / "sim_node1_inproc.json"


@pytest.fixture
def make_params(tmp_path):
    """The example simulated node's parameters, with data in tmp_path and optional overrides."""

    def make(**sections):
        data = json.loads(EXAMPLE.read_text())
        data["storage"] = {"data_dir": str(tmp_path / "{node_id}")}
        for section, values in sections.items():
            data.setdefault(section, {}).update(values)
        return params_mod.parse(data)

    return make
