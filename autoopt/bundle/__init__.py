"""Tools for an exported deployment bundle: `python -m autoopt.bundle verify DIR`."""

from __future__ import annotations

from autoopt.bundle.verify import Check, Verification, default_tolerances, verify_bundle

__all__ = ["Check", "Verification", "default_tolerances", "verify_bundle"]
