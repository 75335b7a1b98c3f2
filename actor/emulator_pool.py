"""The emulator processes of an actor host: start, restart, hand out turns, watch, stop.

Each slot runs `python -m actor.emulator_process` (one environment, no policy) with three file
descriptors passed down: the shared slots (memfd), its own act pipe and the shared ready pipe.
A slot whose process dies can be started again (a new generation); turns of the old process
still in the ready pipe are ignored.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from actor.slots import ACT, STOP, SlotLayout, Slots, generation_matches, read_ready

if TYPE_CHECKING:
    from common.runspec import RunSpec

log = logging.getLogger("actor")
EMULATOR_NICE = 3  # emulators run this much nicer than their host (see actor.emulator_process.yield_to_the_host)


@dataclass
class SlotState:
    proc: subprocess.Popen | None = None
    act_fd: int | None = None
    generation: int = 0
    started_at: float = 0.0
    turn_since: float | None = None  # when the emulator got its turn (None: it answered)
    answered: int = 0  # turns answered by the current process (0: not up yet)


class EmulatorPool:
    """N emulator processes sharing one `Slots` and one ready pipe with this (host) process."""

    def __init__(self, layout: SlotLayout, run: RunSpec, *,
                 python: str = sys.executable, nice: int = EMULATOR_NICE, sched_batch: bool = True):
        self.layout = layout
        self.run = run.to_wire()  # each emulator process reads it back with RunSpec.from_wire
        self.python = python
        self.nice = nice
        self.sched_batch = sched_batch
        self.slots = Slots.create(layout)
        self.ready_fd, self._ready_w = os.pipe()
        os.set_blocking(self.ready_fd, False)
        self.state = [SlotState() for _ in range(layout.n)]
        self.closed = False

    @property
    def n(self) -> int:
        return self.layout.n

    # ------------------------------------------------------------------ processes
    def start(self, k: int, seed: int) -> None:
        """(Re)start slot k's emulator with `seed`; its first turn is the reset observation."""
        self.retire(k)
        s = self.state[k]
        s.generation += 1
        act_r, act_w = os.pipe()
        spec = {"slot": k, "generation": s.generation, "n": self.n, "seed": seed,
                "frame_shape": list(self.layout.frame_shape), "frame_dtype": self.layout.frame_dtype,
                "run": self.run, "nice": self.nice, "sched_batch": self.sched_batch,
                "shm_fd": self.slots.fd, "act_fd": act_r, "ready_fd": self._ready_w}
        try:
            s.proc = subprocess.Popen([self.python, "-m", "actor.emulator_process", json.dumps(spec)],
                                      pass_fds=(self.slots.fd, act_r, self._ready_w))
        finally:
            os.close(act_r)  # the child holds it now; our write end then fails once it is gone
        s.act_fd = act_w
        s.started_at = time.monotonic()
        s.turn_since = s.started_at  # its first answer is the reset observation
        s.answered = 0

    def retire(self, k: int, timeout: float = 2.0) -> int | None:
        """Stop slot k's process (if any); its exit code."""
        s = self.state[k]
        if s.act_fd is not None:
            try:
                os.write(s.act_fd, STOP)
            except OSError:
                pass
            os.close(s.act_fd)
            s.act_fd = None
        code = None
        if s.proc is not None:
            try:
                code = s.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                code = s.proc.wait()
            s.proc = None
        s.turn_since = None
        return code

    def exited(self) -> list[tuple[int, int]]:
        """(slot, exit code) of every emulator process that ended by itself since the last call."""
        out = []
        for k, s in enumerate(self.state):
            if s.proc is not None and s.proc.poll() is not None:
                out.append((k, s.proc.returncode))
                if s.act_fd is not None:
                    os.close(s.act_fd)
                    s.act_fd = None
                s.proc = None
                s.turn_since = None
        return out

    def close(self, timeout: float = 3.0) -> None:
        """Stop every emulator (a stop byte; a kill for any still there after `timeout`)."""
        if self.closed:
            return
        self.closed = True
        for s in self.state:
            if s.act_fd is not None:
                try:
                    os.write(s.act_fd, STOP)
                except OSError:
                    pass
        deadline = time.monotonic() + timeout
        for k in range(self.n):
            self.retire(k, timeout=max(0.0, deadline - time.monotonic()))
        os.close(self.ready_fd)
        os.close(self._ready_w)
        self.slots.close()

    # ------------------------------------------------------------------ turns
    def ready(self) -> list[int]:
        """Slots whose (current) emulator has a new observation, in the order they said so."""
        out = []
        for k, g in read_ready(self.ready_fd):
            s = self.state[k] if k < self.n else None
            if s is None or s.proc is None or not generation_matches(g, s.generation):
                continue  # a process that was replaced (or garbage): not this slot's turn
            s.turn_since = None
            s.answered += 1
            out.append(k)
        return out

    def act(self, slots: list[int]) -> list[int]:
        """Give each slot its turn (its action is in `self.slots.action`); the slots whose
        process is gone (they are left to `exited`)."""
        now = time.monotonic()
        gone = []
        for k in slots:
            s = self.state[k]
            try:
                os.write(s.act_fd, ACT)
                s.turn_since = now
            except (OSError, TypeError):
                gone.append(k)
        return gone

    def stalled(self, timeout: float) -> list[int]:
        """Slots whose emulator has had its turn for longer than `timeout` seconds."""
        now = time.monotonic()
        return [k for k, s in enumerate(self.state)
                if s.proc is not None and s.turn_since is not None and now - s.turn_since > timeout]

    def pids(self) -> list[int | None]:
        return [s.proc.pid if s.proc is not None else None for s in self.state]
