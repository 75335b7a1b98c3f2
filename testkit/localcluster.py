"""A real multi-node Ray cluster on one Linux machine, for tests and benchmarks (needs root).

The head runs in this network namespace on one end of a veth pair; every further node runs in a
network namespace of its own (the other end of its own veth pair) and a private mount namespace
whose Ray temp directory and /dev/shm are fresh tmpfs mounts, so each node has its own IP, its own
sockets, logs and object store. Every process this starts is found again at teardown (the head's
process tree, every process in a node's namespace) and ended; the namespaces are deleted.
Nothing leaves the machine: all addresses are on the veth pairs this makes, Ray is told each
node's IP (`--node-ip-address`) and usage statistics are off.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


class ClusterError(RuntimeError):
    """The cluster could not be made here (not root, no `ip`, Ray missing, a node not starting)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def can_make_namespaces() -> str | None:
    """None when this process can build the cluster, else the reason it cannot."""
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    for tool in ("ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"no `{tool}` command"
    try:
        import ray  # noqa: F401
    except ImportError:
        return "ray is not installed (pip install '.[ray]')"
    return None


@dataclass
class Node:
    ip: str
    proc: subprocess.Popen
    log: Path
    netns: str | None = None  # None: the head, in this network namespace


class LocalCluster:
    """`with LocalCluster(tmp, nodes=2) as c:` -> c.address ("IP:PORT"), c.head_ip, c.nodes.

    `cpus` is what each node tells Ray it has (`--num-cpus`), so a 2-core machine can host a
    cluster of 2 x 4 "CPUs". The dashboard (needed by the state API, `ray list`, Ray Jobs) runs
    on the head unless `dashboard=False`. Ray's token authentication is on unless
    `token_auth=False` (a fresh token in `env`, which drivers get through `driver_env()`).
    """

    def __init__(self, workdir: Path, *, nodes: int = 2, cpus: float = 4, dashboard: bool = True,
                 python: str = sys.executable, env: dict[str, str] | None = None, token_auth: bool = True):
        self.workdir = Path(workdir)
        self.n_nodes, self.cpus, self.dashboard = nodes, cpus, dashboard
        self.python = python
        self.ray = str(Path(python).parent / "ray")
        self.env = {**os.environ, **RAY_ENV, **(env or {})}
        if token_auth:
            # Ray's token mode, as the README advises: every node, driver and `ray job` carries it
            self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
        tag = os.getpid() % 10_000
        self.tag = f"{tag}"
        # one /24 per cluster (root side .1 is the head, .2 the node) and per extra node
        self.subnet = f"10.{200 + tag % 50}.{tag // 50 % 200}"
        # Ray's unix sockets must fit in 107 bytes: a short temp dir, the same path on every node
        self.temp_dir = f"/tmp/rf-ray-{self.tag}"
        self.head_ip = ""
        self.port = 0
        self.dashboard_port = 0
        self.nodes: list[Node] = []
        self._netns: list[str] = []
        self._links: list[str] = []

    # ------------------------------------------------------------------ life cycle
    def __enter__(self) -> LocalCluster:
        why = can_make_namespaces()
        if why:
            raise ClusterError(why)
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def address(self) -> str:
        return f"{self.head_ip}:{self.port}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.makedirs(self.temp_dir, exist_ok=True)
        self.head_ip = self._head_address()
        self._start_head()
        for i in range(1, self.n_nodes):
            self.add_node(i)

    def _head_address(self) -> str:
        """The head's IP: on a veth pair of its own in this namespace (both ends here, up), so
        deleting that pair takes the address away; other nodes reach it over their own pairs."""
        dev, peer = f"rfh{self.tag}", f"rfp{self.tag}"
        _ip("link", "add", dev, "type", "veth", "peer", "name", peer)
        self._links.append(dev)
        _ip("addr", "add", f"{self.subnet}.1/32", "dev", dev)
        _ip("link", "set", dev, "up")
        _ip("link", "set", peer, "up")
        return f"{self.subnet}.1"

    def _start_head(self) -> None:
        log = self.workdir / "ray-head.log"
        self.port = free_port(self.head_ip)
        ports = {flag: str(free_port(self.head_ip)) for flag in (
            "--ray-client-server-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
            "--metrics-export-port", "--runtime-env-agent-port", "--node-manager-port",
            "--object-manager-port")}
        self.dashboard_port = free_port("127.0.0.1")
        cmd = [self.ray, "start", "--head", "--block", "--node-ip-address", self.head_ip,
               "--port", str(self.port), "--temp-dir", self.temp_dir, "--num-cpus", str(self.cpus),
               "--disable-usage-stats", "--include-dashboard", str(self.dashboard).lower(),
               "--dashboard-port", str(self.dashboard_port)]
        for flag, port in ports.items():
            cmd += [flag, port]
        with open(log, "wb") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=self.env,
                                    start_new_session=True)
        node = Node(self.head_ip, proc, log)
        self.nodes.append(node)
        self._wait_started(node, 0)

    def add_node(self, i: int, gpus: int = 0) -> Node:
        """Node i (1, 2, ...) in its own network and mount namespace, joined to the head.
        `gpus` is what it tells Ray (a logical resource: placement, not CUDA)."""
        ns, root_dev, ns_dev = f"rf-ray{self.tag}n{i}", f"rfh{self.tag}n{i}", f"rfw{self.tag}n{i}"
        ip_node = f"{self.subnet}.{i + 1}"
        if ns in self._netns:  # the node died: start Ray there again (same namespace, address)
            return self._start_node(ns, ip_node, i, gpus)
        _ip("netns", "add", ns)
        self._netns.append(ns)
        _ip("link", "add", root_dev, "type", "veth", "peer", "name", ns_dev)
        self._links.append(root_dev)
        _ip("link", "set", ns_dev, "netns", ns)
        _ip("link", "set", root_dev, "up")
        # point-to-point: this node's /32 routed over its pair here, the head's over it there.
        # Nodes reach the head, not each other (that would need forwarding in this namespace).
        _ip("route", "add", f"{ip_node}/32", "dev", root_dev, "src", self.head_ip)
        _ip("-n", ns, "addr", "add", f"{ip_node}/32", "dev", ns_dev)
        _ip("-n", ns, "link", "set", ns_dev, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "route", "add", f"{self.head_ip}/32", "dev", ns_dev)
        return self._start_node(ns, ip_node, i, gpus)

    def _start_node(self, ns: str, ip_node: str, i: int, gpus: int) -> Node:
        log = self.workdir / f"ray-node{i}.log"
        inner = (f"mount -t tmpfs -o mode=1777 tmpfs {self.temp_dir} && "
                 "mount -t tmpfs -o mode=1777 tmpfs /dev/shm && "
                 f"exec {self.ray} start --block --address {self.address} --node-ip-address {ip_node} "
                 f"--num-cpus {self.cpus} --num-gpus {gpus} --disable-usage-stats")
        since = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as fh:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, "unshare", "-m", "--propagation", "private",
                                     "sh", "-c", inner], stdout=fh, stderr=subprocess.STDOUT,
                                    env=self.env, start_new_session=True)
        node = Node(ip_node, proc, log, netns=ns)
        self.nodes = [n for n in self.nodes if n.netns != ns] + [node]
        self._wait_started(node, since)
        return node

    def _wait_started(self, node: Node, since: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = node.log.read_bytes()[since:].decode(errors="replace")
            if "Ray runtime started" in text:
                return
            if node.proc.poll() is not None:
                raise ClusterError(f"ray start on {node.ip} exited with code {node.proc.returncode}: "
                                   + " | ".join(text.strip().splitlines()[-5:]))
            time.sleep(0.2)
        raise ClusterError(f"ray start on {node.ip} did not come up in {timeout:.0f} s")

    # ------------------------------------------------------------------ drivers
    def driver_env(self) -> dict[str, str]:
        """Environment for a driver on the head (`fleet`, `launch.sh --ray`, `ray job`)."""
        return {**self.env, "RAY_ADDRESS": self.address, "RAY_NODE_IP_ADDRESS": self.head_ip,
                "PYTHONUNBUFFERED": "1"}

    def fleet(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """`fleet ARGS` run on the head against this cluster."""
        return subprocess.run([self.python, "-m", "fleet", *args], env=self.driver_env(),
                              capture_output=True, text=True, timeout=timeout)

    def units(self, name: str = "retrofleet") -> list[dict]:
        """`fleet status --json`: one dict per unit (index, state, node_ip, pid, child_pid, ...)."""
        import json

        out = self.fleet("status", "--json", "--name", name)
        if out.returncode != 0:
            raise ClusterError(f"fleet status failed: {out.stderr.strip()}")
        return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]

    def cmdlines(self) -> dict[int, str]:
        """pid -> command line of every process of every node."""
        import psutil

        out = {}
        for node in self.nodes:
            for pid in self.node_pids(node):
                try:
                    out[pid] = " ".join(psutil.Process(pid).cmdline())
                except psutil.Error:
                    continue
        return out

    # ------------------------------------------------------------------ processes
    def node_pids(self, node: Node) -> set[int]:
        """Every process of `node`: its namespace's processes, or the head's process tree."""
        import psutil

        if node.netns:
            out = _ip("netns", "pids", node.netns, check=False).stdout.split()
            return {int(p) for p in out}
        try:
            root = psutil.Process(node.proc.pid)
            return {root.pid, *(c.pid for c in root.children(recursive=True))}
        except psutil.NoSuchProcess:
            return set()

    def node_of_pid(self, pid: int) -> Node | None:
        for node in self.nodes:
            if pid in self.node_pids(node):
                return node
        return None

    def kill_raylet(self, node: Node) -> int:
        """SIGKILL `node`'s raylet (the node dies as Ray sees it); returns its pid."""
        import psutil

        for pid in self.node_pids(node):
            try:
                if psutil.Process(pid).name() == "raylet":
                    os.kill(pid, signal.SIGKILL)
                    return pid
            except psutil.NoSuchProcess:
                continue
        raise ClusterError(f"no raylet on {node.ip}")

    def save_logs(self, max_bytes: int = 2 << 20) -> None:
        """Copy each node's Ray logs (the node's own tmpfs) to WORKDIR/ray-logs/<ip>/ before they go."""
        for node in self.nodes:
            root = Path(f"/proc/{node.proc.pid}/root") if node.netns else Path("/")
            src = root / self.temp_dir.lstrip("/") / "session_latest" / "logs"
            dst = self.workdir / "ray-logs" / node.ip
            try:
                files = [p for p in src.iterdir() if p.is_file()]
            except OSError:
                continue
            dst.mkdir(parents=True, exist_ok=True)
            for f in files:
                try:
                    data = f.read_bytes()
                except OSError:
                    continue
                (dst / f.name).write_bytes(data[-max_bytes:])

    def stop(self) -> None:
        """End every process of every node (SIGTERM, then SIGKILL) and delete the namespaces."""
        import psutil

        try:
            self.save_logs()
        except OSError:
            pass
        pids: set[int] = set()
        for node in self.nodes:
            pids |= self.node_pids(node)
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for node in self.nodes:
            try:
                node.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for node in self.nodes:
            pids |= self.node_pids(node)
        for pid in pids:
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        for node in self.nodes:
            if node.proc.poll() is None:
                node.proc.kill()
            node.proc.wait(10)
        for ns in self._netns:
            _ip("netns", "del", ns, check=False)  # takes its end of the veth pair with it
        for dev in self._links:
            _ip("link", "del", dev, check=False)
        self._netns, self._links, self.nodes = [], [], []
        shutil.rmtree(self.temp_dir, ignore_errors=True)
