"""The actor process: join the learner, then collect, push rollouts, adopt new weights.

`LearnerLink` is one actor's connection to a learner, an explicit state machine:

    JOINING --welcome--> WAITING --weights--> RUNNING
       ^                    |  ^                 |
       |                    |  +--- (sync) ------+  a rollout sent; wait for the next version
       |                link dropped          link dropped
       |                    v                    v
       +-- new session -- LOST <-----------------+
       +-- "rejoin" note from the learner (it forgot us), from any state

LOST holds rollouts and heartbeats back until weights arrive again: the same session means the
same learner (a network blip) and the link goes back to where it was; another session means
the learner restarted, and the link joins it again with its old id (JOINING). The pieces
(join, heartbeat, weights, send) work for any caller that has an actor id to speak for.
"""

from __future__ import annotations

import enum
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

from actor.opponents import OpponentPool
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


class State(enum.Enum):
    JOINING = "joining"
    WAITING = "waiting for weights"
    RUNNING = "running"
    LOST = "lost"


@dataclass
class Welcome:
    actor_id: int
    seed: int
    epsilon: float
    session: str
    token: str
    settings: dict[str, Any]

    @classmethod
    def from_message(cls, msg: dict[str, Any]) -> Welcome:
        if msg["kind"] != "welcome":
            raise ProtocolError(f"expected welcome, got {msg['kind']}")
        return cls(msg["actor_id"], msg["seed"], float(msg["epsilon"]), msg["session"], msg["token"],
                   msg["settings"])


HEARTBEAT_INTERVAL = 2.0  # seconds; the learner counts an actor gone after --actor-timeout (6 s)


class LearnerLink:
    """Three sockets to the learner: control (DEALER: hello, heartbeats, rejoin notes),
    rollouts (PUSH) and weights (SUB). ZeroMQ reconnects each by itself; `LinkWatch` says so
    in the log; the state machine above decides what the actor may do meanwhile."""

    def __init__(self, learner: str, *, keys: transport.CurveKeys | None = None,
                 hello_timeout: float = 3.0, heartbeat_interval: float = HEARTBEAT_INTERVAL):
        self.host, self.port = transport.parse_address(learner)
        self.address = learner
        self.keys = keys
        self.hello_timeout = hello_timeout
        self.heartbeat_interval = heartbeat_interval
        self.ctx = zmq.Context()
        self.stopping = False
        self.state = State.JOINING
        self.resume_state = State.WAITING  # where LOST goes back to
        self.control: zmq.Socket | None = None
        self.push: zmq.Socket | None = None
        self.sub: zmq.Socket | None = None
        self.watches: dict[str, transport.LinkWatch] = {}
        self.welcome: Welcome | None = None
        self.version = -1
        self.weights_seen_at = time.monotonic()
        self.next_heartbeat = 0.0
        self.max_bytes = 64 << 20
        self.rollout_buffer: int | None = None
        self.sent = 0
        self.dropped = 0  # rollouts made for a learner that restarted before they could be sent
        self.on_rejoin: list = []  # callbacks(Welcome) after a rejoin
        self.pool: OpponentPool | None = None  # two-player games: takes league and snapshot messages

    # ------------------------------------------------------------------ plumbing
    def _enter(self, state: State, why: str) -> None:
        if state is not self.state:
            log.debug("link %s -> %s (%s)", self.state.value, state.value, why)
            if state is State.LOST:
                self.resume_state = self.state
            self.state = state

    def _check(self) -> None:
        if self.stopping:
            raise Stop

    def _replace(self, role: str, old: zmq.Socket | None, kind: int, offset: int, max_bytes: int,
                 tcp_buffer: int | None = None) -> zmq.Socket:
        """A fresh socket for `role` (closing the old one and its watch)."""
        watch = self.watches.pop(role, None)
        if watch is not None:
            watch.close()
        if old is not None:
            old.close(0)
        sock = transport.make_socket(self.ctx, kind, max_bytes=max_bytes, keys=self.keys, tcp_buffer=tcp_buffer)
        sock.connect(transport.endpoint(self.host, self.port, offset))
        self.watches[role] = transport.LinkWatch(sock, role, log)
        return sock

    def open_data_links(self, model: torch.nn.Module | None = None) -> None:
        """Rollouts and weights sockets, sized by the welcome's settings; `model` (first time)
        is what weights must fit."""
        s = self.welcome.settings
        if model is not None:
            self.expected = expected_params(model)
            self.spec_hash = spec_hash(s["model"])
        self.max_bytes = int(s["max_message_bytes"])
        self.rollout_buffer = transport.rollout_tcp_buffer(int(s["rollout_bytes"]))
        self.push = self._replace("rollouts", self.push, zmq.PUSH, transport.ROLLOUTS, self.max_bytes,
                                  self.rollout_buffer)
        self.sub = self._replace("weights", self.sub, zmq.SUB, transport.WEIGHTS, self.max_bytes)

    def tick(self) -> None:
        """Called often from every loop: stop on a signal, watch the links, read control notes,
        send heartbeats."""
        self._check()
        for role, watch in list(self.watches.items()):
            events = watch.poll()
            if "down" in events and self.state in (State.WAITING, State.RUNNING):
                self._enter(State.LOST, f"{role} link down")
                self._drain_weights()
            if role == "control" and "back" in events and self.state is not State.JOINING \
                    and self.sub is not None:
                self._fresh_data_links()
        self._read_control()
        now = time.monotonic()
        if self.state in (State.WAITING, State.RUNNING) and now >= self.next_heartbeat:
            self.next_heartbeat = now + self.heartbeat_interval
            try:
                self.control.send(protocol.encode("heartbeat", actor_id=self.welcome.actor_id,
                                                  session=self.welcome.session, token=self.welcome.token),
                                  zmq.NOBLOCK)
            except zmq.Again:
                pass  # no live connection to the learner right now; the link watch says so

    def _read_control(self) -> None:
        """A `rejoin` note: the learner no longer knows this actor (it forgot a silent one)."""
        if self.control is None or self.state is State.JOINING:
            return
        while self.control.poll(0):
            try:
                msg = protocol.decode(self.control.recv(), max_bytes=1 << 16)
            except ProtocolError as exc:
                log.warning("bad control message from the learner: %s", exc)
                continue
            if msg["kind"] == "rejoin":
                self._rejoin(f"the learner no longer knows us: {msg.get('reason', '?')}")
                return

    def _fresh_data_links(self) -> None:
        """The control link came back after a loss (say a network partition longer than the
        control heartbeat timeout). The rollouts and weights connections went through the same
        outage, but without heartbeats TCP may still be backing off its retransmissions for many
        seconds: replace them with fresh connections over the network that now works. What
        they held in flight is dropped; weights then tell which learner is there."""
        log.info("control link is back: opening fresh rollouts and weights connections")
        self.open_data_links()
        if self.state is not State.LOST:
            self._enter(State.LOST, "fresh data links")

    def _drain_weights(self) -> None:
        """Forget weights that arrived before a link dropped: they say nothing about who is there now."""
        if self.sub is None:
            return
        while self.sub.poll(0):
            self.sub.recv()

    # ------------------------------------------------------------------ joining
    def join(self, previous_id: int | None = None) -> Welcome:
        """JOINING -> WAITING: ask the learner for an id, a seed, a token and the settings;
        retry with backoff until it answers."""
        self._enter(State.JOINING, "hello")
        delay = 1.0
        while True:
            self._check()
            self.control = self._replace("control", self.control, zmq.DEALER, transport.CONTROL, 1 << 20)
            sent = False
            deadline = time.monotonic() + self.hello_timeout
            while time.monotonic() < deadline:
                self.tick()
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
                        self.welcome = Welcome.from_message(protocol.decode(self.control.recv()))
                    except (ProtocolError, KeyError, TypeError, ValueError) as exc:
                        log.warning("bad welcome from learner: %s", exc)
                        continue
                    self.version = -1
                    self.next_heartbeat = 0.0
                    self._enter(State.WAITING, "welcome")
                    return self.welcome
            what = "no answer from" if sent else "cannot reach"
            log.warning("%s the learner at %s; retrying in %.0f s", what, self.address, delay)
            end = time.monotonic() + delay
            while time.monotonic() < end:
                self.tick()
                time.sleep(0.1)
            delay = min(delay * 2, 10.0)

    def _rejoin(self, why: str) -> None:
        """Join again, keeping our id when we can: the learner restarted or forgot us."""
        old = self.welcome
        log.info("%s; joining it again as actor %d", why, old.actor_id)
        new = self.join(previous_id=old.actor_id)
        if new.settings != old.settings:
            raise LearnerChanged("learner now runs other settings; restart this actor")
        # a fresh PUSH: nothing made for the old learner (or under the old token) reaches it
        self.push = self._replace("rollouts", self.push, zmq.PUSH, transport.ROLLOUTS, self.max_bytes,
                                  self.rollout_buffer)
        log.info("rejoined as actor %d", new.actor_id)
        for callback in self.on_rejoin:
            callback(new)

    # ------------------------------------------------------------------ weights
    def poll_weights(self, model: torch.nn.Module, timeout_ms: int = 0) -> bool:
        """Adopt the newest weights waiting on SUB; True when the version changed.

        Weights of our session end LOST; weights of another session mean the learner
        restarted: join it again first.
        """
        newest = None
        while self.sub.poll(timeout_ms):
            buf = self.sub.recv()
            timeout_ms = 0
            if self.pool is not None and protocol.peek_kind(buf) in ("league", "snapshot"):
                self._league_message(buf)
            else:
                newest = buf
        if newest is None:
            return False
        try:
            msg = protocol.decode(newest, max_bytes=self.max_bytes)
            if msg.get("kind") != "weights" or not isinstance(msg.get("session"), str):
                raise ProtocolError("not a weights message")
            if msg["session"] != self.welcome.session:
                self._rejoin("learner restarted (new session)")
                if msg["session"] != self.welcome.session:
                    return False  # yet another session; the next weights will do
            if self.state is State.LOST:
                self._enter(self.resume_state, "weights from our learner")
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

    def _league_message(self, buf: bytes) -> None:
        """Two-player games: the league's opponent probabilities, or a snapshot's weights, for
        the pool (those of another learner session are left alone: its weights make us rejoin)."""
        try:
            msg = protocol.decode(buf, max_bytes=self.max_bytes)
            if msg.get("session") != self.welcome.session:
                return
            if msg["kind"] == "league":
                self.pool.set_league(protocol.validate_league(msg))
            elif self.pool.wants(msg.get("name")):
                self.pool.add_snapshot(*protocol.validate_snapshot(msg, self.expected, self.spec_hash))
        except ProtocolError as exc:
            log.warning("dropped bad league or snapshot message: %s", exc)

    def wait_for_weights(self, model: torch.nn.Module, newer_than: int, give_up_after: float | None = None) -> bool:
        """WAITING (heartbeats going) until weights newer than `newer_than` arrive: True, and
        RUNNING. After a rejoin any weights do (a restarted learner counts from its checkpoint).
        False when `give_up_after` seconds pass while the learner is there (its weights keep
        coming, none newer): the caller decides what to do (send another rollout)."""
        if self.state is State.LOST:
            self.resume_state = State.WAITING  # still LOST until weights say who is there
        else:
            self._enter(State.WAITING, f"wait for weights newer than {newer_than}")
        session = self.welcome.session
        warned = since = patience_from = time.monotonic()
        while True:
            if self.welcome.session != session:
                session, newer_than = self.welcome.session, -1
            if self.version > newer_than:
                self._enter(State.RUNNING, f"weights version {self.version}")
                return True
            self.tick()
            self.poll_weights(model, timeout_ms=200)
            now = time.monotonic()
            if self.state is State.LOST:
                patience_from = now  # the learner is not there: no reason to give up on it
            elif give_up_after is not None and now - patience_from > give_up_after:
                return False
            if now - warned > 10:
                log.warning("waiting for weights newer than version %d from %s for %.0f s",
                            newer_than, self.address, now - since)
                warned = now

    def send(self, buf: bytes, model: torch.nn.Module) -> bool:
        """PUSH with backpressure: waits (politely) while the learner's queue is full or the link
        is LOST. False when the learner restarted meanwhile: the rollout was for the old one."""
        session = self.welcome.session
        warned = since = time.monotonic()
        while True:
            self.tick()
            if self.state is not State.LOST and self.push.poll(100, zmq.POLLOUT):
                try:
                    self.push.send(buf, zmq.NOBLOCK, copy=False)
                    self.sent += 1
                    return True
                except zmq.Again:  # the connection went between poll and send
                    pass
            self.poll_weights(model, timeout_ms=100)
            if self.welcome.session != session:
                self.dropped += 1
                return False
            if time.monotonic() - warned > 10:
                why = "a link is down" if self.state is State.LOST else "busy or gone"
                log.warning("learner is not taking rollouts for %.0f s (%s); holding back",
                            time.monotonic() - since, why)
                warned = time.monotonic()

    def close(self) -> None:
        for watch in self.watches.values():
            watch.close()
        for sock in (self.control, self.push, self.sub):
            if sock is not None:
                sock.close(0)
        self.ctx.term()


class ActorClient:
    """One emulator, one policy copy and a LearnerLink: the actor's main loop."""

    def __init__(self, learner: str, *, keys: transport.CurveKeys | None = None,
                 report_interval: float = 30.0, **link_options: Any):
        self.link = LearnerLink(learner, keys=keys, **link_options)
        self.report_interval = report_interval
        self.collector: RolloutCollector | None = None

    def _adopt(self, welcome: Welcome) -> None:
        if self.collector is not None:
            self.collector.actor_id = welcome.actor_id
        if self.link.pool is not None:
            self.link.pool.forget_snapshots()  # a new learner session may reuse their names

    def run(self) -> int:
        link = self.link
        welcome = link.join()
        s = welcome.settings
        log.info("joined %s as actor %d (seed %d, env %s, mode %s)", link.address,
                 welcome.actor_id, welcome.seed, s["env"], s["mode"])
        torch.set_num_threads(1)
        torch.manual_seed(welcome.seed)
        env = make_env(s["env"], seed=welcome.seed, **s["env_kwargs"])
        model = build_model(s["model"]).eval()
        if s["two_player"]:
            link.pool = OpponentPool(model, s["model"], welcome.seed)
            env.unwrapped.pick_opponent = link.pool.pick
        link.open_data_links(model)
        link.on_rejoin.append(self._adopt)
        self.collector = RolloutCollector(
            env, actor_id=welcome.actor_id, seed=welcome.seed,
            unroll_length=s["unroll_length"], frame_stack=s["model"]["frame_stack"],
            frame_skip=s["env_kwargs"]["frame_skip"], epsilon=welcome.epsilon,
            max_abs_reward=float(s["max_abs_reward"]),
        )
        self.collector.on_first_episode = self._log_first_episode
        log.info("waiting for the first weights")
        link.wait_for_weights(model, -1)
        log.info("got weights version %d; acting", link.version)
        try:
            # sync: a round trains on what it has after sync_timeout; an actor whose rollout was
            # lost waits that long (and two republishes) for newer weights, then sends another
            patience = float(s["sync_timeout"]) + 2 * s["publish_interval"] if s["mode"] == "sync" else None
            self._loop(model, sync_patience=patience, publish_interval=s["publish_interval"])
        finally:
            env.close()
        return 0

    def _loop(self, model: torch.nn.Module, *, sync_patience: float | None, publish_interval: float) -> None:
        link, collector = self.link, self.collector
        last_report, steps_at_report = time.monotonic(), 0
        steps = 0
        send_time = 0.0
        while True:
            link.tick()
            link.poll_weights(model)
            if link.version < 0:  # just rejoined a restarted learner
                link.wait_for_weights(model, -1)
            rollout = collector.collect(model, link.version)
            t0 = time.perf_counter()
            if not link.send(protocol.encode_rollout(rollout, token=link.welcome.token), model):
                continue
            send_time += time.perf_counter() - t0
            steps += rollout.steps
            if sync_patience is not None and not link.wait_for_weights(model, rollout.policy_version,
                                                                       give_up_after=sync_patience):
                log.warning("no weights newer than version %d after %.0f s; sending another rollout "
                            "(the last one may have been lost)", rollout.policy_version, sync_patience)
            if time.monotonic() - link.weights_seen_at > 3 * publish_interval + 5:
                log.warning("no weights from the learner for %.0f s; is it up?",
                            time.monotonic() - link.weights_seen_at)
                link.weights_seen_at = time.monotonic()
            now = time.monotonic()
            if now - last_report >= self.report_interval:
                tm = collector.times
                n = max(tm.steps, 1)
                log.info("%d steps, %.0f steps/s, version %d | per step: env %.0f us, "
                         "infer %.0f us, other %.0f us, encode+send %.0f us",
                         steps, (steps - steps_at_report) / (now - last_report), link.version,
                         1e6 * tm.emulate / n, 1e6 * tm.infer / n, 1e6 * tm.other / n,
                         1e6 * send_time / n)
                tm.reset()
                send_time = 0.0
                last_report, steps_at_report = now, steps

    def _log_first_episode(self, actions: list[int]) -> None:
        digest = hashlib.sha1(np.asarray(actions, dtype=np.int32).tobytes()).hexdigest()[:12]
        log.info("first episode: %d steps, action digest %s", len(actions), digest)

    def close(self) -> None:
        self.link.close()


def install_signal_handlers(client: ActorClient) -> None:
    def handler(signum: int, frame: Any) -> None:
        client.link.stopping = True

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
