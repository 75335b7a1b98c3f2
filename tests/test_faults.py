"""Faults: killed and frozen actors, a killed learner, a kill during a checkpoint write, hostile
input, a slow learner. Real processes and sockets on 127.0.0.1, CartPole-v1 to be quick.

Each test prints one `FAULT ...` line with what it measured (run pytest with -s to see it).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import msgpack
import numpy as np
import psutil
import zmq

from common import protocol
from learner import checkpoint
from tests.conftest import (
    CARTPOLE,
    ROOT,
    cartpole_rollout,
    free_base_port,
    last_metrics,
    read_actors,
    read_metrics,
    wait_for,
)


def _say(what: str, **numbers) -> None:
    print(f"\nFAULT {what}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()), flush=True)


def _actors(run) -> int:
    return last_metrics(run).get("actors", -1)


def _updates(run) -> int:
    return last_metrics(run).get("updates", 0)


def _hold(cond, seconds: float, what: str) -> None:
    """`cond` stays true for `seconds`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert cond(), what
        time.sleep(0.25)


# ---------------------------------------------------------------------------- actors


def test_frozen_and_killed_actors_are_noticed_and_a_new_one_joins(procs, tmp_path):
    port = free_base_port()
    run = tmp_path / "run"
    procs.learner(*CARTPOLE, port=port, run_dir=run)
    procs.actor(port, "a0")
    a1 = procs.actor(port, "a1")
    wait_for(lambda: _actors(run) == 2 and _updates(run) >= 5, 90, "two actors and 5 updates")

    # A frozen actor (SIGSTOP) sends nothing, not even heartbeats: it stops counting.
    a1.send_signal(signal.SIGSTOP)
    t0 = time.monotonic()
    wait_for(lambda: _actors(run) == 1, 15, "the frozen actor no longer counted")
    frozen_noticed = time.monotonic() - t0
    # Thawed, its heartbeats (and, had its links dropped, its reconnects) make it count again.
    a1.send_signal(signal.SIGCONT)
    t0 = time.monotonic()
    wait_for(lambda: _actors(run) == 2, 20, "the thawed actor counted again")
    thawed_back = time.monotonic() - t0

    u0 = _updates(run)
    a1.kill()
    t0 = time.monotonic()
    wait_for(lambda: _actors(run) == 1, 15, "the killed actor no longer counted")
    killed_noticed = time.monotonic() - t0
    wait_for(lambda: _updates(run) >= u0 + 10, 60, "updates go on with one actor")

    procs.actor(port, "a2")
    t0 = time.monotonic()
    wait_for(lambda: _actors(run) == 2, 60, "a new actor counted")
    joined = time.monotonic() - t0
    ids = sorted(a["actor_id"] for a in read_actors(run))
    assert ids == [0, 1, 2], ids  # the thawed actor kept its id; the new one got the next
    u1 = _updates(run)
    wait_for(lambda: _updates(run) >= u1 + 5, 60, "updates with the new actor")
    _say("actor frozen/killed", frozen_noticed_s=round(frozen_noticed, 1),
         thawed_back_s=round(thawed_back, 1), killed_noticed_s=round(killed_noticed, 1),
         new_actor_counted_s=round(joined, 1), rejected=last_metrics(run)["rejected_messages"])
    # noticed within the 6 s actor timeout plus a report interval and this test's polling
    assert frozen_noticed <= 10 and killed_noticed <= 10
    assert last_metrics(run)["rejected_messages"] == 0


# ---------------------------------------------------------------------------- learner


def test_killed_learner_resumes_from_checkpoint_and_actors_rejoin(procs, tmp_path):
    port = free_base_port()
    run = tmp_path / "run"
    learner = procs.learner(*CARTPOLE, "--save-interval", "5", port=port, run_dir=run)
    a0 = procs.actor(port, "a0")
    a1 = procs.actor(port, "a1")
    wait_for(lambda: _actors(run) == 2 and _updates(run) >= 23, 120, "23 updates")
    learner.kill()
    learner.wait(10)
    killed_at = time.monotonic()
    rows_before = read_metrics(run)
    found = checkpoint.load_latest(run / "checkpoints")
    assert found is not None
    saved = found[1]["counters"]
    assert saved["updates"] % 5 == 0 and saved["updates"] >= 20

    time.sleep(3)  # the actors notice, hold their rollouts and keep trying
    assert a0.poll() is None and a1.poll() is None
    procs.learner(*CARTPOLE, "--resume", port=port, run_dir=run, log_name="learner2.log")
    started = time.monotonic()

    def after() -> list[dict]:
        return read_metrics(run)[len(rows_before):]

    wait_for(lambda: after(), 30, "reports from the new learner")
    first = after()[0]
    # counters continue from the checkpoint, not from zero and not from the lost tail
    assert saved["updates"] <= first["updates"] <= saved["updates"] + 3, (saved, first)
    assert first["frames"] >= saved["frames"]
    wait_for(lambda: after()[-1]["actors"] == 2, 30, "both actors back")
    rejoined = time.monotonic() - started
    wait_for(lambda: after()[-1]["updates"] >= saved["updates"] + 10, 60, "10 updates after the restart")
    updating = time.monotonic() - started
    last = after()[-1]
    assert last["frames"] > saved["frames"] + 10 * 256
    assert a0.poll() is None and a1.poll() is None, "the actors were never restarted"
    for name in ("a0", "a1"):
        log = (tmp_path / f"{name}.log").read_text()
        assert "learner restarted (new session)" in log and "rejoined as actor" in log, log[-3000:]
    joins = read_actors(run)
    assert sorted(a["actor_id"] for a in joins) == [0, 0, 1, 1], joins  # same ids after the restart
    assert {a["pid"] for a in joins} == {a0.pid, a1.pid}
    lost_updates = rows_before[-1]["updates"] - saved["updates"]
    _say("learner killed", checkpoint_updates=saved["updates"], lost_updates=lost_updates,
         down_s=round(started - killed_at, 1), actors_back_s=round(rejoined, 1),
         ten_updates_s=round(updating, 1), rejected_after_restart=last["rejected_messages"])
    assert last["rejected_messages"] == 0, "nothing made for the old learner reaches the new one"


CKPT_WRITER = textwrap.dedent("""
    import sys, torch
    from learner import checkpoint
    directory, start = sys.argv[1], int(sys.argv[2])
    w = torch.empty(25_000_000)  # 100 MB a checkpoint
    i = start
    while True:
        w.fill_(i)
        print("saving", i, flush=True)
        checkpoint.save(directory, i, {"model": {"w": w}, "counters": {"updates": i}}, keep=3)
        i += 1
""")


def test_kill_during_checkpoint_write_keeps_previous_checkpoint(tmp_path):
    d = tmp_path / "checkpoints"
    script = tmp_path / "writer.py"
    script.write_text(CKPT_WRITER)
    start, kills, partial_seen = 1, 0, 0
    out = tmp_path / "writer.out"
    for _ in range(3):
        p = subprocess.Popen([sys.executable, str(script), str(d), str(start)], cwd=ROOT,
                             stdout=open(out, "wb"), stderr=subprocess.STDOUT)  # truncates
        try:
            # let it finish at least one checkpoint, then catch it in the middle of the next
            wait_for(lambda: out.read_text().count("saving") >= 2, 120, "a checkpoint written")

            def mid_write() -> bool:
                return any(0 < t.stat().st_size < 90_000_000 for t in d.glob(".ckpt_*.tmp"))

            wait_for(mid_write, 60, "a write in progress", interval=0.01)
            p.kill()
            kills += 1
        finally:
            p.kill()
            p.wait()
        partial_seen += any(t.stat().st_size < 100_000_000 for t in d.glob(".ckpt_*.tmp"))
        found = checkpoint.load_latest(d)
        assert found is not None
        path, ckpt = found
        n = ckpt["counters"]["updates"]
        assert path.name == f"ckpt_{n}.pt"
        assert ckpt["model"]["w"].numel() == 25_000_000 and bool((ckpt["model"]["w"] == n).all())
        for ck in checkpoint.list_checkpoints(d):  # every ckpt_*.pt is whole
            assert checkpoint.load(ck)["counters"]["updates"] == int(ck.stem.split("_")[1])
        start = n + 1
    temps = sorted(t.name for t in d.glob(".ckpt_*.tmp"))
    _say("kill during checkpoint write", kills=kills, partial_temp_files=len(temps),
         newest=checkpoint.list_checkpoints(d)[-1].name)
    assert partial_seen == kills, "each kill hit a write in progress"
    assert all(not t.startswith("ckpt_") for t in temps)


# ---------------------------------------------------------------------------- hostile input


def _bad_rollouts(actor_id: int, rng: np.random.Generator, T: int = 32) -> list[bytes]:
    """Rollout-shaped messages, each wrong in one way (plus plain garbage)."""
    good = msgpack.unpackb(protocol.encode_rollout(cartpole_rollout(actor_id, T)), raw=False)
    pack = protocol.pack_array

    def v(**changes) -> bytes:
        return msgpack.packb({**good, **changes}, use_bin_type=True)

    def without(key: str) -> bytes:
        return msgpack.packb({k: x for k, x in good.items() if k != key}, use_bin_type=True)

    f = good["frames"]
    nan_frames = cartpole_rollout(actor_id, T).frames.copy()
    nan_frames[3, 1] = np.nan
    inf_frames = nan_frames.copy()
    inf_frames[3, 1] = np.inf
    return [
        bytes(rng.integers(0, 256, int(rng.integers(1, 3000)), dtype=np.uint8)),  # random bytes
        msgpack.packb(rng.integers(0, 1 << 30, 8).tolist()),  # msgpack, not a map
        msgpack.packb({"v": 1, "kind": "rollout", "x": 1}),  # wrong schema
        msgpack.packb({"v": 3, **{k: x for k, x in good.items() if k != "v"}}, use_bin_type=True),  # future protocol
        v(v="1"),
        v(kind="gradient"), v(kind="hello"), v(kind="weights"),
        without("rewards"), v(extra=1),
        v(frames={**f, "dtype": "float64"}), v(frames={**f, "dtype": "int64"}),
        v(frames={**f, "shape": [T + 1, 8]}),  # a shape that lies about the bytes
        v(frames={**f, "shape": [1 << 30, 1 << 20]}),  # a shape that would be a huge array
        v(frames={**f, "shape": [-1, 4]}), v(frames={**f, "shape": "33x4"}),
        v(frames={**f, "data": f["data"][:-5]}), v(frames={**f, "data": "text"}),
        v(frames={**f, "codec": "lz4"}), v(frames={**f, "codec": "zip"}),
        v(frames=pack(nan_frames)), v(frames=pack(inf_frames)),
        v(rewards=pack(np.full(T, np.nan, np.float32))), v(rewards=pack(np.full(T, np.inf, np.float32))),
        v(behaviour_logp=pack(np.full(T, -np.inf, np.float32))),
        v(behaviour_logp=pack(np.full(T, 0.7, np.float32))),  # a log-probability above 0
        v(actions=pack(np.full(T, 7, np.int32))), v(actions=pack(np.full(T, -1, np.int32))),
        v(actions=pack(np.zeros(T, np.int64))),
        v(policy_version=10**9), v(policy_version=-1), v(policy_version=1.5),  # future version etc.
        v(actor_id=1000 + int(rng.integers(0, 10**6))), v(actor_id=-3), v(actor_id="0"),  # unknown ids
        v(episodes=[{"return": float("nan"), "length": 1.0, "frames": 1.0}]),
        v(episodes=[{"return": float("inf"), "length": 1.0, "frames": 1.0}]),
        v(episodes=[{"return": 1.0}] * 40), v(episodes="none"),
        msgpack.packb({**good, "rewards": msgpack.ExtType(1, b"pickle")}, use_bin_type=True),
        msgpack.packb({**good, "episodes": [msgpack.Timestamp(1, 0)]}, use_bin_type=True, datetime=False),
        msgpack.packb(_nested(200)),  # nests too deeply
        b"\xdd\xff\xff\xff\xff",  # an array header claiming 4 billion items
        protocol.encode_rollout(cartpole_rollout(actor_id, T))[:77],  # cut short
        b"",
    ]


def _nested(depth: int):
    x: object = {"v": 1, "kind": "rollout"}
    for _ in range(depth):
        x = [x]
    return x


def _bad_control(actor_id: int, rng: np.random.Generator) -> list[list[bytes]]:
    """Control messages (DEALER frames), each wrong in one way."""
    return [
        [bytes(rng.integers(0, 256, int(rng.integers(1, 500)), dtype=np.uint8))],
        [b"a", b"b"],  # two frames
        [b""],
        [protocol.encode("rollout", actor_id=actor_id)],
        [protocol.encode("welcome", actor_id=actor_id)],
        [protocol.encode("weights", version=1)],
        [protocol.encode("heartbeat", actor_id=5000 + int(rng.integers(0, 1000)), session="x" * 16)],
        [protocol.encode("heartbeat", actor_id=actor_id, session="not-this-session")],  # a known id, wrong session
        [protocol.encode("heartbeat", actor_id=actor_id)],  # no session
        [protocol.encode("heartbeat", actor_id="0", session="s")],
        [protocol.encode("hello", host={"x": 1}, pid=1, previous_id=None)],
        [protocol.encode("hello", host="h", pid="1", previous_id=None)],
        [protocol.encode("hello", host="h", pid=1, previous_id=1.5)],
        [protocol.encode("hello", host="h", pid=1, previous_id=None, admin=True)],
        [msgpack.packb({"v": 9, "kind": "hello", "host": "h", "pid": 1})],  # future protocol
    ]


def test_hostile_input_is_rejected_counted_and_training_goes_on(procs, tmp_path):
    port = free_base_port()
    run = tmp_path / "run"
    procs.learner(*CARTPOLE, "--max-message-mb", "1", port=port, run_dir=run)
    procs.actor(port, "a0")
    procs.actor(port, "a1")
    wait_for(lambda: _actors(run) == 2 and _updates(run) >= 5, 90, "two actors and 5 updates")
    assert last_metrics(run)["rejected_messages"] == 0
    rng = np.random.default_rng(7)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.linger = 5000
    push.connect(f"tcp://127.0.0.1:{port + 1}")
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 5000
    dealer.connect(f"tcp://127.0.0.1:{port}")
    t0 = time.monotonic()
    sent_push = sent_control = 0
    try:
        while sent_push < 10_000:
            for buf in _bad_rollouts(0, rng):
                push.send(buf)
                sent_push += 1
        while sent_control < 1_000:
            for frames in _bad_control(0, rng):
                dealer.send_multipart(frames)
                sent_control += 1
        expected = sent_push + sent_control

        def counted(m: dict) -> int:  # a flood of control messages is mostly dropped unread (rate limit)
            return m["rejected_messages"] + m["rate_limited"]

        row = wait_for(lambda: counted(m := last_metrics(run)) >= expected and m, 60,
                       f"{expected} rejections counted")
        counted_after = time.monotonic() - t0
        time.sleep(2)
        assert counted(last_metrics(run)) == expected, "each bad message counted once"
        assert last_metrics(run)["rejected_messages"] >= sent_push

        # Over --max-message-mb: ZeroMQ (MAXMSGSIZE) cuts the sender off before the learner's
        # code sees the message, so these are not counted; the learner stays up all the same.
        big = ctx.socket(zmq.PUSH)
        big.linger = 0
        mon = big.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        big.connect(f"tcp://127.0.0.1:{port + 1}")
        for _ in range(3):
            big.send(b"\x00" * (3 << 19))  # 1.5 MiB
        assert mon.poll(10_000), "the oversize sender was disconnected"
        ctrl_big = ctx.socket(zmq.DEALER)
        ctrl_big.linger = 0
        ctrl_big.connect(f"tcp://127.0.0.1:{port}")
        ctrl_big.send(b"\x00" * (3 << 19))
        big.disable_monitor()
        mon.close()
        big.close()
        ctrl_big.close()
    finally:
        push.close()
        dealer.close()
        ctx.term()
    u0 = _updates(run)
    wait_for(lambda: _updates(run) >= u0 + 10, 60, "updates after the attack")
    time.sleep(1)
    last = last_metrics(run)
    assert counted(last) == expected and last["actors"] == 2
    log = (tmp_path / "learner.log").read_text()
    assert "Traceback" not in log
    assert log.count("rejected message") < 100, "rejections are logged at a limited rate"
    _say("hostile input", rollout_port=sent_push, control_port=sent_control,
         counted=counted(row), all_counted_s=round(counted_after, 1),
         oversize_not_counted=4, updates_before=u0, updates_after=last["updates"])


# ---------------------------------------------------------------------------- slow learner


def _rss(pids: list[int]) -> list[float]:
    return [psutil.Process(pid).memory_info().rss / 2**20 for pid in pids]


SLOW_WINDOW_S = 16  # seconds the slow-learner test watches: about 16 updates at 1 s each


def test_slow_learner_holds_actors_back_with_bounded_memory(procs, tmp_path):
    port = free_base_port()
    run = tmp_path / "run"
    learner = procs.learner(*CARTPOLE, "--update-delay", "1.0", port=port, run_dir=run)
    actors = [procs.actor(port, f"a{i}") for i in range(2)]
    pids = [learner.pid] + [a.pid for a in actors]
    wait_for(lambda: _updates(run) >= 3, 90, "first updates")
    time.sleep(4)  # warm-up: queues fill, allocators settle
    base = _rss(pids)
    m0 = last_metrics(run)
    peak = list(base)
    rows_actors = []
    for _ in range(SLOW_WINDOW_S):
        time.sleep(1)
        peak = [max(p, r) for p, r in zip(peak, _rss(pids), strict=True)]
        rows_actors.append(last_metrics(run)["actors"])
    m1 = last_metrics(run)
    d_updates = m1["updates"] - m0["updates"]
    d_steps = m1["steps"] - m0["steps"]
    growth = [round(p - b, 1) for p, b in zip(peak, base, strict=True)]
    _say("slow learner", seconds=SLOW_WINDOW_S, updates=d_updates, steps=d_steps,
         steps_per_update=round(d_steps / max(d_updates, 1)), rss_base_mb=[round(b) for b in base],
         rss_growth_mb=growth)
    # held back: what the learner accepts follows what it trains on (1 s an update)
    assert SLOW_WINDOW_S // 3 <= d_updates <= SLOW_WINDOW_S + 1
    assert d_steps <= (d_updates + 4) * 256
    assert all(n == 2 for n in rows_actors), rows_actors  # blocked actors still count (heartbeats)
    assert growth[0] < 40 and max(growth[1:]) < 15, growth
    for a in actors:
        assert a.poll() is None


def test_actors_blocked_longer_than_the_timeout_still_count(procs, tmp_path):
    """An update slower than --actor-timeout blocks the actors' PUSH for that long; heartbeats
    keep them counted (without them `actors` would drop to 0 during every update)."""
    port = free_base_port()
    run = tmp_path / "run"
    # an update 1.5 times the actor timeout (heartbeats every 2 s): 6 s against 4 s
    procs.learner(*CARTPOLE, "--batch-size", "64", "--update-delay", "6", "--actor-timeout", "4",
                  port=port, run_dir=run)
    procs.actor(port, "a0")
    procs.actor(port, "a1")
    wait_for(lambda: _updates(run) >= 1 and _actors(run) == 2, 90, "first update")
    n0 = len(read_metrics(run))
    wait_for(lambda: _updates(run) >= 3, 60, "two more slow updates")
    rows = read_metrics(run)[n0:]
    counts = [r["actors"] for r in rows]
    _say("blocked actors", rows=len(rows), actor_counts=sorted(set(counts)), updates=rows[-1]["updates"])
    assert all(c == 2 for c in counts), counts
    log = (tmp_path / "a0.log").read_text()
    assert "Traceback" not in log
