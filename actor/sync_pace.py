"""Sync mode's patience: how long an actor (or an emulator of a host) waits for weights newer
than those its last rollout was made with before it acts on.

The wait guards against a rollout lost in flight: the learner's round trains on what it has
`sync_timeout` seconds after its first rollout, publishes, and republishes every
`publish_interval`. But the round also includes the update itself, which on a loaded or slow
CPU can take longer than that (Breakout's 4 epochs x 4 minibatches took over 14 s beside the
test suite). An actor that gave up then acted on with the old weights, and the learner dropped
what it made as stale: one rollout per emulator per round. So the patience grows with the
rounds this actor has seen: twice the longest of the last few, on top of the fixed part.
"""

from __future__ import annotations

from collections import deque

KEEP_ROUNDS = 8  # rounds remembered: a slow spell is remembered this many rounds after it ends


class SyncPatience:
    def __init__(self, sync_timeout: float, publish_interval: float):
        self.base = sync_timeout + 2 * publish_interval
        self.rounds: deque[float] = deque(maxlen=KEEP_ROUNDS)
        self.version: int | None = None
        self.version_at = 0.0

    def seen(self, version: int, now: float) -> None:
        """The weights now held are `version`; a round is the time from one version to the next
        (a jump over versions, or back after a rejoin, is no round of this learner's)."""
        if version == self.version:
            return
        if self.version is not None and version == self.version + 1:
            self.rounds.append(now - self.version_at)
        self.version, self.version_at = version, now

    def seconds(self) -> float:
        """How long to wait for newer weights before acting on."""
        return self.base + 2 * max(self.rounds, default=0.0)
