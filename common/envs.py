"""Environment construction shared by the actor and the learner.

``make_env`` builds a stable-retro game or any Gymnasium env with the same preprocessing
pipeline, and ``env_signature`` tells the learner the shapes without running a game.

Retro pipeline (innermost first)::

    RetroEnv (MultiBinary buttons, RGB frames)
      -> MaxAndSkip     repeat the action ``frame_skip`` frames, sum rewards, max of last two frames
      -> GrayResize     RGB -> grayscale -> ``frame_size`` x ``frame_size`` uint8 (ONE frame)
      -> DiscreteButtons Discrete(n) -> button array from ``BUTTON_SETS[system]``
      -> TimeLimit      ``max_episode_steps`` counted in agent steps (if not None)
      -> ClipReward     sign(reward), raw reward in info (if ``clip_rewards``)
      -> SeedOnFirstReset

Frame stacking is deliberately NOT done here: the actor stacks frames so that each frame
crosses the wire once.

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

import dataclasses
from typing import Any

import cv2
import gymnasium as gym
import numpy as np

__all__ = [
    "BUTTON_SETS",
    "DiscreteButtons",
    "EnvError",
    "EnvSignature",
    "GrayResize",
    "MaxAndSkip",
    "SeedOnFirstReset",
    "env_signature",
    "is_retro_game",
    "make_env",
    "registered_time_limit",
]


class EnvError(Exception):
    """One-line, user-facing message (no traceback needed)."""


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


def _button_set(system: str, buttons: list[str | None]) -> list[list[str]]:
    if system in BUTTON_SETS:
        return BUTTON_SETS[system]
    return [[]] + [[b] for b in buttons if b is not None and b not in _SYSTEM_BUTTONS]


@dataclasses.dataclass(frozen=True)
class EnvSignature:
    obs_shape: tuple[int, ...]  # ONE frame, before the actor's frame stacking
    obs_dtype: str  # numpy dtype name: 'uint8' or 'float32'
    n_actions: int
    is_image: bool
    action_mask: bool = False  # info["action_mask"] holds the legal actions each step
    two_player: bool = False  # info at a game's end holds opponent, seat and result


# --------------------------------------------------------------------------- wrappers


class MaxAndSkip(gym.Wrapper):
    """Repeat an action ``skip`` times, sum rewards, return the max of the last two frames.

    Unlike gymnasium's MaxAndSkipObservation, an episode ending early returns the max of the
    two frames just before the end, not a stale buffer from the previous step.
    """

    def __init__(self, env: gym.Env, skip: int, max_pool: bool = True):
        super().__init__(env)
        self._skip = skip
        self._max_pool = max_pool

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        total = 0.0
        obs = prev = None
        for _ in range(self._skip):
            prev = obs
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        if self._max_pool and prev is not None:
            # Fresh array, since the env may still own `prev`: ~18 us against ~2.5 ms of emulation.
            obs = np.maximum(prev, obs)
        return obs, total, terminated, truncated, info


class GrayResize(gym.ObservationWrapper):
    """(H, W, 3|1) or (H, W) uint8 image -> (size, size) uint8 grayscale via OpenCV."""

    def __init__(self, env: gym.Env, size: int):
        super().__init__(env)
        shape = env.observation_space.shape
        self._rgb = len(shape) == 3 and shape[2] == 3
        self._squeeze = len(shape) == 3 and shape[2] == 1
        self._dsize = (size, size)
        self._resize = tuple(shape[:2]) != self._dsize
        self.observation_space = gym.spaces.Box(0, 255, (size, size), np.uint8)

    def observation(self, obs: np.ndarray) -> np.ndarray:
        # Gray first: resizing one channel is ~3x cheaper than resizing three.
        if self._rgb:
            obs = cv2.cvtColor(obs, cv2.COLOR_RGB2GRAY)
        elif self._squeeze:
            obs = obs[:, :, 0]
        if self._resize:
            obs = cv2.resize(obs, self._dsize, interpolation=cv2.INTER_AREA)
        return obs


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


class SeedOnFirstReset(gym.Wrapper):
    """Uses ``seed`` for the first ``reset()`` that is not given a seed of its own."""

    def __init__(self, env: gym.Env, seed: int):
        super().__init__(env)
        self._pending_seed: int | None = seed

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None:
            seed = self._pending_seed
        self._pending_seed = None
        return self.env.reset(seed=seed, options=options)


# --------------------------------------------------------------------------- construction


class ClipReward(gym.Wrapper):
    """Reward -> its sign; the game's own reward stays in info['raw_reward'] for reporting."""

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["raw_reward"] = reward
        return obs, float(np.sign(reward)), terminated, truncated, info


def is_connectx(env_id: str) -> bool:
    """``connectx``: Kaggle's ConnectX against an opponent per game (common/connectx/env.py)."""
    from common.connectx import ENV_ID

    return env_id == ENV_ID


def is_retro_game(env_id: str) -> bool:
    """True for ids stable-retro knows (in ``list_games()``), whether or not the ROM is imported."""
    import stable_retro.data

    # Same test list_games() applies per game, without listing ~1000 directories.
    return stable_retro.data.get_file_path(env_id, "rom.sha") is not None


def _check_args(frame_skip: int, frame_size: int, action_set: str) -> None:
    if frame_skip < 1:
        raise EnvError(f"frame_skip must be >= 1, got {frame_skip}")
    if frame_size < 1:
        raise EnvError(f"frame_size must be >= 1, got {frame_size}")
    if action_set != "default":
        raise EnvError(f"unknown action_set {action_set!r}: only 'default' is supported")


def _retro_system(env_id: str) -> tuple[str, list[str | None]]:
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


def _make_retro(env_id: str, frame_skip: int, frame_size: int) -> gym.Env:
    import stable_retro

    system, buttons = _retro_system(env_id)
    env = stable_retro.make(env_id, render_mode=None)
    env = MaxAndSkip(env, frame_skip) if frame_skip > 1 else env
    env = GrayResize(env, frame_size)
    return DiscreteButtons(env, _button_set(system, buttons))


def _is_image(space: gym.Space) -> bool:
    shape = space.shape or ()
    return (
        isinstance(space, gym.spaces.Box)
        and space.dtype == np.uint8
        and (len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3)))
    )


def _make_gym(env_id: str, frame_skip: int, frame_size: int, own_limit: bool) -> gym.Env:
    try:
        # -1 drops the registered TimeLimit when we apply our own (in agent steps) later.
        env = gym.make(env_id, max_episode_steps=-1 if own_limit else None)
    except (gym.error.Error, ImportError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EnvError(
            f"cannot make {env_id!r}: not a stable-retro game, and Gymnasium says: {msg}"
        ) from e
    act, obs = env.action_space, env.observation_space
    if not isinstance(act, gym.spaces.Discrete) or act.start != 0:
        env.close()
        raise EnvError(f"{env_id}: only discrete action spaces are supported, got {act}")
    if not isinstance(obs, gym.spaces.Box):
        env.close()
        raise EnvError(f"{env_id}: only Box observation spaces are supported, got {obs}")
    image = _is_image(obs)
    if frame_skip > 1:
        env = MaxAndSkip(env, frame_skip, max_pool=image)
    if image:
        return GrayResize(env, frame_size)
    if obs.dtype != np.float32:
        # Own Box: gymnasium's DtypeObservation warns about float64 bounds losing precision.
        space = gym.spaces.Box(obs.low.astype(np.float32), obs.high.astype(np.float32))
        env = gym.wrappers.TransformObservation(env, lambda o: np.asarray(o, np.float32), space)
    return env


def make_env(
    env_id: str,
    *,
    seed: int,
    frame_skip: int = 4,
    max_episode_steps: int | None = 27_000,
    clip_rewards: bool = False,
    frame_size: int = 84,
    action_set: str = "default",
) -> gym.Env:
    """Build a preprocessed env: Discrete actions, ONE uint8 (frame_size, frame_size) frame for
    images or a float32 vector otherwise.

    ``frame_skip`` and ``max_episode_steps`` apply to Gymnasium envs too; for those,
    ``max_episode_steps=None`` keeps the registered limit (e.g. 500 for CartPole-v1) and an int
    replaces it. Pass ``frame_skip=1`` for envs that are not frame-based. Raises ``EnvError``.
    """
    _check_args(frame_skip, frame_size, action_set)
    if is_connectx(env_id):  # a board game: no frames to skip, no time limit, rewards in {-1, 0, 1}
        from common.connectx.env import ConnectXEnv

        env = ConnectXEnv(seed)
        env.action_space.seed(seed)
        return env
    # OpenCV's thread pool doubles gray+resize time when actor processes share the cores.
    cv2.setNumThreads(1)
    if is_retro_game(env_id):
        env = _make_retro(env_id, frame_skip, frame_size)
    else:
        env = _make_gym(env_id, frame_skip, frame_size, own_limit=max_episode_steps is not None)
    if max_episode_steps is not None:
        env = gym.wrappers.TimeLimit(env, max_episode_steps)
    if clip_rewards:
        env = ClipReward(env)
    env = SeedOnFirstReset(env, seed)
    env.action_space.seed(seed)
    return env


def registered_time_limit(env_id: str) -> int | None:
    """The time limit Gymnasium registers for `env_id` (None for retro games and unknown ids);
    for ConnectX the most moves a player makes in one game."""
    if is_connectx(env_id):
        from common.connectx.game import CELLS

        return CELLS // 2  # each seat fills at most half the board
    if is_retro_game(env_id):
        return None
    try:
        return gym.spec(env_id).max_episode_steps
    except gym.error.Error:
        return None


def env_signature(
    env_id: str,
    *,
    seed: int = 0,
    frame_skip: int = 4,
    max_episode_steps: int | None = 27_000,
    clip_rewards: bool = False,
    frame_size: int = 84,
    action_set: str = "default",
) -> EnvSignature:
    """Shapes of what ``make_env`` with the same arguments yields; starts no retro emulator."""
    _check_args(frame_skip, frame_size, action_set)
    if is_connectx(env_id):
        from common.connectx.features import N_PLANES

        return EnvSignature((N_PLANES, 6, 7), "uint8", 7, False, action_mask=True, two_player=True)
    if is_retro_game(env_id):
        # No emulator: stable-retro allows one per process and the caller may already hold it.
        system, buttons = _retro_system(env_id)
        n = len(_button_set(system, buttons))
        return EnvSignature((frame_size, frame_size), "uint8", n, True)
    env = make_env(
        env_id,
        seed=seed,
        frame_skip=frame_skip,
        max_episode_steps=max_episode_steps,
        clip_rewards=clip_rewards,
        frame_size=frame_size,
        action_set=action_set,
    )
    try:
        space = env.observation_space
        return EnvSignature(
            tuple(space.shape),
            np.dtype(space.dtype).name,
            int(env.action_space.n),
            space.dtype == np.uint8,
        )
    finally:
        env.close()
