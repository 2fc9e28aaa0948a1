"""Deterministic day simulation of the cluster.

``sitecontroller simulate --scenario NAME --out DIR`` runs a scenario (``scenario.py``, packaged
ones in ``scenarios/``) through ``engine.py``: the nodes' own decisions (``decide`` with its
limiter), the leader's mode runner and dispatch, against the plant physics, on virtual time,
seeded. ``metrics.py`` turns the recorded arrays into ``metrics.json`` (with the battery-limited
clairvoyant ideal of ``ideal.py`` as the yardstick), ``plots.py`` into PNGs; ``cli.py`` is the
command line and ``bench/day.py`` runs every scenario and prints the figures.
"""
