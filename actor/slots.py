"""What an actor host's emulator processes and its inference process share: one anonymous
shared-memory file (memfd) with a slot per emulator, and pipes that say whose turn it is.

A slot holds the newest observation of its emulator, the reward and end-of-episode flags of the
step that produced it, and the action to take next. Nothing is serialised: both sides see the
same bytes through numpy views. Turns pass through pipes, a few bytes each:

- `ready` (every emulator -> the host): "slot k (generation g) has a new observation";
  writes of 4 bytes are atomic on a pipe, so all emulators share it and the host reads every
  ready slot in one `read`.
- one `act` pipe per slot (host -> emulator k): one byte, "your action is in the slot" (or
  "stop"). An emulator blocks in `read` on it; end of file means the host is gone.

A slot is written by one side at a time (the emulator until it says ready, the host until it
sends the act byte), so no locks are needed; a pipe syscall orders the memory accesses around it.
Generations tell a restarted emulator's turns from those of the process it replaced.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass

import numpy as np

ACT, STOP = b"a", b"s"
_READY = struct.Struct("<HH")  # slot, generation (mod 2**16)
MAX_SLOTS = 1 << 16
_ALIGN = 64  # each field on its own cache lines


@dataclass(frozen=True)
class SlotLayout:
    """Shapes of the shared slots; the same on both sides, so offsets agree."""

    n: int
    frame_shape: tuple[int, ...]
    frame_dtype: str

    def fields(self) -> list[tuple[str, tuple[int, ...], np.dtype]]:
        n = self.n
        return [
            ("obs", (n, *self.frame_shape), np.dtype(self.frame_dtype)),
            ("final", (n, *self.frame_shape), np.dtype(self.frame_dtype)),  # what a time limit hid
            ("reward", (n,), np.dtype(np.float32)),
            ("raw_reward", (n,), np.dtype(np.float64)),
            ("terminated", (n,), np.dtype(np.bool_)),
            ("truncated", (n,), np.dtype(np.bool_)),
            ("game_over", (n,), np.dtype(np.bool_)),  # False when an end was a lost life
            ("action", (n,), np.dtype(np.int32)),
            ("busy", (n,), np.dtype(np.float64)),  # seconds the emulator spent stepping, summed
        ]

    def offsets(self) -> tuple[dict[str, int], int]:
        offsets, end = {}, 0
        for name, shape, dtype in self.fields():
            offsets[name] = end
            end += -(-math.prod(shape) * dtype.itemsize // _ALIGN) * _ALIGN
        return offsets, max(end, _ALIGN)


class Slots:
    """Numpy views of the shared slots (`obs`, `final`, `reward`, `raw_reward`, `terminated`,
    `truncated`, `game_over`, `action`, `busy`), each indexed by slot first."""

    def __init__(self, layout: SlotLayout, fd: int, *, owner: bool):
        if not 0 < layout.n <= MAX_SLOTS:
            raise ValueError(f"an actor host has 1 to {MAX_SLOTS} emulators, not {layout.n}")
        self.layout = layout
        self.fd = fd
        self.owner = owner
        offsets, size = layout.offsets()
        self._mmap = mmap.mmap(fd, size)
        for name, shape, dtype in layout.fields():
            view = np.frombuffer(self._mmap, dtype=dtype, count=math.prod(shape), offset=offsets[name])
            setattr(self, name, view.reshape(shape))

    @classmethod
    def create(cls, layout: SlotLayout) -> Slots:
        """A fresh zeroed shared file (anonymous: nothing to clean up if the host is killed)."""
        fd = os.memfd_create("retrofleet-slots", os.MFD_CLOEXEC)
        os.ftruncate(fd, layout.offsets()[1])
        return cls(layout, fd, owner=True)

    @classmethod
    def attach(cls, layout: SlotLayout, fd: int) -> Slots:
        """The views over a file descriptor the host passed down."""
        return cls(layout, fd, owner=False)

    def write(self, k: int, obs: np.ndarray, reward: float, raw_reward: float, terminated: bool,
              truncated: bool, final: np.ndarray | None = None, game_over: bool = True) -> None:
        """Emulator side: what step of slot k returned (obs is the reset frame after an end,
        `final` the observation a time limit hid)."""
        self.obs[k] = obs
        if final is not None:
            self.final[k] = final
        self.reward[k] = reward
        self.raw_reward[k] = raw_reward
        self.terminated[k] = terminated
        self.truncated[k] = truncated
        self.game_over[k] = game_over

    def close(self) -> None:
        for name, _, _ in self.layout.fields():
            setattr(self, name, None)  # views first, or the mmap cannot close
        try:
            self._mmap.close()
        except BufferError:  # a caller still holds a view; the mapping goes with the process
            pass
        if self.owner:
            os.close(self.fd)


# ---------------------------------------------------------------------------- turns


def say_ready(fd: int, slot: int, generation: int) -> None:
    os.write(fd, _READY.pack(slot, generation & 0xFFFF))


def read_ready(fd: int) -> list[tuple[int, int]]:
    """Every (slot, generation) waiting on the ready pipe; [] when none (non-blocking fd)."""
    try:
        buf = os.read(fd, 4096)  # a multiple of the record size: records never split
    except BlockingIOError:
        return []
    if not buf:
        raise EOFError("ready pipe closed")
    return list(_READY.iter_unpack(buf))


def generation_matches(said: int, generation: int) -> bool:
    return said == generation & 0xFFFF
