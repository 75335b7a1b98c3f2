"""A learner slower than its actors trains on data only a few updates old: the actors are held
back at the learner's pace by small queues (one batch waiting in the learner, ZeroMQ queues of
2, kernel buffers of one message), not by a backlog of old rollouts (real learner, real actors,
real sockets)."""

from __future__ import annotations

import time

import numpy as np
import zmq

from common import transport
from common.protocol import RolloutSpec
from testkit.run_files import last_metrics, read_metrics
from tests.conftest import free_base_port, wait_for


def test_a_slow_learner_trains_on_rollouts_a_few_updates_old(procs, tmp_path):
    port = free_base_port()
    run = tmp_path / "run"
    # CartPole's preset: batches of 4 rollouts of 64 steps; each update held 0.5 s, so two
    # actors could make several batches during one. With the queues as they were (kernel
    # buffers of twice a rollout's largest size, which Linux doubles again, ZeroMQ queues of 4,
    # room for 2 batches in the learner) the data was 13 updates old here; now 5.5.
    procs.learner("--env", "CartPole-v1", "--update-delay", "0.5", "--report-interval", "1",
                  port=port, run_dir=run)
    for i in range(2):
        procs.actor(port, f"a{i}")
    wait_for(lambda: last_metrics(run).get("updates", 0) >= 14, 120, "14 updates")
    rows = [r for r in read_metrics(run) if r["updates"] >= 6 and r["policy_lag_mean"] is not None]
    assert rows, read_metrics(run)[-3:]
    lags = [r["policy_lag_mean"] for r in rows]
    assert max(lags) <= 6.5, f"policy lag mean per report: {lags}"
    assert max(r["policy_lag_max"] for r in rows) <= 8
    assert rows[-1]["dropped_stale"] == 0


def _in_flight_before_blocking(tcp_buffer: int, message: bytes) -> int:
    """Messages a rollout PUSH socket accepts toward a PULL socket that reads nothing (real
    sockets on 127.0.0.1, the project's options): what a stalled learner lets pile up."""
    ctx = zmq.Context()
    try:
        pull = transport.make_socket(ctx, zmq.PULL, max_bytes=1 << 24, server=True, tcp_buffer=tcp_buffer)
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push = transport.make_socket(ctx, zmq.PUSH, max_bytes=1 << 24, tcp_buffer=tcp_buffer)
        push.connect(f"tcp://127.0.0.1:{port}")
        sent, idle_since = 0, time.monotonic()
        while time.monotonic() - idle_since < 1.0 and sent < 2000:
            try:
                push.send(message, zmq.NOBLOCK)
                sent, idle_since = sent + 1, time.monotonic()
            except zmq.Again:
                time.sleep(0.01)  # let the I/O thread move what it can into the kernel
        return sent
    finally:
        ctx.destroy(linger=0)


def test_compressible_image_rollouts_do_not_pile_up_in_kernel_buffers():
    # Pong's rollouts: the bound counts 260 frames of 84x84 uncompressed (1.8 MB), lz4 sends
    # one in about 12 KB. Kernel buffers of half the bound held ~150 of them per socket, and a
    # learner-bound Pong run trained on data 17 updates old; now a stalled learner lets each
    # actor queue only its ZeroMQ queues (2 + 2) and a message or two in the kernel.
    spec = RolloutSpec(unroll_length=128, frame_shape=(84, 84), frame_dtype="uint8", frame_stack=4, n_actions=6)
    message = np.random.default_rng(0).integers(0, 256, 12_000, dtype=np.uint8).tobytes()
    queued = _in_flight_before_blocking(transport.rollout_tcp_buffer(spec.max_rollout_bytes), message)
    assert 4 <= queued <= 10, f"{queued} rollouts of 12 KB in flight toward a learner that reads none"
