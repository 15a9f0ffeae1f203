"""Imports point down: each package of autoopt imports only packages of its own layer or below."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "autoopt"

# Bottom to top. A module may import its own layer and the layers below it, never above.
LAYERS: list[set[str]] = [
    {"config", "artifacts", "digest", "locks", "result", "env", "cost", "pareto", "signals", "progress"},
    {"models", "passes"},
    {"engines"},
    {"bench", "accuracy", "space"},
    {"jobs", "serving"},
    {"study", "tracking", "report", "bundle"},
    {"serve", "measure", "__main__", "searchbench"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "autoopt" and len(parts) > 1 else None


def _runtime_imports(tree: ast.Module) -> list[str]:
    """Modules imported outside `if TYPE_CHECKING:` blocks."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend([node.module] + [f"{node.module}.{alias.name}" for alias in node.names])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_its_layer_and_below(path: Path) -> None:
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    assert own in RANK, f"autoopt.{own} is in no layer of this test: add it to LAYERS"
    above = set()
    for module in _runtime_imports(ast.parse(path.read_text())):
        top = _top(module)
        if top in RANK and RANK[top] > RANK[own]:
            above.add(f"autoopt.{top}")
    assert not above, f"{path.relative_to(PACKAGE)} imports {sorted(above)}, a layer above autoopt.{own}"


def test_engines_never_import_passes_and_config_imports_nothing_else() -> None:
    for path in PACKAGE.rglob("*.py"):
        own = path.relative_to(PACKAGE).parts[0]
        tops = {_top(m) for m in _runtime_imports(ast.parse(path.read_text()))} - {None}
        if own == "engines":
            assert "passes" not in tops, path
        if own == "config":
            assert tops <= {"config"}, (path, tops)
        if own == "passes":
            allowed = {"passes", "config", "artifacts", "digest", "locks", "result", "models", "progress"}
            assert tops <= allowed, (path, tops)
