"""Seeds come from the base seed and the actor id: distinct per actor, the same in every run."""

from __future__ import annotations

import re

from common.config import actor_seed
from tests.conftest import free_base_port, read_actors, wait_for


def _run(procs, tmp_path, name: str, n: int) -> tuple[list[int], list[str]]:
    port = free_base_port()
    run = tmp_path / name
    procs.learner("--env", "CartPole-v1", "--seed", "42", port=port, run_dir=run, log_name=f"{name}.log")
    actors = [procs.actor(port, f"{name}_actor{i}") for i in range(n)]
    logs = [tmp_path / f"{name}_actor{i}.log" for i in range(n)]
    wait_for(lambda: all("first episode" in p.read_text() for p in logs), 120, f"{n} first episodes")
    for a in actors:
        a.terminate()
    seeds = [a["seed"] for a in sorted(read_actors(run), key=lambda a: a["actor_id"])]
    digests = [re.search(r"action digest (\w+)", p.read_text()).group(1) for p in logs]
    return seeds, digests


def test_eight_actors_distinct_seeds_and_actions_same_seeds_next_run(procs, tmp_path):
    seeds1, digests1 = _run(procs, tmp_path, "first", 8)
    assert len(seeds1) == 8 and len(set(seeds1)) == 8
    assert seeds1 == [actor_seed(42, i) for i in range(8)]
    assert len(set(digests1)) == 8, "every actor plays its own first episode"
    procs.stop_all()
    # the next run: the same seeds for the same ids (three actors show it; each is a process to start)
    seeds2, _ = _run(procs, tmp_path, "second", 3)
    assert seeds2 == seeds1[:3]
