"""The tree shows the system (actor/, learner/, common/) and the tools beside it (benchmarks/):
no test imports a benchmark module, and the installed package does not contain them."""

from __future__ import annotations

import ast
import tomllib

from tests.conftest import ROOT


def _imported_modules(path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_test_imports_a_benchmark_module():
    offenders = {p.name: sorted(m for m in _imported_modules(p) if m.split(".")[0] == "benchmarks")
                 for p in sorted((ROOT / "tests").glob("*.py"))}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_benchmarks_live_beside_the_package_not_in_it():
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert "benchmarks" not in packages
    assert (ROOT / "benchmarks" / "__init__.py").is_file()
    for pkg in ("common", "actor", "learner", "tests"):
        assert not [p.name for p in (ROOT / pkg).glob("*.py") if p.stem.startswith(("bench", "soak"))]
