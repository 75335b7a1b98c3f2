"""The LSTM learner's unroll: torch's native LSTM between resets against the per-step loop.

    python -m benchmarks.bench_lstm [--T 64] [--B 1 4 16] [--reps 20]

One thread; forward + backward of `RecurrentNet` over [T, B] (MLP encoder on CartPoleNoVel's 2
numbers, 128 LSTM units, a reset in the middle of the first sequence), both paths in the same
run; prints ms per unroll and their ratio.
"""

from __future__ import annotations

import argparse
import time

import torch

from common.model import build_model, model_spec


def _time(fn, reps: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_lstm", description=__doc__.split("\n")[0])
    ap.add_argument("--T", type=int, default=64)
    ap.add_argument("--B", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = build_model(model_spec((2,), 1, 2, 64, model="lstm", lstm_hidden=128)).train()
    print("| T x B | step loop (ms) | native (ms) | ratio |\n| --- | --- | --- | --- |")
    for B in args.B:
        obs = torch.randn(args.T + 1, B, 2)
        dones = torch.zeros(args.T + 1, B, dtype=torch.bool)
        dones[args.T // 2, 0] = True
        state0 = torch.zeros(B, *model.state_shape)

        def run(path: str, obs=obs, state0=state0, dones=dones, B=B) -> None:
            x = model.encoder(obs.flatten(0, 1)).view(args.T + 1, B, -1)
            logits, values, _ = getattr(model, path)(x, state0, dones)
            (logits.square().sum() + values.sum()).backward()

        assert model._unroll_native(model.encoder(obs.flatten(0, 1)).view(args.T + 1, B, -1), state0, dones) is not None
        steps, native = _time(lambda: run("_unroll_steps"), args.reps), _time(lambda: run("_unroll_native"), args.reps)
        print(f"| {args.T + 1} x {B} | {1e3 * steps:.1f} | {1e3 * native:.1f} | {steps / native:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
