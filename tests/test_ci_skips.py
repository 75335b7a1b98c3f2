"""Tests that cannot pass in silence (issue 8.14): in CI a skip is a failure; locally it says why."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT

PROBE = '''
import pytest

def test_needs_root():
    pytest.skip("creating network namespaces needs root")

@pytest.mark.may_skip
def test_optional_tool():
    pytest.skip("imageio-ffmpeg is installed")

def test_runs():
    pass
'''


def _pytest(tmp_path, ci: bool) -> subprocess.CompletedProcess:
    probe = ROOT / "tests" / f"test_zz_probe_{os.getpid()}.py"  # under tests/: our conftest applies
    probe.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "RETROFLEET_CI"}
    if ci:
        env["RETROFLEET_CI"] = "1"
    try:
        return subprocess.run([sys.executable, "-m", "pytest", str(probe), "-p", "no:cacheprovider"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    finally:
        probe.unlink()


def test_a_skip_fails_in_ci_and_prints_its_reason_locally(tmp_path):
    local = _pytest(tmp_path, ci=False)
    assert local.returncode == 0, local.stdout
    assert "SKIPPED" in local.stdout and "needs root" in local.stdout  # -rs from pyproject's addopts
    ci = _pytest(tmp_path, ci=True)
    assert ci.returncode == 1, ci.stdout
    assert "1 failed" in ci.stdout and "counts as a failure" in ci.stdout and "needs root" in ci.stdout
    assert "1 skipped" in ci.stdout  # the test marked may_skip


def test_ci_script_sets_the_variable():
    assert "RETROFLEET_CI=1" in (ROOT / ".ci" / "run").read_text()
