"""One APPO update on a device. No I/O: batches in, statistics out."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from common.config import Config
from learner.batcher import Batch, gather_stacks
from learner.losses import LossConfig, appo_loss


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name} asked for, but CUDA is not available here")
    return torch.device(name)


class Trainer:
    """Owns the model on its device and the optimizer; `update` runs one batch."""

    def __init__(self, model: nn.Module, cfg: Config, device: torch.device):
        self.device = device
        self.model = model.to(device)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
        self.cfg = cfg
        self.loss_cfg = LossConfig(clip_eps=cfg.clip_eps, vf_coef=cfg.vf_coef, ent_coef=cfg.ent_coef,
                                   lambda_=cfg.vtrace_lambda)

    def _tensor(self, a: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
        t = torch.from_numpy(a)
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        return t if dtype is None else t.to(dtype)

    def update(self, batch: Batch) -> dict[str, float]:
        # frames cross to the device once; stacks (4x the bytes) are gathered there
        obs = gather_stacks(self._tensor(batch.frames), self._tensor(batch.stack_idx))
        actions = self._tensor(batch.actions)
        logp = self._tensor(batch.behaviour_logp)
        rewards = self._tensor(batch.rewards)
        discounts = self.cfg.gamma * (1.0 - self._tensor(batch.dones, torch.float32))
        masks = None if batch.action_mask is None else self._tensor(batch.action_mask)
        T1, B = obs.shape[:2]
        stats: dict[str, float] = {}
        n = 0
        self.model.train()
        for _ in range(self.cfg.epochs):
            order = torch.randperm(B)
            for mb in torch.chunk(order, self.cfg.minibatches):
                mb = mb.to(self.device)
                logits, values = self.model(obs[:, mb].flatten(0, 1))
                logits = logits.view(T1, len(mb), -1)
                values = values.view(T1, len(mb))
                loss, s = appo_loss(logits[:-1], values[:-1], values[-1], actions[:, mb], logp[:, mb],
                                    rewards[:, mb], discounts[:, mb], self.loss_cfg,
                                    None if masks is None else masks[:, mb])
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                s["losses/grad_norm"] = float(nn.utils.clip_grad_norm_(self.model.parameters(),
                                                                       self.cfg.max_grad_norm))
                self.optimizer.step()
                for k, v in s.items():
                    stats[k] = stats.get(k, 0.0) + v
                n += 1
        return {k: v / n for k, v in stats.items()}
