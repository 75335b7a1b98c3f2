"""CURVE: `learner keygen`, a learner with --curve-dir admits only the actors in authorized/ on
all three sockets (control, rollouts, weights), and a learner open beyond loopback warns."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import zmq
import zmq.auth

from common import protocol, transport
from tests.conftest import (
    BIN,
    CARTPOLE,
    ROOT,
    cartpole_rollout,
    free_base_port,
    last_metrics,
    read_actors,
    wait_for,
)
from tests.scripted import ScriptedActor


def _keygen(keys: Path, n: int) -> str:
    out = subprocess.run([str(BIN / "learner"), "keygen", str(keys), "--actors", str(n)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _client(ctx: zmq.Context, kind: int, port: int, offset: int, secret: Path | None, server_key: Path):
    """A raw socket; with `secret` it talks CURVE with that key pair."""
    s = ctx.socket(kind)
    s.linger = 0
    if secret is not None:
        pub, sec = zmq.auth.load_certificate(secret)
        s.curve_publickey, s.curve_secretkey = pub, sec
        s.curve_serverkey = zmq.auth.load_certificate(server_key)[0]
    if kind == zmq.SUB:
        s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect(f"tcp://127.0.0.1:{port + offset}")
    return s


def test_keygen_makes_keys_and_adds_actors(tmp_path):
    keys = tmp_path / "keys"
    _keygen(keys, 2)
    learner_secret = (keys / "learner.key_secret").read_bytes()
    assert sorted(p.name for p in (keys / "authorized").iterdir()) == ["actor0.key", "actor1.key"]
    assert (keys / "actor0.key_secret").stat().st_mode & 0o077 == 0, "secret keys are private"
    _keygen(keys, 1)  # again: the learner's key stays, one more actor
    assert (keys / "learner.key_secret").read_bytes() == learner_secret
    assert sorted(p.name for p in (keys / "authorized").iterdir()) == ["actor0.key", "actor1.key", "actor2.key"]


def test_curve_admits_only_authorized_actors(procs, tmp_path):
    keys = tmp_path / "keys"
    _keygen(keys, 2)
    rogue = tmp_path / "rogue"  # a well-formed key pair the learner never authorized
    rogue.mkdir()
    zmq.auth.create_certificates(rogue, "rogue")
    server_key = keys / "learner.key"
    port = free_base_port()
    run = tmp_path / "run"
    procs.learner(*CARTPOLE, "--curve-dir", str(keys), port=port, run_dir=run)

    # first only intruders: an actor with an unknown key and one without CURVE
    intruder = procs.actor(port, "rogue", "--curve-secret", str(rogue / "rogue.key_secret"),
                           "--curve-server-key", str(server_key))
    plain = procs.actor(port, "plain")
    ctx = zmq.Context()
    try:
        subs = {"no keys": _client(ctx, zmq.SUB, port, 2, None, server_key),
                "unknown key": _client(ctx, zmq.SUB, port, 2, rogue / "rogue.key_secret", server_key),
                "admitted key": _client(ctx, zmq.SUB, port, 2, keys / "actor1.key_secret", server_key)}
        wait_for(lambda: "refused this actor's CURVE key" in (tmp_path / "rogue.log").read_text(), 60,
                 "the rogue actor told that its key is refused")
        wait_for(lambda: "security handshake failed" in (tmp_path / "plain.log").read_text(), 60,
                 "the plain actor told that the handshake failed")
        assert read_actors(run) == [] and last_metrics(run)["frames"] == 0

        good = procs.actor(port, "good", "--curve-secret", str(keys / "actor0.key_secret"),
                           "--curve-server-key", str(server_key))
        wait_for(lambda: (m := last_metrics(run)).get("updates", 0) >= 5 and m["actors"] == 1, 90,
                 "the admitted actor trains")

        # raw PUSH sockets with a rollout under the admitted actor's id: nothing gets through
        joined = read_actors(run)
        assert [a["pid"] for a in joined] == [good.pid]
        pushes = [_client(ctx, zmq.PUSH, port, 1, secret, server_key)
                  for secret in (None, rogue / "rogue.key_secret")]
        buf = protocol.encode_rollout(cartpole_rollout(joined[0]["actor_id"]))
        for p in pushes:
            for _ in range(3):
                try:
                    p.send(buf, zmq.NOBLOCK)
                except zmq.Again:
                    pass  # not even queued: the connection never completes the handshake

        got = {name: 0 for name in subs}
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for name, s in subs.items():
                while s.poll(0):
                    s.recv()
                    got[name] += 1
            time.sleep(0.05)
        for p in pushes:
            p.close()
        for s in subs.values():
            s.close()
    finally:
        ctx.term()
    assert got["no keys"] == 0 and got["unknown key"] == 0, got
    assert got["admitted key"] > 0, "an admitted key does receive weights (the check can see them)"
    time.sleep(1)
    row = last_metrics(run)
    assert row["rejected_messages"] == 0, "the intruders' messages never reached the learner"
    assert row["actors"] == 1 and [a["pid"] for a in read_actors(run)] == [good.pid]
    assert intruder.poll() is None and plain.poll() is None  # they keep trying, harmlessly

    # Issue 8.3: an admitted key cannot speak for an actor that joined with another key, even
    # with that actor's id and token
    key = {i: transport.actor_keys(keys / f"actor{i}.key_secret", server_key) for i in (0, 1)}
    joiner, other = ScriptedActor(port, keys=key[1]), ScriptedActor(port, keys=key[0])
    try:
        joiner.join()
        r = cartpole_rollout(joiner.actor_id)
        other.send(other.rollout_message(r, **joiner.identity()))
        other.dealer.send(protocol.encode("heartbeat", session=joiner.welcome["session"], **joiner.identity()))
        wait_for(lambda: last_metrics(run)["rejected_messages"] == 2, 20, "both forgeries rejected")
        frames = last_metrics(run)["frames"]
        joiner.send(joiner.rollout_message(r))  # the same message from the key that joined
        wait_for(lambda: last_metrics(run)["frames"] >= frames + 32, 20, "the genuine rollout counted")
    finally:
        joiner.close()
        other.close()
    assert last_metrics(run)["rejected_messages"] == 2
    for name in ("rogue", "plain"):
        log = (tmp_path / f"{name}.log").read_text()
        assert "joined" not in log and "cannot reach the learner" in log


def test_curve_user_id_is_the_z85_public_key(tmp_path):
    """What the registry binds actors to: with pyzmq's authenticator, ZeroMQ's User-Id property
    of a CURVE message is the sender's public key in z85."""
    from zmq.auth.thread import ThreadAuthenticator

    keys = tmp_path / "keys"
    _keygen(keys, 1)
    ctx = zmq.Context()
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(keys / "authorized"))
    server = ctx.socket(zmq.ROUTER)
    server.linger = 0
    transport.apply_curve(server, transport.learner_keys(keys), server=True)
    port = server.bind_to_random_port("tcp://127.0.0.1")
    client = ctx.socket(zmq.DEALER)
    client.linger = 0
    actor = transport.actor_keys(keys / "actor0.key_secret", keys / "learner.key")
    transport.apply_curve(client, actor, server=False)
    client.connect(f"tcp://127.0.0.1:{port}")
    try:
        client.send(b"hi")
        assert server.poll(10_000)
        _, body = server.recv_multipart(copy=False)
        assert body.get("User-Id") == actor.public.decode() and len(actor.public) == 40
    finally:
        client.close()
        server.close()
        auth.stop()
        ctx.term()


def _start_learner(tmp_path: Path, name: str, *flags: str) -> tuple[str, str]:
    """A learner bound to 0.0.0.0 on a free port, stopped once it is ready: (stdout, stderr)."""
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    p = subprocess.Popen([str(BIN / "learner"), *CARTPOLE, "--bind", "0.0.0.0", "--port",
                          str(free_base_port()), "--run-dir", str(tmp_path / name), *flags],
                         stdout=open(out, "wb"), stderr=open(err, "wb"), cwd=ROOT)
    try:
        wait_for(lambda: "learner ready" in out.read_text() or p.poll() is not None, 60, "learner ready")
    finally:
        p.terminate()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return out.read_text(), err.read_text()


def test_learner_open_beyond_loopback_without_curve_warns(tmp_path):
    out, err = _start_learner(tmp_path, "open")
    assert "learner ready: tcp://0.0.0.0:" in out
    assert "warning: binding 0.0.0.0 without CURVE" in err and "--curve-dir" in err
    keys = tmp_path / "keys"
    _keygen(keys, 1)
    out, err = _start_learner(tmp_path, "curve", "--curve-dir", str(keys))
    assert "learner ready: tcp://0.0.0.0:" in out and "without CURVE" not in err


def test_curve_dir_without_actor_keys_is_a_one_line_error(tmp_path):
    keys = tmp_path / "keys"
    _keygen(keys, 0)
    out = subprocess.run([str(BIN / "learner"), *CARTPOLE, "--curve-dir", str(keys), "--run-dir",
                          str(tmp_path / "run")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "holds no actor public keys" in out.stderr
