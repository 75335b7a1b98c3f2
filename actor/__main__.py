"""`actor --learner tcp://HOST:PORT`: one emulator streaming rollouts to a learner;
`actor --emulators N --learner ...`: an actor host (N emulator processes, one batched policy)."""

from __future__ import annotations

import argparse
import logging
import sys

from common import transport

# the actor's modules (torch and the emulators among them) are imported once the flags are read:
# `actor --help` or a wrong flag answers in a fraction of a second, not after torch's import


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="actor",
        description="Run one environment (or, with --emulators, an actor host of N) and stream "
        "rollouts to a retrofleet learner. Everything else (game, model, seeds) comes from the learner.",
    )
    p.add_argument("--learner", default="tcp://127.0.0.1:5555",
                   help="learner's control address tcp://HOST:PORT (default: %(default)s)")
    p.add_argument("--curve-secret", metavar="FILE",
                   help="this actor's secret key file (actorN.key_secret from `learner keygen`)")
    p.add_argument("--curve-server-key", metavar="FILE",
                   help="the learner's public key file (learner.key from `learner keygen`)")
    p.add_argument("--emulators", type=int, default=0, metavar="N",
                   help="run an actor host: N emulator processes and one process that runs the policy "
                   "on their observations in batches (default: 0, one emulator in this process)")
    p.add_argument("--inference-device", default="auto", metavar="DEVICE",
                   help="actor host: where the policy runs: auto (CUDA when this host has it), cpu, "
                   "cuda, cuda:1 ... (default: %(default)s)")
    p.add_argument("--inference-dtype", default="float32", choices=("float32", "bfloat16"),
                   help="actor host: precision of the policy's forward pass (default: %(default)s)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s actor[%(process)d] %(levelname)s %(message)s")
    try:
        transport.parse_address(args.learner)
        keys = None
        if args.curve_secret or args.curve_server_key:
            if not (args.curve_secret and args.curve_server_key):
                raise transport.TransportError("CURVE needs both --curve-secret and --curve-server-key")
            keys = transport.actor_keys(args.curve_secret, args.curve_server_key)
        if args.emulators < 0:
            raise ValueError(f"--emulators must be 0 or more, got {args.emulators}")
        if args.emulators:
            from actor.inference import pick_device

            pick_device(args.inference_device)
    except (transport.TransportError, ValueError) as exc:
        print(f"actor: error: {exc}", file=sys.stderr)
        return 2
    if args.emulators:
        from actor import host

        return host.run(args.learner, args.emulators, keys, device=args.inference_device,
                        dtype=args.inference_dtype)
    from actor import client

    return client.run(args.learner, keys)


if __name__ == "__main__":
    sys.exit(main())
