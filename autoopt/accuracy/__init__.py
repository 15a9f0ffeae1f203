"""Fidelity of a candidate against the fp32 reference."""
