"""The engine must not import Django or any project app."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = {
    "django",
    "rest_framework",
    "django_q",
    "vaults",
    "policies",
    "inventory",
    "jobs",
    "portal",
}
ENGINE = Path(__file__).resolve().parents[1]


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            if node.args and isinstance(node.args[0], ast.Constant):
                out.append((node.lineno, str(node.args[0].value)))
    return out


def test_engine_imports_nothing_from_django_or_project_apps() -> None:
    files = sorted(ENGINE.rglob("*.py"))
    assert len(files) > 10
    bad = []
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for lineno, name in _imports(tree):
            if name.split(".")[0] in FORBIDDEN:
                bad.append(f"{path.relative_to(ENGINE.parent)}:{lineno} imports {name}")
    assert not bad, "\n".join(bad)


def test_checker_catches_forbidden_imports() -> None:
    tree = ast.parse("import django.db\nfrom vaults.models import X\nimport os\n")
    names = [n.split(".")[0] for _, n in _imports(tree)]
    assert [n for n in names if n in FORBIDDEN] == ["django", "vaults"]
