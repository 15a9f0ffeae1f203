"""Run an exported deployment bundle: `load_bundle(DIR).generate_text(prompt)`, or
`python -m autoopt.serve DIR --prompt TEXT`. Imports none of the search machinery."""

from __future__ import annotations

from autoopt.serve.bundle import LoadedBundle, load_bundle

__all__ = ["LoadedBundle", "load_bundle"]
