"""Joining a Ray cluster as a driver, and checking that every node can run this fleet.

Each node must run the same Python and Ray as this driver, from the same virtual environment path
(the units start `<that python> -m actor`, not whatever `python` a raylet's PATH finds). One
probe per node (no CPU taken, pinned to that node) runs the venv's python there and reports.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from importlib import metadata

from fleet.spec import FleetError

PROBE_CODE = ("import sys, importlib.metadata as m; print(sys.version.split()[0]); "
              "print(m.version('ray')); print(m.version('retrofleet'))")


def connect(address: str = "auto", *, node_ip: str | None = None, namespace: str = "retrofleet") -> str:
    """ray.init as a driver of an existing cluster; returns this node's IP as Ray knows it.

    `node_ip` (or RAY_NODE_IP_ADDRESS) tells Ray which node this is, so that it never has to guess
    by probing a public address.
    """
    try:
        import ray
    except ImportError:
        raise FleetError("ray is not installed here: pip install '.[ray]' (or ./launch.sh N --ray ...)") from None
    node_ip = node_ip or os.environ.get("RAY_NODE_IP_ADDRESS") or None
    try:
        ray.init(address=address, namespace=namespace, _node_ip_address=node_ip, log_to_driver=False,
                 logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FleetError(f"cannot join the Ray cluster at {address!r}: {first}") from None
    return ray.util.get_node_ip_address()


@dataclass(frozen=True)
class NodeReport:
    ip: str
    node_id: str
    python: str | None = None  # of the driver's venv python on that node
    ray: str | None = None
    retrofleet: str | None = None
    error: str | None = None


def here() -> NodeReport:
    """This driver's own versions, what every node must match."""
    return NodeReport("", "", sys.version.split()[0], metadata.version("ray"), metadata.version("retrofleet"))


def probe_nodes(python: str, timeout: float = 120) -> list[NodeReport]:
    """Run `python` on every alive node (a task pinned there) and report its versions."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    code = PROBE_CODE

    # A nested function travels by value: the probe needs nothing of this package on the node.
    @ray.remote(num_cpus=0, max_retries=0)
    def probe(python: str) -> tuple[str, str]:
        import os
        import subprocess

        if not os.access(python, os.X_OK):
            return "", f"{python} does not exist there"
        try:
            out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return "", f"{python} does not run there: {exc}"
        if out.returncode != 0:
            last = (out.stderr.strip().splitlines() or ["?"])[-1]
            return "", f"{python} there lacks ray or retrofleet ({last})"
        return out.stdout, ""

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(python) for n in nodes]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    reports = []
    for node, ref in zip(nodes, refs, strict=True):
        ip, node_id = node["NodeManagerAddress"], node["NodeID"]
        if ref not in ready:
            reports.append(NodeReport(ip, node_id, error=f"no answer from node {ip} in {timeout:.0f} s"))
            continue
        try:
            out, err = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the node went away meanwhile
            reports.append(NodeReport(ip, node_id, error=f"probe failed: {type(exc).__name__}"))
            continue
        if err:
            reports.append(NodeReport(ip, node_id, error=err))
            continue
        py, ray_v, rf = (out.strip().splitlines() + ["?", "?", "?"])[:3]
        reports.append(NodeReport(ip, node_id, py, ray_v, rf))
    return reports


def check_versions(reports: list[NodeReport], want: NodeReport, python: str) -> str | None:
    """None when every node matches `want`; else one line naming the first node that differs."""
    if not reports:
        return "the Ray cluster has no alive node"
    for r in reports:
        if r.error:
            return (f"node {r.ip}: {r.error}; every node needs this driver's environment at the same "
                    f"path ({python}: Python {want.python}, Ray {want.ray}, retrofleet {want.retrofleet})")
        diffs = [f"{what} {theirs} (here {mine})" for what, theirs, mine in (
            ("Python", r.python, want.python), ("Ray", r.ray, want.ray),
            ("retrofleet", r.retrofleet, want.retrofleet)) if theirs != mine]
        if diffs:
            return (f"node {r.ip} runs {', '.join(diffs)} from {python}; every node needs the same "
                    "Python, Ray and retrofleet as this driver")
    return None


def check_cluster(python: str = sys.executable) -> list[NodeReport]:
    """Probe every node; FleetError (one line) when one differs from this driver."""
    reports = probe_nodes(python)
    problem = check_versions(reports, here(), python)
    if problem:
        raise FleetError(problem)
    return reports


def free_cpus() -> float:
    import ray

    return float(ray.available_resources().get("CPU", 0.0))


def node_cpus() -> list[float]:
    """Each alive node's CPUs (what it told Ray it has)."""
    import ray

    return [float(n["Resources"].get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")]


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))
