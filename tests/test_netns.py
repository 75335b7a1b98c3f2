"""A remote run over two network hosts: the learner in one network namespace, the actors in
another, joined by a veth pair (10.231.0.1/24 <-> 10.231.0.2/24); then a 15 s partition.

Needs root and the `ip` command (iproute2); skipped otherwise. The namespaces and the veth pair
are this test's own and are always deleted at teardown.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, CARTPOLE, last_metrics, read_actors, read_metrics, wait_for

LEARNER_ADDR, ACTOR_ADDR = "10.231.0.1", "10.231.0.2"
PORT = 5555  # each namespace has its own ports: the default is free there


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


@pytest.fixture
def two_hosts():
    """Two network namespaces joined by a veth pair: {"learner": (ns, dev), "actors": (ns, dev)}."""
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root")
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (install iproute2)")
    tag = os.getpid() % 100_000
    hosts = {"learner": (f"rf-l{tag}", f"rfl{tag}"), "actors": (f"rf-a{tag}", f"rfa{tag}")}
    (ns_l, dev_l), (ns_a, dev_a) = hosts["learner"], hosts["actors"]

    def teardown() -> None:
        for ns, _dev in hosts.values():
            _ip("netns", "del", ns, check=False)  # takes its end of the veth pair with it

    try:
        _ip("netns", "add", ns_l)
        _ip("netns", "add", ns_a)
        _ip("link", "add", dev_l, "type", "veth", "peer", "name", dev_a)
        _ip("link", "set", dev_l, "netns", ns_l)
        _ip("link", "set", dev_a, "netns", ns_a)
        for (ns, dev), addr in ((hosts["learner"], LEARNER_ADDR), (hosts["actors"], ACTOR_ADDR)):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
    except (subprocess.CalledProcessError, OSError) as exc:
        teardown()
        _ip("link", "del", dev_l, check=False)
        why = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        pytest.skip(f"cannot create network namespaces here: {why}")
    try:
        yield hosts
    finally:
        teardown()


def _tcp_peers(pid: int) -> set[str]:
    """Remote addresses of established TCP connections in `pid`'s network namespace."""
    peers = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        _sl, _local, remote, state = line.split()[:4]
        if state == "01":  # ESTABLISHED
            peers.add(str(ipaddress.IPv4Address(bytes.fromhex(remote.split(":")[0])[::-1])))
    return peers


def _frames(run) -> int:
    return last_metrics(run).get("frames", 0)


def test_remote_actors_over_veth_survive_a_partition(two_hosts, procs, tmp_path):
    # `two_hosts` before `procs`: the processes are killed before the namespaces go
    ns_l, _ = two_hosts["learner"]
    ns_a, dev_a = two_hosts["actors"]
    run = tmp_path / "run"
    learner = procs.start(["ip", "netns", "exec", ns_l, str(BIN / "learner"), *CARTPOLE, "--bind", LEARNER_ADDR, "--port", str(PORT),
                           "--run-dir", str(run), "--report-interval", "0.5"], tmp_path / "learner.log")
    log = tmp_path / "learner.log"
    wait_for(lambda: "learner ready" in log.read_text() or learner.poll() is not None, 60, "learner ready")
    assert learner.poll() is None, log.read_text()
    actors = [procs.start(["ip", "netns", "exec", ns_a, str(BIN / "actor"), "--learner",
                           f"tcp://{LEARNER_ADDR}:{PORT}"], tmp_path / f"a{i}.log") for i in range(2)]
    wait_for(lambda: (m := last_metrics(run)).get("updates", 0) >= 10 and m["actors"] == 2, 120,
             "10 updates with both remote actors")
    assert {a["pid"] for a in read_actors(run)} == {a.pid for a in actors}
    # the learner's peers are the other namespace's address: the data crossed the veth pair
    peers = _tcp_peers(learner.pid)
    assert peers == {ACTOR_ADDR}, peers
    assert "without CURVE" in log.read_text()  # bound beyond loopback without keys

    # Partition: the actors' side of the link goes down for 15 s (2.5 actor timeouts).
    _ip("-n", ns_a, "link", "set", dev_a, "down")
    down_at = time.monotonic()
    wait_for(lambda: last_metrics(run)["actors"] == 0, 15, "the learner sees the actors go")
    gone_after = time.monotonic() - down_at
    time.sleep(3)
    frames_cut = _frames(run)
    time.sleep(max(0.0, 15 - (time.monotonic() - down_at)))
    assert _frames(run) == frames_cut, "nothing flows during the partition"
    assert learner.poll() is None and all(a.poll() is None for a in actors)
    _ip("-n", ns_a, "link", "set", dev_a, "up")
    up_at = time.monotonic()
    wait_for(lambda: _frames(run) > frames_cut, 30, "frames flowing again")
    flowing_after = time.monotonic() - up_at
    wait_for(lambda: last_metrics(run)["actors"] == 2, 30, "both actors counted again")
    counted_after = time.monotonic() - up_at
    u0 = last_metrics(run)["updates"]
    wait_for(lambda: last_metrics(run)["updates"] >= u0 + 5, 60, "updates after the partition")
    rows = read_metrics(run)
    print(f"\nFAULT partition 15 s: learner saw actors gone after {gone_after:.1f} s; frames again "
          f"{flowing_after:.1f} s after the link came up, both actors counted after "
          f"{counted_after:.1f} s; rejected {rows[-1]['rejected_messages']}", flush=True)
    assert flowing_after <= 10, f"frames flowed again only after {flowing_after:.1f} s"
    assert learner.poll() is None and all(a.poll() is None for a in actors)
    assert rows[-1]["rejected_messages"] == 0
    assert len(read_actors(run)) == 2, "the actors carried on; nobody joined again"
