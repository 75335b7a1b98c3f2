"""./launch.sh as a user runs it: real learner, real actors, the real Airstriker emulator."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import psutil

from learner.checkpoint import list_checkpoints, load
from tests.conftest import ROOT, free_base_port, last_metrics, read_actors, read_metrics, wait_for

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # any control character but tab and newline


def _launch(tmp_path, *args: str) -> tuple[subprocess.Popen, object]:
    log = open(tmp_path / "launch.out", "wb")
    p = subprocess.Popen([str(ROOT / "launch.sh"), *args], stdout=log, stderr=subprocess.STDOUT,
                         cwd=ROOT, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return p, log


def _tree(p: subprocess.Popen) -> list[psutil.Process]:
    try:
        return psutil.Process(p.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_total_frames_ends_cleanly_with_checkpoint_and_metrics(tmp_path):
    run = tmp_path / "air"
    p, log = _launch(tmp_path, "2", "--actor-mode", "host", "--total-frames", "8000", "--port", str(free_base_port()),
                     "--run-dir", str(run), "--report-interval", "2", "--eval-max-steps", "300")
    try:
        rc = p.wait(240)
    finally:
        _kill_group(p)
        log.close()
    out = (tmp_path / "launch.out").read_text()
    assert rc == 0, out
    rows = read_metrics(run)
    assert rows and rows[-1]["frames"] >= 8000
    assert set(rows[-1]) >= {"wall_s", "frames", "steps", "fps", "episodes", "episodes_per_hour",
                             "mean_return", "updates", "policy_lag_mean", "policy_lag_max", "actors",
                             "rejected_messages", "dropped_stale"}
    ckpts = list_checkpoints(run / "checkpoints")
    assert ckpts, "a final checkpoint is written"
    ckpt = load(ckpts[-1])
    assert ckpt["counters"]["frames"] >= 8000 and ckpt["counters"]["updates"] >= 1
    assert (run / "config.toml").exists() and any((run / "tb").iterdir())
    assert len(read_actors(run)) == 2
    assert (run / "learner.log").exists() and (run / "actor_host.log").exists()
    assert "[launch] actors up host 1/1 (2 emulators)" in out, "a status line every few seconds"
    # Off a terminal: plain lines, no progress bar, no control characters in any log.
    assert "preset retro" in out, "the first learner line names the preset"
    for text in (out, (run / "learner.log").read_text()):
        assert not CONTROL.search(text), CONTROL.search(text)
    assert "[" in (run / "learner.log").read_text() and "frames" in (run / "learner.log").read_text()
    # Its end reached, the run played one greedy episode of the final checkpoint to a GIF.
    evals = [json.loads(x) for x in (run / "eval" / "evals.jsonl").read_text().splitlines()]
    assert [e["eval"] for e in evals] == ["final"] and (run / "eval" / "eval_final.gif").stat().st_size > 0
    assert 0 < evals[0]["length"] <= 300, evals  # --eval-max-steps cuts the episode (greedy Airstriker lasts long)


def test_sigint_stops_every_process_within_10s(tmp_path):
    run = tmp_path / "air"
    p, log = _launch(tmp_path, "2", "--actor-mode", "host", "--port", str(free_base_port()), "--run-dir", str(run))
    try:
        wait_for(lambda: last_metrics(run).get("frames", 0) > 2000, 120, "actors streaming")
        children = _tree(p)
        assert len(children) >= 4, "learner, an actor host and its two emulators run under launch.sh"
        t0 = time.monotonic()
        os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        p.wait(15)
        elapsed = time.monotonic() - t0
        _, alive = psutil.wait_procs(children, timeout=1)
    finally:
        _kill_group(p)
        log.close()
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert not alive, f"left behind: {alive}"
    assert list_checkpoints(run / "checkpoints"), "final checkpoint on SIGINT"
    assert not (run / "eval" / "eval_final.gif").exists(), "Ctrl-C stops without a final evaluation"


def test_killed_actor_is_restarted_and_learner_keeps_updating(tmp_path):
    run = tmp_path / "cp"
    p, log = _launch(tmp_path, "2", "--env", "CartPole-v1", "--port", str(free_base_port()),
                     "--run-dir", str(run), "--report-interval", "0.5", "--actor-timeout", "3")
    try:
        wait_for(lambda: last_metrics(run).get("updates", 0) >= 5, 90, "first updates")
        # both actors in before one is killed: under load one actor can train alone while the other
        # still imports torch, and a kill then would leave 2 joins, not 3 (a CI run beside a benchmark)
        wait_for(lambda: len(read_actors(run)) >= 2, 90, "both actors joined")
        assert "[launch] actor mode process" in (tmp_path / "launch.out").read_text(), "CartPole: one-process actors"
        actors = [c for c in _tree(p) if c.name() == "actor"]
        assert len(actors) == 2
        learner = [c for c in _tree(p) if c.name() == "learner"]
        assert len(learner) == 1
        # actors yield the CPU to the learner (launch.sh runs them at nice 10)
        assert [a.nice() for a in actors] == [learner[0].nice() + 10] * 2
        actors[0].send_signal(signal.SIGKILL)
        updates = last_metrics(run)["updates"]
        wait_for(lambda: len(read_actors(run)) >= 3, 30, "a restarted actor joins")
        wait_for(lambda: last_metrics(run)["updates"] >= updates + 20, 60, "updates go on")
        assert "restarting" in (tmp_path / "launch.out").read_text()
        restarted = [c for c in _tree(p) if c.name() == "actor" and c.pid != actors[0].pid]
        assert restarted and all(a.nice() == learner[0].nice() + 10 for a in restarted)
        wait_for(lambda: last_metrics(run)["actors"] == 2, 20, "actor count back to 2")
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(15)
        finally:
            _kill_group(p)
            log.close()
