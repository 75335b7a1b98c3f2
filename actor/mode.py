"""Which actors a host runs for a learner's game: an actor host (N emulator processes, one
batched policy) or N one-process actors. launch.sh asks this before it starts actors:

    python -m actor.mode --learner tcp://HOST:PORT --actors N [--curve-secret F --curve-server-key F]

prints `host` or `process` and, on stderr, why. It learns the game from one hello to the
learner (an actor id that never sends a heartbeat: the learner forgets it within 30 s and
never counts it).

The rule (measured in docs/BENCHMARKS.md, "Actor host"): a host when there are two emulators
or more and the policy is the Nature CNN (image games: stable-retro); one-process actors for a
single emulator (nothing to batch) and for small vector policies (CartPole's MLP, ConnectX),
whose forward pass costs less than the host's extra hop.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

HOST_MODEL_KINDS = ("nature_cnn", "mlp")  # policies the actor host runs (no masks, no opponents)


def choose(settings: dict[str, Any], actors: int) -> tuple[str, str]:
    """("host" or "process", why) for `actors` emulators of the game a welcome's `settings` name."""
    kind = settings["model"]["kind"]
    if kind not in HOST_MODEL_KINDS or settings.get("two_player"):
        return "process", f"the actor host does not run {kind} policies (action masks, opponents)"
    if actors < 2:
        return "process", "one emulator: nothing to batch"
    if kind != "nature_cnn":
        return "process", f"a small {kind} policy: batching it saves less than the host's extra hop costs"
    return "host", f"{actors} emulators of an image game: one batched CNN instead of {actors} batch-1 copies"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m actor.mode", description=__doc__.split("\n\n")[0])
    p.add_argument("--learner", required=True, help="learner's control address tcp://HOST:PORT")
    p.add_argument("--actors", type=int, required=True, help="emulators this host will run")
    p.add_argument("--curve-secret", metavar="FILE")
    p.add_argument("--curve-server-key", metavar="FILE")
    args = p.parse_args(argv)
    logging.basicConfig(level="WARNING", format="actor.mode: %(message)s")
    from actor.link import LearnerLink
    from common import transport

    keys = None
    if args.curve_secret or args.curve_server_key:
        keys = transport.actor_keys(args.curve_secret, args.curve_server_key)
    link = LearnerLink(args.learner, keys=keys)
    try:
        settings = link.join().settings
    finally:
        link.close()
    mode, why = choose(settings, args.actors)
    print(f"{mode}: {why}", file=sys.stderr)
    print(mode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
