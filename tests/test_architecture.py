"""docs/ARCHITECTURE.md stays true, and the learner's rooms stay small and mode-blind."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAP = ROOT / "docs" / "ARCHITECTURE.md"
MAX_CLASS_LINES = 300
MODULE = re.compile(r"`((?:[a-z_]+/)+[a-z_]+\.py)`")  # `learner/gateway.py`


def named_modules(text: str) -> list[str]:
    return sorted(set(MODULE.findall(text)))


def test_the_map_names_modules_that_exist() -> None:
    named = named_modules(MAP.read_text())
    assert len(named) >= 15, f"the map names too few modules to be a map: {named}"
    missing = [m for m in named if not (ROOT / m).is_file()]
    assert not missing, f"docs/ARCHITECTURE.md names modules that do not exist: {missing}"


def test_the_map_names_every_learner_room() -> None:
    named = set(named_modules(MAP.read_text()))
    for room in ("server", "gateway", "data_source", "update_worker", "publisher", "lifecycle",
                 "family_hooks"):
        assert f"learner/{room}.py" in named, f"the map does not name learner/{room}.py"


def test_the_module_pattern_finds_paths_and_only_paths() -> None:
    text = "see `learner/gateway.py` and `common/connectx/env.py`, not `--mode` or `cfg.mode`"
    assert named_modules(text) == ["common/connectx/env.py", "learner/gateway.py"]


def _classes(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    return [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]


def test_no_class_in_learner_over_300_lines() -> None:
    sizes = {f"{p.name}:{name}": lines for p in (ROOT / "learner").glob("*.py") for name, lines in _classes(p)}
    assert sizes, "no classes found in learner/"
    too_big = {k: v for k, v in sizes.items() if v > MAX_CLASS_LINES}
    assert not too_big, f"classes in learner/ over {MAX_CLASS_LINES} lines: {too_big}"


def _branches_on(path: Path, word: str) -> list[int]:
    """Lines of `if`/`while`/conditional expressions whose test mentions `word`."""
    tree = ast.parse(path.read_text())
    pattern = re.compile(rf"\b{word}\b")
    return [n.lineno for n in ast.walk(tree)
            if isinstance(n, (ast.If, ast.IfExp, ast.While)) and pattern.search(ast.unparse(n.test))]


def test_the_mode_is_decided_in_one_place() -> None:
    found = {p.name: lines for p in (ROOT / "learner").glob("*.py") if (lines := _branches_on(p, "mode"))}
    assert found == {"data_source.py": found.get("data_source.py")} and len(found["data_source.py"]) == 1, \
        f"branches on the mode in learner/ outside data_source.make_source: {found}"


def test_the_rooms_name_no_game_family() -> None:
    rooms = ("server", "gateway", "data_source", "update_worker", "publisher", "lifecycle")
    for room in rooms:
        text = (ROOT / "learner" / f"{room}.py").read_text()
        assert not _branches_on(ROOT / "learner" / f"{room}.py", "two_player"), f"learner/{room}.py branches on two_player"
        for word in ("connectx", "ConnectX", "TwoPlayer", "league"):
            assert word not in text, f"learner/{room}.py names {word!r}"
