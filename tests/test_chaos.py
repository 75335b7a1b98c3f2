"""Chaos, the short version (issue 20): `python -m benchmarks.chaos` for a few minutes on
CartPole with a learner SIGKILL and resume, a full checkpoint disk, an emulator SIGKILL and a
network partition; the same checks on its chaos.json as the 2-hour run's targets.

Needs root (a network namespace, a tmpfs mount): without it the test cannot run, which fails
in CI (RETROFLEET_CI=1). A unit test of a checkpoint write on a real full tmpfs is here too.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from learner import checkpoint
from tests.conftest import ROOT, cannot_run

FAULTS = ("kill_learner", "full_disk", "kill_emulator", "partition")


def _needs_root() -> None:
    if os.geteuid() != 0:
        cannot_run("the chaos faults need root (network namespaces, a tmpfs mount)")
    for tool in ("ip", "mount", "umount"):
        if shutil.which(tool) is None:
            cannot_run(f"no `{tool}` command")


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs at tmp_path/disk, unmounted at teardown."""
    _needs_root()
    d = tmp_path / "disk"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)], check=True, timeout=30)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], timeout=30)


def test_a_full_disk_keeps_the_older_checkpoint_and_leaves_no_partial_file(small_disk):
    small = {"w": torch.ones(10_000)}  # 40 kB: fits
    checkpoint.save(small_disk, 1, small, keep=3)
    with pytest.raises(OSError) as info:  # 4 MB on a 1 MiB disk: an OSError, not torch's RuntimeError
        checkpoint.save(small_disk, 2, {"w": torch.ones(1_000_000)}, keep=3)
    assert info.value.errno == errno.ENOSPC
    assert sorted(p.name for p in small_disk.iterdir()) == ["ckpt_1.pt"], "no temporary or half-written file"
    path, ckpt = checkpoint.load_latest(small_disk)
    assert path.name == "ckpt_1.pt" and torch.equal(ckpt["w"], small["w"])
    checkpoint.save(small_disk, 3, small, keep=3)  # space is there again for a small one
    assert [p.name for p in checkpoint.list_checkpoints(small_disk)] == ["ckpt_1.pt", "ckpt_3.pt"]


def test_short_chaos_run_loses_nothing_and_heals(tmp_path):
    _needs_root()
    out = tmp_path / "chaos"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.chaos", "--minutes", "1", "--env", "CartPole-v1", "--out", str(out),
         "--seed", "3", "--faults", ",".join(FAULTS), "--warmup", "12", "--save-interval", "2",
         "--min-gap", "1", "--max-gap", "3", "--partition-s", "8", "--mark-every", "20000"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    report = out / "chaos.json"
    assert report.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(report.read_text())
    s = data["summary"]
    print("\nCHAOS " + json.dumps({k: s[k] for k in ("faults", "worst_whole_s", "return_ratio", "peak_ratio")})
          + " " + json.dumps([(f["kind"], f["whole_s"]) for f in data["faults"]]), flush=True)
    assert {f["kind"] for f in data["faults"]} == set(FAULTS), data["faults"]
    for f in data["faults"]:
        assert f["whole_s"] is not None, f"never whole again after {f}"
        # a learner's cold start (python, torch) is this machine's CPU, not recovery: 30 s after it was back
        budget = 30 + (f["detail"]["restart_s"] if f["kind"] == "kill_learner" else 0)
        assert f["whole_s"] <= budget, f"not whole within {budget:.0f} s: {f}"
    assert s["checkpoints_lost"] == 0 and all(not r["lost"] for r in data["resumes"]), data["resumes"]
    assert s["checkpoints_unreadable"] == 0 and s["half_written_files"] == 0, data["checkpoints"]
    assert data["checkpoints"]["chaos"]["files"], "the run ends with checkpoints"
    disk = next(f["detail"] for f in data["faults"] if f["kind"] == "full_disk")
    assert disk["learner_alive"] and disk["older_checkpoints_readable"] and not disk["half_written_left"], disk
    assert len(disk["learner_said"]) == 1 and "No space left on device" in disk["learner_said"][0], disk
    assert s["learner_exit_code"] == 0 and data["exit_codes"]["calm"] == 0
    assert s["learner_starts"] == 2, "one start and one resume: the learner never died by itself"
    assert s["honest_rejected"] == 0 and s["calm_rejected"] == 0
    assert s["skipped_updates"] == 0 and s["orphaned_emulators"] == 0
    for run in ("chaos", "calm"):
        assert {"learner", "host", "emulator", "actor0", "remote"} <= set(data["memory"][run]), data["memory"][run]
    assert s["mean_return_chaos"] is not None and s["mean_return_calm"] is not None
    from testkit.marks import marks_of

    for run in ("chaos", "calm"):  # --mark-every: each run's policy kept at the same frame marks
        kept = marks_of(out / "marks", run)
        assert 20000 in kept, f"no {run} snapshot at 20,000 frames: {sorted(kept)}"
        snap = torch.load(kept[20000], map_location="cpu", weights_only=True)
        assert 0 < snap["counters"]["frames"] <= 20000 + 5000 * 2, snap["counters"]  # the newest before the mark's sample
    assert proc.returncode == (0 if s["ok"] else 1)


def test_forged_rollouts_counted_after_their_window_are_not_called_honest():
    """The learner reads its rollout socket at its training pace, one peer in turn: forged
    rollouts still queued when their fault ended are counted rejected later. Those, and only as
    many as were owed, are not honest rejections; a restarted learner never reads them."""
    from testkit.run_files import rejected_outside

    def rows(*counts: int) -> list[tuple[float, dict]]:
        return [(float(t), {"rejected_messages": c}) for t, c in enumerate(counts)]

    window = [(1.0, 2.0)]  # forged rollouts sent from t=1 to 2, 2 of them still queued at its end
    late = rows(0, 40, 48, 48, 48, 48, 48, 48, 48, 49, 50)  # counted at t=9 and 10, past the grace
    assert rejected_outside(late, window, grace=5.0) == 2
    assert rejected_outside(late, window, grace=5.0, owed=[(2.0, 2)]) == 0
    more = rows(0, 40, 48, 48, 48, 48, 48, 48, 48, 49, 53)  # 3 more than were owed: honest ones
    assert rejected_outside(more, window, grace=5.0, owed=[(2.0, 2)]) == 3
    restarted = rows(0, 40, 48, 48, 0, 0, 0, 0, 0, 1, 2)  # the learner was killed at t=4
    assert rejected_outside(restarted, window, grace=5.0, owed=[(2.0, 2)]) == 2


def test_pairs_are_read_at_every_equal_frame_count_and_pooled():
    """The mean returns of several chaos pairs at the same frames: a run that fell behind and
    caught up shows along the way, and the pooled ratio weighs the pairs by their returns."""
    from testkit.equal_frames import pair_table, return_curve

    def rows(*points: tuple[int, float | None]) -> list[tuple[float, dict]]:
        return [(float(t), {"frames": f, "mean_return": r}) for t, (f, r) in enumerate(points)]

    chaos = rows((0, None), (100, 10.0), (200, 20.0), (300, 90.0), (250, 95.0), (400, 100.0))  # resumed at 250
    calm = rows((0, None), (100, 10.0), (200, 80.0), (300, 90.0), (400, 100.0))
    curve = return_curve(chaos, calm, 400, points=4)
    assert [c["ratio"] for c in curve] == [1.0, 0.25, round(95 / 90, 3), 1.0]
    assert curve[1] == {"frames": 200, "chaos": 20.0, "calm": 80.0, "ratio": 0.25}
    # the resumed learner's row at 250 frames came after the one at 300: the newest row up to 300 counts
    assert return_curve(chaos, calm, 300, points=1)[0]["chaos"] == 95.0

    other = (rows((0, None), (100, 30.0), (200, 40.0), (350, 50.0)), rows((0, None), (100, 30.0), (200, 40.0), (350, 60.0)))
    marks, table = pair_table({"a": (chaos, calm), "b": other}, every=100)
    assert marks == [100, 200, 300]  # up to the least that every run reached (350)
    assert table[1]["pairs"]["a"] == (20.0, 80.0, 0.25) and table[1]["pairs"]["b"] == (40.0, 40.0, 1.0)
    assert table[1]["pooled"] == round(60 / 120, 3)
    early = rows((0, None), (300, 5.0))  # no return yet at 100 frames: no pooled figure there
    assert pair_table({"a": (chaos, calm), "c": (early, early)}, every=100)[1][0]["pooled"] is None


def _cartpole_checkpoint(run_dir, updates: int, frames: int, seed: int):
    """A checkpoint as the learner writes it (learner/update_worker.py), of an untrained model."""
    from common.config import Config
    from common.model import build_model
    from common.runspec import RunSpec

    cfg = Config(env="CartPole-v1")
    spec = RunSpec.from_config(cfg).model.as_dict()
    torch.manual_seed(seed)
    model = build_model(spec)
    payload = {"model": model.state_dict(), "optimizer": torch.optim.Adam(model.parameters()).state_dict(),
               "counters": {"updates": updates, "frames": frames, "version": updates},
               "config": cfg.to_dict(), "model_spec": spec}
    return checkpoint.save(run_dir / "checkpoints", updates, payload, keep=3)


def test_marks_keep_a_snapshot_per_frame_mark_and_are_played_side_by_side(tmp_path):
    """Each run's newest checkpoint is kept once as its frames pass every mark (a jump over two
    marks keeps one), never half-copied; `benchmarks.chaos_marks` plays the marks both runs kept
    with the same seeds and tabulates the played returns."""
    from testkit.marks import MarkKeeper, marks_of

    out = tmp_path / "out"
    chaos, calm = out / "chaos" / "run", out / "calm" / "run"
    keeper = MarkKeeper(out / "marks", 1000, ["chaos", "calm"])
    assert keeper.check("chaos", chaos, 1500) is None  # no checkpoint yet: tried again at the next sample
    first = _cartpole_checkpoint(chaos, 1, 900, seed=1)
    assert keeper.check("chaos", chaos, 999) is None
    kept = keeper.check("chaos", chaos, 1200)
    assert kept == out / "marks" / "chaos_1000.pt" and kept.read_bytes() == first.read_bytes()
    assert keeper.check("chaos", chaos, 1900) is None  # 2000 is next
    second = _cartpole_checkpoint(chaos, 2, 3400, seed=2)
    assert keeper.check("chaos", chaos, 3500).read_bytes() == second.read_bytes()  # passed 2000 and 3000
    assert keeper.next["chaos"] == 4000 and keeper.kept["chaos"] == [1000, 2000]
    _cartpole_checkpoint(calm, 1, 1100, seed=3)
    keeper.check("calm", calm, 1100)
    _cartpole_checkpoint(calm, 3, 2100, seed=4)
    keeper.check("calm", calm, 2100)
    assert list(marks_of(out / "marks", "calm")) == [1000, 2000]
    assert not list((out / "marks").glob(".*")), "no partial copy left behind"

    proc = subprocess.run([sys.executable, "-m", "benchmarks.chaos_marks", str(out), "--episodes", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    played = json.loads((out / "marks" / "played.json").read_text())
    assert played["episodes"] == 3 and sorted(played["marks"], key=int) == ["1000", "2000"]
    at = played["marks"]["2000"]
    assert at["chaos"]["frames"] == 3400 and at["calm"]["frames"] == 2100  # what the snapshots had counted
    for run in ("chaos", "calm"):
        assert len(at[run]["returns"]) == 3 and at[run]["mean_return"] == pytest.approx(sum(at[run]["returns"]) / 3)
    a, b = at["chaos"]["mean_return"], at["calm"]["mean_return"]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| 2,000 |"))
    assert f"{a:.0f} / {b:.0f} ({a / b:.3f})" in row and row.endswith(f"| {a / b:.3f} |")
    bare = tmp_path / "bare"
    (bare / "marks").mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.chaos_marks", str(bare)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no snapshots" in proc.stderr and "Traceback" not in proc.stderr
