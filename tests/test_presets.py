"""Presets (common/presets.toml): picked by --env, named by --preset, overridden by --config and
flags, recorded in config.toml; an unknown preset is one clear error."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from common.config import FIELDS, Config, ConfigError, dump_toml, load_toml, resolve
from common.families import FAMILIES
from common.presets import load_presets, settings
from learner.__main__ import train_parser
from tests.conftest import BIN

CLASSIC = {"unroll_length": 64, "batch_size": 256, "epochs": 4, "minibatches": 4, "lr": 1e-3,
           "ent_coef": 0.0}


def cfg_of(*argv: str, config_file: str | None = None) -> Config:
    return resolve(train_parser().parse_args(list(argv)), config_file)


def test_the_env_picks_its_preset():
    cfg = cfg_of("--env", "CartPole-v1")
    assert cfg.preset == "classic-control"
    assert {k: getattr(cfg, k) for k in CLASSIC} == CLASSIC
    air = cfg_of()  # the default env is a stable-retro game
    assert air.preset == "retro" and air.clip_rewards is True
    assert Config().clip_rewards is False, "without the preset the default stays off"


def test_the_velocity_free_cartpole_gets_its_own_preset_with_a_light_value_loss():
    cfg = cfg_of("--env", "retrofleet/CartPoleNoVel-v1", "--model", "lstm")
    assert cfg.preset == "pomdp-cartpole" and cfg.vf_coef == 0.005
    # 8 rollouts of 128 steps an update: 2 updates of policy lag, not 5 (docs/BENCHMARKS.md)
    assert (cfg.unroll_length, cfg.batch_size, cfg.rollouts_per_batch) == (128, 1024, 8)
    assert (cfg.epochs, cfg.minibatches, cfg.lr, cfg.ent_coef) == (4, 4, 1e-3, 0.0)
    assert cfg.anneal_lr is True, "annealed over --total-frames: 3 of 3 runs reached 400, 5 of 7 at a constant rate"
    assert cfg_of("--env", "CartPole-v1").vf_coef == Config().vf_coef == 0.5, "CartPole itself keeps 0.5"


def test_an_env_no_section_matches_gets_the_defaults():
    cfg = cfg_of("--env", "Acrobot-v1")
    assert cfg.preset == "none" and cfg == Config(env="Acrobot-v1", preset="none")


def test_flags_and_config_file_override_the_preset(tmp_path: Path):
    cfg = cfg_of("--env", "CartPole-v1", "--batch-size", "512", "--ent-coef", "0.01")
    assert cfg.batch_size == 512 and cfg.ent_coef == 0.01 and cfg.epochs == 4  # the rest stays
    path = tmp_path / "c.toml"
    path.write_text('env = "CartPole-v1"\nepochs = 2\n')
    cfg = cfg_of("--lr", "3e-4", config_file=str(path))
    assert cfg.preset == "classic-control" and cfg.epochs == 2 and cfg.lr == 3e-4 and cfg.batch_size == 256
    assert cfg_of("--no-clip-rewards").clip_rewards is False


def test_preset_named_or_none():
    cfg = cfg_of("--env", "Acrobot-v1", "--preset", "classic-control")
    assert cfg.preset == "classic-control" and cfg.batch_size == 256
    plain = cfg_of("--env", "CartPole-v1", "--preset", "none")
    assert plain == Config(env="CartPole-v1", preset="none")


def test_unknown_preset_is_one_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"unknown preset 'fast'; choose from auto, none, classic-control"):
        cfg_of("--env", "CartPole-v1", "--preset", "fast")
    out = subprocess.run([str(BIN / "learner"), "--env", "CartPole-v1", "--preset", "fast",
                          "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("learner: error: unknown preset 'fast'")
    assert not (tmp_path / "run").exists()


def test_config_toml_records_the_preset_and_resumes_the_same(tmp_path: Path):
    cfg = cfg_of("--env", "CartPole-v1", "--seed", "4")
    path = tmp_path / "config.toml"
    path.write_text(dump_toml(cfg))
    assert load_toml(path)["preset"] == "classic-control"
    assert cfg_of(config_file=str(path)) == cfg
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(dump_toml(cfg))
    resumed = cfg_of("--resume", "--run-dir", str(run))
    assert resumed.batch_size == 256 and resumed.preset == "classic-control" and resumed.seed == 4


def test_every_preset_holds_valid_settings_and_a_place_for_connectx():
    presets = load_presets()
    assert {"classic-control", "retro", "atari", "connectx"} <= set(presets)
    family_presets = {f.preset for f in FAMILIES}
    for name, section in presets.items():
        values = settings(section)
        assert set(values) <= set(FIELDS), name
        Config(**values)  # types and ranges as a config file's
        assert section.get("envs") or name in family_presets, f"{name} matches no env"
    text = (Path(__file__).resolve().parents[1] / "common" / "presets.toml").read_text()
    assert "[connectx]" in text


def test_the_learner_takes_its_share_of_the_cores(monkeypatch):
    """--torch-threads 0: --learner-share of the cores, rounded half down, at least 1. The atari
    preset's update is the heavier part on a CPU (docs/BENCHMARKS.md): 0.8, so 2 of 2 cores;
    every other game keeps half (1 of 2: Airstriker's actors need the other core)."""
    from learner.server import torch_threads

    pong, air = cfg_of("--env", "ALE/Pong-v5"), cfg_of()
    assert (pong.learner_share, air.learner_share) == (0.8, 0.5)
    for cores, want_pong, want_air in ((1, 1, 1), (2, 2, 1), (3, 2, 1), (4, 3, 2), (16, 13, 8)):
        monkeypatch.setattr("os.cpu_count", lambda c=cores: c)
        assert (torch_threads(pong), torch_threads(air)) == (want_pong, want_air), cores
    assert torch_threads(cfg_of("--env", "ALE/Pong-v5", "--torch-threads", "1")) == 1  # a flag wins
    for bad in ("0", "1.5", "-0.2"):
        with pytest.raises(ConfigError, match="learner_share"):
            cfg_of("--learner-share", bad)
