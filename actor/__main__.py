"""`actor --learner tcp://HOST:PORT`: one emulator streaming rollouts to a learner."""

from __future__ import annotations

import argparse
import logging
import sys

from actor import client
from common import transport


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="actor",
        description="Run one environment and stream rollouts to a retrofleet learner. "
        "Everything else (game, model, seed) comes from the learner.",
    )
    p.add_argument("--learner", default="tcp://127.0.0.1:5555",
                   help="learner's control address tcp://HOST:PORT (default: %(default)s)")
    p.add_argument("--curve-secret", metavar="FILE",
                   help="this actor's secret key file (actorN.key_secret from `learner keygen`)")
    p.add_argument("--curve-server-key", metavar="FILE",
                   help="the learner's public key file (learner.key from `learner keygen`)")
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
    except transport.TransportError as exc:
        print(f"actor: error: {exc}", file=sys.stderr)
        return 2
    return client.run(args.learner, keys)


if __name__ == "__main__":
    sys.exit(main())
