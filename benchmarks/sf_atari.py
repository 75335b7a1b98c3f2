#!/usr/bin/env python
"""Sample Factory 2.1.1 APPO on an ALE game with retrofleet's own env stack and `atari` preset.

Runs in Sample Factory's venv (SF pins gymnasium < 1.0; see benchmarks/sf_atari_compare.py for the
set-up), not in retrofleet's: it imports retrofleet's common/families/atari.py from this checkout,
so both systems step the same wrappers (ALE frame skip 1 + MaxAndSkip 4, no-op reset, fire reset,
life loss ends a training episode, 84x84 gray, rewards clipped, sticky actions 0.25, minimal
action set) and a stack of 4 frames. Model: SF's convnet_atari + one 512 FC (= the Nature CNN),
no RNN. Learner: the `atari` preset's settings (rollout 128, 1,024 samples an update as 4
minibatches of 256, 4 epochs, lr 2.5e-4, clip 0.1, entropy 0.01, value 0.5, grad norm 0.5,
lambda 0.95); GAE instead of V-trace (SF 2.1.1's --with_vtrace True crashes its learner), which
does not change throughput. SF's FPS counts emulator frames (samples x 4) that reached its learner.

    SFV/bin/python benchmarks/sf_atari.py --env_id ALE/Pong-v5 --experiment NAME --train_dir DIR \
        --num_workers 2 --num_envs_per_worker 2 --worker_num_splits 2 --train_for_seconds 120

Unlike stable-retro, ALE allows many emulators in one process: SF's own layout, no child processes.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ENV_NAME = "retrofleet_atari"
FRAME_SKIP = 4
FRAME_STACK = 4
ENV_VAR = "RF_SF_ATARI_ENV"  # --env_id, for SF's worker processes (spawned: they inherit the environment)


class FrameStack(gym.Wrapper):
    """(stack, H, W) uint8 of the last frames, oldest first: retrofleet's own actor stack
    (common/framestack.py), a reset filling it with the reset frame."""

    def __init__(self, env: gym.Env, stack: int):
        from common.framestack import FrameStack as Stack

        super().__init__(env)
        h, w = env.observation_space.shape
        self._stack = Stack(stack, (h, w), np.uint8)
        self.observation_space = gym.spaces.Box(0, 255, (stack, h, w), np.uint8)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._stack.reset(obs)
        return self._stack.buf.copy(), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._stack.push(obs)
        return self._stack.buf.copy(), reward, terminated, truncated, info


def make_atari(full_env_name: str, cfg=None, env_config=None, render_mode: str | None = None):
    import cv2
    from ale_py.registration import register_v5_envs  # ale-py's own import registers nothing under

    from common.families.atari import AtariFamily  # gymnasium 0.29 (its vector env needs 1.x)

    cv2.setNumThreads(1)
    register_v5_envs()
    worker = getattr(env_config, "worker_index", 0) if env_config is not None else 0
    vector = getattr(env_config, "vector_index", 0) if env_config is not None else 0
    env = AtariFamily().make(os.environ.get(ENV_VAR, "ALE/Pong-v5"), seed=1000 + 16 * worker + vector, frame_skip=FRAME_SKIP,
                             max_episode_steps=27_000, clip_rewards=True, frame_size=84,
                             repeat_action_probability=0.25)
    return FrameStack(env, FRAME_STACK)


def override_defaults(parser) -> None:
    parser.set_defaults(
        env=ENV_NAME, device="cpu", algo="APPO", async_rl=True, serial_mode=False, batched_sampling=False,
        num_workers=2, num_envs_per_worker=2, worker_num_splits=2, policy_workers_per_policy=1,
        env_frameskip=FRAME_SKIP, env_framestack=FRAME_STACK, summaries_use_frameskip=True,
        encoder_conv_architecture="convnet_atari", encoder_conv_mlp_layers=[512], decoder_mlp_layers=[],
        use_rnn=False, nonlinearity="relu", actor_critic_share_weights=True, obs_scale=255.0,
        normalize_input=False, normalize_returns=False,
        # the atari preset (common/presets.toml): 1,024 samples an update, 4 epochs x 4 minibatches
        rollout=128, recurrence=1, with_vtrace=False, gae_lambda=0.95, batch_size=256,
        num_batches_per_epoch=4, num_epochs=4, learning_rate=2.5e-4, adam_eps=1e-5, max_grad_norm=0.5,
        ppo_clip_ratio=0.1, value_loss_coeff=0.5, exploration_loss_coeff=0.01, gamma=0.99,
        max_policy_lag=20, decorrelate_experience_max_seconds=0, train_for_env_steps=10**10,
        save_every_sec=10**6, with_wandb=False,
    )


def main(argv=None) -> int:
    from sample_factory.algo.runners.runner import AlgoObserver
    from sample_factory.algo.utils.misc import ExperimentStatus
    from sample_factory.cfg.arguments import parse_full_cfg, parse_sf_args
    from sample_factory.envs.env_utils import register_env
    from sample_factory.train import make_runner

    register_env(ENV_NAME, make_atari)
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--env_id" in argv:
        i = argv.index("--env_id")
        os.environ[ENV_VAR] = argv[i + 1]
        del argv[i:i + 2]
    if not any(a == "--env" or a.startswith("--env=") for a in argv):
        argv = ["--env", ENV_NAME] + argv  # SF's first parse requires --env
    parser, _ = parse_sf_args(argv=argv)
    override_defaults(parser)
    cfg = parse_full_cfg(parser, argv)

    class TrainSeconds(AlgoObserver):
        """SF 2.1.1 never advances Runner.total_train_seconds (--train_for_seconds never fires):
        keep it as seconds since the learner's first training step (as the peer kit does)."""

        def __init__(self):
            self.t0: float | None = None

        def on_training_step(self, runner, training_iteration_since_resume: int) -> None:
            now = time.time()
            self.t0 = now if self.t0 is None else self.t0
            runner.total_train_seconds = now - self.t0

    cfg, runner = make_runner(cfg)
    runner.register_observer(TrainSeconds())
    status = runner.init()
    if status == ExperimentStatus.SUCCESS:
        status = runner.run()
    return status


if __name__ == "__main__":
    sys.exit(main())
