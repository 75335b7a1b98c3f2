"""--model lstm through real sockets and processes: async and sync with one-process actors, an
actor host, a hostile recurrent state rejected and counted, resume refusing a model change,
load_policy carrying the state."""

from __future__ import annotations

import dataclasses
import subprocess

import numpy as np
import pytest

from common import protocol
from common.agent import CELL_BOUND
from common.pomdp import CARTPOLE_NOVEL
from tests.conftest import BIN, cartpole_rollout, free_base_port, last_metrics, wait_for
from tests.scripted import ScriptedActor

LSTM = ("--env", CARTPOLE_NOVEL, "--preset", "none", "--model", "lstm", "--lstm-hidden", "16",
        "--batch-size", "64", "--unroll-length", "16", "--save-interval", "2")


def _novel_rollout(actor_id: int, version: int, state: np.ndarray) -> protocol.Rollout:
    r = cartpole_rollout(actor_id, T=16, version=version)
    return dataclasses.replace(r, frames=r.frames[:, [0, 2]].copy(), history=np.zeros((0, 2), np.float32),
                               core_state=state)


def test_the_scripted_rollouts_differ_from_a_valid_one_in_the_state_only():
    spec = protocol.RolloutSpec(16, (2,), "float32", 1, 2, state_shape=(2, 16), state_bound=(1.0, CELL_BOUND))
    good = _novel_rollout(0, 0, np.zeros((2, 16), np.float32))
    protocol.validate_rollout(protocol.decode(protocol.encode_rollout(good)), spec, latest_version=0)
    bad = _novel_rollout(0, 0, np.full((2, 16), 2.0, np.float32))
    with pytest.raises(protocol.ProtocolError, match="core_state"):
        protocol.validate_rollout(protocol.decode(protocol.encode_rollout(bad)), spec, latest_version=0)


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_lstm_trains_with_one_process_actors(procs, tmp_path, mode):
    port, run = free_base_port(), tmp_path / "run"
    procs.learner(*LSTM, "--mode", mode, port=port, run_dir=run)
    procs.actor(port, "a0")
    procs.actor(port, "a1")
    wait_for(lambda: last_metrics(run).get("updates", 0) >= 4, 120, f"{mode} updates of the LSTM")
    row = last_metrics(run)
    assert row["rejected_messages"] == 0 and row["skipped_updates"] == 0


def test_lstm_trains_from_an_actor_host_and_hostile_states_are_counted(procs, tmp_path):
    port, run = free_base_port(), tmp_path / "run"
    procs.learner(*LSTM, port=port, run_dir=run)
    procs.start([str(BIN / "actor"), "--learner", f"tcp://127.0.0.1:{port}", "--emulators", "2"],
                tmp_path / "host.log")
    wait_for(lambda: last_metrics(run).get("updates", 0) >= 4, 120, "updates from the host's emulators")
    assert last_metrics(run)["rejected_messages"] == 0, (tmp_path / "learner.log").read_text()[-2000:]
    evil = ScriptedActor(port)
    try:
        evil.join()
        version = evil.newest_weights()["version"]
        good = np.zeros((2, 16), np.float32)
        hostile = [good + 2.0, np.full((2, 16), np.nan, np.float32),
                   np.stack([np.zeros(16), np.full(16, CELL_BOUND * 10)]).astype(np.float32),
                   np.zeros((2, 17), np.float32)]
        for state in hostile:
            evil.send(evil.rollout_message(_novel_rollout(evil.actor_id, version, state)))
        wait_for(lambda: last_metrics(run)["rejected_messages"] >= len(hostile), 30, "hostile states counted")
        evil.send(evil.rollout_message(_novel_rollout(evil.actor_id, version, good)))
        u0 = last_metrics(run)["updates"]
        wait_for(lambda: last_metrics(run)["updates"] > u0 + 1, 60, "training goes on")
    finally:
        evil.close()
    assert last_metrics(run)["rejected_messages"] == len(hostile)


def test_resume_refuses_a_model_change_and_the_policy_carries_its_state(procs, tmp_path):
    port, run = free_base_port(), tmp_path / "run"
    learner = procs.learner(*LSTM, "--total-frames", "3000", port=port, run_dir=run)
    procs.actor(port, "a0")
    learner.wait(120)
    assert learner.returncode == 0
    out = subprocess.run([str(BIN / "learner"), "--run-dir", str(run), "--resume", "--model", "mlp",
                          "--port", str(free_base_port())], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "cannot change model 'lstm' -> 'mlp'" in out.stderr + out.stdout

    from learner.trained_policy import load_policy

    policy = load_policy(run)
    env = policy.make_env(seed=0)
    obs, _ = env.reset(seed=0)
    policy.reset()
    first = policy.logits(obs)
    policy.logits(obs)
    again = policy.logits(obs)
    assert not np.allclose(first, again), "the state act carries changes what the policy does"
    policy.reset()
    np.testing.assert_allclose(policy.logits(obs), first, rtol=1e-6)
    env.close()
