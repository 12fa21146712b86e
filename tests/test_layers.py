"""The package's layers point one way, read from the imports themselves (AST), imports inside functions included.

utils -> conf -> data -> phantom -> models -> pipelines -> metrics -> evaluation | callbacks -> training | ui
-> entry points (``cxr_ldm/<command>.py`` and ``__main__.py`` files). A module may import its own package and
packages of earlier layers; packages that share a layer do not import each other, and no entry point imports
another one. A new top-level package must be given its layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cxr_ldm"

LAYERS: list[tuple[str, ...]] = [
    ("utils",),
    ("conf",),
    ("data",),
    ("phantom",),
    ("models",),
    ("pipelines",),
    ("metrics",),
    ("evaluation", "callbacks"),
    ("training", "ui"),
]
ENTRY_POINTS = "entry points"
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def unit_of(module: str, package: Path = PACKAGE) -> str:
    """``cxr_ldm.metrics.fid`` -> ``metrics``; a top-level module or any ``__main__`` -> the entry points."""
    parts = module.split(".")
    if len(parts) < 2 or parts[-1] == "__main__":
        return ENTRY_POINTS
    if parts[1] == "conf":  # cxr_ldm.conf: the configs, mapped from conf/ at the repository root
        return "conf"
    if not (package / parts[1]).is_dir():
        return ENTRY_POINTS
    return parts[1]


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, package_dir: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute module) for every ``cxr_ldm`` import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path, package_dir).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.append((node.lineno, base))
            # ``from cxr_ldm import sample``: the name is the module
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if base == "cxr_ldm"]
    return [(line, name) for line, name in found if name == "cxr_ldm" or name.startswith("cxr_ldm.")]


def allowed(source: str, target: str) -> bool:
    if source == ENTRY_POINTS:
        return target != ENTRY_POINTS
    if target == source:
        return True
    if target == ENTRY_POINTS:
        return False
    return RANK[target] < RANK[source]


def backward_arrows(package: Path) -> list[str]:
    arrows = []
    for path in sorted(package.rglob("*.py")):
        source = unit_of(module_name(path, package), package)
        for line, target_module in imported_modules(path, package):
            target = unit_of(target_module, package)
            if target_module == "cxr_ldm" or allowed(source, target):
                continue
            earlier = [name for name, rank in RANK.items() if source == ENTRY_POINTS or rank < RANK[source]]
            arrows.append(f"{path.relative_to(package.parent)}:{line} ({source}) imports {target_module} "
                          f"({target}); {source} may import only {', '.join(earlier) or 'itself'}")  # fmt: skip
    return arrows


def test_every_package_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages - set(RANK) == set(), "give the new package its layer in tests/test_layers.py"


def test_layers_point_one_way():
    assert backward_arrows(PACKAGE) == []


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"metrics/a.py": "from cxr_ldm.sample import run\n"}, ["cxr_ldm.sample (entry points)"]),
        ({"data/a.py": "def f():\n    from cxr_ldm.phantom.render import x\n"}, ["cxr_ldm.phantom.render (phantom)"]),
        ({"evaluation/a.py": "from cxr_ldm.callbacks import fid\n"}, ["cxr_ldm.callbacks (callbacks)"]),
        ({"models/a.py": "from ..pipelines import pipeline\n"}, ["cxr_ldm.pipelines (pipelines)"]),
        ({"sample.py": "from cxr_ldm import train\n"}, ["cxr_ldm.train (entry points)"]),
        ({"metrics/a.py": "from cxr_ldm.models.unet import x\nfrom . import b\nimport cxr_ldm.utils.cli\n"}, []),
        ({"phantom/__main__.py": "from cxr_ldm.phantom.render import x\nfrom cxr_ldm.utils import cli\n"}, []),
    ],
)
def test_the_check_finds_backward_arrows(tmp_path, files, expected):
    """The checker itself, on a small made-up package: each import named, nothing else."""
    root = tmp_path / "cxr_ldm"
    for name in RANK:
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "__init__.py").write_text("")
    for name, text in files.items():
        (root / name).write_text(text)
    found = backward_arrows(root)
    assert len(found) == len(expected), found
    for line, what in zip(found, expected, strict=True):
        assert f"imports {what}" in line


def entry_point_modules(package: Path = PACKAGE) -> dict[str, Path]:
    """``python -m cxr_ldm.<name>`` -> file: the package's top-level modules and its ``__main__.py`` files."""
    found = {p.stem: p for p in package.glob("*.py") if p.name != "__init__.py"}
    found |= {p.parent.name: p for p in package.rglob("__main__.py")}
    return found


def console_scripts() -> dict[str, str]:
    import tomllib

    return tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_command_is_thin_and_has_a_console_script():
    scripts = console_scripts()
    for name, path in entry_point_modules().items():
        module = module_name(path)
        script = f"cxr-ldm-{name.replace('_', '-')}"
        assert scripts.get(script) == f"{module}:main", f"[project.scripts] {script} = \"{module}:main\""
        lines = len(path.read_text().splitlines())
        assert lines <= 60, f"{path.relative_to(PACKAGE.parent)} has {lines} lines: move its work to its layer"
        assert "def main(" in path.read_text()
    assert {target.split(":")[0] for target in scripts.values()} == {module_name(p) for p in entry_point_modules().values()}


def readme_layout() -> dict[str, set[str]]:
    """The README's layout block: package -> the ``.py`` files it names (``""``: the commands' line)."""
    text = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    named: dict[str, set[str]] = {}
    current = None
    for line in block.splitlines():
        head = line[2:].split(" ", 1)[0] if line.startswith("  ") and not line.startswith("   ") else ""
        if head.endswith("/"):
            current = head.rstrip("/")
            named[current] = set()
        elif head.endswith(".py"):
            current = ""
            named[current] = set()
        if current is not None and not line.startswith(("tests/", "benchmarks/", "docs/", "notebooks/", "scripts/")):
            named[current] |= {word.strip("(),;") for word in line.split() if word.strip("(),;").endswith(".py")}
        if line.startswith(("tests/", "benchmarks/")):
            current = None
    return named


def test_the_readme_layout_matches_the_tree():
    named = readme_layout()
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert set(named) - {""} == packages
    for package in packages - {"conf"}:
        modules = {p.name for p in (PACKAGE / package).glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
        assert modules - named[package] == set(), f"README's layout does not name {package}/{sorted(modules - named[package])}"
    for package, files in named.items():
        for name in files:
            if package == "" and "/" in name:  # phantom/__main__.py
                assert (PACKAGE / name).is_file(), name
            else:
                assert (PACKAGE / package / name).is_file(), f"README names {package}/{name}, which is not there"
    commands = {f"{name}.py" for name, path in entry_point_modules().items() if path.parent == PACKAGE}
    assert commands <= named[""], f"README's commands line misses {sorted(commands - named[''])}"


def module_cycles(package: Path) -> list[list[str]]:
    """Import cycles between the package's modules (every import counts, ``TYPE_CHECKING`` ones included: a
    cycle there is two modules that each need the other, whatever the interpreter makes of it)."""
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    graph = {m: sorted({t for _, t in imported_modules(p, package) if t in files and t != m}) for m, p in files.items()}
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_module_imports_one_that_imports_it_back():
    assert module_cycles(PACKAGE) == []


def test_the_cycle_check_sees_a_type_checking_import(tmp_path):
    root = tmp_path / "cxr_ldm"
    (root / "data").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "data" / "__init__.py").write_text("")
    (root / "data" / "a.py").write_text("from cxr_ldm.data.b import g\n")
    (root / "data" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cxr_ldm.data.a import f\n")
    assert module_cycles(root) == [["cxr_ldm.data.a", "cxr_ldm.data.b", "cxr_ldm.data.a"]]
