"""The package layering, recomputed from the source with ``ast``: no import cycles between modules,
and no package imports a package to its right in the data-flow order below.

The order is the architecture (``docs/architecture.md``): base modules, then data, inputs,
model, engine, readout, activations, probes, causal, steering, the analyses built on them, the
report, the study that runs everything, and the CLI. A package may import only from its own layer
or the layers to its left. Nothing is allow-listed: a new top-level package or module must be
placed in ``LAYERS`` before its imports can pass.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "emolens"

#: Top-level modules and packages of emolens, left (imported by everything) to right (imports everything).
LAYERS: tuple[frozenset[str], ...] = tuple(frozenset(layer) for layer in (
    {"errors", "labels", "paths", "metrics", "locks", "notices"},  # base: no emolens imports but each other
    {"stats"},
    {"data"},
    {"inputs"},
    {"model"},
    {"engine"},
    {"readout"},
    {"activations"},
    {"probes"},
    {"causal"},
    {"steering"},
    {"neurons", "control", "crossmodel"},  # analyses built on the engine and steering
    {"report"},
    {"study"},
    {"cli", "__main__"},
))
#: The package face ``emolens/__init__.py`` re-exports the public API, so it sits above everything;
#: below it, only ``__version__`` may be taken from it (it is defined before any import there).
ROOT_NAMES_ANYONE_MAY_IMPORT = frozenset({"__version__"})


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph(src: Path = SRC, package: str = PACKAGE) -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    """``module -> emolens modules it imports`` (anywhere in the file, function bodies included), and
    ``module -> names it imports from the root package``."""
    files = {module_name(f, src): f for f in sorted((src / package).rglob("*.py"))}
    graph: dict[str, set[str]] = {m: set() for m in files}
    from_root: dict[str, list[str]] = {}
    for mod, path in files.items():
        is_face = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = mod.split(".") if is_face else mod.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                if base == package:
                    from_root.setdefault(mod, []).extend(a.name for a in node.names)
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[mod].update(t for t in targets if t in files and t != mod)
    return graph, from_root


def cycles(graph: dict[str, set[str]], faces: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (package faces left out, as in
    ``arch_facts.py``: a face importing its own modules is how a package presents them)."""
    g = {m: {t for t in ts if t not in faces} for m, ts in graph.items() if m not in faces}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan, iterative enough for this graph's depth
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def layer_of(module: str, package: str = PACKAGE) -> int | None:
    """The layer index of a module's top-level package (None for the root face, KeyError if unplaced)."""
    parts = module.split(".")
    if parts == [package]:
        return None
    top = parts[1]
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise KeyError(top)


def upward_imports(graph: dict[str, set[str]], from_root: dict[str, list[str]],
                   package: str = PACKAGE) -> list[str]:
    """Every import of a package to the importer's right, and every root import other than ``__version__``."""
    bad = []
    for mod, targets in sorted(graph.items()):
        here = layer_of(mod, package)
        if here is None:
            continue
        for target in sorted(targets):
            there = layer_of(target, package)
            if there is not None and there > here:
                bad.append(f"{mod} imports {target}")
        extra = sorted(set(from_root.get(mod, [])) - ROOT_NAMES_ANYONE_MAY_IMPORT)
        if extra:
            bad.append(f"{mod} imports {extra} from the {package} face (only __version__ may be)")
    return bad


def test_every_top_level_module_has_a_layer():
    tops = {p.stem if p.is_file() else p.name for p in (SRC / PACKAGE).iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    unplaced = sorted(t for t in tops if not any(t in layer for layer in LAYERS))
    assert not unplaced, f"place {unplaced} in LAYERS (tests/test_architecture.py) and docs/architecture.md"


def test_no_import_cycles():
    graph, _ = import_graph()
    faces = {module_name(f) for f in (SRC / PACKAGE).rglob("__init__.py")}
    assert cycles(graph, faces) == []


def test_no_package_imports_a_package_to_its_right():
    graph, from_root = import_graph()
    assert upward_imports(graph, from_root) == []


def test_report_reads_runs_without_study_code():
    graph, _ = import_graph()
    report = {m: ts for m, ts in graph.items() if m.startswith("emolens.report")}
    assert report and not any(t.startswith("emolens.study") for ts in report.values() for t in ts)


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize("where", ["top", "function"])
def test_the_checks_catch_a_reintroduced_report_to_study_import_and_its_cycle(tmp_path, where):
    """What this file guards against, rebuilt in a scratch package: report reading a run through
    study (the pre-split code), which study's runner imports back -- once at module top, once
    hidden in a function body."""
    body = ("from emolens.study.pipeline import load_run\n" if where == "top"
            else "def model_runs(d):\n    from emolens.study.pipeline import load_run\n    return load_run(d)\n")
    src = _write(tmp_path, {
        "emolens/__init__.py": "__version__ = '0'\n",
        "emolens/errors.py": "",
        "emolens/report/__init__.py": "",
        "emolens/report/html.py": body,
        "emolens/study/__init__.py": "",
        "emolens/study/pipeline.py": "from emolens import __version__\nfrom emolens.errors import *\n",
        "emolens/study/runner.py": "from emolens.report.html import model_runs\n",
        "emolens/study/pipeline2.py": "from emolens.study import runner\n",
    })
    graph, from_root = import_graph(src)
    assert upward_imports(graph, from_root) == ["emolens.report.html imports emolens.study.pipeline"]
    graph["emolens.study.pipeline"].add("emolens.study.runner")  # and the cycle it closes
    assert cycles(graph, {"emolens", "emolens.report", "emolens.study"}) == [
        ["emolens.report.html", "emolens.study.pipeline", "emolens.study.runner"]]


def test_the_checks_refuse_root_imports_below_the_face(tmp_path):
    src = _write(tmp_path, {"emolens/__init__.py": "from emolens.errors import E\n__version__ = '0'\n",
                            "emolens/errors.py": "class E(Exception): ...\n",
                            "emolens/data/__init__.py": "from emolens import E, __version__\n"})
    graph, from_root = import_graph(src)
    assert upward_imports(graph, from_root) == [
        "emolens.data imports ['E'] from the emolens face (only __version__ may be)"]


MAX_LINES = 600


def test_no_module_over_600_lines():
    """Small modules with one job (the developers' guide): none longer than 600 lines."""
    long = {module_name(f): n for f in (SRC / PACKAGE).rglob("*.py")
            if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert long == {}
