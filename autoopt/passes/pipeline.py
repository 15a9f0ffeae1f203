"""Run a candidate's passes with a content-addressed cache: a step's output folder is keyed by its
input's key, the pass name, its settings, the versions of the libraries it uses and a hash of the pass's
own code (`source_digest`: its module and the autoopt modules it imports), so the same step is never
built twice, a change to a pass builds anew, and candidates that share a prefix (one export, several
quantizations) share its output."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from autoopt.digest import source_digest, tree_sha256
from autoopt.locks import exclusive_lock, lock_beside
from autoopt.passes.registry import PASSES, PassStep, pass_function
from autoopt.progress import say
from autoopt.result import Built

log = logging.getLogger("autoopt.build")

_META = "autoopt_build.json"


@functools.cache
def distributions_by_module() -> dict[str, list[str]]:
    """Installed distributions by the import package they provide (a scan of every installed one, so once)."""
    return metadata.packages_distributions()


def _library_versions(names: Sequence[str]) -> dict[str, str]:
    """Versions by import name. A GPU build is another distribution of the same package (onnxruntime-gpu,
    onnxruntime-genai-cuda), so the version is looked up through whichever distribution provides it."""
    versions = {}
    for name in names:
        default = name.replace("_", "-")
        found = []
        for distribution in sorted(set(distributions_by_module().get(name, [default]))):
            try:
                version = metadata.version(distribution)
            except metadata.PackageNotFoundError:
                continue
            same = distribution.lower().replace("_", "-") == default
            found.append(version if same else f"{distribution}=={version}")
        versions[name] = ", ".join(found) or "absent"
    return versions


def step_key(parent_key: str, step: PassStep) -> str:
    payload = {
        "parent": parent_key,
        "pass": step.name,
        "settings": step.settings,
        "libraries": _library_versions(PASSES[step.name].libraries),
        "code": source_digest(PASSES[step.name].module),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def run_pipeline(model_dir: Path, model_key: str, steps: Sequence[PassStep], cache_dir: Path) -> Built:
    """Build (or fetch from the cache) the artifact that `steps` make from `model_dir`."""
    src, key = model_dir, model_key
    spent, first_built, all_cached = 0.0, 0.0, True
    for step in steps:
        key = step_key(key, step)
        dst = cache_dir / "builds" / f"{step.name}-{key}"
        say(step.name)
        t0 = time.perf_counter()
        cached = _run_step_cached(step, src, dst)
        spent += time.perf_counter() - t0
        first_built += json.loads((dst / _META).read_text())["seconds"]
        all_cached &= cached
        log.info("build %s %s (%s)", step.name, step.settings or "", "cached" if cached else "built")
        src = dst
    return Built(
        artifact=src,
        sha256=artifact_sha256(src),
        seconds=0.0 if all_cached else spent,
        build_seconds=first_built,
        cached=all_cached,
        steps=[s.name for s in steps],
        key=key,
    )


def artifact_sha256(folder: Path) -> str:
    """What a build made: the hash of its files but the build's own metadata (its wall time, its source path)."""
    return tree_sha256(folder, exclude=(_META,))


def _complete(dst: Path) -> bool:
    """A cache entry is complete when its metadata, written last, parses."""
    try:
        return "seconds" in json.loads((dst / _META).read_text())
    except (OSError, ValueError):
        return False


def _run_step_cached(step: PassStep, src: Path, dst: Path) -> bool:
    """Build `step` into `dst` unless a complete entry is there. Concurrent builders of one entry wait on
    a lock and the later ones take the first one's output; an incomplete entry is rebuilt."""
    if _complete(dst):
        return True
    dst.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(lock_beside(dst)):
        if _complete(dst):
            return True
        if dst.exists():
            log.warning("build cache entry %s is incomplete or corrupt: rebuilding it", dst.name)
            shutil.rmtree(dst)
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        t0 = time.perf_counter()
        try:
            pass_function(step.name)(src, tmp, **step.settings)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a failed build is recorded with its trial, not kept
            raise
        meta = {"pass": step.name, "settings": step.settings, "seconds": time.perf_counter() - t0, "source": str(src)}
        (tmp / _META).write_text(json.dumps(meta, indent=2, default=str))
        tmp.rename(dst)
    return False
