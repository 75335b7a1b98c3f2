"""The tree shows the system (actor/, learner/, common/, fleet/) and the tools beside it
(benchmarks/, and testkit/ with the helpers tests and benchmarks share): no test imports a
benchmark module, no benchmark imports a test, the installed package contains none of them,
and no two modules are named alike for different jobs."""

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


PRODUCT = ("common", "actor", "learner", "fleet")


def test_benchmarks_take_test_helpers_from_testkit_not_from_tests():
    offenders = {p.name: sorted(m for m in _imported_modules(p) if m.split(".")[0] == "tests")
                 for p in sorted((ROOT / "benchmarks").glob("*.py"))}
    assert {k: v for k, v in offenders.items() if v} == {}
    assert (ROOT / "testkit" / "__init__.py").is_file()


def test_testkit_is_no_part_of_the_installed_system():
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert "testkit" not in packages
    for pkg in PRODUCT:  # the installed code never imports a test helper
        for p in (ROOT / pkg).rglob("*.py"):
            assert not {m for m in _imported_modules(p) if m.split(".")[0] in ("testkit", "tests")}, p
    assert not (ROOT / "fleet" / "localcluster.py").exists(), "the root-only Ray harness is a test helper"


SHARED_STEMS = {"__init__", "__main__"}  # every package has its own


def test_no_two_modules_are_named_alike_for_different_jobs():
    stems: dict[str, list[str]] = {}
    for pkg in PRODUCT:
        for p in (ROOT / pkg).rglob("*.py"):
            stems.setdefault(p.stem, []).append(str(p.relative_to(ROOT)))
    twice = {k: v for k, v in stems.items() if len(v) > 1 and k not in SHARED_STEMS}
    assert twice == {}, "one stem, two modules"
    files = {str(p.relative_to(ROOT))[:-3] for pkg in PRODUCT for p in (ROOT / pkg).rglob("*.py")}
    assert sorted(f for f in files if f + "s" in files) == [], "a module beside its plural"
