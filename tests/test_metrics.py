"""metrics.jsonl stays strict JSON whatever the numbers (issue 8.2)."""

from __future__ import annotations

import json

from learner.metrics import Metrics, json_line


def _strict(line: str) -> dict:
    def refuse(name: str):
        raise ValueError(f"{name} is not JSON")

    return json.loads(line, parse_constant=refuse)


def test_non_finite_values_become_null():
    row = _strict(json_line({"a": float("nan"), "b": float("inf"), "c": -float("inf"), "d": 1.5}))
    assert row == {"a": None, "b": None, "c": None, "d": 1.5}


def test_report_with_overflowing_returns_is_valid_json(tmp_path):
    m = Metrics(tmp_path, tensorboard=False, return_window=2)
    m.add_episode(1.7e308)
    m.add_episode(1.7e308)  # their sum overflows: the mean is inf
    m.add_episode(float("nan"), verified=True)  # never enters the window
    m.add_episode(5.0, verified=False)
    row = m.report(actors=1, dropped_stale=0)
    m.close()
    line = (tmp_path / "metrics.jsonl").read_text().splitlines()[-1]
    assert _strict(line) == row and row["mean_return"] is None
    assert row["episodes"] == 4 and row["unverified_episodes"] == 2


def test_tensorboard_file_is_kept_open_and_reads_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    m = Metrics(tmp_path)
    fd = m.writer.records._writer.fileno()
    for i in range(3):
        m.frames = 100 * i
        m.log_update({"losses/total": 0.5 * i, "losses/bad": float("nan")})
        m.report(actors=1, dropped_stale=0)
    assert m.writer.records._writer.fileno() == fd, "one descriptor for the whole run"
    m.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("losses/total")] == [(0, 0.0), (100, 0.5), (200, 1.0)]
    assert "losses/bad" not in acc.Tags()["scalars"]
    assert len(acc.Scalars("charts/actors")) == 3


def test_console_line_names_the_return_window(tmp_path):
    import io

    from common.config import Config
    from learner.progress import Console

    m = Metrics(tmp_path, tensorboard=False, return_window=20)
    m.add_episode(3.0)
    row = m.report(actors=1, dropped_stale=0)
    m.close()
    out = io.StringIO()
    Console(Config(return_window=20), out).report(row)
    assert "return(20)     3.0" in out.getvalue(), out.getvalue()
