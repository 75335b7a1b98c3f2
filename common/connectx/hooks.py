"""Where the two-player wing joins the generic actor and learner: the family hooks.

``actor_hooks`` gives an actor's hook object: the message kinds it takes besides the weights
(the league, snapshots), what it does with them, and the opponent each game is played against.
``learner_hooks`` gives the learner's (common/connectx/two_player.py). The generic code calls
them through the game-family registry (common/families/connectx.py), never by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from common.connectx.messages import KINDS, LEAGUE, validate_league, validate_snapshot
from common.connectx.opponents import OpponentPool
from common.connectx.settings import ConnectXSettings
from common.connectx.two_player import TwoPlayer


class ActorHooks:
    """An actor's side of two-player games: its opponent pool, fed by league and snapshot
    messages, picks each game's opponent inside the environment."""

    kinds = KINDS  # message kinds on the weights socket this hook takes

    def __init__(self, env: Any, model: nn.Module, model_spec: dict[str, Any], seed: int):
        self.pool = OpponentPool(model, model_spec, seed)
        env.unwrapped.pick_opponent = self.pool.pick

    def on_message(self, msg: dict[str, Any], expected: dict[str, tuple[tuple[int, ...], str]],
                   spec_hash: str) -> None:
        """A decoded message of one of ``kinds`` from our learner session; ProtocolError if bad."""
        if msg["kind"] == LEAGUE:
            self.pool.set_league(validate_league(msg))
        elif self.pool.wants(msg.get("name")):
            self.pool.add_snapshot(*validate_snapshot(msg, expected, spec_hash))

    def on_new_session(self) -> None:
        """The learner restarted: its snapshots may reuse the names."""
        self.pool.forget_snapshots()


def actor_hooks(env: Any, model: nn.Module, model_spec: dict[str, Any], seed: int) -> ActorHooks:
    return ActorHooks(env, model, model_spec, seed)


def learner_hooks(cfg: ConnectXSettings, run_dir: Path, model_spec: dict[str, Any], spec_hash: str,
                  session: str, counters: dict[str, Any]) -> TwoPlayer:
    """The learner's hooks; ``counters`` are a resumed run's (empty for a new run)."""
    return TwoPlayer(cfg, run_dir, model_spec, spec_hash, session, counters.get(TwoPlayer.counters_key))

