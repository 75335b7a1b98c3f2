"""The actor host's copy of the policy: logits for a batch of frame stacks, on the host's GPU
when it has one (CPU threads otherwise), weights loaded from the learner's numpy state."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from common.model import build_model, load_numpy_state


def pick_device(name: str = "auto") -> torch.device:
    """`auto`: CUDA when this host has it, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--inference-device {name}: CUDA is not available on this host")
    return device


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class BatchedPolicy:
    """`logits(obs)` for a batch [B, *obs]; weights arrive in `cpu_model` (float32, as the
    learner sends them) and `refresh()` copies them to the copy that runs.

    On the CPU the running copy uses the channels-last layout (oneDNN's fast path for the
    convolutions; the same arithmetic); `dtype="bfloat16"` runs it in bfloat16, faster where
    the CPU has bfloat16 instructions but an approximation of the learner's policy (V-trace
    corrects for the difference, as for any behaviour policy).
    """

    def __init__(self, model_spec: dict[str, Any], device: torch.device, max_batch: int,
                 dtype: str = "float32"):
        self.device = device
        self.dtype = DTYPES[dtype]
        self.cpu_model = build_model(model_spec).eval()
        self.model = build_model(model_spec).to(device, self.dtype).eval()
        self.channels_last = any(p.dim() == 4 for p in self.model.parameters())
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.max_batch = max_batch
        self._pinned: torch.Tensor | None = None
        self.refresh()

    def load(self, state: dict[str, np.ndarray]) -> None:
        load_numpy_state(self.cpu_model, state)
        self.refresh()

    def refresh(self) -> None:
        """Copy `cpu_model`'s weights (new ones from the learner) into the running copy."""
        with torch.no_grad():
            for dst, src in zip(self.model.state_dict().values(), self.cpu_model.state_dict().values(),
                                strict=True):
                dst.copy_(src)

    def initial_state(self, batch: int) -> torch.Tensor:
        """The zero state of `batch` rows, on the CPU (empty for feed-forward policies)."""
        return self.cpu_model.initial_state(batch, "cpu")

    def logits(self, obs: np.ndarray) -> torch.Tensor:
        """Policy logits [B, n_actions] on the CPU, for a batch of observations (feed-forward)."""
        return self.step(obs, self.initial_state(len(obs)))[0]

    def step(self, obs: np.ndarray, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, n_actions], new state) on the CPU through the agent contract, for a batch of
        observations and the state each row holds (already reset where an episode starts)."""
        x = torch.from_numpy(obs)
        if self.device.type == "cuda":
            if self._pinned is None or self._pinned.dtype != x.dtype:
                self._pinned = torch.empty((self.max_batch, *x.shape[1:]), dtype=x.dtype).pin_memory()
            staged = self._pinned[: len(x)]
            staged.copy_(x)
            x = staged.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        state = state.to(self.device)
        with torch.inference_mode():
            if self.dtype is not torch.float32:  # the model scales uint8 frames to floats itself
                x = x.to(self.dtype) if x.is_floating_point() else x
                with torch.autocast(self.device.type, dtype=self.dtype):
                    logits, _, state = self.model.core(x, state.to(self.dtype))
                return logits.float().to("cpu"), state.float().to("cpu")
            logits, _, state = self.model.core(x, state)
            return logits.to("cpu"), state.to("cpu")
