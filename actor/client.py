"""The actor process: hello to the learner, then collect, push rollouts, adopt new weights."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import zmq

from actor.rollout import RolloutCollector
from common import protocol, transport
from common.envs import EnvError, make_env
from common.model import build_model, expected_params, load_numpy_state, spec_hash
from common.protocol import ProtocolError

log = logging.getLogger("actor")


class Stop(Exception):
    """Raised inside the loops once SIGINT/SIGTERM arrived."""


class LearnerChanged(Exception):
    """The learner restarted with another environment or model: this actor must restart."""


@dataclass
class Welcome:
    actor_id: int
    seed: int
    epsilon: float
    session: str
    settings: dict[str, Any]


class ActorClient:
    def __init__(self, learner: str, *, keys: transport.CurveKeys | None = None,
                 hello_timeout: float = 3.0, report_interval: float = 30.0):
        self.host, self.port = transport.parse_address(learner)
        self.address = learner
        self.keys = keys
        self.hello_timeout = hello_timeout
        self.report_interval = report_interval
        self.ctx = zmq.Context()
        self.stopping = False
        self.control: zmq.Socket | None = None
        self.push: zmq.Socket | None = None
        self.sub: zmq.Socket | None = None
        self.welcome: Welcome | None = None
        self.version = -1
        self.weights_seen_at = time.monotonic()
        self.sent = 0

    # ------------------------------------------------------------------ plumbing
    def _check(self) -> None:
        if self.stopping:
            raise Stop

    def _socket(self, kind: int, offset: int, max_bytes: int, tcp_buffer: int | None = None) -> zmq.Socket:
        sock = transport.make_socket(self.ctx, kind, max_bytes=max_bytes, keys=self.keys, tcp_buffer=tcp_buffer)
        sock.connect(transport.endpoint(self.host, self.port, offset))
        return sock

    def hello(self, previous_id: int | None = None) -> Welcome:
        """Ask the learner for an id, a seed and the settings; retry with backoff until it answers."""
        delay = 1.0
        while True:
            self._check()
            if self.control is not None:
                self.control.close(0)
            self.control = self._socket(zmq.DEALER, transport.CONTROL, 1 << 20)
            self.control.send(protocol.encode("hello", host=socket.gethostname(), pid=os.getpid(),
                                              previous_id=previous_id))
            deadline = time.monotonic() + self.hello_timeout
            while time.monotonic() < deadline:
                self._check()
                if self.control.poll(200):
                    try:
                        msg = protocol.decode(self.control.recv())
                        if msg["kind"] != "welcome":
                            raise ProtocolError(f"expected welcome, got {msg['kind']}")
                        return Welcome(msg["actor_id"], msg["seed"], float(msg["epsilon"]),
                                       msg["session"], msg["settings"])
                    except (ProtocolError, KeyError) as exc:
                        log.warning("bad welcome from learner: %s", exc)
            log.warning("no answer from the learner at %s; retrying in %.0f s", self.address, delay)
            end = time.monotonic() + delay
            while time.monotonic() < end:
                self._check()
                time.sleep(0.1)
            delay = min(delay * 2, 10.0)

    # ------------------------------------------------------------------ weights
    def poll_weights(self, model: torch.nn.Module, timeout_ms: int = 0) -> bool:
        """Adopt the newest weights waiting on SUB; True when the version changed."""
        assert self.sub is not None and self.welcome is not None
        newest = None
        while self.sub.poll(timeout_ms):
            newest = self.sub.recv()
            timeout_ms = 0
        if newest is None:
            return False
        try:
            msg = protocol.decode(newest, max_bytes=self.max_bytes)
            if msg.get("session") != self.welcome.session:
                self._rejoin()
                return False
            if msg.get("version", -1) <= self.version:
                self.weights_seen_at = time.monotonic()
                return False
            state = protocol.validate_weights(msg, self.expected, self.spec_hash)
        except ProtocolError as exc:
            log.warning("dropped bad weights message: %s", exc)
            return False
        load_numpy_state(model, state)
        self.version = msg["version"]
        self.weights_seen_at = time.monotonic()
        return True

    def _rejoin(self) -> None:
        """The learner restarted (new session): hello again, keeping our id when we can."""
        assert self.welcome is not None
        old = self.welcome
        log.info("learner restarted (new session); joining it again")
        new = self.hello(previous_id=old.actor_id)
        if new.settings != old.settings:
            raise LearnerChanged("learner now runs other settings; restart this actor")
        self.welcome = new
        self.version = -1
        if self.collector is not None:
            self.collector.actor_id = new.actor_id
        log.info("rejoined as actor %d", new.actor_id)

    def wait_for_weights(self, model: torch.nn.Module, newer_than: int) -> None:
        warned = time.monotonic()
        while self.version <= newer_than:
            self._check()
            self.poll_weights(model, timeout_ms=200)
            if time.monotonic() - warned > 10:
                log.warning("waiting for weights newer than version %d from %s", newer_than, self.address)
                warned = time.monotonic()

    def send(self, buf: bytes) -> None:
        """PUSH with backpressure: blocks (politely) while the learner's queue is full."""
        assert self.push is not None
        warned = time.monotonic()
        while not self.push.poll(200, zmq.POLLOUT):
            self._check()
            if time.monotonic() - warned > 10:
                log.warning("learner is not taking rollouts (busy or gone); holding back")
                warned = time.monotonic()
        self.push.send(buf, copy=False)
        self.sent += 1

    # ------------------------------------------------------------------ main loop
    def run(self) -> int:
        self.collector: RolloutCollector | None = None
        self.welcome = self.hello()
        s = self.welcome.settings
        log.info("joined %s as actor %d (seed %d, env %s, mode %s)", self.address,
                 self.welcome.actor_id, self.welcome.seed, s["env"], s["mode"])
        torch.set_num_threads(1)
        torch.manual_seed(self.welcome.seed)
        env = make_env(s["env"], seed=self.welcome.seed, **s["env_kwargs"])
        model = build_model(s["model"]).eval()
        self.expected = expected_params(model)
        self.spec_hash = spec_hash(s["model"])
        self.max_bytes = int(s["max_message_bytes"])
        self.push = self._socket(zmq.PUSH, transport.ROLLOUTS, self.max_bytes,
                                 transport.rollout_tcp_buffer(int(s["rollout_bytes"])))
        self.sub = self._socket(zmq.SUB, transport.WEIGHTS, self.max_bytes)
        self.collector = RolloutCollector(
            env, actor_id=self.welcome.actor_id, seed=self.welcome.seed,
            unroll_length=s["unroll_length"], frame_stack=s["model"]["frame_stack"],
            frame_skip=s["env_kwargs"]["frame_skip"], epsilon=self.welcome.epsilon,
        )
        self.collector.on_first_episode = self._log_first_episode
        log.info("waiting for the first weights")
        self.wait_for_weights(model, -1)
        log.info("got weights version %d; acting", self.version)
        sync = s["mode"] == "sync"
        last_report, steps_at_report = time.monotonic(), 0
        steps = 0
        send_time = 0.0
        try:
            while True:
                self._check()
                self.poll_weights(model)
                rollout = self.collector.collect(model, self.version)
                t0 = time.perf_counter()
                self.send(protocol.encode_rollout(rollout))
                send_time += time.perf_counter() - t0
                steps += rollout.steps
                if sync:
                    self.wait_for_weights(model, rollout.policy_version)
                if time.monotonic() - self.weights_seen_at > 3 * s["publish_interval"] + 5:
                    log.warning("no weights from the learner for %.0f s; is it up?",
                                time.monotonic() - self.weights_seen_at)
                    self.weights_seen_at = time.monotonic()
                now = time.monotonic()
                if now - last_report >= self.report_interval:
                    tm = self.collector.times
                    n = max(tm.steps, 1)
                    log.info("%d steps, %.0f steps/s, version %d | per step: env %.0f us, "
                             "infer %.0f us, other %.0f us, encode+send %.0f us",
                             steps, (steps - steps_at_report) / (now - last_report), self.version,
                             1e6 * tm.emulate / n, 1e6 * tm.infer / n, 1e6 * tm.other / n,
                             1e6 * send_time / n)
                    tm.reset()
                    send_time = 0.0
                    last_report, steps_at_report = now, steps
        finally:
            env.close()

    def _log_first_episode(self, actions: list[int]) -> None:
        digest = hashlib.sha1(np.asarray(actions, dtype=np.int32).tobytes()).hexdigest()[:12]
        log.info("first episode: %d steps, action digest %s", len(actions), digest)

    def close(self) -> None:
        for sock in (self.control, self.push, self.sub):
            if sock is not None:
                sock.close(0)
        self.ctx.term()


def install_signal_handlers(client: ActorClient) -> None:
    def handler(signum: int, frame: Any) -> None:
        client.stopping = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def run(learner: str, keys: transport.CurveKeys | None = None) -> int:
    client = ActorClient(learner, keys=keys)
    install_signal_handlers(client)
    try:
        client.run()
    except Stop:
        log.info("stopping")
        return 0
    except EnvError as exc:
        log.error("%s", exc)
        return 2
    except LearnerChanged as exc:
        log.error("%s", exc)
        return 3
    finally:
        client.close()
    return 0
