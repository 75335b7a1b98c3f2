"""`learner evaluate RUN_DIR`: checkpoints made by hand the way the learner makes them.

The command-line tests run `learner evaluate` as a subprocess (it is what users run, and
stable-retro allows one emulator per process); the rest call `evaluate()` directly on CartPole.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch

from common.config import Config
from common.model import build_model
from common.runspec import RunSpec
from learner import checkpoint
from learner.play_checkpoint import EvaluateError, evaluate

BIN = Path(sys.executable).parent
AIR = "Airstriker-Genesis-v0"


def make_checkpoint(run_dir: Path, cfg: Config, updates: int = 5, seed: int = 0) -> Path:
    """A checkpoint with the payload of learner.server.Learner._payload, for an untrained model."""
    spec = RunSpec.from_config(cfg).model.as_dict()
    torch.manual_seed(seed)
    model = build_model(spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "counters": {"updates": updates, "frames": 0, "version": updates},
               "config": cfg.to_dict(), "model_spec": spec}
    return checkpoint.save(run_dir / "checkpoints", updates, payload, cfg.max_checkpoints)


def learner_evaluate(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    exe = BIN / "learner"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "learner"]
    return subprocess.run([*cmd, "evaluate", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def gif_frames(path: Path):
    return iio.imread(path, index=None)


# --------------------------------------------------------------------------- command line


def test_cli_cartpole_plays_and_writes_gif(tmp_path: Path):
    run = tmp_path / "run"
    make_checkpoint(run, Config(env="CartPole-v1"))
    p = learner_evaluate(str(run), "--episodes", "2", "--video", "out.gif", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "mean return" in p.stdout and "over 2 episodes" in p.stdout
    frames = gif_frames(tmp_path / "out.gif")
    assert frames.ndim == 4 and frames.shape[0] > 1 and frames.shape[-1] == 3


def test_cli_run_without_checkpoint_is_one_line_exit_2(tmp_path: Path):
    (tmp_path / "run").mkdir()
    p = learner_evaluate("run", cwd=tmp_path)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("learner evaluate: error:"), p.stderr
    assert "no checkpoint" in lines[0]
    assert p.stdout == ""


def test_cli_airstriker_untrained_model_writes_rgb_gif(tmp_path: Path):
    run = tmp_path / "air"
    make_checkpoint(run, Config(max_episode_steps=300))
    p = learner_evaluate(str(run), "--episodes", "1", "--video", "air.gif", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "mean return" in p.stdout and "over 1 episodes" in p.stdout
    frames = gif_frames(tmp_path / "air.gif")
    # The emulator's RGB screen (Genesis: 224 x 320), not the 84 x 84 grayscale observation.
    assert frames.shape[0] > 1 and frames.shape[1:] == (224, 320, 3)
    assert frames.std() > 0


# --------------------------------------------------------------------------- evaluate()


def test_evaluate_newest_checkpoint_seeded_and_greedy(tmp_path: Path):
    run = tmp_path / "run"
    cfg = Config(env="CartPole-v1")
    make_checkpoint(run, cfg, updates=1, seed=1)
    newest = make_checkpoint(run, cfg, updates=10, seed=2)
    a = evaluate(run, episodes=3, seed=7)
    assert a["checkpoint"] == str(newest)
    assert len(a["returns"]) == len(a["lengths"]) == 3
    assert a["returns"] == [float(n) for n in a["lengths"]]  # CartPole: +1 per step
    assert a["mean_return"] == pytest.approx(sum(a["returns"]) / 3)
    assert evaluate(run, episodes=3, seed=7)["returns"] == a["returns"]  # seeded sampling
    # An older checkpoint by its file name (looked up in RUN_DIR/checkpoints).
    old = evaluate(run, checkpoint="ckpt_1.pt", episodes=1, greedy=True)
    assert old["checkpoint"] == str(run / "checkpoints" / "ckpt_1.pt")
    g1 = evaluate(run, episodes=2, seed=3, greedy=True)
    g2 = evaluate(run, episodes=2, seed=3, greedy=True)
    assert g1["returns"] == g2["returns"]


def test_evaluate_errors_are_one_line(tmp_path: Path):
    run = tmp_path / "run"
    with pytest.raises(EvaluateError, match="run directory not found"):
        evaluate(run)
    run.mkdir()
    with pytest.raises(EvaluateError, match="no checkpoint in"):
        evaluate(run)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "ckpt_3.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EvaluateError, match="does not load") as info:
        evaluate(run)
    assert "\n" not in str(info.value)
    with pytest.raises(EvaluateError, match="checkpoint not found"):
        evaluate(run, checkpoint="ckpt_99.pt")
    with pytest.raises(EvaluateError, match=r"\.gif or \.mp4"):
        evaluate(run, video=str(tmp_path / "x.avi"))


def test_evaluate_damaged_newest_falls_back_to_older(tmp_path: Path):
    run = tmp_path / "run"
    good = make_checkpoint(run, Config(env="CartPole-v1"), updates=2)
    (run / "checkpoints" / "ckpt_9.pt").write_bytes(b"\x00" * 100)
    assert evaluate(run, episodes=1)["checkpoint"] == str(good)


@pytest.mark.may_skip
def test_mp4_without_ffmpeg_says_use_gif(tmp_path: Path):
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("imageio-ffmpeg is installed")
    make_checkpoint(tmp_path / "run", Config(env="CartPole-v1"))
    with pytest.raises(EvaluateError, match=r"imageio-ffmpeg.*\.gif"):
        evaluate(tmp_path / "run", video=str(tmp_path / "out.mp4"))
