"""Several chaos runs read together (issue 20): the mean return of each pair (the run under
faults and its undisturbed twin) at the same frame counts, each pair's ratio, and the ratio of
the means over all pairs. One pair cannot tell the faults from the spread between two
asynchronous runs of a game whose take-off time varies; several seeds can.

    python -m benchmarks.chaos_pairs OUT1 OUT2 ... [--every 500000]

Each OUT is a `benchmarks.chaos --out` directory; its runs' metrics.jsonl files are read (also
of a run that stopped early). Rows of a table are frame counts up to the least that every run
of every pair reached."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from testkit.equal_frames import pair_table


def read_rows(run_dir: Path) -> list[tuple[float, dict]]:
    """The metrics rows of one run, in the order written (a resumed learner appends)."""
    rows = []
    for n, line in enumerate((run_dir / "metrics.jsonl").read_text().splitlines()):
        try:
            rows.append((float(n), json.loads(line)))
        except json.JSONDecodeError:  # the last line of a killed learner may be cut short
            continue
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.chaos_pairs", description=__doc__.split("\n")[0])
    p.add_argument("outs", nargs="+", type=Path, help="benchmarks.chaos --out directories")
    p.add_argument("--every", type=int, default=500_000, help="frames between the rows (default 500000)")
    args = p.parse_args(argv)
    if args.every <= 0:
        p.error("--every must be positive")
    pairs = {}
    for out in args.outs:
        try:
            pairs[out.name] = (read_rows(out / "chaos" / "run"), read_rows(out / "calm" / "run"))
        except OSError as exc:
            p.error(f"{out}: not a benchmarks.chaos output ({exc.strerror}: {exc.filename})")
    _, table = pair_table(pairs, args.every)
    names = list(pairs)

    def fmt(x: float | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    print("| frames | " + " | ".join(f"{n}: chaos / calm (ratio)" for n in names) + " | pooled ratio |")
    print("| --- | " + " | ".join("---" for _ in names) + " | --- |")
    for row in table:
        cells = [f"{fmt(a, '.0f')} / {fmt(b, '.0f')} ({fmt(r, '.3f')})" for a, b, r in row["pairs"].values()]
        print(f"| {row['frames']:,} | " + " | ".join(cells) + f" | {fmt(row['pooled'], '.3f')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
