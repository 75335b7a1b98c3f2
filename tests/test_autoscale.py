"""The emulator count chosen by measurement: the hill climb alone, then `./launch.sh auto` on a
real run (real learner, real actor processes) changing its count and saying why."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import psutil
import pytest

from fleet.autoscale import Autoscaler, Window, Windows, last_metrics_row, window_between
from tests.conftest import ROOT, free_base_port, wait_for


def _w(n: int, fps: float, lag: float = 0.5, dropped: int = 0) -> Window:
    return Window(n, fps, lag, dropped, 10.0)


def test_climbs_while_it_pays_then_keeps_the_best():
    s = Autoscaler(minimum=1, maximum=8)
    assert s.decide(_w(2, 1000)).count == 3
    assert s.decide(_w(3, 1200)).count == 4
    d = s.decide(_w(4, 1100))  # worse than 3: back to the best
    assert d.count == 3 and "best" in d.reason
    d = s.decide(_w(3, 1210))  # 2 and 4 measured, 3 best: kept
    assert d.count == 3 and "keeping" in d.reason


def test_tries_fewer_when_more_did_not_pay():
    s = Autoscaler(minimum=1, maximum=8)
    assert s.decide(_w(2, 1000)).count == 3
    assert s.decide(_w(3, 900)).count == 2
    assert s.decide(_w(2, 1000)).count == 1
    d = s.decide(_w(1, 700))
    assert d.count == 2 and "2 gave 1,000" in d.reason


def test_below_the_cores_fewer_are_tried_only_while_the_learner_is_busy():
    """On 2 cores, 1 actor is worth a window only when the learner is the limit (policy lag of a
    version or more); while it keeps up, fewer actors on free cores make fewer frames."""
    s = Autoscaler(minimum=1, maximum=8, cores=2)
    assert s.decide(_w(2, 1000)).count == 3
    assert s.decide(_w(3, 900)).count == 2
    d = s.decide(_w(2, 1000, lag=0.5))
    assert d.count == 2 and "keeps up" in d.reason and "keeping" in d.reason
    d = s.decide(_w(2, 1000, lag=1.5))  # the learner became the limit: now it is worth a look
    assert d.count == 1 and "trying 1" in d.reason
    s = Autoscaler(minimum=1, maximum=8, cores=2)  # above the cores, fewer are always tried
    assert s.decide(_w(4, 1000)).count == 5
    assert s.decide(_w(5, 900)).count == 4
    assert s.decide(_w(4, 1000, lag=0.2)).count == 3


def test_noise_within_tolerance_does_not_move_it():
    s = Autoscaler(minimum=2, maximum=3, tolerance=0.05)
    assert s.decide(_w(2, 1000)).count == 3
    assert s.decide(_w(3, 1020)).count == 3  # 2 % better than 2: within tolerance, no further room up
    assert s.decide(_w(3, 1020)).count == 3


def test_a_starved_learner_means_fewer_and_caps_the_climb():
    s = Autoscaler(minimum=1, maximum=8, max_lag_mean=3.0)
    assert s.decide(_w(2, 1000)).count == 3
    d = s.decide(_w(3, 1500, dropped=4))
    assert d.count == 2 and "starved" in d.reason and "4 stale" in d.reason
    assert s.decide(_w(2, 1000)).count == 1  # 3 is off limits now: it explores below
    assert s.decide(_w(1, 600)).count == 2
    d = s.decide(_w(2, 1000, lag=7.5))
    assert d.count == 1 and "policy lag 7.5" in d.reason


def test_reprobes_after_holding():
    s = Autoscaler(minimum=1, maximum=3, reprobe=2)
    assert s.decide(_w(3, 1000)).count == 2
    assert s.decide(_w(2, 800)).count == 1
    assert s.decide(_w(1, 500)).count == 3
    assert s.decide(_w(3, 1000)).count == 3
    d = s.decide(_w(3, 1000))
    assert d.count == 3  # at the maximum: nothing above to probe, it keeps climbing down next time
    assert s.decide(_w(3, 1000)).count == 2


def test_bad_bounds_are_one_line_errors():
    with pytest.raises(ValueError, match="1 <= min <= max"):
        Autoscaler(minimum=3, maximum=2)
    r = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "fleet.local_actors", "--learner", "tcp://127.0.0.1:1",
                        "--run-dir", "/nonexistent", "--min", "0"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "min <= max" in r.stderr


def test_window_between_metrics_rows():
    r0 = {"wall_s": 10.0, "frames": 1000, "dropped_stale": 2, "policy_lag_mean": 0.5}
    r1 = {"wall_s": 12.0, "frames": 5000, "dropped_stale": 3, "policy_lag_mean": None}
    w = window_between(4, r0, r1)
    assert (w.count, w.frames_per_s, w.dropped_stale, w.policy_lag_mean, w.seconds) == (4, 2000.0, 1, 0.0, 2.0)


def test_windows_open_after_the_settle_and_close_after_the_window():
    ws = Windows(settle=10.0, window=30.0, changed_at=100.0)
    row = lambda t, frames: {"wall_s": t, "frames": frames, "dropped_stale": 0, "policy_lag_mean": 1.0}  # noqa: E731
    assert ws.next(105.0, row(5, 0), 2) is None and ws.start is None, "still settling"
    assert ws.next(111.0, row(11, 1000), 2, acting=False) is None and ws.start is None, "an actor not acting yet"
    assert ws.next(112.0, row(12, 1000), 2) is None and ws.start == row(12, 1000), "opened"
    assert ws.next(130.0, row(30, 9000), 2) is None, "not 30 s of the learner's clock yet"
    w = ws.next(143.0, row(42, 16000), 2)
    assert (w.count, w.frames_per_s, w.seconds) == (2, 500.0, 30.0)
    assert ws.start == row(42, 16000), "the next window opens where this one closed"
    ws.changed(150.0)
    assert ws.start is None and ws.next(155.0, row(55, 20000), 3) is None, "a change settles afresh"


def test_last_metrics_row_skips_a_half_written_line(tmp_path):
    assert last_metrics_row(tmp_path) is None
    (tmp_path / "metrics.jsonl").write_text('{"updates": 1}\n{"updates": 2}\n{"upd')
    assert last_metrics_row(tmp_path) == {"updates": 2}
    rows = "".join(json.dumps({"updates": i, "pad": "x" * 200}) + "\n" for i in range(3000))  # 650 kB
    (tmp_path / "metrics.jsonl").write_text(rows)
    assert last_metrics_row(tmp_path)["updates"] == 2999


def _is_actor(proc: psutil.Process) -> bool:
    try:
        return any(a.endswith("/actor") for a in proc.cmdline())
    except psutil.Error:  # launch.sh's short-lived helpers (tail, sed) come and go
        return False


def test_launch_auto_changes_the_actor_count_and_records_why(tmp_path):
    run = tmp_path / "auto"
    log = open(tmp_path / "launch.out", "wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "RETROFLEET_AUTOSCALE": "--start 1 --min 1 --max 3 --window 3 --settle 1"}
    p = subprocess.Popen([str(ROOT / "launch.sh"), "auto", "--env", "CartPole-v1", "--port", str(free_base_port()),
                          "--run-dir", str(run), "--report-interval", "0.5", "--total-frames", "100000000"],
                         stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True, env=env)
    path = run / "autoscale.jsonl"

    def records() -> list[dict]:
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    try:
        # the start, then at least two measured windows: 1 -> 2 (never tried), then a verdict on 2
        wait_for(lambda: len(records()) >= 3, timeout=150, what="three autoscale records")
        actors = [c for c in psutil.Process(p.pid).children(recursive=True) if _is_actor(c)]
    finally:
        os.killpg(p.pid, signal.SIGINT)
        try:
            rc = p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            rc = p.wait()
        log.close()
    out = (tmp_path / "launch.out").read_text()
    recs = records()
    assert recs[0]["from"] == 0 and recs[0]["to"] == 1 and "starting at 1" in recs[0]["reason"]
    first = recs[1]
    assert (first["from"], first["to"]) == (1, 2), recs
    assert first["frames_per_s"] > 0 and "1 gave" in first["reason"] and "trying 2" in first["reason"]
    assert recs[2]["from"] == 2 and recs[2]["frames_per_s"] > 0 and recs[2]["reason"]
    assert 1 <= len(actors) <= 3, "the actors run under launch.sh"
    assert "autoscale: 1 -> 2 actors: 1 gave" in out, "each change on the console with its reason"
    assert rc in (0, 130), out
    assert (run / "actor_1.log").exists(), "the second actor was started"
