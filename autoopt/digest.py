"""Hashes that identify files, folders and code."""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
from pathlib import Path

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_fingerprint(folder: Path) -> str:
    """Hash of the names, sizes, modification and change times of a folder's files (cheap, not content). The
    change time moves with any write, even where the modification time is put back (`cp -p`, `rsync -a`,
    `os.utime`), which alone let a checkpoint edited in place keep its key, its builds and its reference; it also
    moves with metadata alone (chmod, a new hard link), which then costs a rebuild, never a stale result."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}\n".encode())
    return h.hexdigest()[:16]


def tree_sha256(folder: Path, exclude: tuple[str, ...] = ()) -> str:
    """SHA-256 over every file's relative path and content hash (but the top-level files named in `exclude`):
    changes when any file of `folder` does."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() not in exclude):
        h.update(f"{f.relative_to(folder).as_posix()}:{sha256_file(f)}\n".encode())
    return h.hexdigest()


@functools.cache
def source_digest(module: str) -> str:
    """Hash of `module`'s source and of every module of its own top-level package it imports, transitively
    (imports inside functions too): changes when any code that module runs from its package does."""
    package = module.partition(".")[0]
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen[name] = path
        todo.extend(n for n in _imported_modules(name, path) if n.partition(".")[0] == package)
    h = hashlib.sha256()
    for name in sorted(seen):
        h.update(f"{name}:{sha256_file(seen[name])}\n".encode())
    return h.hexdigest()[:16]


@functools.cache
def package_digest(package: str) -> str:
    """Hash of every Python source file of `package`: changes with any of its code."""
    root = _module_file(package)
    assert root is not None and root.name == "__init__.py", f"{package} is not a package with sources"
    h = hashlib.sha256()
    for f in sorted(root.parent.rglob("*.py")):
        h.update(f"{f.relative_to(root.parent).as_posix()}:{sha256_file(f)}\n".encode())
    return h.hexdigest()[:16]


def _module_file(name: str) -> Path | None:
    """The source file of module `name`, or None where `name` is not a module with Python source (an attribute
    imported from a module, a namespace package). Found from its top-level package's folder, importing nothing:
    finding a submodule's spec imports its parents, and a parent that fails to import would drop it unseen."""
    top, _, rest = name.partition(".")
    origin = _top_level_file(top)
    if origin is None or not rest:
        return origin
    if origin.name != "__init__.py":
        return None
    base = origin.parent.joinpath(*rest.split("."))
    for path in (base / "__init__.py", base.with_name(base.name + ".py")):
        if path.is_file():
            return path
    return None


@functools.cache
def _top_level_file(top: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: imports nothing
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _imported_modules(name: str, path: Path) -> list[str]:
    """What `name`'s source imports, as absolute names; `from a import b` gives both `a` and `a.b` (b may be a
    submodule; `_module_file` drops it where it is not)."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                anchor = parts if is_package else parts[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return found
