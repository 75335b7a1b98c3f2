"""Episode accounting: the statistics actors report, checked against the rollouts they send.

The rules, all here. A rollout is rejected when
- it does not report exactly one episode per done flag (terminated or truncated), in order;
- an episode's frames are not its length times the frame skip, or its length is over the time
  limit, or shorter than the steps of it in this rollout (between two done flags of the same
  rollout: not exactly those steps);
- |return| > max_abs_reward * length, or, without --clip-rewards (the rollout's rewards are
  then the game's), an episode wholly inside the rollout does not return the sum of its rewards.
- a two-player game's result (win 1, draw 0, loss -1) is not its return (so, with the rule
  above, the rewards the learner received decide it).
An episode that began in an earlier rollout is *verified* only when the learner received every
step of it (from a done flag or a fresh actor's start) and, without --clip-rewards, its return
is the sum of those rewards. Otherwise (its actor rejoined mid-episode, a rollout was lost in
flight, or it lies) it is counted in `episodes` but kept out of the mean return and
--stop-at-return (`unverified_episodes`): no actor can end a run or move its curve with
returns the learner did not see.

Games with lives (spec.lives: Atari) end a training episode at every lost life; each episode
then says whether the game ended (game_over). The rules above hold for each such episode, and
the statistics count whole games: `check` returns a game, its episodes summed, once it ends
(over the time limit: rejected; verified only if every episode of it was).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from common.protocol import ProtocolError, Rollout, RolloutSpec


@dataclass
class Track:
    """What the learner saw of one actor's current episode."""

    steps: int = 0  # steps received since the actor's last done
    reward: float = 0.0  # the sum of their rewards
    reward_abs: float = 0.0  # the sum of their magnitudes (for the rounding tolerance)
    whole: bool = True  # the learner saw the episode from its first step


@dataclass(frozen=True)
class Episode:
    ret: float
    length: int
    frames: int
    verified: bool


class EpisodeBook:
    """Per-actor episode tracks; `check` validates a rollout's episodes and advances the track."""

    def __init__(self, spec: RolloutSpec, *, rewards_are_returns: bool):
        self.spec = spec
        self.rewards_are_returns = rewards_are_returns
        self.tracks: dict[int, Track] = {}
        self.games: dict[int, Episode] = {}  # with lives: each actor's game so far (its lives lost)

    def start(self, actor_id: int, *, fresh: bool) -> None:
        """An actor joined: a fresh one starts its first episode, a rejoining one is mid-episode."""
        self.tracks[actor_id] = Track(whole=fresh)
        self.games[actor_id] = Episode(0.0, 0, 0, fresh)

    def forget(self, actor_id: int) -> None:
        self.tracks.pop(actor_id, None)
        self.games.pop(actor_id, None)

    def check(self, r: Rollout) -> list[Episode]:
        """The rollout's episodes, checked; ProtocolError (state untouched) if they do not fit."""
        ends = np.flatnonzero(r.dones)
        if len(ends) != len(r.episodes):
            raise ProtocolError(f"{len(r.episodes)} episodes reported, {len(ends)} done flags sent")
        track = self.tracks.get(r.actor_id) or Track(whole=False)
        rewards = r.rewards.astype(np.float64)
        out = []
        begin = 0
        for i, (end, ep) in enumerate(zip(ends, r.episodes, strict=True)):
            steps = int(end) + 1 - begin
            part = rewards[begin:end + 1]
            reward, reward_abs = float(part.sum()), float(np.abs(part).sum())
            self._check_one(ep, steps, exact=i > 0)
            if i == 0:  # began before this rollout: verified if everything of it arrived
                verified = (track.whole and ep["length"] == track.steps + steps
                            and self._returns_match(ep, track.reward + reward, track.reward_abs + reward_abs))
            elif not self._returns_match(ep, reward, reward_abs):
                raise ProtocolError(f"episode return {ep['return']:g} is not the sum of its rewards ({reward:g})")
            else:
                verified = True
            out.append(Episode(ep["return"], ep["length"], ep["frames"], verified))
            begin = int(end) + 1
        tail = rewards[begin:]
        if len(ends):
            track = Track(len(tail), float(tail.sum()), float(np.abs(tail).sum()), True)
        else:
            track = Track(track.steps + len(tail), track.reward + float(tail.sum()),
                          track.reward_abs + float(np.abs(tail).sum()), track.whole)
        if self.spec.lives:
            out = self._games(r.actor_id, out, [ep["game_over"] for ep in r.episodes])
        self.tracks[r.actor_id] = track
        return out

    def _games(self, actor_id: int, lives: list[Episode], game_over: list[bool]) -> list[Episode]:
        """The games that `lives` (episodes that each end at a lost life or a game's end) finish."""
        game = self.games.get(actor_id) or Episode(0.0, 0, 0, False)
        out = []
        for ep, over in zip(lives, game_over, strict=True):
            game = Episode(game.ret + ep.ret, game.length + ep.length, game.frames + ep.frames,
                           game.verified and ep.verified)
            limit = self.spec.max_episode_steps
            if limit is not None and game.length > limit:
                raise ProtocolError(f"game length {game.length} is over the time limit {limit}")
            if over:
                out.append(game)
                game = Episode(0.0, 0, 0, True)
        self.games[actor_id] = game
        return out

    def _returns_match(self, ep: dict, reward: float, reward_abs: float) -> bool:
        """The claimed return is the sum of the rewards (float32 rounding aside), when the
        rollouts carry the game's rewards; with --clip-rewards nothing to compare."""
        return not self.rewards_are_returns or abs(ep["return"] - reward) <= 1e-5 * reward_abs + 1e-3

    def _check_one(self, ep: dict, steps: int, *, exact: bool) -> None:
        spec = self.spec
        length = ep["length"]
        if ep["frames"] != length * spec.frame_skip:
            raise ProtocolError(f"episode frames {ep['frames']} != length {length} x frame skip "
                                f"{spec.frame_skip}")
        if spec.max_episode_steps is not None and length > spec.max_episode_steps:
            raise ProtocolError(f"episode length {length} is over the time limit {spec.max_episode_steps}")
        if length < steps or (exact and length != steps):
            raise ProtocolError(f"episode length {length} does not fit its {steps} steps in the rollout")
        if not math.isfinite(ep["return"]) or abs(ep["return"]) > spec.max_abs_reward * length:
            raise ProtocolError(f"episode return {ep['return']:g} is over --max-abs-reward x length")
        if "result" in ep and ep["return"] != ep["result"]:
            raise ProtocolError(f"two-player game result {ep['result']} is not its return {ep['return']:g}")
