"""`learner [flags]` trains; `learner evaluate RUN_DIR` plays a checkpoint; `learner keygen DIR`."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import resource
import signal
import sys
from pathlib import Path

from common.config import ConfigError, add_arguments, resolve

log = logging.getLogger("learner")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def train_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="learner",
        description="retrofleet learner: receives rollouts from actors over ZeroMQ, updates the "
        "policy (APPO with V-trace, or synchronous rounds) and publishes the weights. "
        "Subcommands: `learner evaluate RUN_DIR`, `learner export-kaggle RUN_DIR`, `learner keygen DIR`.",
    )
    p.add_argument("--config", metavar="FILE.toml", help="settings file with the keys of config.toml")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    add_arguments(p)
    return p


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard one (each actor holds three connections); the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # some platforms cap the soft limit below an infinite hard one
            pass
    return soft


def main_train(argv: list[str]) -> int:
    args = train_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s learner %(levelname)s %(message)s")
    from common import envs, transport
    from learner.checkpoint import RunDirError
    from learner.server import Learner, PortInUse

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: every thread's stack
    fd_limit = raise_fd_limit()
    log.debug("file descriptor limit %d", fd_limit)

    try:
        cfg = resolve(args, args.config)
        if cfg.resume and not cfg.run_dir:
            raise ConfigError("--resume needs --run-dir (the run to continue)")
        run_dir = Path(cfg.run_dir or cfg.default_run_dir())
        keys = transport.learner_keys(cfg.curve_dir) if cfg.curve_dir else None
        if keys is None and not (cfg.bind.startswith("127.") or cfg.bind in ("localhost", "::1")):
            # printed, not logged, so that no --log-level hides it
            print(f"learner: warning: binding {cfg.bind} without CURVE: anyone who can reach this "
                  "host can join, send rollouts and read the weights; use --curve-dir DIR "
                  "(make keys with `learner keygen DIR`)", file=sys.stderr, flush=True)
        learner = Learner(cfg, run_dir, keys=keys)
    except (ConfigError, RunDirError, envs.EnvError, transport.TransportError, ValueError, RuntimeError) as exc:
        print(f"learner: error: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(learner.run())
    except PortInUse as exc:
        print(f"learner: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"learner: error: {exc}", file=sys.stderr)
        return 1


def main_keygen(argv: list[str]) -> int:
    p = OneLineParser(prog="learner keygen", description="Make CURVE keys for a learner and its actors.")
    p.add_argument("dir", help="directory to write the keys to")
    p.add_argument("--actors", type=int, default=8,
                   help="actor key pairs to add (default: 8); an existing learner key pair is kept")
    args = p.parse_args(argv)
    from common.transport import TransportError, keygen

    try:
        made = keygen(args.dir, args.actors)
    except (TransportError, OSError) as exc:
        print(f"learner keygen: error: {exc}", file=sys.stderr)
        return 2
    names = sorted({f.name for f in made})
    print(f"keys in {args.dir} (new: {', '.join(names) or 'none'}): learner.key (give to actors), "
          "learner.key_secret (keep on the learner), actorN.key_secret (one per actor); "
          "authorized/ holds the admitted actors' public keys. Actor: --curve-secret "
          "actorN.key_secret --curve-server-key learner.key; learner: --curve-dir DIR")
    return 0


def main_evaluate(argv: list[str]) -> int:
    p = OneLineParser(prog="learner evaluate",
                      description="Play a run's newest checkpoint (or --checkpoint FILE) without a learner.")
    p.add_argument("run_dir", help="run directory (holds config.toml and checkpoints/)")
    p.add_argument("--checkpoint", help="a ckpt_N.pt file (default: the newest of the run)")
    p.add_argument("--episodes", type=int, default=5, help="episodes to play (default: 5)")
    p.add_argument("--video", help="write one episode as a .gif or .mp4")
    p.add_argument("--seed", type=int, default=12345, help="environment seed (default: 12345)")
    p.add_argument("--greedy", action="store_true", help="take the most likely action, not a sample")
    p.add_argument("--max-steps", type=int, help="cut each episode after this many agent steps")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    p.add_argument("--opponent", help="two-player games: opponents, comma-separated (random, tactical, "
                   "negamax, negamaxN); the greedy policy plays --games games from each seat against each")
    p.add_argument("--games", type=int, default=100, help="with --opponent: games per seat (default: 100)")
    p.add_argument("--rate-snapshots", action="store_true",
                   help="with --opponent: also rate the run's league snapshots (league/elo.json)")
    args = p.parse_args(argv)
    from learner.play_checkpoint import EvaluateError, evaluate
    from learner.trained_policy import PolicyError, load_policy

    try:
        if args.opponent:  # two-player games: matches from both seats
            from common.connectx.evaluation import check_request, evaluate_policy

            opponents = [o.strip() for o in args.opponent.split(",") if o.strip()]
            try:
                check_request(opponents, args.games)
                policy = load_policy(args.run_dir, checkpoint=args.checkpoint, seed=args.seed)
                result = evaluate_policy(policy, args.run_dir, opponents=opponents, games_per_seat=args.games,
                                         seed=args.seed, rate=args.rate_snapshots)
            except ValueError as exc:
                raise PolicyError(str(exc)) from None
        else:
            result = evaluate(args.run_dir, checkpoint=args.checkpoint, episodes=args.episodes,
                              video=args.video, seed=args.seed, greedy=args.greedy, max_steps=args.max_steps)
    except (EvaluateError, PolicyError) as exc:
        print(f"learner evaluate: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    elif args.opponent:
        print(f"{result['checkpoint']}, greedy, {args.games} games a seat:")
        for line in result["lines"]:
            print("  " + line)
        for name, rating in sorted(result.get("elo", {}).items(), key=lambda kv: -kv[1]):
            print(f"  Elo {name}: {rating:.0f}")
    else:
        print(f"mean return {result['mean_return']:.2f} over {len(result['returns'])} episodes "
              f"({', '.join(f'{r:.1f}' for r in result['returns'])})")
        if args.video:
            print(f"video: {args.video}")
    return 0


def main_export_kaggle(argv: list[str]) -> int:
    p = OneLineParser(prog="learner export-kaggle",
                      description="Write a ConnectX run's policy as one Kaggle submission file "
                      "(numpy and the standard library only; agent() greedy over the masked policy).")
    p.add_argument("run_dir", help="run directory, or a ckpt_N.pt file")
    p.add_argument("--checkpoint", help="a ckpt_N.pt file (default: the newest of the run)")
    p.add_argument("--out", default="submission.py", help="file to write (default: submission.py)")
    args = p.parse_args(argv)
    from common.connectx.export_kaggle import export_policy
    from learner.trained_policy import PolicyError, load_policy

    try:
        path, origin = export_policy(load_policy(args.run_dir, checkpoint=args.checkpoint), args.out)
    except (PolicyError, ValueError, OSError) as exc:
        print(f"learner export-kaggle: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size:,} bytes) from {origin}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "keygen":
        return main_keygen(argv[1:])
    if argv and argv[0] == "evaluate":
        return main_evaluate(argv[1:])
    if argv and argv[0] == "export-kaggle":
        return main_export_kaggle(argv[1:])
    return main_train(argv)


if __name__ == "__main__":
    sys.exit(main())
