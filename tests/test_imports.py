"""The import graph of tailor's packages: no cycle, the core imports no stage, no stage imports another.

The core (`tailor`) holds what stages share, including the run-folder contract (`tailor.runs`,
`tailor.contract`); the stages (`data_prep`, `train`, `eval`) talk to each other only through the run folder.
Module-level and function-level imports both count (a function-level import is a real dependency, only a later
one); imports under `if TYPE_CHECKING:` do not (they never run). Static: nothing here imports the packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = "tailor"
STAGES = ("data_prep", "train", "eval")
PACKAGES = (CORE, *STAGES)
Graph = dict[str, set[str]]


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """{dotted module name: file} of every .py file in the packages (a package's __init__ is the package)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Dotted names a module imports anywhere (module level, in functions, in try blocks), except under
    `if TYPE_CHECKING:`; `from X import Y` gives both X and X.Y (Y may be a submodule)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:  # the else branch does run
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def import_graph(root: Path = REPO, packages: tuple[str, ...] = PACKAGES) -> Graph:
    """{module: modules of the packages it imports}; `import a.b.c` points at the longest known prefix."""
    modules = module_files(root, packages)
    graph: Graph = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(ast.parse(path.read_text(encoding="utf-8"), str(path)), module,
                                   path.name == "__init__.py"):
            parts = name.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts and ".".join(parts) != module:
                targets.add(".".join(parts))
        graph[module] = targets
    return graph


def find_cycles(graph: Graph) -> list[list[str]]:
    """One cycle (as a path a -> ... -> a) per strongly connected component that has one."""
    return [_cycle_in(graph, component) for component in cyclic_components(graph)]


def cyclic_components(graph: Graph) -> list[set[str]]:
    """The strongly connected components that hold a cycle: more than one module, or one importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:  # recursive: the graphs here are a few hundred modules
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def _cycle_in(graph: Graph, component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first inside the component)."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph.get(node, ())):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if target in component and target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # unreachable for a strongly connected component


def package_of(module: str) -> str:
    return module.split(".")[0]


def cross_package_imports(graph: Graph) -> list[str]:
    """Imports that break the layering: the core importing a stage, a stage importing another stage."""
    bad = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            source, dest = package_of(module), package_of(target)
            if dest != source and dest != CORE:
                bad.append(f"{module} -> {target}")
    return bad


# ------------------------------------------------------------------------------------------------ the project


@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph()


def test_graph_sees_the_packages(graph: Graph) -> None:
    assert {"tailor.runs", "tailor.contract", "data_prep.prepare", "train.run", "eval.run"} <= set(graph)
    assert "tailor.contract" in graph["train.run"] and "tailor.contract" in graph["eval.run"]


def test_no_import_cycle(graph: Graph) -> None:
    cycles = cyclic_components(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(_cycle_in(graph, c)) for c in cycles)


def test_core_imports_no_stage_and_stages_import_only_the_core(graph: Graph) -> None:
    bad = cross_package_imports(graph)
    assert not bad, ("the core may import no stage, a stage only itself and the core (move what is shared into "
                     "tailor/):\n" + "\n".join(bad))


# ------------------------------------------------------------------------------------------------ the checker


def test_checker_finds_cycles_in_a_fake_graph() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]
    assert find_cycles({"a": {"a"}}) == [["a", "a"]]
    cycles = find_cycles({"x": {"a"}, "a": {"b"}, "b": {"c", "x2"}, "c": {"a"}, "x2": set(), "p": {"q"}, "q": {"p"}})
    assert sorted(cycles) == [["a", "b", "c", "a"], ["p", "q", "p"]]
    # a known pair that grows is a new cycle group, not the known one
    assert {"a", "b"} not in cyclic_components({"a": {"b"}, "b": {"a", "c"}, "c": {"b"}})


def test_checker_reads_function_level_imports_and_skips_type_checking(tmp_path: Path) -> None:
    def write(name: str, text: str) -> None:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    write("core/__init__.py", "")
    write("core/a.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from core.b import B\n")
    write("core/b.py", "def f():\n    from core import a\n    from core.c import thing\n")
    write("core/c.py", "import core.b.missing_attribute\nimport json\n")
    write("stage/__init__.py", "")
    write("stage/x.py", "from . import y\nfrom core.a import A\n")
    write("stage/y.py", "def g():\n    import other.z\n")
    write("other/__init__.py", "")
    write("other/z.py", "from stage import x\n")
    fake = import_graph(tmp_path, ("core", "stage", "other"))
    assert fake["core.a"] == set()  # TYPE_CHECKING only
    assert fake["core.b"] == {"core", "core.a", "core.c"}
    assert fake["core.c"] == {"core.b"}
    assert fake["stage.x"] == {"stage", "stage.y", "core.a"}
    assert fake["stage.y"] == {"other.z"}
    assert fake["other.z"] == {"stage", "stage.x"}
    assert sorted(find_cycles(fake)) == [["core.b", "core.c", "core.b"], ["other.z", "stage.x", "stage.y",
                                                                          "other.z"]]
