"""The package's module structure: imports run one way (DESIGN.md, "Modules")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flask_jwt_shield"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Package modules that ``path`` imports, at any depth of the file (lazy imports too)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.module else base
            found.add(target)
            for alias in node.names:  # "from . import signals" names a module
                if (PACKAGE.parent / f"{target}.{alias.name}".replace(".", "/")).with_suffix(".py").exists():
                    found.add(f"{target}.{alias.name}")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("flask_jwt_shield"))
    return {m for m in found if m != name}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules} for name, path in modules.items()}


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = _graph()
    # __init__ re-exports everything, and a package's modules import their package's
    # __init__ only through "from . import x": leave the package nodes out of the cycle search.
    packages = {n for n in graph if (PACKAGE.parent / n.replace(".", "/") / "__init__.py").exists()}
    edges = {n: deps - packages for n, deps in graph.items() if n not in packages}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                cycle.extend([*path[path.index(dep) :], node, dep] if dep in path else [node, dep])
                return True
            if state.get(dep) is None and visit(dep, [*path, node]):
                return True
        state[node] = 2
        return False

    for module in sorted(edges):
        if state.get(module) is None and visit(module, []):
            break
    assert not cycle, f"import cycle: {' -> '.join(cycle)}"


def _private_imports(path: Path) -> list[str]:
    """``from .module import _name``: another module's private names."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("flask_jwt_shield")):
            names = [a.name for a in node.names]
            found += [f"{node.module}.{n}" for n in names if n.startswith("_") and not n.endswith("__")]
    return found


def test_only_the_face_imports_the_pipeline() -> None:
    graph = _graph()
    importers = {name for name, deps in graph.items() if "flask_jwt_shield.pipeline" in deps}
    assert importers == {"flask_jwt_shield.extension"}


def test_nothing_imports_the_face() -> None:
    graph = _graph()
    # The package's __init__ re-exports JWTShield; that is what users import.
    importers = {name for name, deps in graph.items() if "flask_jwt_shield.extension" in deps}
    assert importers <= {"flask_jwt_shield"}, importers


def test_the_jose_layer_is_a_leaf() -> None:
    graph = _graph()
    assert "flask_jwt_shield.jose" in graph, "flask_jwt_shield/jose.py holds the JOSE primitives"
    assert graph["flask_jwt_shield.jose"] == set()


def test_no_module_imports_another_modules_private_names() -> None:
    found = {str(p.relative_to(PACKAGE)): names for p in PACKAGE.rglob("*.py") if (names := _private_imports(p))}
    assert not found, found


def test_endpoints_and_tools_reach_state_not_the_pipeline() -> None:
    graph = _graph()
    for name in ("cli", "dashboard", "oauth", "ssf", "sessions", "revocation"):
        deps = graph[f"flask_jwt_shield.{name}"]
        assert "flask_jwt_shield.pipeline" not in deps, name
    assert "flask_jwt_shield.state" in graph["flask_jwt_shield.cli"]
    assert "flask_jwt_shield.state" in graph["flask_jwt_shield.dashboard"]


def test_the_face_does_not_hold_the_pipeline() -> None:
    graph = _graph()
    assert "flask_jwt_shield.pipeline" in graph["flask_jwt_shield.extension"]
    assert "flask_jwt_shield.extension" not in graph["flask_jwt_shield.pipeline"]
    assert "flask_jwt_shield.extension" not in graph["flask_jwt_shield.cli"]
    source = (PACKAGE / "extension.py").read_text()
    for step in (
        "def run(",
        "def check_revocation(",
        "def act(",
        "def store_failed(",
        "extract_token(",
        "store.rotate(",
        "store.create_family(",
    ):
        assert step not in source, f"{step} belongs in the pipeline, sessions or state"


def test_rate_limiting_reaches_only_its_own_modules_errors_and_the_wire() -> None:
    # No geo, no config: config reads limit strings through ratelimit.syntax, not the reverse.
    graph = _graph()
    rate = {name for name in graph if name.startswith("flask_jwt_shield.ratelimit")}
    assert "flask_jwt_shield.ratelimit.syntax" in rate
    reached: set[str] = set()
    todo = [dep for name in rate for dep in graph[name]]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(graph.get(module, ()))
    # and the background threads' Redis connections, a leaf
    assert reached - rate <= {"flask_jwt_shield.errors", "flask_jwt_shield.wire"}, reached - rate
    assert graph["flask_jwt_shield.ratelimit.syntax"] == set()  # a leaf


def test_the_cose_layer_needs_only_the_cbor_encoder() -> None:
    assert _graph()["flask_jwt_shield.cose"] == {"flask_jwt_shield.cbor"}


def test_the_status_list_encoding_needs_only_the_jose_layer() -> None:
    assert _graph()["flask_jwt_shield.statuslist.codec"] == {"flask_jwt_shield.jose"}


@pytest.mark.parametrize(
    "leaf",
    ["actions", "cache", "cbor", "jose", "geo.database", "stores.redis_scripts", "stores.base", "wire"],
)
def test_leaves_import_nothing_from_the_package(leaf: str) -> None:
    graph = _graph()
    assert graph[f"flask_jwt_shield.{leaf}"] == set(), f"{leaf} must stay a leaf"


def test_the_invalidation_subscriber_talks_to_the_store_through_its_protocol() -> None:
    graph = _graph()
    assert "flask_jwt_shield.stores.redis" not in graph["flask_jwt_shield.stores.invalidation"]
    tree = ast.parse((PACKAGE / "stores" / "invalidation.py").read_text())
    private = [
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.endswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")
    ]
    assert not private, f"private fields of another object: {private}"


def test_a_module_per_job_stays_small() -> None:
    """The restructuring's point: no module grows back into a hub. The pipeline stays one
    small module; the face may grow a method per feature, but each stays thin (it checks
    its arguments and delegates: docstrings do not count)."""
    assert len((PACKAGE / "pipeline.py").read_text().splitlines()) < 400
    tree = ast.parse((PACKAGE / "extension.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            body = node.body[1:] if node.body and isinstance(node.body[0], ast.Expr) else node.body
            statements = sum(isinstance(n, ast.stmt) for b in body for n in ast.walk(b))
            assert statements <= 15, f"JWTShield.{node.name} does work that belongs in a room of its own"
