"""One Python version, stated everywhere (issue 8.12): 3.11 (tomllib, asyncio.TimeoutError is
TimeoutError), in pyproject, ruff's target and the README; the running interpreter is one."""

from __future__ import annotations

import re
import sys
import tomllib

from tests.conftest import ROOT


def test_python_311_everywhere():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["requires-python"] == ">=3.11"
    assert project["tool"]["ruff"]["target-version"] == "py311"
    readme = (ROOT / "README.md").read_text()
    assert "Python 3.11" in readme and not re.search(r"3\.10\b", readme)
    assert sys.version_info >= (3, 11)
