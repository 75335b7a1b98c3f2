"""The run spec: everything an actor needs to act for a learner, typed, built once from the config.

`RunSpec.from_config(cfg)` is the one derivation (env settings, preprocessing, model, unroll,
rollout bounds, mode, message limits); the learner sends `to_wire()` in every welcome and an
actor reads `RunSpec.from_wire(settings)` by attribute (`spec.env.frame_skip`). `from_wire`
trusts nothing: a value a real learner never sends raises ProtocolError with one line.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from common.protocol import ALLOWED_DTYPES, ProtocolError, RolloutSpec

if TYPE_CHECKING:
    import gymnasium as gym

    from common.config import Config

MODES = ("async", "sync")
ENV_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/\-]{0,127}")  # gym ids, retro games, "connectx"
NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")  # model kinds, option names, action sets
MAX_DIM, MAX_FRAME_ELEMENTS = 1 << 14, 1 << 24  # far above any game's frame, far below memory trouble
Scalar = int | float | bool | str


# ---------------------------------------------------------------------------- parts


@dataclass(frozen=True)
class EnvSpec:
    """Which game and how it is stepped: `common.envs.make_env`'s arguments less preprocessing."""

    id: str
    frame_skip: int = 1
    max_episode_steps: int | None = None  # our own time limit in agent steps; None keeps the env's own
    action_set: str = "default"
    extra: tuple[tuple[str, Scalar], ...] = ()  # the family's own settings (Atari: sticky actions)


@dataclass(frozen=True)
class Preprocessing:
    """What is done to observations and rewards before the policy sees them."""

    frame_size: int = 84
    clip_rewards: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """The policy's architecture. `options` holds the kind's own settings (hidden, channels...)."""

    kind: str
    frame_shape: tuple[int, ...]
    frame_stack: int
    n_actions: int
    options: tuple[tuple[str, Scalar], ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        rest = {k: v for k, v in d.items() if k not in ("kind", "frame_shape", "frame_stack", "n_actions")}
        return cls(d["kind"], tuple(d["frame_shape"]), d["frame_stack"], d["n_actions"], tuple(sorted(rest.items())))

    def as_dict(self) -> dict[str, Any]:
        """The map `common.model.build_model` and `spec_hash` take (its hash names the weights)."""
        return {"kind": self.kind, "frame_shape": list(self.frame_shape), "frame_stack": self.frame_stack,
                "n_actions": self.n_actions, **dict(self.options)}

    def option(self, name: str, default: Scalar | None = None) -> Scalar | None:
        return dict(self.options).get(name, default)


@dataclass(frozen=True)
class Bounds:
    """What every rollout must keep beyond the shapes (the learner rejects the rest)."""

    frame_dtype: str = "float32"
    max_abs_reward: float = 1e6
    episode_step_limit: int | None = None  # the most steps an episode may take (ours or the env's)
    action_mask: bool = False  # rollouts carry the legal actions of each step
    episode_extras: str = ""  # the registered extra episode fields a family's episodes carry ("" none)
    lives: bool = False  # a lost life ends a training episode; episodes say whether the game ended


@dataclass(frozen=True)
class Exploration:
    """--exploration adaptive: a bandit per actor picks each episode's epsilon among `arms`."""

    arms: tuple[float, ...]
    window: int
    bonus: float

    def as_dict(self) -> dict[str, Any]:
        return {"arms": list(self.arms), "window": self.window, "bonus": self.bonus}


# ---------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class RunSpec:
    """What a learner and its actors agree on for a run; sent in the welcome."""

    env: EnvSpec
    preprocessing: Preprocessing
    model: ModelSpec
    unroll_length: int
    bounds: Bounds = field(default_factory=Bounds)
    mode: str = "async"
    max_message_bytes: int = 64 << 20
    publish_interval: float = 2.0  # seconds between weight republishes
    sync_timeout: float = 30.0  # seconds a sync round waits for its rollouts
    exploration: Exploration | None = None  # None: each actor keeps the epsilon its welcome gives

    @classmethod
    def from_config(cls, cfg: Config) -> RunSpec:
        """The spec a configuration gives; starts no retro emulator."""
        from common import envs
        from common.config import ConfigError
        from common.families import family_for
        from common.model import board_spec, model_spec

        env, prep = env_settings(cfg)
        sig = envs.env_signature(env.id, **make_env_kwargs(env, prep))
        if family_for(env.id).name == "ConnectX":  # board planes: the board network
            if cfg.model != "auto":
                raise ConfigError(f"--model {cfg.model}: two-player boards run their own network (--model auto)")
            model = board_spec(sig.obs_shape, sig.n_actions, cfg.hidden_size, cfg.board_channels, cfg.board_blocks)
        else:
            try:
                model = model_spec(sig.obs_shape, cfg.frame_stack, sig.n_actions, cfg.hidden_size, cfg.model,
                                   cfg.lstm_hidden)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        limit = envs.time_limit(env.id, make_env_kwargs(env, prep))
        bounds = Bounds(sig.obs_dtype, float(cfg.max_abs_reward), limit, sig.action_mask, sig.episode_extras,
                        sig.lives)
        explore = None
        if cfg.exploration == "adaptive":
            explore = Exploration(tuple(float(a) for a in cfg.arms()), int(cfg.bandit_window), float(cfg.bandit_bonus))
        return cls(env, prep, ModelSpec.from_dict(model), cfg.unroll_length, bounds, cfg.mode,
                   int(cfg.max_message_mb * (1 << 20)), float(cfg.publish_interval), float(cfg.sync_timeout),
                   explore)

    # ------------------------------------------------------------------ derived
    @property
    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `common.envs.make_env` (besides the seed)."""
        return make_env_kwargs(self.env, self.preprocessing)

    def make_env(self, seed: int) -> gym.Env:
        """This run's environment, preprocessed, seeded with `seed`."""
        from common.envs import make_env

        return make_env(self.env.id, seed=seed, **self.env_kwargs)

    @cached_property
    def rollout(self) -> RolloutSpec:
        """The shapes and bounds every rollout must keep."""
        from common.model import state_spec

        b = self.bounds
        state_shape, state_bound = state_spec(self.model.as_dict())
        return RolloutSpec(self.unroll_length, self.model.frame_shape, b.frame_dtype, self.model.frame_stack,
                           self.model.n_actions, self.env.frame_skip, b.max_abs_reward, b.episode_step_limit,
                           action_mask=b.action_mask, episode_extras=b.episode_extras, state_shape=state_shape,
                           state_bound=state_bound, lives=b.lives,
                           n_arms=len(self.exploration.arms) if self.exploration else 0)

    @property
    def rollout_bytes(self) -> int:
        """Uncompressed payload of the largest rollout (sizes the actor's send buffer)."""
        return self.rollout.max_rollout_bytes

    # ------------------------------------------------------------------ wire
    def to_wire(self) -> dict[str, Any]:
        """The welcome's `settings`: plain msgpack-ready maps."""
        e, p, b = self.env, self.preprocessing, self.bounds
        return {
            "env": {"id": e.id, "frame_skip": e.frame_skip, "max_episode_steps": e.max_episode_steps,
                    "action_set": e.action_set, "extra": dict(e.extra)},
            "preprocessing": {"frame_size": p.frame_size, "clip_rewards": p.clip_rewards},
            "model": self.model.as_dict(),
            "unroll_length": self.unroll_length,
            "bounds": {"frame_dtype": b.frame_dtype, "max_abs_reward": b.max_abs_reward,
                       "episode_step_limit": b.episode_step_limit, "action_mask": b.action_mask,
                       "episode_extras": b.episode_extras, "lives": b.lives},
            "mode": self.mode,
            "max_message_bytes": self.max_message_bytes,
            "publish_interval": self.publish_interval,
            "sync_timeout": self.sync_timeout,
            "exploration": None if self.exploration is None else self.exploration.as_dict(),
        }

    @classmethod
    def from_wire(cls, d: Any) -> RunSpec:
        """The spec a welcome's `settings` carry; ProtocolError on anything a learner never sends."""
        top = _map(d, "settings", ("env", "preprocessing", "model", "unroll_length", "bounds", "mode",
                                   "max_message_bytes", "publish_interval", "sync_timeout", "exploration"))
        e = _map(top["env"], "env", ("id", "frame_skip", "max_episode_steps", "action_set", "extra"))
        env = EnvSpec(_match(e["id"], ENV_ID, "env.id"), _int(e["frame_skip"], "env.frame_skip", 1, 1000),
                      _opt_int(e["max_episode_steps"], "env.max_episode_steps"),
                      _match(e["action_set"], NAME, "env.action_set"), _options(e["extra"], "env.extra"))
        p = _map(top["preprocessing"], "preprocessing", ("frame_size", "clip_rewards"))
        prep = Preprocessing(_int(p["frame_size"], "preprocessing.frame_size", 1, MAX_DIM),
                             _bool(p["clip_rewards"], "preprocessing.clip_rewards"))
        b = _map(top["bounds"], "bounds", ("frame_dtype", "max_abs_reward", "episode_step_limit", "action_mask",
                                           "episode_extras", "lives"))
        if b["frame_dtype"] not in ALLOWED_DTYPES:
            raise ProtocolError(f"run spec: bounds.frame_dtype {b['frame_dtype']!r} is not an allowed dtype")
        bounds = Bounds(b["frame_dtype"], _float(b["max_abs_reward"], "bounds.max_abs_reward", 1e12),
                        _opt_int(b["episode_step_limit"], "bounds.episode_step_limit"),
                        _bool(b["action_mask"], "bounds.action_mask"), _extras(b["episode_extras"]),
                        _bool(b["lives"], "bounds.lives"))
        if top["mode"] not in MODES:
            raise ProtocolError(f"run spec: mode {top['mode']!r} is not one of {', '.join(MODES)}")
        return cls(env, prep, _model(top["model"]), _int(top["unroll_length"], "unroll_length", 1, 1 << 16),
                   bounds, top["mode"], _int(top["max_message_bytes"], "max_message_bytes", 1 << 10, 1 << 31),
                   _float(top["publish_interval"], "publish_interval", 3600.0),
                   _float(top["sync_timeout"], "sync_timeout", 86400.0), _exploration(top["exploration"]))


def env_settings(cfg: Config) -> tuple[EnvSpec, Preprocessing]:
    """The env and preprocessing a configuration gives (its env's family decides: frame skip,
    time limit, its own extra settings)."""
    from common.families import env_settings as family_settings

    kw = dict(family_settings(cfg))
    env = EnvSpec(cfg.env, kw.pop("frame_skip"), kw.pop("max_episode_steps"), kw.pop("action_set"))
    prep = Preprocessing(kw.pop("frame_size"), kw.pop("clip_rewards"))
    return dataclasses.replace(env, extra=tuple(sorted(kw.items()))), prep


def make_env_kwargs(env: EnvSpec, prep: Preprocessing) -> dict[str, Any]:
    """Keyword arguments of `common.envs.make_env` for these settings (besides the seed)."""
    return {"frame_skip": env.frame_skip, "max_episode_steps": env.max_episode_steps,
            "clip_rewards": prep.clip_rewards, "frame_size": prep.frame_size, "action_set": env.action_set,
            **dict(env.extra)}


def config_env_kwargs(cfg: Config) -> dict[str, Any]:
    """`make_env`'s keyword arguments for a configuration (a checkpoint's, for evaluation)."""
    return make_env_kwargs(*env_settings(cfg))


# ---------------------------------------------------------------------------- validation


def _map(d: Any, what: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ProtocolError(f"run spec: {what} must be a map")
    if set(d) != set(keys):
        odd = sorted(map(str, set(d) ^ set(keys)))
        raise ProtocolError(f"run spec: {what} must have exactly {', '.join(keys)} (off: {', '.join(odd)})")
    return d


def _int(v: Any, what: str, lo: int, hi: int) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise ProtocolError(f"run spec: {what} must be an int in [{lo}, {hi}], got {v!r:.40}")
    return v


def _opt_int(v: Any, what: str) -> int | None:
    return None if v is None else _int(v, what, 1, 1 << 31)


def _float(v: Any, what: str, hi: float, *, zero_ok: bool = False) -> float:
    if type(v) not in (int, float) or not math.isfinite(v) or not (0 <= v if zero_ok else 0 < v) or v > hi:
        raise ProtocolError(f"run spec: {what} must be a finite number in (0, {hi:g}], got {v!r:.40}")
    return float(v)


def _bool(v: Any, what: str) -> bool:
    if type(v) is not bool:
        raise ProtocolError(f"run spec: {what} must be true or false, got {v!r:.40}")
    return v


def _match(v: Any, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(v, str) or not pattern.fullmatch(v):
        raise ProtocolError(f"run spec: {what} {v!r:.60} is not a valid name")
    return v


def _scalar(v: Any, what: str) -> Scalar:
    """A setting's value: a bounded int, a finite float, true/false or a name."""
    if type(v) is int:
        return _int(v, what, -(1 << 20), 1 << 20)
    if type(v) is float:
        if not math.isfinite(v) or abs(v) > 1e6:
            raise ProtocolError(f"run spec: {what} must be a finite number of at most 1e6, got {v!r:.40}")
        return v
    if type(v) is str:
        return _match(v, NAME, what)
    if type(v) is not bool:
        raise ProtocolError(f"run spec: {what} must be a number, a name or true/false")
    return v


def _options(d: Any, what: str, skip: tuple[str, ...] = ()) -> tuple[tuple[str, Scalar], ...]:
    if not isinstance(d, dict) or len(d) > 16:
        raise ProtocolError(f"run spec: {what} must be a map of at most 16 settings")
    return tuple(sorted((_match(k, NAME, f"{what} name"), _scalar(v, f"{what}.{k}"))
                        for k, v in d.items() if k not in skip))


def _exploration(v: Any) -> Exploration | None:
    if v is None:
        return None
    d = _map(v, "exploration", ("arms", "window", "bonus"))
    arms = d["arms"]
    if not isinstance(arms, list) or not 1 <= len(arms) <= 64:
        raise ProtocolError("run spec: exploration.arms must be a list of 1 to 64 epsilons")
    for a in arms:
        if type(a) not in (int, float) or not 0.0 <= a <= 1.0:
            raise ProtocolError(f"run spec: exploration.arms holds {a!r:.40}, not an epsilon in [0, 1]")
    return Exploration(tuple(float(a) for a in arms), _int(d["window"], "exploration.window", 1, 1 << 20),
                       _float(d["bonus"], "exploration.bonus", 1e6, zero_ok=True))


def _extras(v: Any) -> str:
    return "" if v == "" else _match(v, NAME, "bounds.episode_extras")


def _model(d: Any) -> ModelSpec:
    if not isinstance(d, dict) or not {"kind", "frame_shape", "frame_stack", "n_actions"} <= set(d):
        raise ProtocolError("run spec: model must be a map with kind, frame_shape, frame_stack, n_actions")
    shape = d["frame_shape"]
    if not isinstance(shape, list) or not 1 <= len(shape) <= 4:
        raise ProtocolError("run spec: model.frame_shape must be a list of 1 to 4 dimensions")
    dims = tuple(_int(n, "model.frame_shape[]", 1, MAX_DIM) for n in shape)
    if math.prod(dims) > MAX_FRAME_ELEMENTS:
        raise ProtocolError(f"run spec: model.frame_shape {dims} has more than {MAX_FRAME_ELEMENTS} elements")
    options = _options(d, "model", skip=("kind", "frame_shape", "frame_stack", "n_actions"))
    return ModelSpec(_match(d["kind"], NAME, "model.kind"), dims, _int(d["frame_stack"], "model.frame_stack", 1, 64),
                     _int(d["n_actions"], "model.n_actions", 1, 1 << 12), options)
