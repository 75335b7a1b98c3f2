"""Floods (issue 8.4, 8.5): hellos, connections, object bombs. The learner keeps training with
bounded memory, a real actor still joins, and it stops on SIGTERM. CartPole-v1, real sockets.

Each test prints one `FLOOD ...` line with what it measured (pytest -s shows it).
"""

from __future__ import annotations

import resource
import signal
import subprocess
import time

import psutil

from common.config import Config
from learner.server import specs
from testkit.floods import ConnectionFlood, HelloFlood, PushFlood, object_bomb
from tests.conftest import (
    CARTPOLE,
    free_base_port,
    last_metrics,
    read_actors,
    read_metrics,
    wait_for,
)


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def test_hello_flood_and_object_bombs(procs, tmp_path):
    port = free_base_port()
    run = tmp_path / "run"
    learner = procs.learner(*CARTPOLE, port=port, run_dir=run)
    procs.actor(port, "a0")
    wait_for(lambda: (m := last_metrics(run)).get("updates", 0) >= 3 and m["actors"] == 1, 90, "first updates")
    rss0 = _rss_mb(learner.pid)
    bomb = object_bomb(specs(Config(env="CartPole-v1"))[2].max_message_bytes)  # as large as admitted
    hellos = HelloFlood(port, sockets=50).start()
    bombs = PushFlood(port, bomb).start()
    t0 = time.monotonic()
    rows0 = len(read_metrics(run))
    try:
        time.sleep(2)
        procs.actor(port, "a1")
        joined = wait_for(lambda: last_metrics(run)["actors"] == 2 and time.monotonic(), 60,
                          "a real actor joins during the flood") - t0
        u_flood = last_metrics(run)["updates"]
        time.sleep(3)
        peak = _rss_mb(learner.pid)
    finally:
        hellos.stop()  # 50 connections closed at once, their queues full: libzmq#4364's trigger
        bombs.stop()
    flood_s = time.monotonic() - t0
    rows = read_metrics(run)[rows0:]
    time.sleep(3)
    assert learner.poll() is None, "the learner survived the flood and its abrupt end"
    row = last_metrics(run)
    assert row["updates"] > u_flood, "training went on"
    assert len(rows) >= flood_s / 0.5 * 0.6, "reports kept coming during the flood"
    # what was still queued when the flooders closed never arrived
    assert row["rate_limited"] > 0 and row["rejected_messages"] >= bombs.sent * 0.5
    assert len(read_actors(run)) == 2, "flood hellos are never written to actors.jsonl"
    log = (tmp_path / "learner.log").read_text()
    assert len(log.splitlines()) < 200 and "Traceback" not in log
    t_term = time.monotonic()
    learner.send_signal(signal.SIGTERM)
    try:
        assert learner.wait(15) == 0
    except subprocess.TimeoutExpired:
        learner.send_signal(signal.SIGUSR2)
        time.sleep(1)
        learner.send_signal(signal.SIGUSR1)
        time.sleep(2)
        print((tmp_path / "learner.log").read_text()[-6000:])
        raise
    stopped = time.monotonic() - t_term
    print(f"\nFLOOD hellos {hellos.sent:,} from 50 sockets + {bombs.sent:,} object bombs in {flood_s:.0f} s: "
          f"real actor joined after {joined:.1f} s, updates {u_flood} -> {row['updates']}, "
          f"RSS {rss0:.0f} -> {peak:.0f} MB, rate-limited {row['rate_limited']:,}, "
          f"SIGTERM -> exit {stopped:.1f} s", flush=True)
    assert peak - rss0 < 150, (rss0, peak)
    assert stopped < 10


def _low_fd_limit(n: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return apply


def test_out_of_file_descriptors_the_learner_survives(procs, tmp_path):
    """With 256 descriptors, 240 half-open connections exhaust them: the learner keeps
    reporting and training, drops the half-open ones after its handshake timeout, and a new
    actor joins once descriptors are free again."""
    port = free_base_port()
    run = tmp_path / "run"
    learner = procs.learner(*CARTPOLE, "--save-interval", "5", port=port, run_dir=run,
                            preexec_fn=_low_fd_limit(256))
    procs.actor(port, "a0")
    wait_for(lambda: (m := last_metrics(run)).get("updates", 0) >= 3 and m["actors"] == 1, 90, "first updates")
    fds0 = last_metrics(run)["fds"]
    flood = ConnectionFlood(port, 240).start()
    try:
        t0 = time.monotonic()
        log = tmp_path / "learner.log"
        rows0 = len(read_metrics(run))
        u0 = last_metrics(run)["updates"]
        time.sleep(4)
        during = read_metrics(run)[rows0:]
        peak = max((r["fds"] or 256) for r in during) if during else None
        assert learner.poll() is None, log.read_text()[-2000:]
        assert len(during) >= 4, "reports go on while descriptors run out"
        wait_for(lambda: last_metrics(run)["updates"] >= u0 + 5, 30, "updates while descriptors run out")
        # half-open connections are dropped after the learner's handshake timeout (10 s)
        wait_for(lambda: (last_metrics(run)["fds"] or 999) < fds0 + 20, 30, "descriptors freed")
        freed = time.monotonic() - t0
        procs.actor(port, "a1")
        wait_for(lambda: last_metrics(run)["actors"] == 2, 60, "a new actor joins")
    finally:
        flood.stop()
    assert learner.poll() is None
    print(f"\nFLOOD 240 half-open connections with a limit of 256 fds: fds {fds0} -> {peak}, "
          f"freed after {freed:.0f} s; reports {len(during)} in 4 s", flush=True)
    assert peak is not None and peak >= 200
    assert "Traceback" not in log.read_text()
