"""The actor host against a real learner: real sockets, real processes, real emulators.

`actor --emulators N`: each emulator is an actor of its own to the learner (its own id,
heartbeats, token); a dead emulator is restarted while the host goes on; a hung one stops
being counted until it answers again; Ctrl-C stops the host and every emulator; CURVE works.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import psutil
import pytest

from actor.mode import choose
from actor.sync_pace import KEEP_ROUNDS, SyncPatience
from common.config import Config
from common.runspec import RunSpec
from tests.conftest import BIN, CARTPOLE, free_base_port, last_metrics, read_actors, wait_for


def emulators(host: subprocess.Popen) -> dict[int, psutil.Process]:
    """The host's emulator processes by slot."""
    out = {}
    for child in psutil.Process(host.pid).children():
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if "actor.emulator_process" in cmd:
            out[json.loads(cmd[-1])["slot"]] = child
    return out


def start_host(procs, port: int, n: int, *flags: str, **kw) -> subprocess.Popen:
    return procs.start([str(BIN / "actor"), "--learner", f"tcp://127.0.0.1:{port}", "--emulators", str(n), *flags],
                       procs.tmp / "host.log", **kw)


def test_each_emulator_is_an_actor_a_dead_one_restarts_a_hung_one_stops_counting(procs, tmp_path):
    port, run = free_base_port(), tmp_path / "run"
    procs.learner(*CARTPOLE, "--actor-timeout", "3", port=port, run_dir=run)
    host = start_host(procs, port, 2)
    log = tmp_path / "host.log"
    wait_for(lambda: last_metrics(run).get("updates", 0) >= 3 and last_metrics(run)["actors"] == 2, 60,
             "updates from the host's two emulators")
    joined = read_actors(run)
    assert len(joined) == 2 and {a["pid"] for a in joined} == {host.pid}, joined
    assert len({a["actor_id"] for a in joined}) == 2 and len({a["seed"] for a in joined}) == 2

    # a hung emulator: its heartbeats stop, the learner stops counting it; it thaws, it counts again
    emu = emulators(host)
    emu[0].send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: last_metrics(run)["actors"] == 1, 20, "the learner to stop counting the hung emulator")
        assert "has not answered" in log.read_text()
    finally:
        emu[0].send_signal(signal.SIGCONT)
    wait_for(lambda: last_metrics(run)["actors"] == 2, 20, "the thawed emulator counted again")

    # a dead emulator: restarted as a new actor, the host and the other emulator go on
    emu[1].kill()
    updates = last_metrics(run)["updates"]
    wait_for(lambda: len(read_actors(run)) == 3, 30, "the restarted emulator joining as a new actor")
    wait_for(lambda: last_metrics(run)["updates"] >= updates + 10 and last_metrics(run)["actors"] == 2, 60,
             "updates going on with two emulators")
    assert host.poll() is None, "the host lives on"
    assert emulators(host)[1].pid != emu[1].pid and emulators(host)[0].pid == emu[0].pid
    assert "restarting it as a new actor" in log.read_text()
    assert last_metrics(run)["rejected_messages"] == 0, "every rollout of the host was valid"


def test_host_under_curve_stops_cleanly_on_ctrl_c(procs, tmp_path):
    keys = tmp_path / "keys"
    out = subprocess.run([str(BIN / "learner"), "keygen", str(keys), "--actors", "1"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    port, run = free_base_port(), tmp_path / "run"
    procs.learner(*CARTPOLE, "--curve-dir", str(keys), port=port, run_dir=run)
    host = start_host(procs, port, 2, "--curve-secret", str(keys / "actor0.key_secret"),
                      "--curve-server-key", str(keys / "learner.key"), start_new_session=True)
    wait_for(lambda: last_metrics(run).get("updates", 0) >= 3 and last_metrics(run)["actors"] == 2, 60,
             "updates from a host over CURVE")
    children = [psutil.Process(host.pid), *emulators(host).values()]
    assert len(children) == 3
    t0 = time.monotonic()
    os.killpg(host.pid, signal.SIGINT)  # what Ctrl-C in its terminal does: the host and its emulators
    rc = host.wait(15)
    elapsed = time.monotonic() - t0
    _, alive = psutil.wait_procs(children, timeout=2)
    assert rc == 0 and elapsed < 8, (rc, elapsed)
    assert not alive, f"left behind: {alive}"
    assert "stopping" in (tmp_path / "host.log").read_text()
    assert last_metrics(run)["rejected_messages"] == 0


def test_mode_rule_hosts_image_games_from_two_emulators_a_core():
    air = RunSpec.from_config(Config(env="Airstriker-Genesis-v0"))
    cart = RunSpec.from_config(Config(env="CartPole-v1"))
    assert choose(air, 4, cores=2, cuda=False)[0] == "host" and choose(air, 8, cores=2, cuda=False)[0] == "host"
    assert choose(air, 2, cores=2, cuda=False)[0] == "process", "as many emulators as cores: processes"
    assert choose(air, 2, cores=2, cuda=True)[0] == "host", "the policy on a GPU"
    assert choose(air, 1, cores=2, cuda=True)[0] == "process", "one emulator: nothing to batch"
    assert choose(cart, 2, cores=2, cuda=True)[0] == "process", "an MLP stays on the CPU"
    assert choose(cart, 8, cores=2, cuda=False)[0] == "host"
    assert choose(RunSpec.from_config(Config(env="connectx")), 8)[0] == "process", "masks and opponents"


def test_sync_mode_each_emulator_sends_one_rollout_a_round_and_none_is_stale(procs, tmp_path):
    """Sync mode through the host: an emulator whose rollout ended holds until newer weights.
    Were its next step taken with the old weights, its next rollout would carry the old
    version and be dropped as stale (one per emulator a round: half the host's frames)."""
    port, run = free_base_port(), tmp_path / "run"
    procs.learner(*CARTPOLE, "--mode", "sync", "--min-actors", "2", "--sync-timeout", "60", "--unroll-length", "16",
                  "--update-delay", "0.3", "--report-interval", "0.5", port=port, run_dir=run)
    start_host(procs, port, 2)
    wait_for(lambda: last_metrics(run).get("updates", 0) >= 8, 90, "8 sync rounds from the host's two emulators")
    time.sleep(1.0)  # a stale rollout of the last round would arrive by now
    m = last_metrics(run)
    assert m["dropped_stale"] == 0, m
    assert m["policy_lag_max"] == 0 and m["rejected_messages"] == 0, m


def test_sync_mode_lockstep_goes_on_without_a_hung_emulator(procs, tmp_path):
    """In sync mode the host steps its emulators together (the same batches in every run of a
    seed); one that stops answering must not stop the others: after STALL_S the host goes on
    without it, and the learner's rounds (sync_timeout) without its rollouts."""
    port, run = free_base_port(), tmp_path / "run"
    procs.learner(*CARTPOLE, "--mode", "sync", "--min-actors", "2", "--sync-timeout", "2", "--actor-timeout", "3",
                  "--unroll-length", "16", port=port, run_dir=run)
    host = start_host(procs, port, 2)
    wait_for(lambda: last_metrics(run).get("updates", 0) >= 3, 60, "sync rounds from the host's two emulators")
    emu = emulators(host)
    emu[0].send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: last_metrics(run)["actors"] == 1, 20, "the learner to stop counting the hung emulator")
        frames = last_metrics(run)["frames"]
        wait_for(lambda: last_metrics(run)["frames"] >= frames + 5 * 16, 30, "the other emulator's rollouts")
    finally:
        emu[0].send_signal(signal.SIGCONT)
    assert last_metrics(run)["rejected_messages"] == 0


def test_sync_patience_grows_with_the_rounds_it_sees():
    """Unit: the fixed part alone before any round; then twice the longest recent round on top.
    A jump over versions or a fall back (a rejoin) is not a round; old rounds are forgotten."""
    p = SyncPatience(sync_timeout=1.0, publish_interval=0.5)
    assert p.seconds() == 2.0
    p.seen(0, 10.0)
    p.seen(0, 11.0)  # the same version again (a republish): nothing
    p.seen(1, 14.0)
    assert p.seconds() == 2.0 + 2 * 4.0
    p.seen(5, 100.0)  # a jump: no round
    p.seen(-1, 101.0)  # a rejoin: no round
    p.seen(0, 102.0)
    assert p.seconds() == 10.0
    for v in range(1, 1 + KEEP_ROUNDS):
        p.seen(v, 102.0 + 0.5 * v)
    assert p.seconds() == 2.0 + 2 * 0.5, "the slow round is forgotten after KEEP_ROUNDS rounds"


@pytest.mark.parametrize("actors", ["host", "processes"])
def test_sync_mode_an_update_longer_than_the_patience_loses_only_the_first_round(procs, tmp_path, actors):
    """Sync mode with an update (3 s) longer than the actors' fixed patience (sync_timeout 1 s
    + two republishes of 0.5 s): before the patience learned the rounds' length, every actor
    gave up every round, acted on with the old weights and the learner dropped what it made as
    stale. Now only the first round, whose length nobody knows yet, can lose rollouts. Both
    kinds of actor: a host's emulators and one-process actors."""
    port, run = free_base_port(), tmp_path / "run"
    procs.learner(*CARTPOLE, "--mode", "sync", "--min-actors", "2", "--sync-timeout", "1", "--publish-interval", "0.5",
                  "--unroll-length", "16", "--update-delay", "3", "--report-interval", "0.5", port=port, run_dir=run)
    if actors == "host":
        start_host(procs, port, 2)
    else:
        procs.actor(port, "actor0")
        procs.actor(port, "actor1")
    wait_for(lambda: last_metrics(run).get("updates", 0) >= 3, 90, "3 slow sync rounds")
    early = last_metrics(run)["dropped_stale"]
    wait_for(lambda: last_metrics(run).get("updates", 0) >= 8, 90, "8 slow sync rounds")
    time.sleep(1.0)  # a stale rollout of the last round would arrive by now
    m = last_metrics(run)
    assert m["dropped_stale"] == early, f"stale rollouts after the third round: {early} -> {m['dropped_stale']}"
    assert m["rejected_messages"] == 0, m
