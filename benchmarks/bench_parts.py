"""One measurement per function, each run in a process of its own by `benchmarks.bench`.

    python -m benchmarks.bench_parts PART [--seconds S] [--port P] [--run-dir D] [--id I]

prints one JSON object on its last line of stdout. A process holds at most one emulator
(stable-retro allows no more), so every part that steps a game runs alone in its process.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import functools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from common import protocol, transport

ENV_VAR = "RETROFLEET_BENCH_ENV"  # the game of the parts that step one (benchmarks.floor --env)
ENV = os.environ.get(ENV_VAR) or "Airstriker-Genesis-v0"
T = 32  # unroll length the learner agrees by default
SKIP = 4  # frame skip the learner agrees by default (the retro and atari families alike)
FIRE = 5  # index of [B] in the Genesis button set: a fixed action that keeps the game moving


@functools.cache
def bench_config():
    """The settings of a learner started with `--env ENV` and no other flag (its preset applied:
    the atari preset's unroll, batch, epochs and minibatches for an ALE game)."""
    from common.config import resolve

    return resolve(argparse.Namespace(env=ENV), None)


def run_part(part: str, *args: str, timeout: float = 600) -> dict[str, Any]:
    """Run one measurement in a fresh process; its last stdout line is the JSON result."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_parts", part, *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{part} exited with {proc.returncode}: {tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _timed(fn: Callable[[], Any], seconds: float, min_calls: int = 3) -> float:
    """Mean seconds per call of `fn`, calling it for about `seconds` (after one warm-up call);
    CPU seconds of this process instead with RETROFLEET_BENCH_CLOCK=cpu (benchmarks.floor)."""
    # a CPU budget needs CPU time: wall time on a shared machine counts other people's work
    clock = time.process_time if os.environ.get("RETROFLEET_BENCH_CLOCK") == "cpu" else time.perf_counter
    fn()
    calls, start, wall = 0, clock(), time.perf_counter()
    while calls < min_calls or time.perf_counter() - wall < seconds:
        fn()
        calls += 1
    return (clock() - start) / calls


def _model_and_spec():
    from common.model import build_model
    from common.runspec import RunSpec

    spec = RunSpec.from_config(bench_config()).model.as_dict()
    return build_model(spec), spec


def _collector(seed: int = 1):
    """A real env of ENV (make_env, the actor's preprocessing) and the actor's collector."""
    import torch

    from actor.rollout import RolloutCollector
    from common.envs import make_env
    from common.families import env_settings

    torch.set_num_threads(1)
    cfg = bench_config()
    env = make_env(ENV, seed=seed, **env_settings(cfg))
    model, spec = _model_and_spec()
    collector = RolloutCollector(env, actor_id=0, seed=seed, unroll_length=cfg.unroll_length, frame_stack=4,
                                 frame_skip=SKIP)
    return env, model.eval(), spec, collector


# ---------------------------------------------------------------------------- 1. raw emulator


def fixed_action(raw: Any) -> Any:
    """An action for the bare emulator that keeps the game moving: stable-retro's [B] button
    (Airstriker fires), ALE's action 1 (FIRE in Pong's and Breakout's minimal sets)."""
    if hasattr(raw, "buttons"):
        action = np.zeros(len(raw.buttons), np.uint8)
        action[raw.buttons.index("B")] = 1
        return action
    return 1


def fire_action(env: Any) -> int:
    """FIRE's index in the wrapped env's actions (Genesis [B] = 5), or its last action."""
    return min(FIRE, env.action_space.n - 1)


def raw_env():
    """ENV's bare emulator, one frame a step: stable-retro's, or ALE's as the atari family makes
    it (frame skip 1, the minimal action set, gray frames, sticky actions at 0.25)."""
    from common.families import family_for

    if family_for(ENV).name == "ALE":
        import gymnasium as gym

        from common.families.atari import register_ale

        register_ale()
        return gym.make(ENV, frameskip=1, repeat_action_probability=bench_config().repeat_action_probability,
                        full_action_space=False, obs_type="grayscale")
    import stable_retro

    return stable_retro.make(ENV, render_mode=None)


def raw_emulator(seconds: float) -> dict[str, Any]:
    """Frames/s of the bare emulator: a fixed action, env.step in a loop, reset on done."""
    env = raw_env()
    env.reset(seed=0)
    action = fixed_action(env.unwrapped)

    def step() -> None:
        _, _, term, trunc, _ = env.step(action)
        if term or trunc:
            env.reset()

    per_frame = _timed(step, seconds, 100)
    env.close()
    return {"frames_per_s": 1.0 / per_frame, "us_per_frame": 1e6 * per_frame}


# ---------------------------------------------------------------------------- 2 + 6. actor


def step_split(env, model, collector, rollouts, seconds: float) -> dict[str, Any]:
    """Microseconds per agent step (frame skip 4) of each part of an actor's loop."""
    from common.envs import GrayResize

    raw = env.unwrapped
    buttons = fixed_action(raw)
    fire = fire_action(env)
    gray_resize = env
    while not isinstance(gray_resize, GrayResize):
        gray_resize = gray_resize.env
    prev, obs = np.array(raw.step(buttons)[0]), np.array(raw.step(buttons)[0])
    rounds = 3
    share = seconds / 6 / rounds

    def emulate() -> None:
        for _ in range(SKIP):
            if any(raw.step(buttons)[2:4]):
                raw.reset()

    def full_step() -> None:
        if any(env.step(fire)[2:4]):
            env.reset()

    parts = {
        "emulate": emulate,
        "preprocess": lambda: gray_resize.observation(np.maximum(prev, obs)),
        "infer": lambda: collector._act(model),
        "full": full_step,
    }
    # interleaved rounds, median per part: a passing disturbance hits one round of one part
    samples = {k: [] for k in parts}
    for _ in range(rounds):
        for k, fn in parts.items():
            samples[k].append(_timed(fn, share))
    t = {k: statistics.median(v) for k, v in samples.items()}
    full = t.pop("full")
    times = collector.times
    t["other"] = times.other / max(times.steps, 1)  # frame stack and bookkeeping in collect()
    steps = rollouts[-1].steps
    t["encode"] = _timed(lambda: protocol.encode_rollout(rollouts[-1]), share * rounds) / steps
    t["send"] = _send_time([protocol.encode_rollout(r) for r in rollouts], share * rounds) / steps
    total = sum(t.values())
    return {
        "us_per_step": {k: 1e6 * v for k, v in t.items()},
        "percent": {k: 100.0 * v / total for k, v in t.items()},
        "total_us_per_step": 1e6 * total,
        "ceiling_frames_per_s": SKIP / total,
        "make_env_step_us": 1e6 * full,
        "wrappers_us_per_step": 1e6 * (full - t["emulate"]),  # full make_env step minus raw frames
    }


def _send_time(messages: list[bytes], seconds: float) -> float:
    """Seconds per message through PUSH -> PULL over loopback TCP, a thread draining PULL."""
    ctx = zmq.Context()
    size = max(len(m) for m in messages)
    pull = transport.make_socket(ctx, zmq.PULL, max_bytes=64 << 20,
                                 tcp_buffer=transport.rollout_tcp_buffer(size))
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = transport.make_socket(ctx, zmq.PUSH, max_bytes=64 << 20,
                                 tcp_buffer=transport.rollout_tcp_buffer(size))
    push.connect(f"tcp://127.0.0.1:{port}")
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            if pull.poll(50):
                pull.recv(copy=False)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    i = 0

    def send() -> None:  # as ActorClient.send: wait for room, then send without a copy
        nonlocal i
        while not push.poll(200, zmq.POLLOUT):
            pass
        push.send(messages[i % len(messages)], copy=False)
        i += 1

    per_msg = _timed(send, seconds, 20)
    stop.set()
    thread.join()
    push.close(0)
    pull.close(0)
    ctx.term()
    return per_msg


def wire_bytes(rollouts: list[protocol.Rollout]) -> dict[str, Any]:
    """Bytes on the wire per agent step of real Airstriker rollouts, by frame codec."""
    sizes: dict[str, list[int]] = {"lz4": [], "none": []}
    for r in rollouts:
        sizes["lz4"].append(len(protocol.encode_rollout(r, "lz4")))
        sizes["none"].append(len(protocol.encode_rollout(r, "none")))
    try:
        import zstandard
    except ImportError:
        zstandard = None
    if zstandard is not None:
        for level in (1, 3):
            zc = zstandard.ZstdCompressor(level=level)
            sizes[f"zstd-{level}"] = [len(_encode_frames_with(r, zc.compress, f"zstd{level}"))
                                      for r in rollouts]
    frame = int(np.prod(rollouts[0].frames.shape[1:]))
    return {
        "bytes_per_step": {k: statistics.mean(v) / T for k, v in sizes.items()},
        "naive_stack_bytes_per_step": 4 * frame,
        "rollouts": len(rollouts),
        "zstandard": zstandard is not None,
    }


def _encode_frames_with(r: protocol.Rollout, compress: Callable[[bytes], bytes], codec: str) -> bytes:
    """A rollout message as encode_rollout builds it, frames compressed by `compress` (size only)."""

    def packed(a: np.ndarray) -> dict[str, Any]:
        return {"dtype": a.dtype.name, "shape": list(a.shape), "codec": codec,
                "data": compress(np.ascontiguousarray(a).tobytes())}

    return protocol.encode(
        "rollout", actor_id=r.actor_id, policy_version=r.policy_version, frames=packed(r.frames),
        history=packed(r.history), actions=protocol.pack_array(r.actions),
        behaviour_logp=protocol.pack_array(r.behaviour_logp), rewards=protocol.pack_array(r.rewards),
        terminated=protocol.pack_array(r.terminated), truncated=protocol.pack_array(r.truncated),
        episodes=r.episodes)


def actor_parts(seconds: float) -> dict[str, Any]:
    """Items 2 and 6: rollouts from the real env with the untrained policy, then the split."""
    env, model, _, collector = _collector()
    rollouts, start = [], time.perf_counter()
    while len(rollouts) < 8 or time.perf_counter() - start < seconds / 2:
        rollouts.append(collector.collect(model, 0))
    result = {"wire": wire_bytes(rollouts), "split": step_split(env, model, collector, rollouts, seconds / 2)}
    env.close()
    return result


def actor_load(seconds: float) -> dict[str, Any]:
    """An actor's work without its bookkeeping, for `seconds`: step ENV's env (the actor's
    preprocessing) and run the policy at batch 1, over and over. benchmarks.floor runs it on the
    other cores while it measures a part with every core busy."""
    import torch

    env, model, _, _ = _collector(seed=3)
    obs = torch.zeros((1, 4, 84, 84), dtype=torch.uint8)
    fire, steps, end = fire_action(env), 0, time.monotonic() + seconds
    while time.monotonic() < end:
        frame, _, term, trunc, _ = env.step(fire)
        obs[0, steps % 4] = torch.from_numpy(np.asarray(frame))
        with torch.inference_mode():
            model(obs)
        if term or trunc:
            env.reset()
        steps += 1
    env.close()
    return {"steps": steps}


# ---------------------------------------------------------------------------- 5. ingest


def _real_messages(n: int, token: str = "") -> list[bytes]:
    """n real rollouts to replay in a cycle. Their episode ends are cleared: the learner checks
    episode statistics against what it received before, which a replay cannot match (the
    check itself costs microseconds)."""
    env, model, _, collector = _collector(seed=2)
    rollouts = [collector.collect(model, 0) for _ in range(n)]
    env.close()
    for r in rollouts:
        r.terminated[:] = r.truncated[:] = False
        r.episodes = []
    return [protocol.encode_rollout(r, token=token) for r in rollouts]


def sender(port: int, seconds: float, path: str) -> dict[str, Any]:
    """Push the encoded rollouts in `path` (msgpack list) to PULL on `port` as fast as it takes them."""
    import msgpack

    msgs = msgpack.unpackb(Path(path).read_bytes())
    ctx = zmq.Context()
    push = transport.make_socket(ctx, zmq.PUSH, max_bytes=64 << 20,
                                 tcp_buffer=transport.rollout_tcp_buffer(max(map(len, msgs))))
    push.connect(f"tcp://127.0.0.1:{port}")
    sent, end, parent = 0, time.monotonic() + seconds, os.getppid()
    while time.monotonic() < end and os.getppid() == parent:  # stop when orphaned
        if push.poll(100, zmq.POLLOUT):
            push.send(msgs[sent % len(msgs)], copy=False)
            sent += 1
    push.close(0)
    ctx.term()
    return {"sent": sent}


def ingest(seconds: float, run_dir: str) -> dict[str, Any]:
    """Frames/s the learner's own receive task (decode, validate, batch, collate) accepts."""
    import subprocess
    import sys

    import msgpack
    import zmq.asyncio

    from common.config import Config
    from learner.server import Learner

    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    learner = Learner(Config(env=ENV, quiet=True), run)
    welcome = protocol.decode(learner.welcome({"host": "bench", "pid": os.getpid()}))  # actor id 0
    msgs = _real_messages(8, welcome["token"])
    (run / "rollouts.msgpack").write_bytes(msgpack.packb(msgs))
    ctx = zmq.asyncio.Context()
    pull = transport.make_socket(ctx, zmq.PULL, max_bytes=learner.rollout_bytes, server=True,
                                 tcp_buffer=transport.rollout_tcp_buffer(learner.spec.max_rollout_bytes))
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    senders = [subprocess.Popen([sys.executable, "-m", "benchmarks.bench_parts", "sender", "--port", str(port),
                                 "--seconds", "3600", "--path", str(run / "rollouts.msgpack")],
                                stdout=subprocess.DEVNULL) for _ in range(2)]
    try:
        frames, batches, wall = asyncio.run(_ingest_loop(learner, pull, seconds))
    finally:
        for p in senders:
            p.terminate()
            p.wait(30)
        pull.close(0)
        ctx.term()
    return {"frames_per_s": frames / wall, "batches_per_s": batches / wall, "senders": len(senders),
            "rejected": learner.metrics.rejected_messages, "message_bytes": statistics.mean(map(len, msgs)),
            **_ingest_breakdown(learner, msgs, seconds / 4)}


def _ingest_breakdown(learner, msgs: list[bytes], seconds: float) -> dict[str, float]:
    """Without sockets: decode + validate (Learner.accept) a message, and collate a batch."""
    from learner.batcher import collate

    i = 0

    def accept() -> None:
        nonlocal i
        learner.accept(msgs[i % len(msgs)])
        i += 1

    per_msg = _timed(accept, seconds)
    n = learner.cfg.rollouts_per_batch
    rollouts = [learner.accept(msgs[k % len(msgs)]) for k in range(n)]
    per_batch = _timed(lambda: collate(rollouts, learner.version), seconds)
    steps = rollouts[0].steps
    return {"accept_us_per_message": 1e6 * per_msg, "collate_us_per_rollout": 1e6 * per_batch / n,
            "no_socket_ceiling_frames_per_s": steps * SKIP / (per_msg + per_batch / n)}


async def _ingest_loop(learner, pull, seconds: float) -> tuple[int, int, float]:
    batches = 0

    async def take() -> None:  # what train_task does in the event loop, minus the update
        nonlocal batches
        while True:
            await learner.source.ready.wait()
            learner.source.ready.clear()
            while learner.source.take(learner.version) is not None:
                batches += 1

    tasks = [asyncio.create_task(learner.receive_task(pull)), asyncio.create_task(take())]
    while learner.metrics.frames == 0:  # senders still starting
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    f0, b0, t0 = learner.metrics.frames, batches, time.monotonic()
    await asyncio.sleep(seconds)
    result = learner.metrics.frames - f0, batches - b0, time.monotonic() - t0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return result


# ---------------------------------------------------------------------------- 7. weights


def subscriber(port: int, ident: int) -> None:
    """SUB on port, PUSH acks to port+1: decode, validate, load_state_dict, then ack."""
    import torch

    from common.model import expected_params, load_numpy_state, spec_hash

    torch.set_num_threads(1)
    model, spec = _model_and_spec()
    expected, digest = expected_params(model), spec_hash(spec)
    ctx = zmq.Context()
    sub = transport.make_socket(ctx, zmq.SUB, max_bytes=64 << 20)
    sub.connect(f"tcp://127.0.0.1:{port}")
    ack = ctx.socket(zmq.PUSH)
    ack.connect(f"tcp://127.0.0.1:{port + 1}")
    parent = os.getppid()
    while os.getppid() == parent:  # stop when orphaned
        if not sub.poll(500):
            continue
        msg = protocol.decode(sub.recv(), max_bytes=64 << 20)
        if msg.get("session") == "stop":
            break
        load_numpy_state(model, protocol.validate_weights(msg, expected, digest))
        ack.send_json({"id": ident, "version": msg["version"], "t": time.monotonic()})
    sub.close(0)
    ack.close(0)
    ctx.term()


def weights_latency(reps: int, n_subs: int = 8) -> dict[str, Any]:
    """Publish (encode + send) to loaded in every subscriber; max over subscribers per version."""
    import subprocess
    import sys

    from common.model import spec_hash, state_to_numpy

    model, spec = _model_and_spec()
    digest = spec_hash(spec)
    ctx = zmq.Context()
    pub = transport.make_socket(ctx, zmq.PUB, max_bytes=64 << 20, server=True)
    port = pub.bind_to_random_port("tcp://127.0.0.1", min_port=20000, max_port=60000)
    acks = ctx.socket(zmq.PULL)
    acks.bind(f"tcp://127.0.0.1:{port + 1}")
    subs = [subprocess.Popen([sys.executable, "-m", "benchmarks.bench_parts", "subscriber", "--port", str(port),
                              "--id", str(i)]) for i in range(n_subs)]

    def publish(version: int, session: str = "bench") -> float:
        t0 = time.monotonic()
        pub.send(protocol.encode_weights(state_to_numpy(model), version=version, spec_hash=digest,
                                         session=session))
        return t0

    def wait_acks(version: int, timeout: float) -> dict[int, float]:
        got, end = {}, time.monotonic() + timeout
        while len(got) < n_subs and acks.poll(max(1, int(1000 * (end - time.monotonic())))):
            a = acks.recv_json()
            if a["version"] == version:
                got[a["id"]] = a["t"]
        return got

    try:
        ready: set[int] = set()
        deadline = time.monotonic() + 120
        while len(ready) < n_subs:  # slow joiners: republish version 0 until all have loaded it
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(ready)} of {n_subs} subscribers answered")
            publish(0)
            ready |= set(wait_acks(0, 1.0))
        time.sleep(0.5)
        while acks.poll(100):
            acks.recv()
        worst, encode = [], []
        for v in range(1, reps + 1):
            t_enc = time.monotonic()
            state_msg = protocol.encode_weights(state_to_numpy(model), version=v, spec_hash=digest,
                                                session="bench")
            encode.append(time.monotonic() - t_enc)
            pub.send(state_msg)
            got = wait_acks(v, 5.0)
            if len(got) == n_subs:
                worst.append(max(got.values()) - t_enc)
            time.sleep(0.1)
        for _ in range(2):
            publish(reps + 1, session="stop")
    finally:
        for p in subs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        pub.close(0)
        acks.close(0)
        ctx.term()
    if not worst:
        raise RuntimeError("no version reached every subscriber")
    return {"median_ms": 1e3 * statistics.median(worst), "p90_ms": 1e3 * float(np.percentile(worst, 90)),
            "encode_ms": 1e3 * statistics.median(encode), "reps": len(worst), "subscribers": n_subs,
            "missed": reps - len(worst),  # versions some subscriber did not load within 5 s
            "message_bytes": len(state_msg)}


# ---------------------------------------------------------------------------- 8. trainer


def trainer_update(updates: int, threads: int = 0) -> dict[str, Any]:
    """Samples/s of Trainer.update on a batch collated from real rollouts, with the settings of
    `--env ENV` (Airstriker: 512 of T=32, one pass; atari preset: 1,024 of T=128, 4 epochs x 4)."""
    import torch

    from learner.batcher import collate
    from learner.server import torch_threads
    from learner.trainer import Trainer

    cfg = bench_config()
    learner_threads = threads or torch_threads(cfg)  # as the Learner sets it, unless --threads
    model, model_spec = _model_and_spec()
    spec = protocol.RolloutSpec(cfg.unroll_length, (84, 84), "uint8", 4, model_spec["n_actions"], SKIP)
    msgs = _real_messages(8)
    rollouts = [protocol.validate_rollout(protocol.decode(m), spec, latest_version=0) for m in msgs]
    batch = collate([rollouts[i % len(rollouts)] for i in range(cfg.rollouts_per_batch)], 0)
    out: dict[str, Any] = {"batch": batch.transitions, "torch_threads": learner_threads,
                           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}
    # "cpu": the learner's own thread count; "cpu_all_cores" too when that differs
    runs = [("cpu", "cpu", learner_threads)]
    if not threads and (os.cpu_count() or 1) != learner_threads:
        runs.append(("cpu_all_cores", "cpu", os.cpu_count() or 1))
    if torch.cuda.is_available():
        runs.append(("cuda", "cuda", learner_threads))
    # each again with --precision bf16 ("cpu_bf16", ...), right after its fp32 twin
    for key, dev, n_threads in runs:
        torch.set_num_threads(n_threads)
        for suffix, precision in (("", "fp32"), ("_bf16", "bf16")):
            trainer = Trainer(copy.deepcopy(model), dataclasses.replace(cfg, precision=precision), torch.device(dev))
            sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
            per = _timed(lambda t=trainer, s=sync: (t.update(batch), s()), 0.0, updates)
            out[key + suffix] = {"seconds_per_update": per, "samples_per_s": batch.transitions / per,
                                 "threads": n_threads, "precision": precision}
    return out


# ---------------------------------------------------------------------------- 10. vector env


def vector_env(seconds: float, n_envs: int) -> dict[str, Any]:
    """gymnasium AsyncVectorEnv of make_env workers; Nature CNN at batch n_envs in this process."""
    import gymnasium as gym
    import torch

    from common.config import Config
    from common.envs import make_env
    from common.families import env_settings

    torch.set_num_threads(1)
    kwargs = env_settings(Config())
    fns = [lambda i=i: make_env(ENV, seed=100 + i, **kwargs) for i in range(n_envs)]
    envs = gym.vector.AsyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    model, _ = _model_and_spec()
    model.eval()
    obs, _ = envs.reset(seed=100)
    stacks = np.repeat(obs[:, None], 4, axis=1)

    def step() -> None:
        nonlocal stacks
        with torch.inference_mode():
            logits, _ = model(torch.from_numpy(stacks))
        actions = torch.distributions.Categorical(logits=logits).sample().numpy()
        obs, _, term, trunc, _ = envs.step(actions)
        done = term | trunc
        stacks = np.concatenate([stacks[:, 1:], obs[:, None]], axis=1)
        stacks[done] = obs[done][:, None]

    per = _timed(step, seconds, 20)
    envs.close()
    return {"frames_per_s": n_envs * SKIP / per, "envs": n_envs}


# ---------------------------------------------------------------------------- consumer


def consumer(port: int, run_dir: str) -> None:
    """The real Learner (receive, validate, batch, publish after every batch) minus the gradient step."""
    from common.config import Config
    from learner.server import Learner
    from learner.trainer import UpdateResult

    cfg = Config(env=ENV, port=port, run_dir=run_dir, quiet=True, report_interval=1.0)
    learner = Learner(cfg, Path(run_dir))
    worker = learner.worker
    worker.update = lambda batch, version: (UpdateResult(), worker.encode_weights(version))  # no gradient
    asyncio.run(learner.run())


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_parts")
    p.add_argument("part", choices=("raw", "actor", "ingest", "sender", "weights", "subscriber", "trainer",
                                    "vector", "consumer", "load"))
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--run-dir", default="")
    p.add_argument("--path", default="")
    p.add_argument("--id", type=int, default=0)
    p.add_argument("--count", type=int, default=0, help="repetitions, updates or envs")
    p.add_argument("--threads", type=int, default=0, help="trainer: torch threads (0 = the learner's own)")
    a = p.parse_args()
    calls = {
        "raw": lambda: raw_emulator(a.seconds),
        "actor": lambda: actor_parts(a.seconds),
        "ingest": lambda: ingest(a.seconds, a.run_dir),
        "sender": lambda: sender(a.port, a.seconds, a.path),
        "weights": lambda: weights_latency(a.count or 10),
        "subscriber": lambda: subscriber(a.port, a.id),
        "trainer": lambda: trainer_update(a.count or 2, a.threads),
        "load": lambda: actor_load(a.seconds),
        "vector": lambda: vector_env(a.seconds, a.count or os.cpu_count() or 1),
        "consumer": lambda: consumer(a.port, a.run_dir),
    }
    result = calls[a.part]()
    if result is not None:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
