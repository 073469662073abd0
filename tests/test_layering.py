"""The package's layering: every module sits on a floor, imports only go down (or sideways), and no module
imports itself back through a cycle.

The sources are parsed with ``ast``, never imported, and *every* import statement counts: module level,
inside functions, under ``if TYPE_CHECKING:``. Dynamic imports (``importlib.import_module(name)``) are not
seen.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "kspacelab"

#: The floors, lowest first: ``FLOORS[n]`` lists the modules of floor ``n``. An entry names a module, or a
#: package together with all its modules (``kspacelab.models`` covers ``kspacelab.models.varnet``). A module may
#: import modules of its own floor and of lower floors, never of a higher one. The root package
#: (``import kspacelab``, ``from kspacelab import __version__``) is on floor 0 and may be imported from anywhere.
FLOORS: list[list[str]] = [
    ["kspacelab.errors", "kspacelab.challenge"],  # 0
    ["kspacelab.physics", "kspacelab.masks", "kspacelab.metrics"],  # 1
    ["kspacelab.formats", "kspacelab.classical", "kspacelab.timing"],  # 2
    ["kspacelab.models"],  # 3
    ["kspacelab.data"],  # 4
    ["kspacelab.training"],  # 5
    ["kspacelab.inference"],  # 6
    ["kspacelab.experts"],  # 7: may import inference; inference must not import experts
    ["kspacelab.evaluation", "kspacelab.report", "kspacelab.robustness", "kspacelab.multidevice"],  # 8
    ["kspacelab.demo", "kspacelab.demo_singlecoil", "kspacelab.cli", "kspacelab.__main__"],  # 9
]


# ----------------------------------------------------------------------------------------------------------
# The checker
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """``importer`` imports ``imported`` (both dotted module names) at ``path:line``."""

    importer: str
    imported: str
    path: Path
    line: int


def discover_modules(src: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``src/package`` (``pkg/__init__.py`` is ``pkg``)."""
    modules: dict[str, Path] = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _owner(name: str, modules: dict[str, Path]) -> str:
    """The longest existing module that ``name`` starts with (``name`` itself when it exists)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return name


def collect_imports(modules: dict[str, Path], package: str) -> tuple[list[Import], list[Import]]:
    """Every import of a module of ``package`` by a module of ``modules``.

    ``import a.b.c`` imports ``a.b.c``; ``from a.b import x`` imports ``a.b.x`` when that is a module, else the
    module ``a.b`` (x is a name defined there); relative imports are resolved against the importer's package.
    Returns ``(imports, missing)``: ``missing`` are the imports of names of ``package`` that no file defines
    (their ``imported`` is the name as written)."""
    imports: list[Import] = []
    missing: list[Import] = []

    def add(importer: str, target: str, path: Path, line: int) -> None:
        if target != package and not target.startswith(package + "."):
            return
        if target not in modules:
            missing.append(Import(importer, target, path, line))
            target = _owner(target, modules)  # what Python would still run: the nearest existing package
            if target not in modules:
                return
        imports.append(Import(importer, target, path, line))

    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        own_package = name if _is_package(name, modules) else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(name, alias.name, path, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = own_package.split(".")
                    if node.level > 1:
                        base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                    base = ".".join(base_parts)
                    if node.module:
                        base = f"{base}.{node.module}" if base else node.module
                else:
                    base = node.module or ""
                if base != package and not base.startswith(package + "."):
                    continue
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    if alias.name != "*" and submodule in modules:
                        add(name, submodule, path, node.lineno)
                    else:
                        add(name, base, path, node.lineno)
    return imports, missing


def floor_entries(name: str, floors: Sequence[Sequence[str]], package: str) -> list[tuple[int, str]]:
    """The ``(floor, entry)`` pairs of the table that cover module ``name``. The root package is on floor 0,
    by exact name only (it is not a prefix of everything)."""
    if name == package:
        return [(0, package)]
    return [
        (number, entry)
        for number, floor in enumerate(floors)
        for entry in floor
        if name == entry or name.startswith(entry + ".")
    ]


def floor_problems(modules: Iterable[str], floors: Sequence[Sequence[str]], package: str) -> list[str]:
    """One line per module that is on no floor, or on more than one."""
    problems = []
    for name in sorted(modules):
        entries = floor_entries(name, floors, package)
        numbers = sorted({number for number, _ in entries})
        if not numbers:
            problems.append(
                f"{name} is on no floor: add it (or its package) to FLOORS in tests/test_layering.py, on the "
                f"floor of the lowest layer it belongs to (it may only import modules of its floor or below)"
            )
        elif len(numbers) > 1:
            listed = ", ".join(f"{entry!r} (floor {number})" for number, entry in entries)
            problems.append(f"{name} is on more than one floor: {listed}")
    return problems


def floor_of(name: str, floors: Sequence[Sequence[str]], package: str) -> int | None:
    numbers = {number for number, _ in floor_entries(name, floors, package)}
    return numbers.pop() if len(numbers) == 1 else None


def upward_imports(imports: Iterable[Import], floors: Sequence[Sequence[str]], package: str) -> list[str]:
    """One line ``importer -> imported (floor a -> floor b)  [line n, m]`` per importer and imported module
    where the import goes up."""
    found: dict[tuple[str, str], tuple[int, int, set[int]]] = {}
    for imp in imports:
        low, high = floor_of(imp.importer, floors, package), floor_of(imp.imported, floors, package)
        if low is None or high is None:
            continue  # reported by floor_problems
        if high > low:
            found.setdefault((imp.importer, imp.imported), (low, high, set()))[2].add(imp.line)
    return [
        f"{importer} -> {imported} (floor {low} -> floor {high})  [{_lines(lines)}]"
        for (importer, imported), (low, high, lines) in sorted(found.items())
    ]


def _lines(lines: Iterable[int]) -> str:
    numbers = sorted(set(lines))
    return ("line " if len(numbers) == 1 else "lines ") + ", ".join(map(str, numbers))


@dataclass(frozen=True)
class Cycle:
    """A closed import path ``path[0] -> path[1] -> ... -> path[0]`` (``path`` lists each module once) through
    ``modules``, all the modules of one strongly connected component of the import graph."""

    path: tuple[str, ...]
    modules: tuple[str, ...]

    def describe(self) -> str:
        text = " -> ".join((*self.path, self.path[0]))
        if len(self.modules) > len(self.path):
            text += f"  (the modules of this knot: {', '.join(self.modules)})"
        return text


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph`` (iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []

    def enter(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)

    for root in sorted(graph):
        if root in index:
            continue
        enter(root)
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    enter(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def import_cycles(imports: Iterable[Import]) -> list[Cycle]:
    """The import cycles: one per strongly connected component of more than one module, with the shortest
    closed path through its first module. An import of a package is an import of its ``__init__.py``; importing
    a submodule does not count as importing its parent package, and a module importing itself is ignored."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.importer, set())
        graph.setdefault(imp.imported, set())
        if imp.importer != imp.imported:
            graph[imp.importer].add(imp.imported)

    cycles = []
    for component in sorted(c for c in _components(graph) if len(c) > 1):
        members = set(component)
        start = component[0]
        previous: dict[str, str] = {start: start}
        frontier = [start]
        last = None
        while last is None:  # breadth first from start until an edge leads back to it
            following = []
            for node in frontier:
                successors = sorted(graph[node] & members)
                if start in successors:
                    last = node
                    break
                for child in successors:
                    if child not in previous:
                        previous[child] = node
                        following.append(child)
            frontier = following
        path = [last]
        while path[-1] != start:
            path.append(previous[path[-1]])
        cycles.append(Cycle(tuple(reversed(path)), tuple(component)))
    return cycles


# ----------------------------------------------------------------------------------------------------------
# The package
# ----------------------------------------------------------------------------------------------------------


@functools.cache
def package_modules() -> dict[str, Path]:
    return discover_modules(SRC, PACKAGE)


@functools.cache
def package_imports() -> tuple[list[Import], list[Import]]:
    return collect_imports(package_modules(), PACKAGE)


def _fail(header: str, lines: Sequence[str]) -> None:
    if lines:
        pytest.fail(f"{header}\n  " + "\n  ".join(lines), pytrace=False)


def test_found_the_package() -> None:
    modules, imports = package_modules(), package_imports()[0]
    assert len(modules) > 30, f"found only {len(modules)} modules under {SRC / PACKAGE}"
    assert PACKAGE in modules and f"{PACKAGE}.cli" in modules
    assert len(imports) > 30, f"found only {len(imports)} imports of {PACKAGE} modules"


def test_floor_table_is_consistent() -> None:
    entries = [entry for floor in FLOORS for entry in floor]
    repeated = sorted({entry for entry in entries if entries.count(entry) > 1})
    _fail("listed more than once in FLOORS:", repeated)
    _fail(f"FLOORS entries outside {PACKAGE}:", [e for e in entries if not e.startswith(PACKAGE + ".")])


def test_every_module_is_on_exactly_one_floor() -> None:
    _fail("modules not placed on exactly one floor:", floor_problems(package_modules(), FLOORS, PACKAGE))


def test_imports_name_existing_modules() -> None:
    missing = package_imports()[1]
    lines = sorted(
        {f"{imp.importer} imports {imp.imported} (line {imp.line}), which no file defines" for imp in missing}
    )
    _fail("imports of modules that do not exist:", lines)


def test_no_upward_imports() -> None:
    lines = upward_imports(package_imports()[0], FLOORS, PACKAGE)
    _fail(
        f"{len(lines)} import(s) run upward (importer -> imported (floor a -> floor b)  [line of the import in the "
        "importer]); a module may only import modules of its own floor or lower floors (see FLOORS in "
        "tests/test_layering.py):",
        lines,
    )


def test_no_import_cycles() -> None:
    cycles = import_cycles(package_imports()[0])
    _fail(
        f"{len(cycles)} import cycle(s) (imports inside functions and under TYPE_CHECKING count too):",
        [cycle.describe() for cycle in cycles],
    )


# ----------------------------------------------------------------------------------------------------------
# The checker itself, on a synthetic tree
# ----------------------------------------------------------------------------------------------------------

TOY_FLOORS = [["toy.base"], ["toy.core"], ["toy.app", "toy.extra"]]


def _write(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    _write(
        tmp_path,
        {
            "toy/__init__.py": "__version__ = '1'\n",
            "toy/base.py": (
                "from typing import TYPE_CHECKING\n"
                "import toy\n"
                "if TYPE_CHECKING:\n"
                "    from toy.core import thing  # upward, only for typing\n"
            ),
            "toy/core/__init__.py": "from toy.core.a import thing\nfrom toy import __version__\n",
            "toy/core/a.py": "from . import b\nthing = 1\n",
            "toy/core/b.py": "def late():\n    from toy.core import a  # cycle a -> b -> a, inside a function\n",
            "toy/app.py": "import toy.core.a\nfrom toy import base, core\n",
            "toy/extra/__init__.py": "",
            "toy/extra/x.py": "from .. import app\nfrom .y import f\nimport toy.gone\n",
            "toy/extra/y.py": "def f():\n    import toy.extra.x\n",
            "toy/stray.py": "from toy.base import x\n",
        },
    )
    return tmp_path


def test_checker_resolves_imports(toy: Path) -> None:
    modules = discover_modules(toy, "toy")
    assert sorted(modules) == [
        "toy",
        "toy.app",
        "toy.base",
        "toy.core",
        "toy.core.a",
        "toy.core.b",
        "toy.extra",
        "toy.extra.x",
        "toy.extra.y",
        "toy.stray",
    ]
    imports, missing = collect_imports(modules, "toy")
    edges = {(imp.importer, imp.imported) for imp in imports}
    assert ("toy.base", "toy") in edges
    assert ("toy.base", "toy.core") in edges  # under TYPE_CHECKING; `thing` is a name, not a module
    assert ("toy.core", "toy.core.a") in edges
    assert ("toy.core", "toy") in edges  # from toy import __version__
    assert ("toy.core.a", "toy.core.b") in edges  # from . import b
    assert ("toy.core.b", "toy.core.a") in edges  # inside a function
    assert {("toy.app", "toy.core.a"), ("toy.app", "toy.base"), ("toy.app", "toy.core")} <= edges
    assert ("toy.extra.x", "toy.app") in edges  # from .. import app
    assert ("toy.extra.x", "toy.extra.y") in edges  # from .y import f
    assert ("toy.extra.y", "toy.extra.x") in edges
    assert {(imp.importer, imp.imported) for imp in missing} == {("toy.extra.x", "toy.gone")}


def test_checker_reports_floors_upward_imports_and_cycles(toy: Path) -> None:
    modules = discover_modules(toy, "toy")
    imports = collect_imports(modules, "toy")[0]

    assert floor_problems(modules, TOY_FLOORS, "toy") == [
        "toy.stray is on no floor: add it (or its package) to FLOORS in tests/test_layering.py, on the floor of "
        "the lowest layer it belongs to (it may only import modules of its floor or below)"
    ]
    assert floor_problems(["toy.core.a"], [["toy.core"], ["toy.core.a"]], "toy") == [
        "toy.core.a is on more than one floor: 'toy.core' (floor 0), 'toy.core.a' (floor 1)"
    ]

    assert upward_imports(imports, TOY_FLOORS, "toy") == [
        "toy.base -> toy.core (floor 0 -> floor 1)  [line 4]"
    ]

    assert [cycle.describe() for cycle in import_cycles(imports)] == [
        "toy.core.a -> toy.core.b -> toy.core.a",
        "toy.extra.x -> toy.extra.y -> toy.extra.x",
    ]


def test_checker_reports_longer_cycles_through_packages(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "ring/__init__.py": "",
            "ring/a.py": "import ring.b\n",
            "ring/b.py": "from ring import c\nimport ring.e\n",
            "ring/e.py": "import ring.b\n",
            "ring/c/__init__.py": "from ring.c.d import z\n",
            "ring/c/d.py": "from ring.a import q\nz = 0\n",
        },
    )
    imports = collect_imports(discover_modules(tmp_path, "ring"), "ring")[0]
    assert [cycle.describe() for cycle in import_cycles(imports)] == [
        "ring.a -> ring.b -> ring.c -> ring.c.d -> ring.a"
        "  (the modules of this knot: ring.a, ring.b, ring.c, ring.c.d, ring.e)"
    ]
    assert upward_imports(imports, [["ring"]], "ring") == []
