"""The package layout is the architecture (docs/architecture.md): each package is one stage of the
pipeline and imports only the packages before it, and no module imports itself back through others.

Every ``llcompile`` import counts, wherever it is written (module top, inside a function, under
``TYPE_CHECKING``): a deferred import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import llcompile

PACKAGE = Path(llcompile.__file__).parent

# lowest first; a module may import from its own package and from packages listed before it
LAYERS = [
    {"errors", "version"},
    {"util"},
    {"ops"},
    {"data", "models"},
    {"frontend"},
    {"analysis"},
    {"program"},
    {"passes"},
    {"cost"},
    {"policies"},
    {"compiler"},
    {"backends"},
    {"train"},
    {"report"},
    {"cli"},
    {"__init__", "__main__"},
]
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}
ROOT_MODULES = {"__init__", "__main__", "errors", "version"}  # the public face; everything else in a package


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The llcompile modules ``path`` imports (``from P import name`` counts as P.name when that is a
    module, else as P)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "llcompile"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "llcompile":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


def layer_of(module: str) -> int:
    parts = module.split(".")
    if module == "llcompile":
        return LAYER_OF["__init__"]
    return LAYER_OF[parts[1]]


def import_graph() -> dict[str, set[str]]:
    known = set(modules())
    return {name: imports_of(path, known) - {name} for name, path in modules().items()}


def test_every_package_has_a_layer():
    top = {name.split(".")[1] for name in modules() if name != "llcompile"}
    assert top <= set(LAYER_OF), f"packages without a layer: {sorted(top - set(LAYER_OF))}"


def test_only_the_public_face_at_the_package_root():
    loose = {path.stem for path in PACKAGE.glob("*.py")} - ROOT_MODULES
    assert not loose, f"modules at the package root: {sorted(loose)}"


def test_no_import_points_up():
    upward = [f"{module} -> {target}" for module, targets in import_graph().items() for target in targets
              if layer_of(target) > layer_of(module)]
    assert not upward, "imports of a later stage:\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("module", ["llcompile.report.report", "llcompile.util.atomic"])
def test_the_checks_see_a_violation(module, monkeypatch):
    """The checker itself: an import from a later stage, and one back, are found."""
    graph = import_graph()
    graph[module] = graph[module] | {"llcompile.cli.commands"}
    monkeypatch.setattr(f"{__name__}.import_graph", lambda: graph)
    with pytest.raises(AssertionError):
        test_no_import_points_up()
    if module == "llcompile.report.report":
        graph["llcompile.cost.cost_model"] = graph["llcompile.cost.cost_model"] | {"llcompile.report.report"}
        graph["llcompile.report.report"] = graph["llcompile.report.report"] | {"llcompile.cost.cost_model"}
        with pytest.raises(AssertionError):
            test_no_import_cycle()
