"""Configuration: defaults, TOML files, flags and their precedence, CLI error lines."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import (
    FIELDS,
    Config,
    ConfigError,
    actor_epsilon,
    actor_seed,
    dump_toml,
    load_toml,
    resolve,
)
from learner.__main__ import train_parser

BIN = Path(sys.executable).parent


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def parse(*argv: str):
    return train_parser().parse_args(list(argv))


# ---------------------------------------------------------------------------- defaults and files


def test_defaults_valid():
    cfg = Config()
    assert cfg.mode == "async" and cfg.batch_size == 512 and cfg.unroll_length == 32
    assert cfg.rollouts_per_batch == 16
    assert set(cfg.to_dict()) == set(FIELDS)


def test_rollouts_per_batch_rounds_up():
    assert Config(batch_size=100, unroll_length=32).rollouts_per_batch == 4


def test_load_toml_some_keys(tmp_path):
    path = write(
        tmp_path,
        'env = "CartPole-v1"\nbatch_size = 256\nlr = 0.001\nclip_rewards = true\nmode = "sync"\n',
    )
    values = load_toml(path)
    assert values == {
        "env": "CartPole-v1",
        "batch_size": 256,
        "lr": 0.001,
        "clip_rewards": True,
        "mode": "sync",
    }
    cfg = Config(**values)
    assert cfg.env == "CartPole-v1" and cfg.batch_size == 256 and cfg.clip_rewards is True
    assert cfg.gamma == Config().gamma  # untouched keys keep their defaults


def test_load_toml_unknown_key(tmp_path):
    with pytest.raises(ConfigError, match="batchsize"):
        load_toml(write(tmp_path, "batchsize = 3\n"))
    with pytest.raises(ConfigError, match="training"):
        load_toml(write(tmp_path, "[training]\nlr = 0.1\n"))


@pytest.mark.parametrize(
    "line,name",
    [
        ('batch_size = "512"', "batch_size"),
        ("batch_size = 5.0", "batch_size"),
        ("batch_size = true", "batch_size"),
        ("resume = 1", "resume"),
        ('quiet = "yes"', "quiet"),
        ("env = 3", "env"),
        ("lr = true", "lr"),
        ('lr = "0.1"', "lr"),
        ("seed = [1, 2]", "seed"),
    ],
)
def test_load_toml_bad_type(tmp_path, line, name):
    with pytest.raises(ConfigError, match=name):
        load_toml(write(tmp_path, line + "\n"))


def test_load_toml_int_for_float(tmp_path):
    values = load_toml(write(tmp_path, "lr = 1\ngamma = 1\nmax_message_mb = 16\n"))
    assert values == {"lr": 1.0, "gamma": 1.0, "max_message_mb": 16.0}
    assert all(type(v) is float for v in values.values())
    Config(**values)


def test_load_toml_missing_and_invalid(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_toml(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="TOML"):
        load_toml(write(tmp_path, "lr = = 3\n"))


@pytest.mark.parametrize(
    "kw,name",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"unroll_length": -1}, "unroll_length"),
        ({"frame_stack": 0}, "frame_stack"),
        ({"mode": "fast"}, "mode"),
        ({"exploration": "boltzmann"}, "exploration"),
        ({"precision": "fp16"}, "precision"),
        ({"gamma": 1.5}, "gamma"),
        ({"gamma": -0.1}, "gamma"),
        ({"gamma": float("nan")}, "gamma"),
        ({"vtrace_lambda": 2.0}, "vtrace_lambda"),
        ({"device": "tpu"}, "device"),
        ({"device": "cud"}, "device"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"eps_base": 1.5}, "eps_base"),
        ({"port": 0}, "port"),
        ({"port": 65534}, "port"),
        ({"total_frames": -1}, "total_frames"),
        ({"max_message_mb": 0.0}, "max_message_mb"),
        ({"minibatches": 5, "batch_size": 128, "unroll_length": 32}, "minibatches"),
    ],
)
def test_bad_values(kw, name):
    with pytest.raises(ConfigError, match=name) as info:
        Config(**kw)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kw",
    [
        {"device": "cuda:1"},
        {"device": "cpu"},
        {"gamma": 1.0},
        {"gamma": 0.0},
        {"port": 65533},
        {"mode": "sync"},
        {"precision": "bf16"},
        {"minibatches": 4, "batch_size": 128, "unroll_length": 32},
        {"minibatches": 8, "mode": "sync"},
    ],
)
def test_good_edge_values(kw):
    Config(**kw)


def test_bad_value_in_file_raises_through_resolve(tmp_path):
    path = write(tmp_path, 'device = "tpu"\n')
    with pytest.raises(ConfigError, match="device"):
        resolve(parse(), str(path))


# ---------------------------------------------------------------------------- flags


def test_no_flags_and_no_preset_gives_defaults():
    assert resolve(parse("--preset", "none"), None) == Config(preset="none")


def test_flags_override_file(tmp_path):
    path = write(
        tmp_path,
        'env = "CartPole-v1"\nbatch_size = 256\nlr = 0.001\nquiet = true\nunroll_length = 16\n',
    )
    args = parse(
        "--config", str(path), "--batch-size", "64", "--lr", "0.01", "--no-quiet", "--gamma", "0.9"
    )
    cfg = resolve(args, args.config)
    assert cfg.batch_size == 64  # flag beats file
    assert cfg.lr == 0.01
    assert cfg.quiet is False
    assert cfg.gamma == 0.9  # flag beats default
    assert cfg.env == "CartPole-v1" and cfg.unroll_length == 16  # file beats default
    assert cfg.max_policy_lag == Config().max_policy_lag  # default


def test_flags_types():
    args = parse(
        "--lr", "1", "--clip-rewards", "--frame-stack", "2", "--mode", "sync", "--device", "cpu"
    )
    cfg = resolve(args, None)
    assert type(cfg.lr) is float and cfg.lr == 1.0
    assert cfg.clip_rewards is True and cfg.frame_stack == 2 and cfg.mode == "sync"


def test_resume_reads_run_config(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(dump_toml(Config(env="CartPole-v1", batch_size=96, seed=9)))
    cfg = resolve(parse("--resume", "--run-dir", str(run), "--seed", "3"), None)
    assert cfg.env == "CartPole-v1" and cfg.batch_size == 96 and cfg.seed == 3 and cfg.resume


@pytest.mark.parametrize(
    "argv",
    [
        ["--batch-size", "x"],
        ["--mode", "fast"],
        ["--bogus-flag"],
        ["--lr", "abc"],
        ["--clip-rewards", "yes"],
        ["--precision", "fp16"],
    ],
)
def test_parser_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("learner: error:")


# ---------------------------------------------------------------------------- dump and derived


def test_dump_load_round_trip(tmp_path):
    for cfg in (
        Config(),
        Config(
            env="CartPole-v1",
            lr=3e-4,
            gamma=1.0,
            resume=True,
            seed=123,
            device="cuda:1",
            run_dir="runs/x y",
            curve_dir="k",
            eps_alpha=3.5,
            max_message_mb=1.5,
            exploration="epsilon",
            mode="sync",
        ),
    ):
        path = write(tmp_path, dump_toml(cfg))
        back = Config(**load_toml(path))
        # what a run does on start (--resume, --overwrite) is not one of its settings
        assert back == dataclasses.replace(cfg, resume=False, overwrite=False)
        for f in dataclasses.fields(Config):
            assert type(getattr(back, f.name)) is type(getattr(cfg, f.name)), f.name


def test_actor_seed_deterministic_and_distinct():
    seeds = [actor_seed(1, i) for i in range(64)]
    assert seeds == [actor_seed(1, i) for i in range(64)]
    assert len(set(seeds)) == 64
    assert all(type(s) is int and s >= 0 for s in seeds)
    assert seeds != [actor_seed(2, i) for i in range(64)]


def test_actor_epsilon_ladder():
    cfg = Config(exploration="epsilon")
    eps = [actor_epsilon(cfg, i) for i in range(8)]
    assert eps[0] == pytest.approx(cfg.eps_base)
    assert eps[7] == pytest.approx(cfg.eps_base ** (1 + cfg.eps_alpha))
    assert all(a > b for a, b in zip(eps, eps[1:], strict=False))
    assert all(0.0 < e <= 1.0 for e in eps)
    assert actor_epsilon(cfg, 8) == eps[0]  # the ladder repeats
    off = Config()
    assert [actor_epsilon(off, i) for i in range(8)] == [0.0] * 8


# ---------------------------------------------------------------------------- CLI


def run_cli(*argv: str, tool: str = "learner", cwd: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [str(BIN / tool), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
    )


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Start the slow CLI runs (each imports torch) at once; collect results on demand."""
    cwd = tmp_path_factory.mktemp("cli")
    cases = {
        "bogus": ("--bogus-flag",),
        "batch0": ("--batch-size", "0"),
        "missing": ("--config", "missing.toml"),
        "help": ("--help",),
    }
    procs = {name: run_cli(*argv, cwd=cwd) for name, argv in cases.items()}
    procs["actor"] = run_cli("--learner", "nonsense", tool="actor", cwd=cwd)
    results = {}

    def get(name: str) -> tuple[int, str, str]:
        if name not in results:
            out, err = procs[name].communicate(timeout=60)
            results[name] = (procs[name].returncode, out, err)
        return results[name]

    yield get
    for p in procs.values():
        if p.poll() is None:
            p.kill()
            p.wait()
    assert not list(cwd.iterdir()), "a failed start left files behind"


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    return lines[0]


def test_cli_bogus_flag(cli):
    rc, out, err = cli("bogus")
    assert rc == 2 and out == ""
    assert "--bogus-flag" in one_line(err)


def test_cli_batch_size_0(cli):
    rc, out, err = cli("batch0")
    assert rc == 2
    assert "batch_size" in one_line(err)


def test_cli_missing_config(cli):
    rc, out, err = cli("missing")
    assert rc == 2
    assert "missing.toml" in one_line(err)


def test_cli_help(cli):
    rc, out, err = cli("help")
    assert rc == 0
    assert "--total-frames" in out


def test_cli_actor_bad_address(cli):
    rc, out, err = cli("actor")
    assert rc == 2
    assert "nonsense" in one_line(err)


@pytest.mark.parametrize("module", ["actor.__main__", "learner.__main__"])
def test_reading_the_flags_imports_no_torch(module):
    # `actor --help` or a wrong flag answered only after torch's import (2 s on a quiet core,
    # 16 s on a loaded one); the flags come first, the heavy modules once a run starts
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'stable_retro', 'ale_py') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"importing {module} imported {out.stdout.strip()}"
