"""Load a trained policy and act with it, outside the learner:

    from learner.trained_policy import load_policy

    policy = load_policy("runs/cartpole")          # a run directory or a ckpt_N.pt file
    env = policy.make_env(seed=0)                   # the env with training's preprocessing
    obs, _ = env.reset(); policy.reset()
    action = policy.act(obs)                        # greedy; act(obs, greedy=False) samples

`act` takes one observation or a batch. Observations are what training saw: the frames of
`make_env` (frame skip, grayscale, resize for images; float32 vectors otherwise). For image
games, one frame at a time goes into the policy's own frame stack, exactly as an actor's (the
first frame after `reset()` fills it); a full stack (frame_stack, H, W) or a batch of stacks
(B, frame_stack, H, W) is used as it is. A raw RGB screen (H, W, 3) is converted to grayscale
and resized as training does (frame skip is the environment's part, so `make_env` is the way
to get exactly training's frames). A recurrent policy (--model lstm) carries its state from one
`act` to the next (one row per observation of the batch); `reset()` starts an episode afresh.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.action_sampling import action_probs, sample_action
from common.config import FIELDS, Config, ConfigError
from common.framestack import FrameStack
from common.model import build_model
from learner import checkpoint as ckpt_mod

log = logging.getLogger("learner")


class PolicyError(Exception):
    """One-line, user-facing message."""


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())  # load_state_dict lists the keys on further lines
    text = text or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


class Policy:
    """A trained model with its environment settings and, for acting step by step, a frame stack."""

    def __init__(self, model: torch.nn.Module, spec: dict[str, Any], config: Config, path: Path,
                 device: str | torch.device = "cpu", seed: int = 0):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.spec = spec
        self.config = config
        self.checkpoint = path
        self.frame_shape: tuple[int, ...] = tuple(spec["frame_shape"])
        self.frame_stack: int = int(spec["frame_stack"])
        self.n_actions: int = int(spec["n_actions"])
        self.rng = np.random.default_rng(seed)
        self._stack: FrameStack | None = None
        self._state: torch.Tensor | None = None  # the recurrent state act carries (None: fresh)

    # ------------------------------------------------------------------ environment
    def make_env(self, seed: int = 0, *, clip_rewards: bool = False):
        """The environment the policy was trained on, with the same preprocessing (frame skip,
        grayscale, resize, time limit). Rewards are the game's own unless `clip_rewards`."""
        from common import envs
        from common.families import env_settings

        kwargs = env_settings(self.config)
        kwargs["clip_rewards"] = clip_rewards
        try:
            env = envs.make_env(self.config.env, seed=seed, **kwargs)
        except envs.EnvError as exc:
            raise PolicyError(str(exc)) from exc
        n, shape = int(env.action_space.n), tuple(env.observation_space.shape)
        if n != self.n_actions or shape != self.frame_shape:
            env.close()
            raise PolicyError(f"{self.checkpoint} was made for {self.n_actions} actions and frames of "
                              f"shape {self.frame_shape}, but {self.config.env} now gives {n} and {shape}")
        return env

    # ------------------------------------------------------------------ acting
    def reset(self) -> None:
        """Start a new episode: the next single frame fills the frame stack, a recurrent state
        starts from zeros."""
        self._stack = None
        self._state = None

    def _preprocess(self, frame: np.ndarray) -> np.ndarray:
        """A raw RGB screen -> training's grayscale frame_size x frame_size frame."""
        import cv2

        gray = cv2.cvtColor(np.ascontiguousarray(frame, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
        return cv2.resize(gray, self.frame_shape[::-1], interpolation=cv2.INTER_AREA)

    def _batch(self, obs: Any) -> tuple[np.ndarray, bool]:
        """(model input [B, stack, *frame], one observation?) for what `act` was given."""
        x = np.asarray(obs)
        frame, stack = self.frame_shape, self.frame_stack
        image = len(frame) == 2
        if image and x.ndim == 3 and x.shape[-1] == 3 and x.shape[:2] != frame:
            x = self._preprocess(x)
        if x.shape == frame:  # one frame: step by step, through the policy's own stack
            if stack == 1:
                return x[None, None], True
            if self._stack is None:
                self._stack = FrameStack(stack, frame, x.dtype)
                self._stack.reset(x)
            else:
                self._stack.push(x)
            return self._stack.buf[None], True
        if stack > 1 and x.shape == (stack, *frame):
            return x[None], True
        if x.ndim == len(frame) + 1 and x.shape[1:] == frame and stack == 1:
            return x[:, None], False
        if x.ndim == len(frame) + 2 and x.shape[1:] == (stack, *frame):
            return x, False
        want = f"{frame}" + (f", a stack {(stack, *frame)}" if stack > 1 else "")
        batch = (f"(B, {stack}, {', '.join(map(str, frame))})" if stack > 1
                 else f"(B, {', '.join(map(str, frame))})")
        raise PolicyError(f"observation of shape {x.shape} does not fit this policy: give one frame "
                          f"{want}, or a batch {batch}")

    def _forward(self, x: np.ndarray) -> torch.Tensor:
        """Logits through the agent contract; the state moves on (a batch of another size than
        the last starts from zeros)."""
        if self._state is None or len(self._state) != len(x):
            self._state = self.model.initial_state(len(x), self.device)
        with torch.inference_mode():
            done = torch.zeros(len(x), dtype=torch.bool, device=self.device)
            logits, _, self._state = self.model.step(torch.as_tensor(x, device=self.device), self._state, done)
            return logits.float().cpu()

    def logits(self, obs: Any) -> torch.Tensor:
        """Policy logits [B, n_actions] (B = 1 for one observation); a frame feeds the stack."""
        return self._forward(self._batch(obs)[0])

    def legal(self, x: np.ndarray) -> np.ndarray | None:
        """Legal actions [B, n_actions] of model inputs, for games whose observation shows them
        (ConnectX: a column is legal where plane 2 has its landing cell); None for the others."""
        if self.spec["kind"] != "connectx":
            return None
        return np.asarray(x)[:, 0, 2].any(axis=-2)

    def act(self, obs: Any, greedy: bool = True, action_mask: np.ndarray | None = None) -> int | np.ndarray:
        """The action for one observation (an int) or a batch (an int64 array): the most likely
        one, or with `greedy=False` sampled from the policy with this Policy's seeded generator.
        Illegal actions are masked: `action_mask` ([n_actions] or [B, n_actions]) when given,
        else what the observation shows (ConnectX)."""
        x, single = self._batch(obs)
        logits = self._forward(x)
        mask = self.legal(x) if action_mask is None else np.asarray(action_mask, bool).reshape(len(x), -1)
        rows = [None] * len(x) if mask is None else mask
        if single:
            return sample_action(logits[0], self.rng, greedy=greedy, action_mask=rows[0])[0]
        if greedy:
            return np.argmax(action_probs(logits, action_mask=mask), axis=-1).astype(np.int64)
        return np.array([sample_action(row, self.rng, action_mask=m)[0] for row, m in zip(logits, rows, strict=True)],
                        dtype=np.int64)


# ---------------------------------------------------------------------------- loading


def _config_from(path: Path, ckpt: Any) -> Config:
    for key in ("model", "config", "model_spec"):
        if not isinstance(ckpt, dict) or key not in ckpt:
            raise PolicyError(f"{path} is not a retrofleet checkpoint (no {key!r} entry)")
    if not isinstance(ckpt["config"], dict) or not isinstance(ckpt["model_spec"], dict):
        raise PolicyError(f"{path} is not a retrofleet checkpoint (config or model_spec is not a dict)")
    saved = dict(ckpt["config"])
    unknown = sorted(set(saved) - set(FIELDS))
    if unknown:  # a checkpoint from another version of retrofleet: the env settings still apply
        log.warning("%s: ignoring unknown config keys %s", path, ", ".join(unknown))
    try:
        return Config(**{k: v for k, v in saved.items() if k in FIELDS})
    except (ConfigError, TypeError) as exc:
        raise PolicyError(f"{path}: bad config in checkpoint: {_first_line(exc)}") from exc


def _model_from(path: Path, ckpt: dict[str, Any]) -> torch.nn.Module:
    try:
        model = build_model(ckpt["model_spec"])
        state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise PolicyError(f"{path}: model does not match its model_spec: {_first_line(exc)}") from exc
    return model


def load_policy(run_dir_or_checkpoint: str | Path, device: str | torch.device = "cpu", *,
                checkpoint: str | Path | None = None, seed: int = 0) -> Policy:
    """A Policy from a run directory (its newest checkpoint that loads, or `checkpoint`: a
    path or a file name in RUN_DIR/checkpoints) or from one checkpoint file. `seed` seeds
    sampling (`act(obs, greedy=False)`). Raises `PolicyError` with one line."""
    try:
        path, ckpt = ckpt_mod.find(run_dir_or_checkpoint, checkpoint, map_location="cpu")
    except ckpt_mod.CheckpointError as exc:
        raise PolicyError(str(exc)) from exc
    cfg = _config_from(path, ckpt)
    return Policy(_model_from(path, ckpt), ckpt["model_spec"], cfg, path, device, seed)


__all__ = ["Policy", "PolicyError", "load_policy"]
