"""Frame stacks: the actor keeps one for inference; the learner rebuilds them from single frames.

Each frame crosses the wire once. A rollout carries frames[0..T] (the newest frame of each
step's stack, frames[T] to bootstrap from) and `history`, the older frames of frames[0]'s
stack. After an episode ends the next stack is the reset frame repeated, on both sides.
"""

from __future__ import annotations

import numpy as np


class FrameStack:
    """The last `size` frames, oldest first; a reset fills it with the reset frame."""

    def __init__(self, size: int, frame_shape: tuple[int, ...], dtype: np.dtype):
        self.buf = np.zeros((size, *frame_shape), dtype=dtype)

    def reset(self, frame: np.ndarray) -> None:
        self.buf[:] = frame

    def push(self, frame: np.ndarray) -> None:
        self.buf[:-1] = self.buf[1:]
        self.buf[-1] = frame

    @property
    def newest(self) -> np.ndarray:
        return self.buf[-1]

    def history(self) -> np.ndarray:
        """The frames before the newest one (a copy: the stack keeps moving)."""
        return self.buf[:-1].copy()


def stack_indices(dones: np.ndarray, stack: int) -> np.ndarray:
    """[T+1, stack] indices into concat(history, frames) that rebuild every step's stack.

    `dones[t]` ends the episode at step t, so frames[t+1] is a reset frame; a stack never
    reaches back across a reset, it repeats the reset frame instead, as FrameStack.reset does.
    """
    T = len(dones)
    steps = np.arange(T + 1)
    reset = np.zeros(T + 1, dtype=bool)
    reset[1:] = dones
    # position (in the concatenated sequence) of the latest reset at or before each step
    start = np.where(reset, steps + stack - 1, 0)
    start = np.maximum.accumulate(start)
    newest = steps + stack - 1
    offsets = np.arange(-(stack - 1), 1)
    return np.maximum(newest[:, None] + offsets[None, :], start[:, None])


def rebuild_stacks(history: np.ndarray, frames: np.ndarray, dones: np.ndarray) -> np.ndarray:
    """[T+1, stack, *frame_shape] stacks from a rollout's history and frames."""
    stack = len(history) + 1
    seq = np.concatenate([history, frames]) if stack > 1 else frames
    return seq[stack_indices(dones, stack)]
