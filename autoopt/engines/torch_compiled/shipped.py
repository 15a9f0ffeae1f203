"""A torch_compiled bundle ships its compiled graphs, so that a deployment's first load reads them instead of
compiling (the decode step takes seconds to minutes to compile, most of its cold start beyond loading weights).

At export, `ship_compiled_graphs` loads the bundle's model folder in a fresh process over an empty inductor
cache and keeps that cache, which then holds exactly the graphs a load compiles, as `model/inductor_cache/`.
Before a bundle's load (`autoopt.bundle.load_bundle`), `install_shipped_graphs` copies those files into the
inductor cache the process uses, and only if each matches the SHA-256 the bundle's manifest lists for it:
inductor unpickles its cache entries and loads their native code, so they are code, and a changed file leaves
the load to compile instead. The bundle itself is never written to. inductor keys each entry by the graph,
torch's version, the device and the compiler, so on a machine where any of them differ the entries are not
found and the load compiles as it would without them; `TorchCompiledEngine.compile_cache` says which happened.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from autoopt.digest import sha256_file
from autoopt.engines.torch_compiled import INDUCTOR_CACHE_ENV

log = logging.getLogger("autoopt.engines")

SHIPPED_DIR = "inductor_cache"
_NOT_SHIPPED = ("locks",)  # inductor's lock files: per process, not cache entries


def ship_compiled_graphs(folder: Path, timeout_s: float = 1800) -> int:
    """Compile `folder` (a bundle's model folder with its runtime JSON written) in a fresh process over an empty
    inductor cache and keep that cache in `folder/inductor_cache`. Returns the number of files kept."""
    folder = Path(folder)
    with tempfile.TemporaryDirectory(prefix="autoopt_inductor_") as cache:
        env = {**os.environ, INDUCTOR_CACHE_ENV: cache}
        cmd = [sys.executable, "-m", "autoopt.engines.torch_compiled.shipped", str(folder)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"compiling the bundle's graphs in a fresh process failed: {last}")
        shutil.copytree(cache, folder / SHIPPED_DIR, ignore=shutil.ignore_patterns(*_NOT_SHIPPED))
    return sum(1 for p in (folder / SHIPPED_DIR).rglob("*") if p.is_file())


def install_shipped_graphs(folder: Path, recorded: Mapping[str, str]) -> int:
    """Copy the graphs shipped in `folder` (if any) into the inductor cache this process uses, skipping entries
    already there (entries are named by their content's key). `recorded` maps paths relative to `folder` to
    their SHA-256 as the manifest lists them: if a shipped file is not listed with its hash, or a listed one is
    missing, nothing is copied (logged). Returns the number of files copied."""
    shipped = Path(folder) / SHIPPED_DIR
    listed = {rel for rel in recorded if rel.startswith(f"{SHIPPED_DIR}/")}
    files = {f"{SHIPPED_DIR}/{p.relative_to(shipped).as_posix()}": p for p in shipped.rglob("*") if p.is_file()}
    if not files and not listed:
        return 0
    changed = sorted(rel for rel, path in files.items() if recorded.get(rel) != sha256_file(path))
    if changed or listed - files.keys():
        log.warning("torch_compiled: the bundle's compiled graphs do not match its manifest (%s); compiling instead",
                    (changed or sorted(listed - files.keys()))[0])
        return 0
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    target = Path(cache_dir())
    copied = 0
    for rel, source in sorted(files.items()):
        destination = target / Path(rel).relative_to(SHIPPED_DIR)
        if destination.exists():
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(f".{destination.name}.{os.getpid()}.partial")
        shutil.copy2(source, partial)
        os.replace(partial, destination)  # a concurrent reader sees the whole file or none
        copied += 1
    log.info("torch_compiled: %d of the bundle's %d compiled-graph files copied into %s", copied, len(files), target)
    return copied


def _compile(folder: Path) -> None:
    from autoopt.engines.torch_compiled.engine import TorchCompiledEngine, load_settings

    candidate, runtime = load_settings(folder)
    TorchCompiledEngine.load(folder, candidate, runtime).close()


if __name__ == "__main__":
    _compile(Path(sys.argv[1]))
