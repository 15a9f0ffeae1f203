"""The deployment bundle. Deployed bundles import this package: keep it free of heavy imports."""

from __future__ import annotations

from autoopt.export.manifest import check_hashes, hash_tree, read_manifest, sha256_file, write_manifest

__all__ = ["check_hashes", "hash_tree", "read_manifest", "sha256_file", "write_manifest"]
