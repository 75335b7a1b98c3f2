"""The shape of the code at a git revision (issue 16's before/after counts), read from git
objects: nothing is checked out or imported.

    python -m benchmarks.code_shape 4879993 HEAD      # before the rooms split, and now

For each revision: the largest classes in learner/ (lines, methods), the branches on the run mode
and on two-player concepts (every if / elif / while / conditional expression / comprehension if
whose test's text matches), and how many product files outside the ConnectX wing name it.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("learner", "actor", "common", "fleet")
MODE = r"\bmode\b|is_sync|is_async|\bsync\b|\"async\""
TWO_PLAYER = r"two_player|connectx|opponent|league|\belo\b|n_players|players|negamax|kaggle|snapshot"
WING = ("common/connectx/", "common/families/connectx.py")


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


def _sources(rev: str, dirs: tuple[str, ...]) -> dict[str, str]:
    names = [f for f in _git("ls-tree", "-r", "--name-only", rev, "--", *dirs).split() if f.endswith(".py")]
    return {f: _git("show", f"{rev}:{f}") for f in names}


def largest_classes(sources: dict[str, str], n: int = 5) -> list[tuple[int, str, str, int]]:
    """(lines, class, file, methods), largest first."""
    rows = []
    for f, src in sources.items():
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.ClassDef):
                methods = sum(isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef)) for b in node.body)
                rows.append((node.end_lineno - node.lineno + 1, node.name, f, methods))
    return sorted(rows, reverse=True)[:n]


def branches(sources: dict[str, str], pattern: str) -> list[str]:
    """`file:line` of every branch whose test matches `pattern` (case-insensitive)."""
    pat, found = re.compile(pattern, re.I), []
    for f, src in sources.items():
        for node in ast.walk(ast.parse(src)):
            tests = [node.test] if isinstance(node, (ast.If, ast.IfExp, ast.While)) else \
                list(node.ifs) if isinstance(node, ast.comprehension) else []
            found += [f"{f}:{t.lineno}" for t in tests if pat.search(ast.get_source_segment(src, t) or "")]
    return sorted(found)


def files_naming(rev: str, pattern: str) -> list[str]:
    out = subprocess.run(["git", "-C", str(ROOT), "grep", "-ilE", pattern, rev, "--", *PRODUCT],
                         capture_output=True, text=True).stdout.split()
    names = [o.split(":", 1)[1] for o in out]
    return [n for n in names if not n.startswith(WING)]


def shape(rev: str) -> None:
    product = _sources(rev, PRODUCT)
    learner = {f: src for f, src in product.items() if f.startswith("learner/")}
    print(f"## {rev} ({_git('rev-parse', '--short', rev).strip()})")
    print("largest classes in learner/ (lines, methods):")
    for lines, name, f, methods in largest_classes(learner):
        print(f"  {name:24s} {f:34s} {lines:4d} {methods:3d}")
    mode_l, mode_p = branches(learner, MODE), branches(product, MODE)
    print(f"branches on the mode: learner/ {len(mode_l)} {mode_l}; product {len(mode_p)}")
    two = branches({f: s for f, s in learner.items() if not f.startswith("learner/two_player")}, TWO_PLAYER)
    server = [b for b in two if b.startswith("learner/server.py:")]
    print(f"branches on two-player concepts: learner/ {len(two)}, learner/server.py {len(server)} {server}")
    words = sorted(set(re.findall(r"connectx|opponent|league|negamax|kaggle", learner.get("learner/server.py", ""),
                                  re.I)))
    print(f"ConnectX words in learner/server.py: {words or 'none'}")
    print(f"product files outside the wing naming connectx: {len(files_naming(rev, 'connectx'))}; "
          f"naming any two-player concept: {len(files_naming(rev, TWO_PLAYER))}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.code_shape", description=__doc__.split("\n")[0])
    p.add_argument("revs", nargs="+", help="git revisions (e.g. 4879993 HEAD)")
    for rev in p.parse_args(argv).revs:
        shape(rev)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
