"""stable-retro games: RetroEnv -> MaxAndSkip -> GrayResize -> DiscreteButtons -> TimeLimit.

Default button sets (``action_set="default"``), action index = position in the list::

    console                          actions
    -------------------------------  ---------------------------------------------------------
    Genesis, 32x, SCD, Saturn (12)   [] L R U D [B] [L,B] [R,B] [U,B] [D,B] [A] [C]
    Nes, GameBoy, GbColor, GbAdvance,
      Sms, GameGear (12)             [] L R U D [A] [L,A] [R,A] [U,A] [D,A] [B] [A,B]
    Snes (12)                        [] L R U D [B] [L,B] [R,B] [U,B] [D,B] [A] [Y]
    PCEngine (12)                    [] L R U D [I] [L,I] [R,I] [U,I] [D,I] [II] [I,II]
    Atari2600 (10)                   [] L R U D [BUTTON] [L,BUTTON] [R,BUTTON] [U,BUTTON] [D,BUTTON]
    any other console                [] plus each single button except START/SELECT/MODE/...

(L/R/U/D = LEFT/RIGHT/UP/DOWN; [] = no-op.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from common.envs import EnvError, EnvSignature, GrayResize, MaxAndSkip, finish
from common.families import Family


def _dpad_set(fire: str, extra: list[list[str]]) -> list[list[str]]:
    """No-op, 4 directions, fire, fire+direction, then console-specific extras."""
    dirs = ["LEFT", "RIGHT", "UP", "DOWN"]
    return [[], *([d] for d in dirs), [fire], *([d, fire] for d in dirs), *extra]


_GENESIS = _dpad_set("B", [["A"], ["C"]])
_NES = _dpad_set("A", [["B"], ["A", "B"]])

BUTTON_SETS: dict[str, list[list[str]]] = {
    "Genesis": _GENESIS,
    "32x": _GENESIS,
    "SCD": _GENESIS,
    "Saturn": _GENESIS,
    "Nes": _NES,
    "GameBoy": _NES,
    "GbColor": _NES,
    "GbAdvance": _NES,
    "Sms": _NES,
    "GameGear": _NES,
    "Snes": _dpad_set("B", [["A"], ["Y"]]),
    "PCEngine": _dpad_set("I", [["II"], ["I", "II"]]),
    "Atari2600": _dpad_set("BUTTON", []),
}

# Pausing/resetting buttons only let an agent stall the game, so the fallback leaves them out.
_SYSTEM_BUTTONS = {"START", "SELECT", "MODE", "PAUSE", "RESET", "RUN", "C-MODE"}


def button_set(system: str, buttons: list[str | None]) -> list[list[str]]:
    if system in BUTTON_SETS:
        return BUTTON_SETS[system]
    return [[]] + [[b] for b in buttons if b is not None and b not in _SYSTEM_BUTTONS]


class DiscreteButtons(gym.ActionWrapper):
    """Discrete(n) -> MultiBinary button array, one row per combination in ``combos``."""

    def __init__(self, env: gym.Env, combos: list[list[str]]):
        super().__init__(env)
        buttons = list(env.unwrapped.buttons)
        self.combos = combos
        self._table = np.zeros((len(combos), len(buttons)), np.uint8)
        for i, combo in enumerate(combos):
            for b in combo:
                self._table[i, buttons.index(b)] = 1
        self.action_space = gym.spaces.Discrete(len(combos))

    def action(self, action: Any) -> np.ndarray:
        return self._table[action]  # row view, no copy

    def get_action_meaning(self, action: int) -> list[str]:
        return self.combos[action]


def is_retro_game(env_id: str) -> bool:
    """True for ids stable-retro knows (in ``list_games()``), whether or not the ROM is imported."""
    import stable_retro.data

    # Same test list_games() applies per game, without listing ~1000 directories.
    return stable_retro.data.get_file_path(env_id, "rom.sha") is not None


def retro_system(env_id: str) -> tuple[str, list[str | None]]:
    """Console name and button layout, read from the ROM's extension without an emulator."""
    import stable_retro

    try:
        rom = stable_retro.data.get_romfile_path(env_id)
    except FileNotFoundError:
        raise EnvError(
            f"ROM for {env_id} is not imported: run `python -m stable_retro.import "
            "/path/to/your/roms` first (only Airstriker-Genesis-v0 ships with stable-retro)"
        ) from None
    system = stable_retro.get_romfile_system(rom)
    return system, stable_retro.get_system_info(system)["buttons"]


class RetroFamily(Family):
    name = "stable-retro"
    preset = "retro"
    default_time_limit = 27_000  # agent steps, as ALE's 108,000 frames at frame skip 4

    def matches(self, env_id: str) -> bool:
        return is_retro_game(env_id)

    def make(self, env_id: str, *, seed: int, frame_skip: int, max_episode_steps: int | None,
             clip_rewards: bool, frame_size: int, **extra: Any) -> gym.Env:
        import stable_retro

        system, buttons = retro_system(env_id)
        env = stable_retro.make(env_id, render_mode=None)
        env = MaxAndSkip(env, frame_skip) if frame_skip > 1 else env
        env = GrayResize(env, frame_size)
        env = DiscreteButtons(env, button_set(system, buttons))
        if max_episode_steps is not None:
            env = gym.wrappers.TimeLimit(env, max_episode_steps)
        return finish(env, seed=seed, clip_rewards=clip_rewards)

    def signature(self, env_id: str, **settings: Any) -> EnvSignature:
        # No emulator: stable-retro allows one per process and the caller may already hold it.
        system, buttons = retro_system(env_id)
        size = settings.get("frame_size", 84)
        return EnvSignature((size, size), "uint8", len(button_set(system, buttons)), True)

    def video_source(self, env: gym.Env, frame_skip: int) -> tuple[Callable[[], np.ndarray], float]:
        """The emulator's RGB screen and agent steps per second, for evaluation videos."""
        unwrapped = env.unwrapped
        meta = getattr(unwrapped, "metadata", {}) or {}
        # render_mode=None still keeps the emulator's screen; get_screen() reads it.
        return (lambda: unwrapped.get_screen()), float(meta.get("video.frames_per_second", 60.0)) / frame_skip
