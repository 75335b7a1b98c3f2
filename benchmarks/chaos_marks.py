"""The policies a chaos run and its undisturbed twin had at equal frame counts, played (issue 20).

    python -m benchmarks.chaos_marks OUT1 [OUT2 ...] [--episodes 10] [--seed 12345]

Each OUT is a `benchmarks.chaos --mark-every N --out OUT` directory. Every snapshot in OUT/marks
is played for --episodes episodes by `learner evaluate` (a process each: one retro emulator per
process), with the same environment seeds for both runs, sampling actions as the actors do. The
table gives, at each mark both runs of a pair reached, the played mean return of each, their
ratio, the frames the snapshot's checkpoint had counted, and the ratio of the means over all
pairs. The learner's own mean return is a window of the episodes that finished lately; under
faults that window holds fewer of the long episodes (an episode cut by a kill never finishes),
so the played return says whether the policy itself fell behind. Writes OUT/marks/played.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from testkit.equal_frames import pooled, ratio
from testkit.marks import marks_of

ROOT = Path(__file__).resolve().parent.parent


def play(snapshot: Path, episodes: int, seed: int) -> dict:
    """`learner evaluate` of one snapshot: its mean return and returns, and the frames it counted."""
    proc = subprocess.run([sys.executable, "-m", "learner", "evaluate", str(snapshot), "--episodes", str(episodes),
                           "--seed", str(seed), "--json"], cwd=ROOT, capture_output=True, text=True, timeout=3600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"learner evaluate {snapshot}: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    result = json.loads(lines[-1])
    counters = torch.load(snapshot, map_location="cpu", weights_only=True).get("counters", {})
    return {"mean_return": result["mean_return"], "returns": result["returns"],
            "frames": int(counters.get("frames", 0))}


def played_pair(out: Path, episodes: int, seed: int) -> dict[int, dict[str, dict]]:
    """{mark: {"chaos": played, "calm": played}} for the marks both runs of `out` kept; cached
    in OUT/marks/played.json (a rerun with other settings plays again)."""
    cache = out / "marks" / "played.json"
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("episodes") == episodes and saved.get("seed") == seed:
            return {int(k): v for k, v in saved["marks"].items()}
    chaos, calm = marks_of(out / "marks", "chaos"), marks_of(out / "marks", "calm")
    both = sorted(set(chaos) & set(calm))
    result = {}
    for mark in both:
        result[mark] = {run: play(snaps[mark], episodes, seed) for run, snaps in (("chaos", chaos), ("calm", calm))}
        c, u = result[mark]["chaos"], result[mark]["calm"]
        print(f"{out.name} {mark:,}: chaos {c['mean_return']:.0f} (at {c['frames']:,}), "
              f"calm {u['mean_return']:.0f} (at {u['frames']:,})", file=sys.stderr, flush=True)
    cache.write_text(json.dumps({"episodes": episodes, "seed": seed, "marks": result}, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.chaos_marks", description=__doc__.split("\n")[0])
    p.add_argument("outs", nargs="+", type=Path, help="benchmarks.chaos --mark-every ... --out directories")
    p.add_argument("--episodes", type=int, default=10, help="episodes played per snapshot (default 10)")
    p.add_argument("--seed", type=int, default=12345, help="environment and sampling seed of every play")
    args = p.parse_args(argv)
    if args.episodes < 1:
        p.error("--episodes must be at least 1")
    for out in args.outs:
        if not marks_of(out / "marks", "chaos") or not marks_of(out / "marks", "calm"):
            p.error(f"{out}: no snapshots in {out / 'marks'} (run benchmarks.chaos with --mark-every)")
    played = {out.name: played_pair(out, args.episodes, args.seed) for out in args.outs}
    marks = sorted(set.intersection(*(set(m) for m in played.values())))
    names = list(played)
    print("| frames | " + " | ".join(f"{n}: chaos / calm played (ratio)" for n in names) + " | pooled ratio |")
    print("| --- | " + " | ".join("---" for _ in names) + " | --- |")
    for mark in marks:
        cells = [(played[n][mark]["chaos"]["mean_return"], played[n][mark]["calm"]["mean_return"]) for n in names]
        text = [f"{a:.0f} / {b:.0f} ({'-' if ratio(a, b) is None else format(ratio(a, b), '.3f')})" for a, b in cells]
        total = pooled(cells)
        print(f"| {mark:,} | " + " | ".join(text) + f" | {'-' if total is None else format(total, '.3f')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
