"""autoopt: search the inference configurations of a causal LM for the fastest, cheapest one that
still meets an accuracy bar on a given target, and export it as a deployable bundle."""

__version__ = "0.1.0"
