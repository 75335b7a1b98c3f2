"""Which actors a host runs for a learner's game: an actor host (N emulator processes, one
batched policy) or N one-process actors. launch.sh asks this before it starts actors:

    python -m actor.mode --learner tcp://HOST:PORT --actors N [--curve-secret F --curve-server-key F]

prints `host` or `process` and, on stderr, why. It learns the game from one hello to the
learner (an actor id that never sends a heartbeat: the learner forgets it within 30 s and
never counts it).

The rule (measured in docs/BENCHMARKS.md, "Actor host"): a host once there are at least two
emulators a core: then the others step while the host's policy runs on a batch. With fewer,
each emulator waits for its action while its core idles, and one-process actors (each core
emulating and inferring by turns) are faster (Airstriker's CNN and CartPole's MLP alike). With
CUDA on the host a CNN leaves the CPU, so a host from two emulators (not measured here: no GPU).
One-process actors always for games with masks or game-family hooks (board games).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from common.runspec import RunSpec

HOST_MODEL_KINDS = ("nature_cnn", "mlp", "lstm")  # policies the actor host runs (no masks, no family hooks)


def choose(spec: RunSpec, actors: int, cores: int | None = None,
           cuda: bool | None = None) -> tuple[str, str]:
    """("host" or "process", why) for `actors` emulators of the game a welcome's run `spec` names,
    on a machine with `cores` CPU cores (default: this one's) and CUDA or not (default: asks torch)."""
    kind = spec.model.kind
    if kind not in HOST_MODEL_KINDS or spec.bounds.episode_extras:
        return "process", f"the actor host does not run {kind} policies (action masks, family hooks)"
    if actors < 2:
        return "process", "one emulator: nothing to batch"
    if cuda is None and kind == "nature_cnn":
        import torch

        cuda = torch.cuda.is_available()
    if cuda and kind == "nature_cnn":
        return "host", f"{actors} emulators, the CNN batched on this host's GPU"
    cores = cores or os.cpu_count() or 1
    if actors >= 2 * cores:
        return "host", f"{actors} emulators on {cores} cores: the others step while one batched policy runs"
    return "process", (f"{actors} emulators on {cores} cores: a host pays off from {2 * cores} (two a core); "
                       "below that its inference hop leaves cores idle")


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
        spec = link.join().settings
    finally:
        link.close()
    mode, why = choose(spec, args.actors)
    print(f"{mode}: {why}", file=sys.stderr)
    print(mode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
