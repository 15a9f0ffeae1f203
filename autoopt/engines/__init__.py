"""Runtimes behind one contract (see `base.Engine`), registered by name in `registry`."""
