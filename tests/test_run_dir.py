"""Starting a learner: a port in use (issue 8.8), a run directory that holds a run (8.9),
--resume with new flags (8.10). Real learner processes on CartPole-v1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import psutil
import torch

from learner import checkpoint
from tests.conftest import BIN, ROOT, free_base_port, wait_for

CARTPOLE = ("--env", "CartPole-v1", "--preset", "none")


def _learner(tmp_path, *flags: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "learner"), *CARTPOLE, "--port", str(free_base_port()), *flags],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


def _run_until_ready_then_stop(procs, tmp_path, *flags: str, name: str) -> str:
    p = procs.learner(*CARTPOLE, *flags, port=free_base_port(), run_dir=tmp_path / "run", log_name=name)
    p.send_signal(signal.SIGTERM)
    assert p.wait(30) == 0
    return (tmp_path / name).read_text()


def test_port_in_use_is_one_line_and_exit_2(tmp_path):
    port = free_base_port()
    taken = socket.socket()
    taken.bind(("127.0.0.1", port + 1))  # the rollouts port
    taken.listen()
    try:
        t0 = time.monotonic()
        out = subprocess.run([str(BIN / "learner"), *CARTPOLE, "--port", str(port), "--run-dir",
                              str(tmp_path / "run")], capture_output=True, text=True, timeout=60)
        took = time.monotonic() - t0
    finally:
        taken.close()
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and f"port {port + 1}" in out.stderr and "in use" in out.stderr
    assert took < 30  # on the old code the learner hung in ctx.term() for good
    assert not checkpoint.list_checkpoints(tmp_path / "run" / "checkpoints"), "the run directory stays free"


def test_launch_gives_up_on_a_learner_that_never_gets_ready(tmp_path):
    env = {**os.environ, "RETROFLEET_READY_TIMEOUT": "4"}
    p = subprocess.Popen([str(ROOT / "launch.sh"), "1", *CARTPOLE, "--port", str(free_base_port()), "--run-dir",
                          str(tmp_path / "run")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        # a learner that hangs before it is ready (here: stopped by a signal)
        learner = wait_for(lambda: [c for c in psutil.Process(p.pid).children() if c.name() == "learner"],
                           30, "launch.sh starts the learner", interval=0.02)[0]
        learner.send_signal(signal.SIGSTOP)
        out, _ = p.communicate(timeout=60)
    finally:
        os.killpg(p.pid, signal.SIGKILL) if p.poll() is None else None
    assert p.returncode == 1, out
    assert "not ready after 4 s" in out
    assert not learner.is_running() or learner.status() == psutil.STATUS_ZOMBIE, "the learner is not left behind"


def test_a_run_directory_with_checkpoints_is_never_reused_silently(procs, tmp_path):
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    checkpoint.save(ckpts, 200, {"counters": {"updates": 200}}, keep=3)
    (run / "metrics.jsonl").write_text('{"updates": 200}\n')
    out = _learner(tmp_path, "--run-dir", str(run))
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "ckpt_200.pt" in out.stderr and "--resume" in out.stderr and "--overwrite" in out.stderr
    assert checkpoint.list_checkpoints(ckpts) == [ckpts / "ckpt_200.pt"], "nothing was touched"
    log = _run_until_ready_then_stop(procs, tmp_path, "--overwrite", name="overwrite.log")
    assert "--overwrite: deleted the earlier run's checkpoints, metrics.jsonl" in log
    assert [p.name for p in checkpoint.list_checkpoints(ckpts)] == ["ckpt_0.pt"]  # this run's final one
    assert '"updates": 200' not in (run / "metrics.jsonl").read_text()


def test_resume_with_nothing_to_resume_is_an_error(tmp_path):
    """(--resume over only damaged checkpoints: test_checkpoint.)"""
    out = _learner(tmp_path, "--run-dir", str(tmp_path / "empty"), "--resume")
    assert out.returncode == 2 and "no checkpoint" in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert not (tmp_path / "empty" / "checkpoints").exists(), "no fresh run started in its place"


def test_a_learner_killed_before_its_first_save_can_be_resumed(procs, tmp_path):
    # found by the chaos benchmark: a learner SIGKILLed before its first --save-interval left no
    # checkpoint, and the `--resume` that restarts it refused to start
    p = procs.learner(*CARTPOLE, port=free_base_port(), run_dir=tmp_path / "run", log_name="first.log")
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    ckpts = checkpoint.list_checkpoints(tmp_path / "run" / "checkpoints")
    assert [c.name for c in ckpts] == ["ckpt_0.pt"], "the run's first checkpoint is written before it is ready"
    log = _run_until_ready_then_stop(procs, tmp_path, "--resume", name="resumed.log")
    assert "resumed" in log and "ckpt_0.pt: 0 updates" in log, log


def test_resume_applies_new_flags_says_which_and_refuses_the_model_changing_ones(procs, tmp_path):
    run = tmp_path / "run"
    _run_until_ready_then_stop(procs, tmp_path, "--lr", "5e-4", name="first.log")
    log = _run_until_ready_then_stop(procs, tmp_path, "--resume", "--lr", "0.01", "--gamma", "0.95",
                                     name="second.log")
    assert "--resume: settings changed from the checkpoint's: gamma 0.99 -> 0.95, lr 0.0005 -> 0.01" in log
    config = (run / "config.toml").read_text()
    assert "lr = 0.01\n" in config and "gamma = 0.95\n" in config and "resume = false" in config
    _, ckpt = checkpoint.load_latest(run / "checkpoints")
    assert [g["lr"] for g in ckpt["optimizer"]["param_groups"]] == [0.01], "the optimizer uses the new rate"
    assert ckpt["config"]["lr"] == 0.01
    out = _learner(tmp_path, "--run-dir", str(run), "--resume", "--hidden-size", "32")
    assert out.returncode == 2 and "cannot change hidden_size 64 -> 32" in out.stderr, out.stderr
    assert torch.equal(checkpoint.load_latest(run / "checkpoints")[1]["model"]["policy.0.0.weight"],
                       ckpt["model"]["policy.0.0.weight"])
