"""Geometry: per-layer statistics of the MoE combination step, the recorder, the probes."""
