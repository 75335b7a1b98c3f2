"""One APPO update on a device. No I/O: batches in, statistics out.

An update whose loss or gradient norm is not finite is skipped: the model and the optimizer
are put back as they were before it, so no poison ever reaches the weights.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from common.agent import starts_from_dones
from common.config import Config
from learner.batcher import Batch, final_stacks, gather_stacks
from learner.losses import LossConfig, appo_loss


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name} asked for, but CUDA is not available here")
    return torch.device(name)


def _undecorated(method):
    """The function under torch's `functools.wraps` decorators (itself where there is none)."""
    return getattr(method, "__wrapped__", method)


class Adam(torch.optim.Adam):
    """torch.optim.Adam, the same update and the same state_dict, without torch._dynamo.

    torch wraps the optimizer's step, zero_grad, add_param_group and (load_)state_dict in
    decorators that exist for torch.compile and import torch._dynamo on their first call: 2.6 s
    of CPU at every learner start on this 2-core machine (more than `import torch` itself), for a
    compiler we never run. These overrides call the functions under those decorators; the step
    runs under no_grad as the decorator would have it (`differentiable` is False)."""

    def step(self, closure=None):
        with torch.no_grad():
            return _undecorated(torch.optim.Adam.step)(self, closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _undecorated(torch.optim.Optimizer.zero_grad)(self, set_to_none)

    def add_param_group(self, param_group: dict) -> None:
        _undecorated(torch.optim.Optimizer.add_param_group)(self, param_group)

    def state_dict(self) -> dict:
        return _undecorated(torch.optim.Optimizer.state_dict)(self)

    def load_state_dict(self, state_dict: dict) -> None:
        _undecorated(torch.optim.Optimizer.load_state_dict)(self, state_dict)


@dataclass
class UpdateResult:
    """What one update did: its statistics, or why it was skipped (weights unchanged)."""

    stats: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None


def finite_parameters(model: nn.Module) -> bool:
    """True when every parameter and buffer is finite, and so is their norm (one pass)."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    return bool(torch.isfinite(nn.utils.get_total_norm(tensors)))


class Trainer:
    """Owns the model on its device and the optimizer; `update` runs one batch."""

    def __init__(self, model: nn.Module, cfg: Config, device: torch.device, *, frames_per_step: int = 1):
        self.device = device
        self.model = model.to(device)
        self.optimizer = Adam(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
        self.cfg = cfg
        self.loss_cfg = LossConfig(clip_eps=cfg.clip_eps, vf_coef=cfg.vf_coef, ent_coef=cfg.ent_coef,
                                   lambda_=cfg.vtrace_lambda, normalize_advantages=cfg.normalize_advantages)
        self.frames_per_step = frames_per_step
        self.frames_done = 0  # emulator frames of the batches trained on (a resumed run sets it)

    def _tensor(self, a: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
        t = torch.from_numpy(a)
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        return t if dtype is None else t.to(dtype)

    def learning_rate(self) -> float:
        """--lr, annealed linearly to 0 over --total-frames by the frames trained on (--anneal-lr)."""
        cfg = self.cfg
        if not (cfg.anneal_lr and cfg.total_frames):
            return cfg.lr
        return cfg.lr * max(0.0, 1.0 - self.frames_done / cfg.total_frames)

    def update(self, batch: Batch) -> UpdateResult:
        """One pass of `epochs` x `minibatches` steps over the batch, or none at all when any
        step meets a non-finite loss or gradient norm (or would leave non-finite weights)."""
        lr = self.learning_rate()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.frames_done += batch.transitions * self.frames_per_step  # consumed, even if skipped
        model_before = copy.deepcopy(self.model.state_dict())
        optimizer_before = copy.deepcopy(self.optimizer.state_dict())
        result = self._steps(batch)
        if result.skipped is None and not finite_parameters(self.model):
            result = UpdateResult(skipped="weights")
        if result.skipped is not None:
            self.model.load_state_dict(model_before)
            self.optimizer.load_state_dict(optimizer_before)
        else:
            result.stats["charts/learning_rate"] = lr
        return result

    def _steps(self, batch: Batch) -> UpdateResult:
        # frames cross to the device once; stacks (4x the bytes) are gathered there
        frames, stack_idx = self._tensor(batch.frames), self._tensor(batch.stack_idx)
        obs = gather_stacks(frames, stack_idx)
        actions = self._tensor(batch.actions)
        logp = self._tensor(batch.behaviour_logp)
        own = None if batch.policy_logp is None else self._tensor(batch.policy_logp)
        rewards = self._tensor(batch.rewards)
        # truncation is not termination: a step cut by a time limit keeps its discount and
        # bootstraps from the value of the observation the limit hid
        discounts = self.cfg.gamma * (1.0 - self._tensor(batch.terminated, torch.float32))
        cut = self._tensor(batch.cut)
        final_at = self._tensor(batch.final_at)
        final_obs = final_stacks(frames, stack_idx, self._tensor(batch.final_frames), final_at)
        masks = None if batch.action_mask is None else self._tensor(batch.action_mask)
        T1, B = obs.shape[:2]
        # the recurrent core is unrolled over each whole rollout from the state its actor held
        # (truncated BPTT over unroll_length), its state reset where an episode starts
        starts = starts_from_dones(self._tensor(batch.dones))
        if batch.core_state is not None and batch.core_state.size:
            state0 = self._tensor(batch.core_state)
        else:
            state0 = self.model.initial_state(B, self.device)
        stats: dict[str, float] = {}
        n = 0
        self.model.train()
        for _ in range(self.cfg.epochs):
            order = torch.randperm(B)
            for mb in torch.chunk(order, self.cfg.minibatches):
                mb = mb.to(self.device)
                with self._autocast():
                    logits, values, states = self.model.unroll(obs[:, mb], state0[mb], starts[:, mb])
                    final_values = self._final_values(final_obs, final_at, states, mb, B)
                logits, values = logits.float(), values.float()  # the losses in fp32 whatever --precision
                loss, s = appo_loss(logits[:-1], values[:-1], values[-1], actions[:, mb], logp[:, mb],
                                    rewards[:, mb], discounts[:, mb], self.loss_cfg,
                                    None if masks is None else masks[:, mb],
                                    truncated=cut[:, mb], final_values=final_values,
                                    policy_logp=None if own is None else own[:, mb])
                if not math.isfinite(s["losses/total"]):
                    return UpdateResult(skipped="loss")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm))
                if not math.isfinite(grad_norm):
                    return UpdateResult(skipped="gradient norm")
                s["losses/grad_norm"] = grad_norm
                self.optimizer.step()
                for k, v in s.items():
                    stats[k] = stats.get(k, 0.0) + v
                n += 1
        return UpdateResult({k: v / n for k, v in stats.items()})

    def _autocast(self) -> contextlib.AbstractContextManager:
        """--precision bf16: the forward's convolutions and matrix products in bfloat16 (their
        backward follows); fp32: nothing."""
        if self.cfg.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _final_values(self, final_obs: torch.Tensor, final_at: torch.Tensor, states: torch.Tensor,
                      mb: torch.Tensor, B: int) -> torch.Tensor:
        """[T, len(mb)]: V(x_final) at the minibatch's steps a time limit cut, with the current
        weights, from the state after that step (zero elsewhere); the forward runs on the
        minibatch's hidden observations only."""
        T = states.shape[0] - 1
        out = torch.zeros(T, len(mb), device=self.device)
        if len(final_obs):
            column = torch.full((B,), -1, dtype=torch.int64, device=self.device)
            column[mb] = torch.arange(len(mb), device=self.device)  # batch column -> minibatch column
            cols = column[final_at[:, 1]]
            mine = cols >= 0
            if bool(mine.any()):
                t = final_at[mine, 0]
                with torch.no_grad():
                    _, v, _ = self.model.core(final_obs[mine], states[t, cols[mine]])
                out[t, cols[mine]] = v.to(out.dtype)
        return out
