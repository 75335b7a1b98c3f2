"""What the bandit's choices alone cost, on a synthetic game (issue 22): how much return a
per-emulator `SlidingWindowUCB` gives up by pulling poor arms, with learning left out.

    python -m benchmarks.bandit_sim [--episodes 75] [--runs 400] [--bonus 0.5 0.3 0.2 0.1 0.05 0]

Each run is one emulator's episodes of an Airstriker run at 2M frames (about 75 with 8
emulators): the policy's return rises linearly from 200 to 1,200 over them, and an episode
played with arm i returns that times `MULT[i]` (the 9 default arms, eps 0.4 ... 0: 0.35, 0.6,
0.8, 0.95, then 1; the shape of the arms' returns at the end of the Airstriker runs), with
Gaussian noise of `--cv` times its mean. The return lost is the mean of 1 - MULT[arm] over the
episodes: what the arms cost if learning were the same whatever they played.
"""

from __future__ import annotations

import argparse

import numpy as np

from common.bandit import SlidingWindowUCB

MULT = np.array([0.35, 0.6, 0.8, 0.95, 1.0, 1.0, 1.0, 1.0, 1.0])


def run(bonus: float, *, episodes: int, window: int, cv: float, seed: int) -> tuple[float, float, float]:
    """(share of eps 0.4 and 0.16 over the run, over its last 30 episodes, return lost)."""
    rng = np.random.default_rng(seed)
    bandit = SlidingWindowUCB(len(MULT), window=window, bonus=bonus, seed=seed)
    arms = []
    for e in range(episodes):
        level = 200 + 1000 * e / episodes
        arm = bandit.select()
        arms.append(arm)
        bandit.update(arm, max(0.0, rng.normal(level * MULT[arm], cv * level * MULT[arm])))
    a = np.array(arms)
    return float((a < 2).mean()), float((a[-30:] < 2).mean()), float((1 - MULT[a]).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=75)
    p.add_argument("--runs", type=int, default=400)
    p.add_argument("--window", type=int, default=90)
    p.add_argument("--cv", type=float, default=0.4)
    p.add_argument("--bonus", type=float, nargs="+", default=[0.5, 0.3, 0.2, 0.1, 0.05, 0.0])
    args = p.parse_args()
    print("| bonus | eps 0.4 + 0.16, whole run | last 30 episodes | return lost |")
    print("| --- | --- | --- | --- |")
    for bonus in args.bonus:
        res = np.array([run(bonus, episodes=args.episodes, window=args.window, cv=args.cv, seed=s)
                        for s in range(args.runs)])
        share, last, lost = res.mean(axis=0)
        print(f"| {bonus:g} | {100 * share:.1f} % | {100 * last:.1f} % | {100 * lost:.1f} % |")
    fixed = (1 - MULT[:8]).mean()  # the fixed ladder: one arm per emulator, eps 0.4 ... 0.00066
    print(f"fixed ladder (8 emulators, eps 0.4 ... 0.00066): return lost {100 * fixed:.1f} %")


if __name__ == "__main__":
    main()
