"""`fleet`: retrofleet actors on a Ray cluster.

    fleet --actors N [--emulators-per-host K] [--learner tcp://HOST:PORT | --learner-on-ray] [-- learner flags]
    fleet status | fleet scale N | fleet stop

The first form runs a fleet in the foreground (also as `ray job submit ... -- python -m fleet ...`);
the others act on the fleet that runs on the cluster (`--name`, default "retrofleet").
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from fleet.spec import FleetError

COMMANDS = ("status", "scale", "stop")


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default="retrofleet", help="the fleet's name: its Ray namespace (default: %(default)s)")
    p.add_argument("--ray", default="auto",
                   help="Ray cluster address: auto (this node's cluster, or RAY_ADDRESS) or HOST:PORT")
    p.add_argument("--node-ip-address", help="this node's IP as the Ray cluster knows it "
                   "(default: RAY_NODE_IP_ADDRESS, else Ray finds this node's raylet)")


def parser(command: str | None) -> argparse.ArgumentParser:
    from fleet.driver import add_up_arguments

    if command is None:
        p = OneLineParser(prog="fleet", description="Run retrofleet actors on a Ray cluster: Ray places "
                          "(SPREAD), restarts and scales them; rollouts and weights go over ZeroMQ. "
                          "Other commands: fleet status | scale N | stop.")
        _common(p)
        add_up_arguments(p)
        return p
    p = OneLineParser(prog=f"fleet {command}")
    _common(p)
    if command == "scale":
        p.add_argument("actors", type=int, help="how many actors (emulators) should run; they are "
                       "split into hosts as the fleet's --emulators-per-host says")
    if command == "status":
        p.add_argument("--json", action="store_true", help="one JSON object per unit")
    return p


def print_status(rows: list, as_json: bool) -> None:
    if as_json:
        for r in rows:
            print(json.dumps(asdict(r)))
        return
    print(f"{'unit':>4}  {'state':<11} {'node':<15} {'ray pid':>8} {'host pid':>9} {'emulators':>9}  "
          f"{'restarts':>8}  actor ids")
    for r in rows:
        ids = ",".join(map(str, r.actor_ids)) or "-"
        print(f"{r.index:>4}  {r.state:<11} {r.node_ip or '?':<15} {r.pid or '-':>8} {r.child_pid or '-':>9} "
              f"{r.emulators or '?':>9}  {'?' if r.restarts is None else r.restarts:>8}  {ids}")
    print(f"{len(rows)} unit(s), {sum(len(r.actor_ids) for r in rows)} actor ids")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in COMMANDS else None
    args = parser(command).parse_args(argv[1:] if command else argv)
    try:
        if command is None:
            from fleet import driver

            return driver.run(driver.options(args))
        from fleet import cluster, control

        cluster.connect(args.ray, node_ip=args.node_ip_address, namespace=args.name)
        if command == "status":
            print_status(control.status(args.name), args.json)
        elif command == "scale":
            started, stopped = control.scale(args.name, args.actors)
            print(f"fleet {args.name}: {args.actors} actor(s); units started {len(started)}, "
                  f"stopped {len(stopped)}")
        else:
            n, learner = control.stop(args.name)
            print(f"fleet {args.name}: stopped {n} unit(s){' and the learner on Ray' if learner else ''}")
        return 0
    except FleetError as exc:
        print(f"fleet: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
