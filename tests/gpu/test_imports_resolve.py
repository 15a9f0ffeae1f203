"""The CUDA tests run only on a card, so nothing else notices when a name they import moves: every
`from autoopt... import name` in tests/gpu, inside test bodies too, must resolve here."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _imports() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted(HERE.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("autoopt"):
                found += [(path.name, node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize(("file", "module", "name"), _imports())
def test_names_the_cuda_tests_import_exist(file: str, module: str, name: str) -> None:
    imported = importlib.import_module(module)

    assert hasattr(imported, name) or importlib.util.find_spec(f"{module}.{name}"), f"{file}: {module}.{name}"
