"""The floors of the code, checked on the source's AST (every import, at module level or inside functions):

    models  <-  interpret: core <- engines <- attribution, units <- evaluation <- plots (core only) <- scale <- cli
            <-  pages

models/ imports nothing from interpret/ or pages/; inside interpret/ a module imports only its own floor or those
below it (attribution and units are siblings and do not import each other; plots import core only); no import
circles; no function-level imports of project modules; only app.py and pages/ import streamlit.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INTERPRET = ROOT / "interpret"

# floor -> the interpret floors its modules may import
ALLOWED = {
    "core": {"core"},
    "engines": {"core", "engines"},
    "attribution": {"core", "engines", "attribution"},
    "units": {"core", "engines", "units"},
    "evaluation": {"core", "engines", "attribution", "units", "evaluation"},
    "plots": {"core", "plots"},
    "scale": {"core", "engines", "attribution", "units", "evaluation", "plots", "scale"},
    "cli": {"core", "engines", "attribution", "units", "evaluation", "plots", "scale", "cli"},
    "__main__": {"cli"},
    "__init__": set(),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, me: str | None = None) -> list[tuple[str, bool]]:
    """(absolute module name, inside a function?) of every import in the file (module ``me``, by default named
    from its path); ``from a import b`` yields ``a.b`` where that is a module of this repository, else ``a``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = me or _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)] if child.level > 1 else base
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                for a in child.names:
                    sub = f"{module}.{a.name}"
                    out.append((sub if _is_project_module(sub) else module, in_function))
            visit(child, inner)

    visit(tree, False)
    return out


def _is_project_module(name: str) -> bool:
    p = ROOT.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _floor(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "interpret":
        return None
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def _interpret_files() -> list[Path]:
    return sorted(INTERPRET.rglob("*.py"))


def test_interpret_has_its_floors_and_nothing_flat():
    flat = sorted(p.name for p in INTERPRET.glob("*.py") if p.name not in {"__init__.py", "__main__.py"})
    assert not flat, f"modules outside a floor: {flat}"
    assert {p.name for p in INTERPRET.iterdir() if (p / "__init__.py").is_file()} == set(ALLOWED) - {"__main__",
                                                                                                     "__init__"}


def test_interpret_imports_only_its_own_floor_or_lower():
    bad = []
    for path in _interpret_files():
        me = _module_name(path)
        floor = "__main__" if path.name == "__main__.py" and path.parent == INTERPRET else _floor(me)
        for target, _ in _imports(path):
            if target.split(".")[0] == "pages" or target.split(".")[0] == "streamlit":
                bad.append((me, target))
            t = _floor(target)
            if t is not None and target != "interpret" and t not in ALLOWED[floor]:
                bad.append((me, target))
    assert not bad, f"imports that run up or sideways: {bad}"


def test_no_function_level_imports_of_project_modules():
    bad = [(_module_name(p), t) for p in _interpret_files() for t, inner in _imports(p)
           if inner and t.split(".")[0] in {"interpret", "models", "pages"}]
    assert not bad, f"hidden imports inside functions: {bad}"


def test_no_import_circles_in_interpret():
    graph: dict[str, set[str]] = {}
    for path in _interpret_files():
        graph[_module_name(path)] = {t for t, _ in _imports(path) if t.startswith("interpret.") and _is_project_module(t)}
    # a module imports its package's __init__ implicitly; those are docstrings only, so they are left out
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def dfs(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif not state.get(nxt):
                dfs(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            dfs(node, [node])
    assert not cycles, f"import circles: {cycles}"


def test_floor_packages_hold_no_code():
    """The floors' __init__ files only describe the floor: importing one never pulls in another floor."""
    for init in INTERPRET.rglob("__init__.py"):
        tree = ast.parse(init.read_text(encoding="utf-8"))
        body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        body = [n for n in body if not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
        assert not body, f"{init.relative_to(ROOT)} holds code"


def test_models_import_nothing_from_higher_floors():
    bad = {str(p.relative_to(ROOT)): sorted(t for t, _ in _imports(p) if t.split(".")[0] in {"interpret", "pages"})
           for p in (ROOT / "models").rglob("*.py")}
    assert not {k: v for k, v in bad.items() if v}


def test_only_app_and_pages_import_streamlit():
    bad = [str(p.relative_to(ROOT)) for d in ("interpret", "models") for p in (ROOT / d).rglob("*.py")
           if any(t.split(".")[0] == "streamlit" for t, _ in _imports(p))]
    assert not bad


def test_the_walker_sees_what_it_checks(tmp_path):
    """The checks above can fail: the walker finds a function-level, a relative and an upward import."""
    src = tmp_path / "probe.py"
    src.write_text("from ..plots import colour\n\ndef f():\n    from interpret.engines import copies\n",
                   encoding="utf-8")
    found = _imports(src, "interpret.core.probe")
    assert ("interpret.plots.colour", False) in found
    assert ("interpret.engines.copies", True) in found
