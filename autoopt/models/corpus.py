"""Training text that ships with Python itself: ``pydoc_data.topics`` and stdlib docstrings.

Both are part of the CPython distribution (PSF-2.0), so the built-in model needs no download.
Every module file and every pydoc topic is one document; documents are split into train and
held-out by a hash of their name, so the split never depends on iteration order. A held-out
document that repeats training text under another name (a pydoc topic that is part of another,
a module with copied docstrings) is left out of both, so held-out text is never training text.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import pydoc_data.topics
import sysconfig
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SOURCE = (
    "Python standard library: pydoc_data.topics plus docstrings of the stdlib modules "
    "(read with ast from the interpreter's stdlib source directory)"
)
LICENSE = "PSF-2.0"
HELDOUT_PER_MILLE = 40
# A held-out document sharing a passage of 2x this many characters with the training text is dropped.
SHARED_CHARS = 200

_SKIPPED_DIRS = frozenset({"test", "tests", "idlelib", "lib2to3", "turtledemo", "site-packages"})
_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass(frozen=True)
class Corpus:
    train: tuple[str, ...]
    heldout: tuple[str, ...]
    fingerprint: str


@functools.cache
def load_corpus() -> Corpus:
    """Read and split the corpus (about 2 M characters, a few seconds; cached per process)."""
    documents = _first_of_each_text([*_topic_documents(), *_module_documents()])
    train = tuple(text for name, text in documents if not _is_heldout(name))
    joined = "\0".join(train)
    heldout = tuple(text for name, text in documents if _is_heldout(name) and not _repeats(text, joined))
    return Corpus(train=train, heldout=heldout, fingerprint=corpus_fingerprint())


@functools.cache
def corpus_fingerprint() -> str:
    """Hash of the sources the corpus is read from: cheap (no parsing), so cache look-ups stay fast."""
    digest = hashlib.sha256()
    for key, text in _topic_documents():
        digest.update(key.encode() + b"\0" + text.encode() + b"\0")
    for name, path in _stdlib_modules().items():
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _first_of_each_text(documents: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop repeated texts (pydoc topic aliases like ``if``/``else``) so none leaks into held-out."""
    seen: set[str] = set()
    unique = []
    for name, text in documents:
        if text not in seen:
            seen.add(text)
            unique.append((name, text))
    return unique


def _repeats(text: str, train: str) -> bool:
    """Whether `text` shares a passage of 2 * SHARED_CHARS characters with `train`: any such passage holds one of
    the aligned chunks checked here."""
    return any(text[i : i + SHARED_CHARS] in train for i in range(0, len(text) - SHARED_CHARS + 1, SHARED_CHARS))


def _is_heldout(name: str) -> bool:
    bucket = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % 1000
    return bucket < HELDOUT_PER_MILLE


def _topic_documents() -> Iterator[tuple[str, str]]:
    topics = pydoc_data.topics.topics
    for key in sorted(topics):
        yield f"pydoc_data.topics/{key}", topics[key].strip()


def _module_documents() -> Iterator[tuple[str, str]]:
    for name, path in _stdlib_modules().items():
        text = _docstrings(path)
        if text:
            yield name, text


def _stdlib_modules() -> dict[str, Path]:
    """Module files keyed by their stdlib-relative POSIX path, sorted by it."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    found: dict[str, Path] = {}
    # os.walk so the skipped trees (site-packages alone can be huge) are never descended into.
    for folder, subfolders, files in os.walk(stdlib):
        subfolders[:] = [name for name in subfolders if name not in _SKIPPED_DIRS]
        for file in files:
            if file.endswith(".py"):
                path = Path(folder, file)
                found[path.relative_to(stdlib).as_posix()] = path
    return dict(sorted(found.items()))


def _docstrings(path: Path) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in old modules
            tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):
        return ""  # files meant for other Python versions (e.g. bundled examples)
    nodes = sorted(
        (node for node in ast.walk(tree) if isinstance(node, _DOCUMENTED)),
        key=lambda node: getattr(node, "lineno", 0),
    )
    docstrings = (ast.get_docstring(node) for node in nodes)
    return "\n\n".join(doc for doc in docstrings if doc)
