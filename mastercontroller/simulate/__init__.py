"""Deterministic day simulation of the cluster."""
