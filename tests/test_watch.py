"""Watching a run: the progress bar on a terminal (a pty) and the plain line off it, --max-minutes,
evaluations while training (GIF, return, TensorBoard), --wandb in offline mode, run_info.json.
Real learner and actor processes on 127.0.0.1, CartPole-v1."""

from __future__ import annotations

import json
import os
import pty
import re
import struct
import subprocess
import threading
import time
from pathlib import Path

import imageio.v3 as iio
import pytest

from common.config import load_toml
from tests.conftest import BIN, ROOT, free_base_port, read_metrics, stop_processes, wait_for

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # any control character but tab and newline
# one drawing of the bar: percent, bar, frames/total [elapsed<remaining, rate, figures]
BAR = re.compile(r"\r\s*\d+%\|[^\r\n|]*\| [\d.]+[kM]?/[\d.]+[kM]? \[\d\d:\d\d<\d\d:\d\d, [\d.]+[kM]?frames/s, return ")


class Pty:
    """A process whose stdout and stderr are a terminal; what it writes is collected."""

    def __init__(self, cmd: list[str], **kw):
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                                     start_new_session=True, **kw)
        os.close(slave)
        self.master = master
        self.out = bytearray()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not data:
                break
            self.out += data

    def text(self) -> str:
        return self.out.decode(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            stop_processes([self.proc])
            self.reader.join(5)
            os.close(self.master)


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def _actor(port: int, log: Path) -> subprocess.Popen:
    with open(log, "wb") as fh:
        return subprocess.Popen([str(BIN / "actor"), "--learner", f"tcp://127.0.0.1:{port}"],
                                stdout=fh, stderr=subprocess.STDOUT, env=_env())


# ---------------------------------------------------------------------------- learner on a terminal, W&B


@pytest.fixture(scope="module")
def tty_run(tmp_path_factory):
    """`learner --total-frames 1000000 --max-minutes 0.3 --eval-interval 0.05 --wandb` with its
    output on a terminal, one actor: the clock ends it (18 s), an evaluation starts every 3 s."""
    pytest.importorskip("wandb", reason="the wandb extra (pip install 'retrofleet[wandb]')")
    tmp = tmp_path_factory.mktemp("tty")
    run, port = tmp / "run", free_base_port()
    term = Pty([str(BIN / "learner"), "--env", "CartPole-v1", "--total-frames", "1000000", "--max-minutes", "0.3",
                "--wandb", "--eval-interval", "0.05", "--report-interval", "1", "--port", str(port),
                "--run-dir", str(run)],
               env=_env(WANDB_MODE="offline", WANDB_SILENT="true"), cwd=tmp)
    wait_for(lambda: "learner ready" in term.text() or term.proc.poll() is not None, 60, "learner ready")
    actor = _actor(port, tmp / "actor.log")
    try:
        rc = term.wait(120)
    finally:
        stop_processes([actor])
    return run, rc, term.text()


@pytest.mark.may_skip  # the tty_run fixture needs the optional wandb extra
def test_a_run_with_an_end_shows_a_bar_with_rate_and_eta_on_a_terminal(tty_run):
    run, rc, out = tty_run
    assert rc == 0, out
    ready = next(line for line in out.splitlines() if line.startswith("learner ready"))
    assert "preset classic-control" in ready
    bars = BAR.findall(out)
    assert len(bars) >= 3, out[-2000:]
    assert "/1.00M [" in out, "the bar counts frames toward --total-frames"
    assert "reached --max-minutes 0.3" in out, "--max-minutes ended the run, exit code 0"
    assert not re.search(r"^\[\s*\d+s\] frames", out, re.M), "the bar replaces the plain status line"
    assert len(read_metrics(run)) >= 2, "metrics.jsonl is written as always"


def _wandb_records(path: Path):
    """Records of a W&B .wandb file (LevelDB log format: 32 KiB blocks of chunked records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    buf, pos, chunks, block = path.read_bytes(), 7, b"", 32768  # 7: the ':W&B' header
    while pos + 7 <= len(buf):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", buf[pos:pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # block trailer / padding
            pos += left
            continue
        chunks += buf[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


@pytest.mark.may_skip  # the tty_run fixture needs the optional wandb extra
def test_wandb_offline_logs_the_same_metrics_as_tensorboard(tty_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, rc, _ = tty_run
    assert rc == 0
    files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, list((run / "wandb").rglob("*"))
    keys, config = set(), None
    for record in _wandb_records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            names = (item.key or "/".join(item.nested_key) for item in record.history.item)
            keys |= {n for n in names if not n.startswith("_")}
        elif kind == "run":
            config = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                      for item in record.run.config.update}
    tb = EventAccumulator(str(run / "tb"))
    tb.Reload()
    scalars = set(tb.Tags()["scalars"])
    assert {"charts/mean_return", "charts/fps", "losses/policy_loss", "eval/return"} <= scalars
    assert {k for k in keys if not k.startswith("eval/video")} == scalars
    assert "eval/video/path" in keys, "the evaluation GIF went to W&B as a video"
    assert config["env"] == "CartPole-v1" and config["preset"] == "classic-control"
    assert (run / "wandb_id").read_text().strip() in files[0].name


@pytest.mark.may_skip  # the tty_run fixture needs the optional wandb extra
def test_run_info_records_command_commit_and_versions(tty_run):
    run, _, _ = tty_run
    info = json.loads((run / "run_info.json").read_text())
    assert info["command"][0] == "learner" and "--total-frames" in info["command"]
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if commit.returncode == 0:
        assert info["git"]["commit"] == commit.stdout.strip()
    assert info["packages"]["torch"] and info["packages"]["pyzmq"] and info["packages"]["stable-retro"]
    assert info["packages"]["wandb"], "the optional package is there in this run"


# ---------------------------------------------------------------------------- launch.sh on a terminal, and off it


def test_launch_on_a_terminal_draws_the_bar_and_keeps_the_log_plain(tmp_path):
    run = tmp_path / "run"
    term = Pty([str(ROOT / "launch.sh"), "1", "--env", "CartPole-v1", "--total-frames", "8000",
                "--eval-interval", "0", "--port", str(free_base_port()), "--run-dir", str(run)],
               cwd=ROOT, env=_env())
    rc = term.wait(180)
    out = term.text()
    assert rc == 0, out
    assert len(BAR.findall(out)) >= 2 and "/8.00k [" in out, out[-2000:]
    assert "[launch] actors up" not in out, "the bar replaces launch.sh's status line"
    log = (run / "learner.log").read_text()
    assert not CONTROL.search(log) and re.search(r"^\[\s*\d+s\] frames", log, re.M)


def test_max_minutes_stops_cleanly_with_exit_0(tmp_path):
    """No actor needed: the clock alone ends the run. Output is a pipe: no bar, no control characters."""
    run = tmp_path / "run"
    t0, started = time.monotonic(), time.time()
    out = subprocess.run([str(BIN / "learner"), "--env", "CartPole-v1", "--max-minutes", "0.1",
                          "--eval-interval", "0", "--report-interval", "1", "--port", str(free_base_port()),
                          "--run-dir", str(run)], capture_output=True, text=True, timeout=90, env=_env())
    took = time.monotonic() - t0
    assert out.returncode == 0, out.stderr
    assert "reached --max-minutes 0.1" in out.stdout and 6 <= took < 60
    assert out.stdout.startswith("learner ready:") and "preset classic-control" in out.stdout.splitlines()[0]
    assert not CONTROL.search(out.stdout + out.stderr)
    assert re.search(r"^\[\s*\d+s\] frames", out.stdout, re.M), "the plain status line off a terminal"
    saved = load_toml(run / "config.toml")
    assert saved["preset"] == "classic-control" and saved["batch_size"] == 256 and saved["max_minutes"] == 0.1
    # the final checkpoint (the same ckpt_0 as the one written at the start: no update ran)
    assert [p for p in (run / "checkpoints").glob("ckpt_*.pt") if p.stat().st_mtime >= started + 6]


# ---------------------------------------------------------------------------- evaluation while training


def _evals(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "eval" / "evals.jsonl").read_text().splitlines()]


@pytest.mark.may_skip  # the tty_run fixture needs the optional wandb extra
def test_evaluations_while_training_write_gifs_returns_and_tensorboard(tty_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, rc, _ = tty_run
    assert rc == 0
    rows = _evals(run)
    periodic = [r for r in rows if r["eval"] != "final"]
    assert periodic and rows[-1]["eval"] == "final", rows
    assert [r["eval"] for r in periodic] == [str(r["updates"]) for r in periodic]
    for r in rows:
        frames = iio.imread(run / "eval" / r["video"], index=None)
        assert frames.ndim == 4 and frames.shape[0] > 1 and frames.shape[-1] == 3
        assert r["length"] >= 1 and r["return"] == r["length"]  # CartPole: +1 a step
    # the learner kept training while an evaluation ran in its own process
    metrics = read_metrics(run)
    first = periodic[0]
    during = [m["updates"] for m in metrics if first["wall_s"] <= m["wall_s"] <= first["wall_s"] + first["seconds"]]
    assert len(during) >= 2 and during[-1] > during[0], (first, during)
    tb = EventAccumulator(str(run / "tb"), size_guidance={"images": 0})
    tb.Reload()
    assert len(tb.Scalars("eval/return")) == len(rows)
    gif = tb.Images("eval/video")[-1]
    assert gif.encoded_image_string[:6] == b"GIF89a", "the GIF itself, animated, in the Images tab"


def test_a_run_that_reaches_its_end_evaluates_its_final_policy(solved_cartpole):
    """The shared CartPole run (default --eval-interval 5 minutes) stopped at a mean return of 475:
    no periodic evaluation in its seconds, one greedy episode of the final checkpoint."""
    run, result = solved_cartpole
    rows = _evals(run)
    assert [r["eval"] for r in rows] == ["final"] and rows[0]["return"] >= 100, rows  # random: about 22 (see test_policy)
    assert (run / "eval" / "eval_final.gif").stat().st_size > 0


@pytest.mark.parametrize("flags, drawn", [
    ({"total_frames": 5000}, r"40%\|.*\| 2\.00k/5\.00k \[.*frames/s, return 12\.5  updates 3"),
    ({"max_minutes": 2.0}, r"\| [01]/120 s \[.*return 12\.5"),
    ({"stop_at_return": 50.0}, r"25%\|.*\| 12\.5/50\.0 mean return \["),
])
def test_the_bar_counts_toward_the_run_s_end(flags, drawn):
    """Unit test of the drawing (no process): frames, the clock, or the mean return."""
    import io

    from common.config import Config
    from learner.progress import ProgressBar

    out = io.StringIO()
    bar = ProgressBar(Config(**flags), out)
    bar.update(2000, 12.5, {"updates": 3, "actors": 2, "fps": 900.0})
    bar.close()
    assert re.search(drawn, out.getvalue()), out.getvalue()


def test_run_info_of_a_resumed_run_keeps_the_earlier_sessions(tmp_path):
    from learner import run_info

    run_info.write(tmp_path, ["learner", "--env", "CartPole-v1"])
    run_info.write(tmp_path, ["learner", "--resume", "--run-dir", str(tmp_path)])
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["command"][:2] == ["learner", "--resume"]
    assert [e["command"] for e in info["earlier"]] == [["learner", "--env", "CartPole-v1"]]


def test_only_the_newest_evaluation_gifs_are_kept(tmp_path):
    from learner.periodic_eval import KEEP_GIFS, EvalLoop

    loop = EvalLoop(tmp_path, interval_min=1.0, max_steps=10, record=lambda row: None)
    loop.dir.mkdir()
    for updates in range(0, 300, 10):
        (loop.dir / f"eval_{updates}.gif").write_bytes(b"GIF89a")
    (loop.dir / "eval_final.gif").write_bytes(b"GIF89a")
    loop._rotate()
    kept = sorted(int(p.stem.split("_")[1]) for p in loop.dir.glob("eval_[0-9]*.gif"))
    assert kept == list(range(300 - 10 * KEEP_GIFS, 300, 10)) and (loop.dir / "eval_final.gif").exists()
