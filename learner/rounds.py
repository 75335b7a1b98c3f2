"""Sync mode's rounds: after publishing version k, one rollout made with k from each live actor,
then one update on exactly those.

- A round is open for one version. While the update it fed runs, no round is open: a rollout
  that arrives then (a late one, a resend) is stale, never part of the next round.
- A round is complete when it holds a rollout from every live actor and at least
  `min_actors`; or when its first rollout has waited `timeout` seconds (an actor's rollout
  was lost in flight and its heartbeats keep it live): it then trains on what it has.
"""

from __future__ import annotations

from common.protocol import Rollout


class SyncRound:
    def __init__(self, version: int, *, timeout: float, min_actors: int = 1):
        self.timeout = timeout
        self.min_actors = min_actors
        self.version: int | None = version
        self.rollouts: dict[int, Rollout] = {}
        self.first_at: float | None = None

    def open(self, version: int) -> None:
        """Take rollouts made with `version` (after its weights are published)."""
        self.version, self.rollouts, self.first_at = version, {}, None

    def offer(self, r: Rollout, now: float) -> bool:
        """Keep `r` for this round; False (stale) when no round is open for its version or
        its actor already delivered."""
        if self.version is None or r.policy_version != self.version or r.actor_id in self.rollouts:
            return False
        self.rollouts[r.actor_id] = r
        if self.first_at is None:
            self.first_at = now
        return True

    def complete(self, live: list[int], now: float) -> bool:
        if not self.rollouts or self.version is None:
            return False
        if self.first_at is not None and now - self.first_at >= self.timeout:
            return True
        return len(self.rollouts) >= self.min_actors and set(live) <= set(self.rollouts)

    def deadline(self) -> float | None:
        """When the open round times out (None before its first rollout)."""
        return None if self.first_at is None else self.first_at + self.timeout

    def take(self) -> list[Rollout]:
        """The round's rollouts in actor order; the round closes until `open`."""
        rollouts = [self.rollouts[k] for k in sorted(self.rollouts)]
        self.version, self.rollouts, self.first_at = None, {}, None
        return rollouts
