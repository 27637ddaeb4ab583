"""The layering cnnkit is built on, checked on its import graph (ENGINEERING.md, "Layers point down").

The graph is read from the sources (no imports run): every ``import`` and ``from ... import``
anywhere in a module counts, inside functions too, since a lazy import is still a dependency.
``import a.b.c`` also runs the ``__init__`` of the packages ``a`` and ``a.b`` unless they are
packages of the importing module itself (those have already run). ``from a.b import name``
depends on the submodule ``a.b.name`` when there is one, else on ``a.b``'s ``__init__``.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "cnnkit"

ENGINE = "cnnkit.train"
MODELS = "cnnkit.models"
SURFACES = (
    "cnnkit.__main__",
    "cnnkit.cli",
    "cnnkit.serve",
    "cnnkit.studio",
)  # they parse and call; nothing below imports them
# What the engine may import (ENGINEERING.md: engine <- models <- recipe <- surfaces): itself, and below it.
BELOW_ENGINE = ("cnnkit.errors", "cnnkit._io", "cnnkit.runtime", "cnnkit.data", "cnnkit.evaluate",
                "cnnkit.kernels", "cnnkit.layers", "cnnkit.activations",
                "cnnkit._keras_names",  # the table of Keras names cnnkit lacks: a leaf, it imports only the errors
                "cnnkit._lazy")  # a package's names on first use: a leaf, it imports nothing of cnnkit  # fmt: skip


def _modules() -> dict[str, Path]:
    """Every module of cnnkit by dotted name (a package by its ``__init__``)."""
    found = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return name in modules and modules[name].name == "__init__.py"


def _targets(importer: str, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> set[str]:
    """The cnnkit modules whose code this import statement runs or reads."""
    own_package = importer if _is_package(importer, modules) else importer.rpartition(".")[0]
    ancestors = {".".join(own_package.split(".")[:i]) for i in range(1, own_package.count(".") + 2)}

    def with_packages(name: str) -> set[str]:  # `name` and the packages above it that run on import
        parts = name.split(".")
        prefixes = {".".join(parts[:i]) for i in range(1, len(parts))}
        return {name} | (prefixes - ancestors)

    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return {t for name in names if name.split(".")[0] == ROOT for t in with_packages(name) if t in modules}
    base = node.module or ""
    if node.level:  # relative: from the importer's package
        package = own_package.split(".")
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
    if base.split(".")[0] != ROOT:
        return set()
    found = {t for t in with_packages(base) if t in modules} - ancestors
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        found |= {sub} if sub in modules else {base}  # a submodule, or a name from the package's __init__
    return found - {importer}


def import_graph() -> dict[str, set[str]]:
    """Module -> the cnnkit modules it imports, anywhere in its source."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[name] |= _targets(name, node, modules)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_graph_sees_imports_inside_functions_and_package_inits() -> None:
    graph = import_graph()
    # cnnkit.data.load_dataset imports its folder path inside the function; it still counts.
    assert "cnnkit.data.prepare" in graph["cnnkit.data"]
    # `from cnnkit.evaluate import count_correct` runs (and reads) the evaluate package's __init__.
    assert "cnnkit.evaluate" in graph["cnnkit.train.loop"]
    # `from cnnkit.train import distributed` is the submodule; cnnkit.train's __init__ already ran for loop.
    assert "cnnkit.train.distributed" in graph["cnnkit.train.loop"]
    assert "cnnkit.train" not in graph["cnnkit.train.loop"]


def test_the_cycle_finder_finds_a_cycle_through_a_package_init() -> None:
    graph = {"a": {"a.x"}, "a.x": {"b.y"}, "b.y": {"a"}, "b": set(), "c": {"a"}}
    assert _cycles(graph) == [["a", "a.x", "b.y"]]


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles = _cycles(graph)
    # Each cycle shown as its imports: one of them has to go.
    shown = ["; ".join(f"{v} -> {w}" for v in c for w in sorted(graph[v]) if w in c) for c in cycles]
    assert cycles == [], "\n".join(shown)


def test_the_engine_imports_only_itself_and_what_is_below_it() -> None:
    graph = import_graph()
    allowed = (ENGINE, *BELOW_ENGINE)
    upward = sorted((v, w) for v, targets in graph.items() if _within(v, ENGINE)
                    for w in targets if w != ROOT and not any(_within(w, ok) for ok in allowed))  # fmt: skip
    assert upward == []


def test_the_engine_does_not_know_the_models_or_the_recipe() -> None:
    # Stated without exceptions: the seam item 2 of issue 15 cut.
    graph = import_graph()
    assert not [(v, w) for v, targets in graph.items() if _within(v, ENGINE)
                for w in targets if _within(w, "cnnkit.models") or _within(w, "cnnkit.recipe")]  # fmt: skip


def test_the_engine_packages_lazy_names_are_imports_the_graph_sees() -> None:
    # cnnkit.train's names load on first use (its help need not import torch), but a lazy attribute once
    # hid an import cycle here (issue 15): every public name must be an import statement (under
    # TYPE_CHECKING), so the graph above, and test_no_import_cycles, see what it loads.
    tree = ast.parse((SRC / ROOT / "train" / "__init__.py").read_text())
    public = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets))  # fmt: skip
    imported = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and (node.module or "").startswith(ENGINE) for alias in node.names}  # fmt: skip
    assert set(public) - imported == set()
    assert {"cnnkit.train.loop", "cnnkit.train.settings", "cnnkit.train.optimizers"} <= import_graph()[ENGINE]


@pytest.mark.parametrize("package", ["cnnkit.train", "cnnkit.recipe", "cnnkit.recipe.tune", "cnnkit.export",
                                     "cnnkit.data"])  # fmt: skip
def test_every_public_name_of_a_light_package_loads(package: str) -> None:
    # Their names load on first use (cnnkit._lazy): a table entry naming the wrong module fails only here.
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        module.not_a_name  # noqa: B018


def test_sequential_does_not_import_the_kernels() -> None:
    # The C kernels are a pass (cnnkit.kernels.fuse) the engine and the predictors apply to a model.
    assert not any(_within(w, "cnnkit.kernels") for w in import_graph()["cnnkit.models.sequential"])


def test_the_models_do_not_know_what_runs_them() -> None:
    above = ("cnnkit.recipe", "cnnkit.report", "cnnkit.export", "cnnkit.inference", "cnnkit.predict", *SURFACES)
    graph = import_graph()
    assert not [(v, w) for v, targets in graph.items() if _within(v, MODELS)
                for w in targets if any(_within(w, a) for a in above)]  # fmt: skip


def test_only_the_surfaces_import_the_surfaces() -> None:
    graph = import_graph()
    inward = sorted((v, w) for v, targets in graph.items() if not any(_within(v, s) for s in SURFACES)
                    for w in targets if any(_within(w, s) for s in SURFACES))  # fmt: skip
    assert inward == []
