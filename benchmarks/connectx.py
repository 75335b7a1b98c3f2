"""ConnectX figures: Kaggle's negamax speed, an exported submission against the scripted players
(the issue 11 targets: both seats, a draw counting 1/2), the 30-minute run of the README's
command, and games/s with 1 and 2 actors.

    python -m benchmarks.connectx negamax [--games 20]
    python -m benchmarks.connectx submission submission.py [--games 200] [--json out.json]
    python -m benchmarks.connectx run --minutes 30 --out bench_out/connectx   # ./launch.sh 2 --env connectx
    python -m benchmarks.connectx scaling --seconds 120 --out bench_out/connectx_scaling
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import time
from pathlib import Path

from common.connectx.game import Game
from common.connectx.match import play_match
from common.connectx.negamax import Negamax
from common.connectx.opponents import scripted


class Timed:
    """Wraps a player and records the seconds of each move."""

    def __init__(self, player):
        self.player, self.name, self.times = player, player.name, []

    def act(self, own: int, opp: int) -> int:
        t0 = time.perf_counter()
        move = self.player.act(own, opp)
        self.times.append(time.perf_counter() - t0)
        return move


def _ms(times: list[float]) -> dict:
    times = sorted(times)
    return {"moves": len(times), "mean_ms": 1e3 * statistics.mean(times),
            "p50_ms": 1e3 * times[len(times) // 2], "max_ms": 1e3 * times[-1]}


def negamax_speed(args: argparse.Namespace) -> dict:
    """Seconds a move of the depth-4 negamax (no root cache) on the positions of games against a
    random player, and of the tests' plain list-based transcription of Kaggle's algorithm (the
    way Kaggle's own code computes it) on the first ``--reference`` of those positions."""
    from testkit.connectx_reference import ref_root_scores

    rng = random.Random(0)
    player = Negamax(seed=1, cache_size=0)
    times, positions = [], []
    for _ in range(args.games):
        g = Game()
        while not g.done:
            own, opp = g.own_opp()
            if g.moves % 2 == 0:
                positions.append((g.board(), g.mark))
                t0 = time.perf_counter()
                c = player.act(own, opp)
                times.append(time.perf_counter() - t0)
            else:
                c = rng.choice([c for c in range(7) if g.legal(c)])
            g.play(c)
    ref = []
    for board, mark in positions[:args.reference]:
        t0 = time.perf_counter()
        ref_root_scores(board, mark)
        ref.append(time.perf_counter() - t0)
    fast_same = times[:len(ref)]
    out = {"bitboard": _ms(times), "reference": _ms(ref) if ref else None}
    if ref:
        out["speedup_same_positions"] = sum(ref) / sum(fast_same)
    return out


def submission(args: argparse.Namespace) -> dict:
    from common.connectx.export_kaggle import SubmissionPlayer

    agent = Timed(SubmissionPlayer(args.file))
    out = {"file": args.file, "games_per_seat": args.games}
    for name in args.opponents:
        res = play_match(agent, lambda i, n=name: scripted(n, seed=10_000 + i), args.games, name)
        print(res.line(), flush=True)
        out[name] = res.as_dict()
    t = sorted(agent.times)
    out["move_ms"] = {"mean": 1e3 * statistics.mean(t), "max": 1e3 * t[-1]}
    print(f"agent time a move: mean {out['move_ms']['mean']:.2f} ms, max {out['move_ms']['max']:.2f} ms")
    return out


ROOT = Path(__file__).resolve().parents[1]


def launch(actors: int, run_dir: Path, minutes: float, log: Path, *flags: str) -> None:
    """``./launch.sh N --env connectx`` (its preset) for ``minutes`` of wall clock."""
    from testkit.processes import free_base_port

    cmd = [str(ROOT / "launch.sh"), str(actors), "--env", "connectx", "--max-minutes", str(minutes),
           "--run-dir", str(run_dir), "--port", str(free_base_port()), *flags]
    with open(log, "wb") as fh:
        subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=minutes * 60 + 600, check=True)


def curve_png(evals: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    minutes = [e["wall_s"] / 60 for e in evals]
    for key, style in (("negamax_first", "-o"), ("negamax_second", "-s"), ("random_first", ":"),
                       ("random_second", ":")):
        ax.plot(minutes, [e[key] for e in evals], style, label=key.replace("_", ", ") + " seat", markersize=3)
    ax.axhline(0.95, color="gray", lw=0.5)
    ax.axhline(0.80, color="gray", lw=0.5)
    ax.set_xlabel("wall clock (minutes)")
    ax.set_ylabel("score (draw = 1/2), greedy")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("./launch.sh 2 --env connectx: score against Kaggle's agents")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def run(args: argparse.Namespace) -> dict:
    """The README's command for ``--minutes``, then its final policy exported and played."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run_dir = out / "run"
    launch(args.actors, run_dir, args.minutes, out / "launch.out", *args.extra)
    sub = out / "submission.py"
    subprocess.run([str(ROOT / ".venv" / "bin" / "learner"), "export-kaggle", str(run_dir), "--out", str(sub)],
                   check=True)
    final = submission(argparse.Namespace(file=str(sub), games=args.games, opponents=["negamax", "random"]))
    evals = [json.loads(x) for x in (run_dir / "eval" / "evals.jsonl").read_text().splitlines()]
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    games = [r for r in rows if "games_per_s" in r and r["wall_s"] > 60]
    result = {
        "minutes": args.minutes, "actors": args.actors, "final": final, "evals": evals,
        "elo": json.loads((run_dir / "league" / "elo.json").read_text()) if (run_dir / "league" / "elo.json").exists() else {},
        "games": rows[-1].get("games"), "illegal_moves": rows[-1].get("illegal_moves"),
        "games_per_s": statistics.mean(r["games_per_s"] for r in games) if games else None,
        "moves_per_s": statistics.mean(r["moves_per_s"] for r in games) if games else None,
        "lowest_first_after_10_min": min((e["negamax_first"] for e in evals if e["wall_s"] >= 600), default=None),
    }
    (out / "connectx_run.json").write_text(json.dumps(result, indent=1))
    if evals:
        curve_png(evals, out / "connectx_curve.png")
    lines = ["| minute | vs negamax first | vs negamax second | vs random first | vs random second |",
             "| --- | --- | --- | --- | --- |"]
    for e in evals:
        lines.append(f"| {e['wall_s'] / 60:.1f} | {e['negamax_first']:.3f} | {e['negamax_second']:.3f} | "
                     f"{e['random_first']:.3f} | {e['random_second']:.3f} |")
    (out / "connectx_curve.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({k: v for k, v in result.items() if k not in ("evals", "final")}))
    return result


def scaling(args: argparse.Namespace) -> dict:
    """games/s and moves/s of ./launch.sh N --env connectx from a fresh start, N = 1 and 2."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {}
    for n in args.actors:
        run_dir = out / f"actors_{n}"
        launch(n, run_dir, args.seconds / 60, out / f"actors_{n}.out", "--eval-interval", "0", *args.extra)
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        steady = [r for r in rows if "games_per_s" in r and r["wall_s"] > 20]
        result[n] = {"games_per_s": statistics.mean(r["games_per_s"] for r in steady),
                     "moves_per_s": statistics.mean(r["moves_per_s"] for r in steady),
                     "updates_per_s": rows[-1]["updates"] / rows[-1]["wall_s"]}
        print(n, json.dumps(result[n]), flush=True)
    if 1 in result and 2 in result:
        result["speedup_2_over_1"] = result[2]["games_per_s"] / result[1]["games_per_s"]
        print(f"2 actors / 1 actor: {result['speedup_2_over_1']:.2f}x games/s")
    (out / "connectx_scaling.json").write_text(json.dumps(result, indent=1))
    return result


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.connectx")
    sub = p.add_subparsers(dest="cmd", required=True)
    n = sub.add_parser("negamax")
    n.add_argument("--games", type=int, default=20)
    n.add_argument("--reference", type=int, default=60, help="positions timed with the plain transcription")
    s = sub.add_parser("submission")
    s.add_argument("file")
    s.add_argument("--games", type=int, default=200, help="games per seat and opponent")
    s.add_argument("--opponents", nargs="+", default=["negamax", "random"])
    r = sub.add_parser("run")
    r.add_argument("--minutes", type=float, default=30)
    r.add_argument("--actors", type=int, default=2)
    r.add_argument("--games", type=int, default=200, help="games per seat for the exported file")
    r.add_argument("--out", default="bench_out/connectx")
    c = sub.add_parser("scaling")
    c.add_argument("--seconds", type=float, default=120)
    c.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    c.add_argument("--out", default="bench_out/connectx_scaling")
    for q in (r, c):
        q.add_argument("extra", nargs="*", help="more learner flags (after --)")
    for q in (n, s, r, c):
        q.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    result = {"negamax": negamax_speed, "submission": submission, "run": run, "scaling": scaling}[args.cmd](args)
    if args.cmd == "negamax":
        print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
