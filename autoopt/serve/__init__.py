"""Serving an exported bundle: `python -m autoopt.serve DIR` (see `__main__`). Loading a bundle is
`autoopt.bundle.load_bundle`; the batching and priority scheduling live in `autoopt.serving`."""
