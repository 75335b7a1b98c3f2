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


HEARTBEAT_INTERVAL = 2.0  # seconds; the learner counts an actor gone after --actor-timeout (6 s)


class ActorClient:
    """Three sockets to the learner: control (DEALER: hello, heartbeats), rollouts (PUSH) and
    weights (SUB). ZeroMQ reconnects each by itself; `LinkWatch` says so in the log.

    When a link drops the actor holds its rollouts and heartbeats (`suspect`) until weights
    arrive again: the same session means the same learner (a network blip) and it carries on;
    a new session means the learner restarted, and the actor joins it again (`_rejoin`).
    """

    def __init__(self, learner: str, *, keys: transport.CurveKeys | None = None,
                 hello_timeout: float = 3.0, report_interval: float = 30.0,
                 heartbeat_interval: float = HEARTBEAT_INTERVAL):
        self.host, self.port = transport.parse_address(learner)
        self.address = learner
        self.keys = keys
        self.hello_timeout = hello_timeout
        self.report_interval = report_interval
        self.heartbeat_interval = heartbeat_interval
        self.ctx = zmq.Context()
        self.stopping = False
        self.control: zmq.Socket | None = None
        self.push: zmq.Socket | None = None
        self.sub: zmq.Socket | None = None
        self.watches: dict[str, transport.LinkWatch] = {}
        self.welcome: Welcome | None = None
        self.collector: RolloutCollector | None = None
        self.model: torch.nn.Module | None = None
        self.version = -1
        self.weights_seen_at = time.monotonic()
        self.next_heartbeat = 0.0
        self.suspect = False  # a link dropped: hold data until weights say which learner is there
        self.joining = False  # in hello(): no heartbeats on a socket the learner has not welcomed
        self.sent = 0
        self.dropped = 0  # rollouts made for a learner that restarted before they could be sent

    # ------------------------------------------------------------------ plumbing
    def _check(self) -> None:
        if self.stopping:
            raise Stop

    def _socket(self, kind: int, offset: int, max_bytes: int, tcp_buffer: int | None = None) -> zmq.Socket:
        sock = transport.make_socket(self.ctx, kind, max_bytes=max_bytes, keys=self.keys, tcp_buffer=tcp_buffer)
        sock.connect(transport.endpoint(self.host, self.port, offset))
        return sock

    def _replace(self, role: str, old: zmq.Socket | None, kind: int, offset: int, max_bytes: int,
                 tcp_buffer: int | None = None) -> zmq.Socket:
        """A fresh socket for `role` (closing the old one and its watch)."""
        watch = self.watches.pop(role, None)
        if watch is not None:
            watch.close()
        if old is not None:
            old.close(0)
        sock = self._socket(kind, offset, max_bytes, tcp_buffer)
        self.watches[role] = transport.LinkWatch(sock, role, log)
        return sock

    def _tick(self) -> None:
        """Called often from every loop: stop on a signal, watch the links, send heartbeats."""
        self._check()
        for role, watch in list(self.watches.items()):
            events = watch.poll()
            if "down" in events and self.welcome is not None and not self.suspect:
                self.suspect = True
                self._drain_weights()
            if role == "control" and "back" in events and not self.joining and self.sub is not None:
                self._fresh_data_links()
        now = time.monotonic()
        if self.welcome is not None and self.control is not None and not self.suspect \
                and not self.joining and now >= self.next_heartbeat:
            self.next_heartbeat = now + self.heartbeat_interval
            try:
                self.control.send(protocol.encode("heartbeat", actor_id=self.welcome.actor_id,
                                                  session=self.welcome.session), zmq.NOBLOCK)
            except zmq.Again:
                pass  # no live connection to the learner right now; the link watch says so

    def _fresh_data_links(self) -> None:
        """The control link came back after a loss (say a network partition longer than the
        control heartbeat timeout). The rollouts and weights connections went through the same
        outage, but without heartbeats TCP may still be backing off its retransmissions for many
        seconds: replace them with fresh connections over the network that now works. What
        they held in flight is dropped; weights then tell which learner is there."""
        log.info("control link is back: opening fresh rollouts and weights connections")
        self.push = self._replace("rollouts", self.push, zmq.PUSH, transport.ROLLOUTS, self.max_bytes,
                                  self.rollout_buffer)
        self.sub = self._replace("weights", self.sub, zmq.SUB, transport.WEIGHTS, self.max_bytes)
        self.suspect = True

    def _drain_weights(self) -> None:
        """Forget weights that arrived before a link dropped: they say nothing about who is there now."""
        if self.sub is None:
            return
        while self.sub.poll(0):
            self.sub.recv()

    def hello(self, previous_id: int | None = None) -> Welcome:
        """Ask the learner for an id, a seed and the settings; retry with backoff until it answers."""
        self.joining = True
        try:
            return self._hello(previous_id)
        finally:
            self.joining = False

    def _hello(self, previous_id: int | None) -> Welcome:
        delay = 1.0
        while True:
            self._check()
            self.control = self._replace("control", self.control, zmq.DEALER, transport.CONTROL, 1 << 20)
            sent = False
            deadline = time.monotonic() + self.hello_timeout
            while time.monotonic() < deadline:
                self._tick()
                if not sent:
                    # IMMEDIATE: the socket is writable once a connection to the learner is up
                    if self.control.poll(200, zmq.POLLOUT):
                        self.control.send(protocol.encode("hello", host=socket.gethostname(), pid=os.getpid(),
                                                          previous_id=previous_id), zmq.NOBLOCK)
                        sent = True
                        deadline = time.monotonic() + self.hello_timeout
                    continue
                if self.control.poll(200):
                    try:
                        msg = protocol.decode(self.control.recv())
                        if msg["kind"] != "welcome":
                            raise ProtocolError(f"expected welcome, got {msg['kind']}")
                        return Welcome(msg["actor_id"], msg["seed"], float(msg["epsilon"]),
                                       msg["session"], msg["settings"])
                    except (ProtocolError, KeyError, TypeError, ValueError) as exc:
                        log.warning("bad welcome from learner: %s", exc)
            what = "no answer from" if sent else "cannot reach"
            log.warning("%s the learner at %s; retrying in %.0f s", what, self.address, delay)
            end = time.monotonic() + delay
            while time.monotonic() < end:
                self._tick()
                time.sleep(0.1)
            delay = min(delay * 2, 10.0)

    # ------------------------------------------------------------------ weights
    def poll_weights(self, model: torch.nn.Module, timeout_ms: int = 0) -> bool:
        """Adopt the newest weights waiting on SUB; True when the version changed.

        Weights from another learner session mean the learner restarted: join it again first.
        """
        assert self.sub is not None and self.welcome is not None
        newest = None
        while self.sub.poll(timeout_ms):
            newest = self.sub.recv()
            timeout_ms = 0
        if newest is None:
            return False
        try:
            msg = protocol.decode(newest, max_bytes=self.max_bytes)
            if msg.get("kind") != "weights" or not isinstance(msg.get("session"), str):
                raise ProtocolError("not a weights message")
            if msg["session"] != self.welcome.session:
                self._rejoin()
                if msg["session"] != self.welcome.session:
                    return False  # yet another session; the next weights will do
            self.suspect = False  # weights from the learner we belong to: links are good again
            self.weights_seen_at = time.monotonic()
            if msg.get("version", -1) <= self.version:
                return False
            state = protocol.validate_weights(msg, self.expected, self.spec_hash)
        except ProtocolError as exc:
            log.warning("dropped bad weights message: %s", exc)
            return False
        load_numpy_state(model, state)
        self.version = msg["version"]
        return True

    def _rejoin(self) -> None:
        """The learner restarted (new session): hello again, keeping our id when we can."""
        assert self.welcome is not None
        old = self.welcome
        log.info("learner restarted (new session); joining it again as actor %d", old.actor_id)
        new = self.hello(previous_id=old.actor_id)
        if new.settings != old.settings:
            raise LearnerChanged("learner now runs other settings; restart this actor")
        self.welcome = new
        self.version = -1
        self.suspect = False
        self.next_heartbeat = 0.0
        if self.collector is not None:
            self.collector.actor_id = new.actor_id
        # a fresh PUSH: nothing made for the old learner reaches the new one
        self.push = self._replace("rollouts", self.push, zmq.PUSH, transport.ROLLOUTS, self.max_bytes,
                                  self.rollout_buffer)
        log.info("rejoined as actor %d", new.actor_id)

    def wait_for_weights(self, model: torch.nn.Module, newer_than: int) -> None:
        """Block (heartbeats going) until weights newer than `newer_than` arrive; after a rejoin
        of a restarted learner, whose versions restart from its checkpoint, any weights do."""
        assert self.welcome is not None
        session = self.welcome.session
        warned = since = time.monotonic()
        while True:
            if self.welcome.session != session:
                session, newer_than = self.welcome.session, -1
            if self.version > newer_than:
                return
            self._tick()
            self.poll_weights(model, timeout_ms=200)
            if time.monotonic() - warned > 10:
                log.warning("waiting for weights newer than version %d from %s for %.0f s",
                            newer_than, self.address, time.monotonic() - since)
                warned = time.monotonic()

    def send(self, buf: bytes) -> bool:
        """PUSH with backpressure: waits (politely) while the learner's queue is full or a link
        is down. False when the learner restarted meanwhile: the rollout was for the old one."""
        assert self.push is not None and self.welcome is not None and self.model is not None
        session = self.welcome.session
        warned = since = time.monotonic()
        while True:
            self._tick()
            if not self.suspect and self.push.poll(100, zmq.POLLOUT):
                try:
                    self.push.send(buf, zmq.NOBLOCK, copy=False)
                    self.sent += 1
                    return True
                except zmq.Again:  # the connection went between poll and send
                    pass
            self.poll_weights(self.model, timeout_ms=100)
            if self.welcome.session != session:
                self.dropped += 1
                return False
            if time.monotonic() - warned > 10:
                why = "a link is down" if self.suspect else "busy or gone"
                log.warning("learner is not taking rollouts for %.0f s (%s); holding back",
                            time.monotonic() - since, why)
                warned = time.monotonic()

    # ------------------------------------------------------------------ main loop
    def run(self) -> int:
        self.welcome = self.hello()
        s = self.welcome.settings
        log.info("joined %s as actor %d (seed %d, env %s, mode %s)", self.address,
                 self.welcome.actor_id, self.welcome.seed, s["env"], s["mode"])
        torch.set_num_threads(1)
        torch.manual_seed(self.welcome.seed)
        env = make_env(s["env"], seed=self.welcome.seed, **s["env_kwargs"])
        model = self.model = build_model(s["model"]).eval()
        self.expected = expected_params(model)
        self.spec_hash = spec_hash(s["model"])
        self.max_bytes = int(s["max_message_bytes"])
        self.rollout_buffer = transport.rollout_tcp_buffer(int(s["rollout_bytes"]))
        self.push = self._replace("rollouts", None, zmq.PUSH, transport.ROLLOUTS, self.max_bytes,
                                  self.rollout_buffer)
        self.sub = self._replace("weights", None, zmq.SUB, transport.WEIGHTS, self.max_bytes)
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
                self._tick()
                self.poll_weights(model)
                if self.version < 0:  # just rejoined a restarted learner
                    self.wait_for_weights(model, -1)
                rollout = self.collector.collect(model, self.version)
                t0 = time.perf_counter()
                if not self.send(protocol.encode_rollout(rollout)):
                    continue
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
        for watch in self.watches.values():
            watch.close()
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
