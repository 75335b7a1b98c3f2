"""Where the update's batches come from: one interface, two training modes.

``AsyncSource`` (the default mode) trains as soon as enough rollouts are buffered, whatever
versions made them (learner/batcher.py); ``SyncSource`` waits for one rollout of the newest
version from every live actor (learner/rounds.py). ``make_source`` is the one place that reads
``cfg.mode``: every other room asks the source, never the mode.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from common.config import Config
from common.protocol import Rollout
from learner.batcher import Batch, Batcher, collate
from learner.rounds import SyncRound

BACKPRESSURE_POLL_S = 0.002  # while the buffer is full, ZeroMQ's queues hold the actors back


class DataSource(Protocol):
    """Rollouts in, batches out; `ready` is set when `take` may return a batch."""

    ready: asyncio.Event
    dropped_stale: int

    async def wait_for_room(self) -> None:
        """Returns once another rollout may be received."""

    def offer(self, r: Rollout, version: int) -> None:
        """A validated rollout (the learner is at `version`)."""

    def take(self, version: int) -> Batch | None:
        """The next batch for an update at `version`, or None when there is none yet."""

    def updated(self, version: int) -> None:
        """The update is applied and the learner now publishes `version`."""

    def check(self) -> None:
        """Periodically: actors may have gone silent since the last look."""


class AsyncSource:
    """Async mode: a bounded buffer of rollouts of any version within --max-policy-lag."""

    def __init__(self, batcher: Batcher):
        self.batcher = batcher
        self.ready = asyncio.Event()

    @property
    def dropped_stale(self) -> int:
        return self.batcher.dropped_stale

    async def wait_for_room(self) -> None:
        while self.batcher.full:
            await asyncio.sleep(BACKPRESSURE_POLL_S)

    def offer(self, r: Rollout, version: int) -> None:
        self.batcher.add(r, version)
        if self.batcher.ready():
            self.ready.set()

    def take(self, version: int) -> Batch | None:
        return self.batcher.take(version)

    def updated(self, version: int) -> None:
        if self.batcher.ready():  # rollouts that arrived during the update make the next batch
            self.ready.set()

    def check(self) -> None:
        pass


class SyncSource:
    """Sync mode: one round a version, complete when every live actor delivered (or it timed out)."""

    def __init__(self, round_: SyncRound, live: Callable[[], list[int]], dropped_stale: int = 0):
        self.round = round_
        self.live = live
        self.dropped_stale = dropped_stale
        self.ready = asyncio.Event()
        self.timer: asyncio.TimerHandle | None = None

    async def wait_for_room(self) -> None:
        pass  # a round holds at most one rollout an actor

    def offer(self, r: Rollout, version: int) -> None:
        if self.round.offer(r, time.monotonic()):
            self.check()
        else:
            self.dropped_stale += 1

    def take(self, version: int) -> Batch | None:
        if not self.round.complete(self.live(), time.monotonic()):
            return None
        return collate(self.round.take(), version)  # no round is open until the next version

    def updated(self, version: int) -> None:
        self.round.open(version)  # the weights of this version are published next

    def check(self) -> None:
        """Wake the update when the round is complete, or when it times out."""
        if self.round.complete(self.live(), time.monotonic()):
            self.ready.set()
        elif self.timer is None and self.round.deadline() is not None:
            def expire() -> None:
                self.timer = None
                self.check()

            delay = max(0.0, self.round.deadline() - time.monotonic()) + 0.01
            self.timer = asyncio.get_running_loop().call_later(delay, expire)


def make_source(cfg: Config, version: int, live: Callable[[], list[int]], dropped_stale: int = 0) -> DataSource:
    """The data source of --mode: the one place the learner branches on it."""
    if cfg.mode == "sync":
        return SyncSource(SyncRound(version, timeout=cfg.sync_timeout, min_actors=cfg.min_actors), live,
                          dropped_stale)
    batcher = Batcher(cfg.rollouts_per_batch, cfg.max_policy_lag)
    batcher.dropped_stale = dropped_stale
    return AsyncSource(batcher)
