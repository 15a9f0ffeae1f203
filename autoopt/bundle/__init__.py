"""The deployment bundle, one concept in one package: its file layout (`layout`), manifest and hashes
(`manifest`), writing (`write`), loading without the search machinery (`load`) and verifying
(`verify`, `python -m autoopt.bundle verify DIR`).

`from autoopt.bundle import load_bundle` imports the loader on first use, so that `layout` and
`manifest` stay importable with the standard library alone.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LoadedBundle", "load_bundle"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from autoopt.bundle import load

        return getattr(load, name)
    raise AttributeError(f"module 'autoopt.bundle' has no attribute {name!r}")
