"""Rollouts -> time-major [T, B] arrays, with the policy-lag filter. No sockets, no torch.

A batch keeps each frame once (`frames`) with the indices that rebuild every step's stack
(`stack_idx`); the trainer gathers the stacks on its device. Rebuilding them here, in the event
loop, was 88 % of the learner's ingest cost (stacks are 4x the bytes of the frames).
"""

from __future__ import annotations

from collections import deque
from dataclasses import field, make_dataclass

import numpy as np

from common import protocol
from common.framestack import stack_indices
from common.protocol import Rollout, RolloutField


class _BatchBase:
    @property
    def transitions(self) -> int:
        return self.actions.size

    @property
    def dones(self) -> np.ndarray:
        return self.terminated | self.cut


def batch_class(fields: tuple[RolloutField, ...]) -> type:
    """The Batch dataclass of a rollout field table: the stacks, the table's fields with a batch
    axis (optional ones None by default), and what collate computes."""
    batched = [f for f in fields if f.batch is not None]
    cls = make_dataclass(
        "Batch",
        [("frames", np.ndarray),  # [T+stack, B, *frame_shape]: each rollout's history, then its T+1 frames
         ("stack_idx", np.ndarray)]  # [T+1, B, stack] int64: the rows of `frames` that make each step's stack
        + [(f.name, np.ndarray) for f in batched if not f.optional]  # [T, B] (time) or [B, ...] (rollout)
        + [("cut", np.ndarray),  # [T, B] bool: a time limit ended the episode, the game did not (bootstrap)
           ("final_frames", np.ndarray),  # [K, *frame_shape]: the newest frame of each hidden observation
           ("final_at", np.ndarray),  # [K, 2] int64: (t, b) of each
           ("lags", np.ndarray),  # [B] policy versions between the data and the learner
           ("actor_ids", np.ndarray)]  # [B] who sent each rollout
        + [(f.name, "np.ndarray | None", field(default=None)) for f in batched if f.optional],
        bases=(_BatchBase,), namespace={"__module__": __name__},
    )
    cls.__doc__ = ("Time-major training data; `gather_stacks(frames, stack_idx)` gives the T+1 observations "
                   "(the last one bootstraps), `final_stacks(...)` the observations time limits hid; the "
                   "fields of ROLLOUT_FIELDS with a batch axis are joined along it (None where absent).")
    return cls


Batch = batch_class(protocol.ROLLOUT_FIELDS)


def gather_stacks(frames, stack_idx):
    """[T+1, B, stack, ...] from frames [T+stack, B, ...] and stack_idx [T+1, B, stack].

    Works on numpy arrays and on torch tensors (on any device) alike.
    """
    B = stack_idx.shape[1]
    if isinstance(frames, np.ndarray):
        cols = np.arange(B)
    else:
        import torch

        cols = torch.arange(B, device=frames.device)
    return frames[stack_idx, cols[None, :, None]]


def final_stacks(frames, stack_idx, final_frames, final_at):
    """[K, stack, ...]: the stack of each observation a time limit hid, that is the step's own
    stack shifted by one with the final frame pushed (what the actor's FrameStack would hold).
    Works on numpy arrays and on torch tensors alike."""
    t, b = final_at[:, 0], final_at[:, 1]
    older = frames[stack_idx[t, b, 1:], b[:, None]]  # [K, stack-1, ...]
    if isinstance(frames, np.ndarray):
        return np.concatenate([older, final_frames[:, None]], axis=1)
    import torch

    return torch.cat([older, final_frames[:, None]], dim=1)


def collate(rollouts: list[Rollout], version: int) -> Batch:
    """Stack rollouts along B; each frame is copied once, stacks are left to `gather_stacks`."""
    dones = [r.dones for r in rollouts]
    first = rollouts[0]
    h = len(first.history)
    frames = np.empty((h + len(first.frames), len(rollouts), *first.frames.shape[1:]), first.frames.dtype)
    for b, r in enumerate(rollouts):
        frames[:h, b] = r.history
        frames[h:, b] = r.frames
    at = [(t, b) for b, r in enumerate(rollouts) for t in np.flatnonzero(r.cut)]
    joined = {}
    for f in protocol.ROLLOUT_FIELDS:
        if f.batch is None:
            continue
        values = [getattr(r, f.name) for r in rollouts]
        if all(v is None for v in values):
            continue
        if f.fill is not None:  # some rollouts sent it, others had none to send
            values = [f.fill(r) if v is None else v for r, v in zip(rollouts, values, strict=True)]
        a = np.stack(values, axis=1 if f.batch == "time" else 0)
        joined[f.name] = a.astype(f.batch_dtype) if f.batch_dtype else a
    return Batch(
        frames=frames,
        stack_idx=np.stack([stack_indices(d, h + 1) for d in dones], axis=1),
        cut=np.stack([r.cut for r in rollouts], axis=1),
        final_frames=np.concatenate([r.finals() for r in rollouts]),
        final_at=np.array(at, dtype=np.int64).reshape(-1, 2),
        lags=np.array([version - r.policy_version for r in rollouts], dtype=np.int64),
        actor_ids=np.array([r.actor_id for r in rollouts], dtype=np.int64),
        **joined,
    )


class Batcher:
    """Buffers rollouts until a batch is ready; drops those over `max_policy_lag`."""

    def __init__(self, rollouts_per_batch: int, max_policy_lag: int, capacity: int | None = None):
        self.rollouts_per_batch = rollouts_per_batch
        self.max_policy_lag = max_policy_lag
        # one batch waiting while one trains: more would only make the data older
        self.capacity = capacity or rollouts_per_batch
        self.pending: deque[Rollout] = deque()
        self.dropped_stale = 0

    def _fresh(self, r: Rollout, version: int) -> bool:
        if version - r.policy_version > self.max_policy_lag:
            self.dropped_stale += 1
            return False
        return True

    def add(self, r: Rollout, version: int) -> bool:
        """Buffer a rollout; False (and counted) when it is already too old."""
        if not self._fresh(r, version):
            return False
        self.pending.append(r)
        return True

    @property
    def full(self) -> bool:
        return len(self.pending) >= self.capacity

    def ready(self) -> bool:
        return len(self.pending) >= self.rollouts_per_batch

    def take(self, version: int) -> Batch | None:
        """The oldest full batch of fresh rollouts, or None when there is not enough."""
        self.pending = deque(r for r in self.pending if self._fresh(r, version))
        if not self.ready():
            return None
        chosen = [self.pending.popleft() for _ in range(self.rollouts_per_batch)]
        return collate(chosen, version)
