"""Frame stacks: what the learner rebuilds from a rollout equals what the actor saw.

The actor side is simulated exactly as actor/rollout.py RolloutCollector.collect cuts rollouts:
history = stack.history() at the rollout's start, frames[t] = stack.newest before step t,
frames[T] after the last step; after a done the env resets and the stack is reset with the
reset frame, otherwise the next frame is pushed.
"""

from __future__ import annotations

import numpy as np
import pytest

from common.framestack import FrameStack, rebuild_stacks, stack_indices

SHAPE = (3, 3)


class FakeEnv:
    """Frames with unique contents: pixel (0, 0) and (0, 1) hold a running counter."""

    def __init__(self):
        self.count = 0

    def frame(self) -> np.ndarray:
        c = self.count
        self.count += 1
        assert c < 1 << 16
        f = np.full(SHAPE, c % 251, dtype=np.uint8)
        f[0, 0], f[0, 1] = c & 0xFF, c >> 8
        return f


def collect(env: FakeEnv, stack: FrameStack, dones: np.ndarray):
    """One rollout cut like RolloutCollector.collect, plus every stack the actor saw."""
    T = len(dones)
    history = stack.history()
    frames = np.empty((T + 1, *SHAPE), np.uint8)
    seen = np.empty((T + 1, *stack.buf.shape), np.uint8)
    for t in range(T):
        frames[t] = stack.newest
        seen[t] = stack.buf  # the observation the policy acts on at step t
        if dones[t]:
            stack.reset(env.frame())  # the step's final obs is dropped; env.reset() gives a new one
            env.frame()
        else:
            stack.push(env.frame())
    frames[T] = stack.newest
    seen[T] = stack.buf  # the bootstrap observation
    return history, frames, seen


def run_and_check(size: int, done_patterns: list[np.ndarray]) -> None:
    env = FakeEnv()
    stack = FrameStack(size, SHAPE, np.uint8)
    stack.reset(env.frame())
    for dones in done_patterns:
        dones = np.asarray(dones, dtype=bool)
        history, frames, seen = collect(env, stack, dones)
        assert history.shape == (size - 1, *SHAPE)
        rebuilt = rebuild_stacks(history, frames, dones)
        assert rebuilt.shape == seen.shape
        for t in range(len(dones) + 1):
            np.testing.assert_array_equal(
                rebuilt[t], seen[t], err_msg=f"step {t} of dones {dones.astype(int)}"
            )


SIZES = [1, 2, 4]
T = 7


def pattern(*done_at: int, T: int = T) -> np.ndarray:
    d = np.zeros(T, dtype=bool)
    d[list(done_at)] = True
    return d


NAMED = {
    "none": [pattern(), pattern(), pattern()],
    "first": [pattern(0), pattern(0), pattern()],
    "last": [pattern(T - 1), pattern(T - 1), pattern(), pattern(T - 1)],
    "consecutive": [pattern(2, 3, 4), pattern(0, 1), pattern(T - 2, T - 1), pattern()],
    "all": [np.ones(T, bool), np.ones(T, bool), pattern(1)],
    "first-and-last": [pattern(0, T - 1), pattern(0, T - 1)],
    "short-episodes-then-long": [pattern(1, 3, 5), pattern(), pattern(), pattern(6)],
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", list(NAMED))
def test_rebuild_named_patterns(size, name):
    run_and_check(size, NAMED[name])


@pytest.mark.parametrize("size", SIZES)
def test_rebuild_random_property(size):
    rng = np.random.default_rng(1000 + size)
    for _ in range(60):
        T_ = int(rng.integers(1, 12))
        p = rng.choice([0.0, 0.1, 0.3, 0.7, 1.0])
        patterns = [rng.random(T_) < p for _ in range(int(rng.integers(1, 6)))]
        run_and_check(size, patterns)


@pytest.mark.parametrize("size", SIZES)
def test_rebuild_unroll_length_1(size):
    run_and_check(
        size, [pattern(T=1), pattern(0, T=1), pattern(0, T=1), pattern(T=1), pattern(T=1)]
    )


def test_stack_indices_shape_and_bounds():
    rng = np.random.default_rng(0)
    for stack in (1, 2, 4):
        dones = rng.random(9) < 0.4
        idx = stack_indices(dones, stack)
        assert idx.shape == (10, stack)
        assert idx.min() >= 0 and idx.max() <= 9 + stack - 1
        assert (np.diff(idx, axis=1) >= 0).all()  # oldest first
        np.testing.assert_array_equal(idx[:, -1], np.arange(10) + stack - 1)  # newest = frames[t]


def test_framestack_basics():
    s = FrameStack(3, (2,), np.float32)
    s.reset(np.array([1, 1], np.float32))
    np.testing.assert_array_equal(s.buf, [[1, 1]] * 3)
    s.push(np.array([2, 2], np.float32))
    s.push(np.array([3, 3], np.float32))
    np.testing.assert_array_equal(s.buf, [[1, 1], [2, 2], [3, 3]])
    np.testing.assert_array_equal(s.newest, [3, 3])
    h = s.history()
    s.push(np.array([4, 4], np.float32))
    np.testing.assert_array_equal(h, [[1, 1], [2, 2]])  # a copy: unaffected by later pushes
    np.testing.assert_array_equal(s.history(), [[2, 2], [3, 3]])


def test_rebuild_float_vectors_stack_1():
    frames = np.arange(20, dtype=np.float32).reshape(5, 4)
    history = np.zeros((0, 4), np.float32)
    out = rebuild_stacks(history, frames, np.array([False, True, False, True]))
    assert out.shape == (5, 1, 4)
    np.testing.assert_array_equal(out[:, 0], frames)


@pytest.mark.parametrize("size", SIZES)
def test_collated_batch_gives_every_actor_its_own_stacks(size):
    """collate keeps frames once; gathering (numpy, and torch as the trainer does) gives back
    exactly the observations each of several actors acted on, with episode ends in different places."""
    import torch

    from common.protocol import Rollout
    from learner.batcher import collate, gather_stacks

    rng = np.random.default_rng(size)
    rollouts, seen_all = [], []
    for actor in range(5):
        env = FakeEnv()
        env.count = 1000 * actor  # different actors, different frames
        stack = FrameStack(size, SHAPE, np.uint8)
        stack.reset(env.frame())
        collect(env, stack, rng.random(T) < 0.3)  # an earlier rollout, so history is not a reset
        dones = rng.random(T) < 0.3
        history, frames, seen = collect(env, stack, dones)
        rollouts.append(Rollout(actor, 0, frames, history, np.zeros(T, np.int32), np.zeros(T, np.float32),
                                np.zeros(T, np.float32), dones, np.zeros(T, bool), []))
        seen_all.append(seen)
    batch = collate(rollouts, version=0)
    assert batch.frames.shape == (T + size, 5, *SHAPE)  # each frame once, not stack times
    want = np.stack(seen_all, axis=1)
    np.testing.assert_array_equal(gather_stacks(batch.frames, batch.stack_idx), want)
    got = gather_stacks(torch.from_numpy(batch.frames), torch.from_numpy(batch.stack_idx))
    np.testing.assert_array_equal(got.numpy(), want)
    cols = [3, 1]  # a minibatch of columns gathers the same stacks
    np.testing.assert_array_equal(gather_stacks(batch.frames[:, cols], batch.stack_idx[:, cols]), want[:, cols])


@pytest.mark.parametrize("size", SIZES)
def test_final_stacks_are_what_the_actor_would_have_seen(size):
    """Issue 8.13: at a step cut by a time limit, the learner rebuilds the observation the
    limit hid: the step's stack with the final frame pushed, as the actor's FrameStack holds it."""
    import torch

    from common.protocol import Rollout
    from learner.batcher import collate, final_stacks

    rng = np.random.default_rng(10 + size)
    rollouts, want = [], {}
    for actor in range(3):
        env = FakeEnv()
        env.count = 1000 * actor
        stack = FrameStack(size, SHAPE, np.uint8)
        stack.reset(env.frame())
        history = stack.history()
        frames = np.empty((T + 1, *SHAPE), np.uint8)
        cut = rng.random(T) < 0.4
        finals = []
        for t in range(T):
            frames[t] = stack.newest
            final = env.frame()
            if cut[t]:  # a time limit: the actor sends `final`, then resets
                hidden = FrameStack(size, SHAPE, np.uint8)
                hidden.buf[:] = stack.buf
                hidden.push(final)
                want[(t, actor)] = hidden.buf.copy()
                finals.append(final)
                stack.reset(env.frame())
            else:
                stack.push(final)
        frames[T] = stack.newest
        rollouts.append(Rollout(actor, 0, frames, history, np.zeros(T, np.int32), np.zeros(T, np.float32),
                                np.zeros(T, np.float32), np.zeros(T, bool), cut, [],
                                final_frames=np.stack(finals) if finals else None))
    batch = collate(rollouts, version=0)
    assert [tuple(a) for a in batch.final_at] == sorted(want, key=lambda k: (k[1], k[0]))
    got = final_stacks(batch.frames, batch.stack_idx, batch.final_frames, batch.final_at)
    for k, (t, b) in enumerate(batch.final_at):
        np.testing.assert_array_equal(got[k], want[(t, b)])
    as_torch = final_stacks(*(torch.from_numpy(a) for a in (batch.frames, batch.stack_idx, batch.final_frames,
                                                              batch.final_at)))
    np.testing.assert_array_equal(as_torch.numpy(), got)
