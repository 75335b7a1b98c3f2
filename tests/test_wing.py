"""The two-player wing joins the generic code only through hooks: the wire layer, the learner
and the actor name no two-player concept, the wing imports neither actor/ nor learner/, and a
game family's kinds and episode fields register with the wire layer."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

from common import protocol
from common.protocol import ProtocolError, RolloutSpec

ROOT = Path(__file__).resolve().parent.parent
GENERIC = ["common/protocol.py", "actor/rollout.py", "actor/host.py", "actor/client.py", "actor/link.py",
           "learner/server.py", "learner/metrics.py", "learner/periodic_eval.py"]
TWO_PLAYER_WORDS = re.compile(r"connectx|two_player|two-player|league|opponent|snapshot_|seat", re.I)


@pytest.mark.parametrize("path", GENERIC)
def test_generic_code_names_no_two_player_concept(path):
    hits = [f"{path}:{i}: {line.strip()}" for i, line in enumerate((ROOT / path).read_text().splitlines(), 1)
            if TWO_PLAYER_WORDS.search(line)]
    assert not hits, "\n".join(hits)


def test_the_wing_imports_neither_actor_nor_learner():
    for path in sorted((ROOT / "common" / "connectx").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(("actor", "learner")), f"{path.name} imports {name}"


def test_the_wing_registers_its_kinds_and_episode_fields():
    from common.connectx import messages

    assert set(messages.KINDS) <= set(protocol.KINDS)
    assert set(protocol.EPISODE_EXTRAS[messages.EPISODE_EXTRAS]) == {"opponent", "seat", "result"}


def _spec(extras: str) -> RolloutSpec:
    return RolloutSpec(2, (3,), "float32", 1, 2, episode_extras=extras)


def _rollout_msg(episodes: list[dict]) -> dict:
    T = 2
    r = protocol.Rollout(0, 0, np.zeros((T + 1, 3), np.float32), np.zeros((0, 3), np.float32),
                         np.zeros(T, np.int32), np.zeros(T, np.float32), np.zeros(T, np.float32),
                         np.array([False, True]), np.zeros(T, bool), episodes)
    return protocol.decode(protocol.encode_rollout(r))


def test_a_family_can_add_a_kind_and_episode_fields():
    protocol.register_kind("test_note")
    assert protocol.decode(protocol.encode("test_note", text="hi"))["text"] == "hi"
    protocol.register_episode_fields("test_lap", {"laps": lambda v: protocol.one_of(v, (1, 2, 3), "laps")})
    good = {"return": 1.0, "length": 2, "frames": 2, "laps": 2}
    r = protocol.validate_rollout(_rollout_msg([good]), _spec("test_lap"), latest_version=0)
    assert r.episodes == [good]
    with pytest.raises(ProtocolError, match="laps"):
        protocol.validate_rollout(_rollout_msg([{**good, "laps": 9}]), _spec("test_lap"), latest_version=0)
    with pytest.raises(ProtocolError, match="an episode is a map"):  # a generic spec takes no extras
        protocol.validate_rollout(_rollout_msg([good]), _spec(""), latest_version=0)
    with pytest.raises(ValueError, match="already taken"):
        protocol.register_episode_fields("test_bad", {"return": float})


def test_unregistered_episode_fields_are_named():
    with pytest.raises(KeyError, match="never registered"):
        protocol.validate_rollout(_rollout_msg([]), _spec("no_such_family"), latest_version=0)


def test_config_takes_the_wing_settings_and_their_checks():
    from common.config import Config, ConfigError

    assert Config(league_shares="self=0.2").shares() == {"self": 0.2}
    with pytest.raises(ConfigError, match="league_shares"):
        Config(league_shares="self")
    with pytest.raises(ConfigError, match="max_snapshots"):
        Config(max_snapshots=0)
