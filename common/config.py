"""One dataclass for every learner setting: defaults, a TOML file, command-line flags.

The learner is the single source of truth: actors receive the parts they need in the
welcome message (see `common.runspec.RunSpec`). Precedence: defaults < `--config FILE.toml` <
flags. An unknown key or a bad value raises `ConfigError` with one line a user can act on.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.connectx.settings import ConnectXSettings


class ConfigError(ValueError):
    """A configuration problem, worded as one line for the user."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class Config(ConnectXSettings):
    """Every setting; a game family's own settings come in as a base class (their checks there)."""

    # environment
    env: str = _f("Airstriker-Genesis-v0", "stable-retro game id (ends in -v0) or Gymnasium id")
    preset: str = _f("auto", "settings for the env from common/presets.toml: auto (picked by --env), "
                     "a section's name, or none; flags and --config override it")
    frame_skip: int = _f(4, "emulator frames per agent step for retro and Atari games (max over the last two); "
                         "other families step once (a line says so when it is given)")
    frame_stack: int = _f(4, "frames stacked into one observation for image games")
    frame_size: int = _f(84, "image observations are grayscale frame_size x frame_size")
    max_episode_steps: int = _f(
        0, "time limit in agent steps; 0 = 27,000 for retro and Atari games (a whole game), the registered limit for Gymnasium"
    )
    clip_rewards: bool = _f(False, "clip rewards to their sign (-1, 0, 1)")
    repeat_action_probability: float = _f(
        0.25, "Atari sticky actions: each frame the emulator repeats the previous action with this "
        "probability (0.25 as ALE v5 and Machado et al. 2018; 0 as the v4 NoFrameskip ids)")
    max_abs_reward: float = _f(
        1e6, "actors clip each step's reward (and what enters episode returns) to +-this; the learner rejects rollouts beyond it"
    )
    action_set: str = _f("default", "button combinations for retro games (see README)")
    # training
    mode: str = _f("async", "async: update as soon as a batch is buffered (APPO); sync: rounds", choices=("async", "sync"))
    sync_timeout: float = _f(10.0, "sync mode: a round trains on what it has this many seconds after its first rollout (a rollout lost in flight must not stall it); actors send another rollout after as long without newer weights")
    min_actors: int = _f(1, "sync mode: a round waits for rollouts from at least this many actors (and from every live one) until --sync-timeout")
    unroll_length: int = _f(32, "agent steps per rollout message (T)")
    batch_size: int = _f(512, "transitions per update in async mode (rounded up to whole rollouts)")
    max_policy_lag: int = _f(20, "rollouts made with a policy this many versions old or older are dropped")
    lr: float = _f(5e-4, "Adam learning rate")
    anneal_lr: bool = _f(True, "anneal the learning rate linearly to 0 over --total-frames (CleanRL), by the "
                         "frames trained on; --resume continues from the checkpoint's frames; no effect without --total-frames")
    adam_eps: float = _f(1e-5, "Adam epsilon")
    max_grad_norm: float = _f(0.5, "global gradient norm clip")
    gamma: float = _f(0.99, "discount factor")
    vtrace_lambda: float = _f(0.95, "lambda of the V-trace traces (1.0 = IMPALA)")
    clip_eps: float = _f(0.2, "PPO ratio clip")
    vf_coef: float = _f(0.5, "value loss coefficient")
    ent_coef: float = _f(0.01, "entropy bonus coefficient")
    normalize_advantages: bool = _f(True, "standardise the V-trace advantages of each minibatch before the PPO surrogate")
    epochs: int = _f(1, "passes over each batch")
    minibatches: int = _f(1, "minibatches per pass (split along the batch of rollouts)")
    hidden_size: int = _f(64, "hidden units of the MLP used for vector observations")
    model: str = _f("auto", "policy network: auto (Nature CNN for images, MLP for vectors), cnn, mlp, or lstm "
                    "(an LSTM core after the encoder auto picks; try --frame-stack 1)",
                    choices=("auto", "cnn", "mlp", "lstm"))
    lstm_hidden: int = _f(128, "units of the LSTM core of --model lstm")
    exploration: str = _f(
        "none", "none; epsilon: actor i mixes eps_i = eps_base**(1 + eps_alpha*i/7) uniform noise (Ape-X); "
        "adaptive: each actor picks an epsilon of --bandit-arms per episode with a sliding-window UCB bandit",
        choices=("none", "epsilon", "adaptive"),
    )
    bandit_arms: str = _f("", "--exploration adaptive: the epsilons to choose from, comma-separated; "
                          "empty = the epsilon ladder's 8 values and 0 (greedy)")
    bandit_window: int = _f(90, "--exploration adaptive: the episodes an actor's bandit remembers (each scored by its return minus the mean of the episodes just before it)")
    bandit_bonus: float = _f(0.3, "--exploration adaptive: UCB bonus weight (returns normalised by the window's spread)")
    eps_base: float = _f(0.4, "epsilon of the most exploring actor with --exploration epsilon")
    eps_alpha: float = _f(7.0, "spread of the epsilon ladder with --exploration epsilon")
    seed: int = _f(1, "base seed; each actor's seed is derived from it and the actor id")
    device: str = _f("auto", "auto (CUDA when present), cpu, cuda, cuda:N")
    precision: str = _f("fp32", "the learner's update: fp32, or bf16 (autocast: convolutions and matrix products in "
                        "bfloat16; weights, optimizer and losses stay fp32; fast where the CPU has avx512_bf16/AMX or on "
                        "a GPU; changes what is learned a little, so never the default)", choices=("fp32", "bf16"))
    torch_threads: int = _f(0, "learner's torch CPU threads; 0 = --learner-share of the cores, leaving the rest to actors")
    learner_share: float = _f(0.5, "with --torch-threads 0: the share of the cores the learner's threads take (the "
                              "atari preset's update costs 4x an actor's work a frame: 0.8)")
    total_frames: int = _f(0, "stop cleanly after this many emulator frames (0 = run until stopped)")
    stop_at_return: float = _f(0.0, "stop cleanly once the mean return reaches this (0 = never)")
    return_window: int = _f(100, "episodes in the mean return of reports and --stop-at-return")
    max_minutes: float = _f(0.0, "stop cleanly after this many minutes of wall clock (0 = never)")
    # process and network
    bind: str = _f("127.0.0.1", "address the learner binds (0.0.0.0 for remote actors)")
    port: int = _f(5555, "base port P: control P, rollouts P+1, weights P+2")
    curve_dir: str = _f("", "directory made by `learner keygen`: require CURVE on all sockets")
    max_message_mb: float = _f(64.0, "largest accepted message in MiB")
    actor_timeout: float = _f(6.0, "an actor silent this many seconds (no rollout, no heartbeat; actors send one every 2 s) counts as gone")
    max_actors: int = _f(256, "most actors registered at once; a hello beyond it is refused (actors silent for max(60 s, 10 actor timeouts) are forgotten)")
    publish_interval: float = _f(2.0, "seconds between republishing the current weights")
    # run directory
    run_dir: str = _f("", "run directory (default runs/<env>__<mode>__<seed>__<time>)")
    report_interval: float = _f(5.0, "seconds between console / metrics.jsonl reports")
    save_interval: int = _f(200, "checkpoint every this many updates (and at exit)")
    max_checkpoints: int = _f(3, "newest checkpoints kept")
    resume: bool = _f(False, "continue the newest checkpoint of --run-dir (flags given now override its settings, except those that fix the model and the data)")
    overwrite: bool = _f(False, "start afresh in a --run-dir that holds an earlier run: its checkpoints, metrics, actors.jsonl and TensorBoard files are deleted")
    quiet: bool = _f(False, "no console status lines (metrics.jsonl is still written)")
    eval_interval: float = _f(
        5.0, "minutes between evaluations: one greedy episode of the current policy in a separate "
        "process, its GIF and return in RUN_DIR/eval/ and TensorBoard; also when the run reaches its "
        "end (0 = never)")
    eval_max_steps: int = _f(5000, "an evaluation episode is cut after this many agent steps")
    wandb: bool = _f(False, "also log the metrics to Weights & Biases (pip install 'retrofleet[wandb]')")
    wandb_project: str = _f("retrofleet", "Weights & Biases project of --wandb")
    update_delay: float = _f(0.0, "testing: sleep this many seconds after each update (a slow learner)")

    def __post_init__(self) -> None:
        positive = ("frame_skip", "frame_stack", "frame_size", "unroll_length", "batch_size",
                    "max_policy_lag", "epochs", "minibatches", "hidden_size", "lstm_hidden", "save_interval",
                    "max_checkpoints", "return_window", "max_actors", "min_actors", "bandit_window")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "max_message_mb", "actor_timeout", "publish_interval", "report_interval",
                     "max_abs_reward", "sync_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_abs_reward > 1e12:  # beyond it, squared value errors overflow float32
            raise ConfigError(f"max_abs_reward must be at most 1e12, got {self.max_abs_reward:g}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.vtrace_lambda <= 1.0:
            raise ConfigError("gamma and vtrace_lambda must lie in [0, 1]")
        if not 0.0 <= self.repeat_action_probability <= 1.0:
            raise ConfigError(f"repeat_action_probability must lie in [0, 1], got {self.repeat_action_probability}")
        if not 0.0 <= self.eps_base <= 1.0:
            raise ConfigError(f"eps_base must lie in [0, 1], got {self.eps_base}")
        if not 0.0 < self.learner_share <= 1.0:
            raise ConfigError(f"learner_share must lie in (0, 1], got {self.learner_share}")
        if not self.bandit_bonus >= 0.0:
            raise ConfigError(f"bandit_bonus must not be negative, got {self.bandit_bonus}")
        self.arms()  # checks the form of bandit_arms
        if self.max_episode_steps < 0 or self.total_frames < 0 or self.update_delay < 0 or self.torch_threads < 0:
            raise ConfigError("max_episode_steps, total_frames, update_delay and torch_threads must not be negative")
        for name in ("max_minutes", "eval_interval"):
            if not 0.0 <= getattr(self, name) < float("inf"):
                raise ConfigError(f"{name} must be 0 or a positive number of minutes, got {getattr(self, name)}")
        if self.eval_max_steps < 1:
            raise ConfigError(f"eval_max_steps must be at least 1, got {self.eval_max_steps}")
        if not 1 <= self.port <= 65533:
            raise ConfigError(f"port must be in 1..65533 (it uses P, P+1, P+2), got {self.port}")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(f"{f.name} must be one of {', '.join(choices)}, got {getattr(self, f.name)!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.resume and self.overwrite:
            raise ConfigError("--resume continues a run and --overwrite deletes it: give one of them")
        if self.minibatches > 1 and self.mode == "async" and self.rollouts_per_batch < self.minibatches:
            raise ConfigError("minibatches must not exceed the rollouts in a batch (batch_size / unroll_length)")
        problem = self.settings_problem()
        if problem:
            raise ConfigError(problem)
        from common.families import family_for

        if not family_for(self.env).uses_frame_skip:
            self.frame_skip = 1  # what such a family uses, so what config.toml records

    # derived values, computed in one place
    def arms(self) -> tuple[float, ...]:
        """The epsilons --exploration adaptive chooses from; ConfigError on a malformed list."""
        if not self.bandit_arms.strip():
            return (*(self.eps_base ** (1.0 + self.eps_alpha * rung / 7.0) for rung in range(8)), 0.0)
        try:
            arms = tuple(float(x) for x in self.bandit_arms.split(","))
        except ValueError:
            raise ConfigError(f"bandit_arms must be comma-separated numbers, got {self.bandit_arms!r}") from None
        if not 1 <= len(arms) <= 64 or not all(0.0 <= a <= 1.0 for a in arms):
            raise ConfigError(f"bandit_arms must be 1 to 64 epsilons in [0, 1], got {self.bandit_arms!r}")
        return arms

    @property
    def rollouts_per_batch(self) -> int:
        return -(-self.batch_size // self.unroll_length)

    def default_run_dir(self) -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return str(Path("runs") / f"{self.env}__{self.mode}__{self.seed}__{stamp}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _coerce(name: str, value: Any) -> Any:
    """Check a TOML value against the field's type (TOML already gives typed values)."""
    kind = type(FIELDS[name].default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{name} must be a {kind.__name__}, got {value!r}")
    return value


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a config file of the form config.toml has; flat keys, checked against Config."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    out = {}
    for key, value in data.items():
        if key not in FIELDS:
            raise ConfigError(f"{path}: unknown key {key!r}")
        out[key] = _coerce(key, value)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per Config field; help text from the field; defaults left to Config."""
    for name, f in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        kind = type(f.default)
        help_text = f"{f.metadata['help']} (default: {f.default!r})"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text,
                                choices=f.metadata.get("choices"), metavar=name.upper())


def resolve(args: argparse.Namespace, config_file: str | None) -> Config:
    """defaults < preset < config file < flags. With --resume and no --config, the run's own
    config.toml. The preset (common/presets.toml) is picked by the env unless named."""
    from common.presets import resolve_preset

    flags = {k: v for k, v in vars(args).items() if k in FIELDS}
    if not config_file and flags.get("resume") and flags.get("run_dir"):
        saved = Path(flags["run_dir"]) / "config.toml"
        if saved.exists():
            config_file = str(saved)
    from_file = load_toml(config_file) if config_file else {}
    chosen = {**from_file, **flags}
    name, preset = resolve_preset(chosen.get("preset", "auto"), chosen.get("env", FIELDS["env"].default))
    unknown = sorted(set(preset) - set(FIELDS))
    if unknown:
        raise ConfigError(f"preset {name!r} has unknown keys {unknown}")
    values = {k: _coerce(k, v) for k, v in preset.items()}
    values.update(chosen)
    values["preset"] = name
    cfg = Config(**values)
    if "frame_skip" in values and values["frame_skip"] != cfg.frame_skip:
        from common.families import family_for

        print(f"note: --frame-skip {values['frame_skip']} does not apply to {cfg.env} (a "
              f"{family_for(cfg.env).name} env steps once per action): frame_skip = 1 is used",
              file=sys.stderr, flush=True)
    return cfg


# What a run does on start, not a setting of the run: config.toml records them as false.
RUN_ACTIONS = ("resume", "overwrite")
# Settings a resumed run must keep: they fix the model's shape and what its data means.
FIXED_ON_RESUME = ("env", "frame_skip", "frame_stack", "frame_size", "action_set", "hidden_size", "model",
                   "lstm_hidden")


def dump_toml(cfg: Config) -> str:
    import tomli_w

    return tomli_w.dumps({**cfg.to_dict(), **dict.fromkeys(RUN_ACTIONS, False)})


def resume_changes(saved: dict[str, Any], cfg: Config) -> dict[str, tuple[Any, Any]]:
    """Settings that differ between a checkpoint's config and this run's: {name: (old, new)}.
    ConfigError when one of FIXED_ON_RESUME differs."""
    changed = {k: (saved.get(k), v) for k, v in cfg.to_dict().items()
               if k not in RUN_ACTIONS and k in saved and saved[k] != v}
    fixed = [k for k in FIXED_ON_RESUME if k in changed]
    if fixed:
        what = ", ".join(f"{k} {changed[k][0]!r} -> {changed[k][1]!r}" for k in fixed)
        raise ConfigError(f"--resume cannot change {what}: the checkpoint's model and data depend on it "
                          "(start a new --run-dir instead)")
    return changed


def actor_seed(base_seed: int, actor_id: int) -> int:
    """Per-actor seed: reproducible from the base seed, distinct per actor id."""
    return int(np.random.SeedSequence([base_seed, actor_id]).generate_state(1)[0])


def actor_epsilon(cfg: Config, actor_id: int) -> float:
    """Ape-X style ladder over 8 rungs: actor 0 explores most, actor 7 least."""
    if cfg.exploration != "epsilon":
        return 0.0
    rung = actor_id % 8
    return float(cfg.eps_base ** (1.0 + cfg.eps_alpha * rung / 7.0))
