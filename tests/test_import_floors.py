"""models/ sits below interpret/ and pages/: no module there may import either (checked on the source's AST)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_models_import_nothing_from_higher_floors():
    bad = {str(p.relative_to(ROOT)): sorted(n for n in _imported(p) if n.split(".")[0] in {"interpret", "pages"})
           for p in (ROOT / "models").rglob("*.py")}
    assert not {k: v for k, v in bad.items() if v}
