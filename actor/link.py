"""An actor's connection to its learner: `LearnerLink`, an explicit state machine.

    JOINING --welcome--> WAITING --weights--> RUNNING
       ^                    |  ^                 |
       |                    |  +--- (sync) ------+  a rollout sent; wait for the next version
       |                link dropped          link dropped
       |                    v                    v
       +-- new session -- LOST <-----------------+
       +-- "rejoin" note from the learner (it forgot us), from any state

LOST holds rollouts and heartbeats back until every link is up again and weights arrive: the
same session means the same learner (a network blip) and the link goes back to where it was;
another session means the learner restarted, and the link joins it again with its old id (JOINING). The pieces
(join, heartbeat, weights, send) work for any caller that has an actor id to speak for.

A link speaks for one actor id or more (`Membership`): a one-process actor has one, an actor
host one per emulator. Each member has a control connection of its own (the learner gives one
welcome per connection) with its own welcome, token and heartbeats; all share the link's one
rollouts (PUSH) and one weights (SUB) connection.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import zmq

from common import protocol, transport
from common.model import expected_params, load_numpy_state, spec_hash
from common.protocol import ProtocolError
from common.runspec import RunSpec

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
    settings: RunSpec

    @classmethod
    def from_message(cls, msg: dict[str, Any]) -> Welcome:
        if msg["kind"] != "welcome":
            raise ProtocolError(f"expected welcome, got {msg['kind']}")
        return cls(msg["actor_id"], msg["seed"], float(msg["epsilon"]), msg["session"], msg["token"],
                   RunSpec.from_wire(msg["settings"]))


HEARTBEAT_INTERVAL = 2.0  # seconds; the learner counts an actor gone after --actor-timeout (6 s)


class Membership:
    """One actor id a link speaks for: its control connection (DEALER: hello, welcome,
    heartbeats, rejoin notes) and its welcome. `alive` says whether to send its heartbeats (an
    actor host clears it while the emulator behind this id does not answer, so that the learner
    stops counting it); `on_rejoin` callbacks get its new welcome after it joined again."""

    def __init__(self, link: LearnerLink, index: int):
        self.link = link
        self.index = index
        self.role = "control" if index == 0 else f"control {index}"
        self.control: zmq.Socket | None = None
        self.welcome: Welcome | None = None
        self.alive = True
        self.joining = False  # no heartbeats on a connection the learner has not welcomed
        self.next_heartbeat = 0.0
        self.on_rejoin: list[Callable[[Welcome], None]] = []

    def join(self, previous_id: int | None = None) -> Welcome:
        """Ask the learner for an id, a seed, a token and the settings, on a fresh connection
        for each hello; retry with backoff until it answers."""
        self.joining = True
        try:
            self.welcome = self._join(previous_id)
            self.next_heartbeat = 0.0
            return self.welcome
        finally:
            self.joining = False

    def _join(self, previous_id: int | None) -> Welcome:
        link = self.link
        delay = 1.0
        while True:
            link._check()
            self.control = link._replace(self.role, self.control, zmq.DEALER, transport.CONTROL, 1 << 20)
            sent = False
            deadline = time.monotonic() + link.hello_timeout
            while time.monotonic() < deadline:
                link.tick()
                if not sent:
                    # IMMEDIATE: the socket is writable once a connection to the learner is up
                    if self.control.poll(200, zmq.POLLOUT):
                        self.control.send(protocol.encode("hello", host=socket.gethostname(), pid=os.getpid(),
                                                          previous_id=previous_id), zmq.NOBLOCK)
                        sent = True
                        deadline = time.monotonic() + link.hello_timeout
                    continue
                if self.control.poll(200):
                    try:
                        return Welcome.from_message(protocol.decode(self.control.recv()))
                    except (ProtocolError, KeyError, TypeError, ValueError) as exc:
                        log.warning("bad welcome from learner: %s", exc)
            what = "no answer from" if sent else "cannot reach"
            log.warning("%s the learner at %s; retrying in %.0f s", what, link.address, delay)
            end = time.monotonic() + delay
            while time.monotonic() < end:
                link.tick()
                time.sleep(0.1)
            delay = min(delay * 2, 10.0)

    def heartbeat(self, now: float) -> None:
        if self.welcome is None or self.joining or not self.alive or now < self.next_heartbeat:
            return
        self.next_heartbeat = now + self.link.heartbeat_interval
        try:
            self.control.send(protocol.encode("heartbeat", actor_id=self.welcome.actor_id,
                                              session=self.welcome.session, token=self.welcome.token),
                              zmq.NOBLOCK)
        except zmq.Again:
            pass  # no live connection to the learner right now; the link watch says so

    def rejoin_note(self) -> str | None:
        """The reason of a `rejoin` note waiting on the control connection (the learner no
        longer knows this id: it forgot a silent actor); None when there is none."""
        if self.control is None or self.joining or self.welcome is None:
            return None
        while self.control.poll(0):
            try:
                msg = protocol.decode(self.control.recv(), max_bytes=1 << 16)
            except ProtocolError as exc:
                log.warning("bad control message from the learner: %s", exc)
                continue
            if msg["kind"] == "rejoin":
                return str(msg.get("reason", "?"))
        return None

    def close(self) -> None:
        if self.control is not None:
            self.control.close(0)
            self.control = None



class LearnerLink:
    """Sockets to the learner: a control connection per member (DEALER: hello, heartbeats,
    rejoin notes), rollouts (PUSH) and weights (SUB). ZeroMQ reconnects each by itself;
    `LinkWatch` says so in the log; the state machine above decides what the actor may do
    meanwhile."""

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
        self.members = [Membership(self, 0)]
        self.push: zmq.Socket | None = None
        self.sub: zmq.Socket | None = None
        self.watches: dict[str, transport.LinkWatch] = {}
        self.version = -1
        self.weights_seen_at = time.monotonic()
        self.max_bytes = 64 << 20
        self.rollout_buffer: int | None = None
        self.sent = 0
        self.dropped = 0  # rollouts made for a learner that restarted before they could be sent
        self.hooks: Any = None  # a game family's actor hooks: take its own kinds of messages

    @property
    def welcome(self) -> Welcome | None:
        """The first member's welcome: the settings and session every member shares."""
        return self.members[0].welcome

    @property
    def on_rejoin(self) -> list[Callable[[Welcome], None]]:
        """The first member's rejoin callbacks (a one-process actor's only member)."""
        return self.members[0].on_rejoin

    def add_member(self) -> Membership:
        """Another actor id to speak for (an actor host's emulator); join it with its `join()`."""
        m = Membership(self, len(self.members))
        self.members.append(m)
        return m

    def running(self) -> bool:
        """WAITING -> RUNNING once weights arrived (for callers with a loop of their own, such
        as an actor host); True while RUNNING."""
        if self.state is State.WAITING and self.version >= 0:
            self._enter(State.RUNNING, f"weights version {self.version}")
        return self.state is State.RUNNING

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
        # the watch before the connect: a handshake it missed would hide this link's later loss
        self.watches[role] = transport.LinkWatch(sock, role, log)
        sock.connect(transport.endpoint(self.host, self.port, offset))
        return sock

    def open_data_links(self, model: torch.nn.Module | None = None) -> None:
        """Rollouts and weights sockets, sized by the welcome's settings; `model` (first time)
        is what weights must fit."""
        s = self.welcome.settings
        if model is not None:
            self.expected = expected_params(model)
            self.spec_hash = spec_hash(s.model.as_dict())
        self.max_bytes = s.max_message_bytes
        self.rollout_buffer = transport.rollout_tcp_buffer(s.rollout_bytes)
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
            if role.startswith("control") and "back" in events and self.state is not State.JOINING \
                    and not self._joining() and self.sub is not None:
                self._fresh_data_links()
        if self.state is State.JOINING:
            return
        if not self._joining():  # notes wait while a member joins (joins do not nest)
            for m in self.members:
                why = m.rejoin_note()
                if why is not None:
                    self._rejoin(f"the learner no longer knows us (actor {m.welcome.actor_id}): {why}", [m])
                    return
        if self.state in (State.WAITING, State.RUNNING):  # a joining member sends none
            now = time.monotonic()
            for m in self.members:
                m.heartbeat(now)

    def _joining(self) -> bool:
        return any(m.joining for m in self.members)

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
        """JOINING -> WAITING: the first member joins (see `Membership.join`)."""
        self._enter(State.JOINING, "hello")
        welcome = self.members[0].join(previous_id)
        self.version = -1
        self._enter(State.WAITING, "welcome")
        return welcome

    def _rejoin(self, why: str, members: list[Membership] | None = None) -> None:
        """Join again, keeping ids when we can: the learner restarted (every member) or forgot
        some members (those)."""
        members = self.members if members is None else members
        everyone = len(members) == len(self.members)
        if everyone:
            self._enter(State.JOINING, "rejoin")
        log.info("%s; joining it again as actor%s %s", why, "s" if len(members) > 1 else "",
                 ", ".join(str(m.welcome.actor_id) for m in members if m.welcome is not None))
        for m in members:
            old = m.welcome
            new = m.join(previous_id=None if old is None else old.actor_id)
            if old is not None and new.settings != old.settings:
                raise LearnerChanged("learner now runs other settings; restart this actor")
        if everyone:
            self.version = -1
            self._enter(State.WAITING, "welcome")
        # a fresh PUSH: nothing made for the old learner (or under an old token) reaches it
        self.push = self._replace("rollouts", self.push, zmq.PUSH, transport.ROLLOUTS, self.max_bytes,
                                  self.rollout_buffer)
        for m in members:
            log.info("rejoined as actor %d", m.welcome.actor_id)
            for callback in m.on_rejoin:
                callback(m.welcome)

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
            if self.hooks is not None and protocol.peek_kind(buf) in self.hooks.kinds:
                self._family_message(buf)
            else:
                newest = buf
        if newest is None:
            return False
        head = protocol.peek_weights(newest)
        if (head is not None and self.state is not State.LOST and head[1] == self.welcome.session
                and head[0] <= self.version):
            self.weights_seen_at = time.monotonic()  # a republish of what we hold: no decode
            return False
        try:
            msg = protocol.decode(newest, max_bytes=self.max_bytes)
            if msg.get("kind") != "weights" or not isinstance(msg.get("session"), str):
                raise ProtocolError("not a weights message")
            if msg["session"] != self.welcome.session:
                self._rejoin("learner restarted (new session)")
                if msg["session"] != self.welcome.session:
                    return False  # yet another session; the next weights will do
            # not while a link is still down: a dead learner's last weights can arrive after that
            if self.state is State.LOST and all(w.down_since is None for w in self.watches.values()):
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

    def _family_message(self, buf: bytes) -> None:
        """A message of the game family's own kinds, for its hooks (those of another learner
        session are left alone: its weights make us rejoin)."""
        try:
            msg = protocol.decode(buf, max_bytes=self.max_bytes)
            if msg.get("session") != self.welcome.session:
                return
            self.hooks.on_message(msg, self.expected, self.spec_hash)
        except ProtocolError as exc:
            log.warning("dropped bad %s message: %s", protocol.peek_kind(buf), exc)

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

    def try_send(self, buf: bytes) -> bool:
        """PUSH without waiting: True when the learner's queue took it now (never while LOST)."""
        if self.state is State.LOST or self.push is None or not self.push.poll(0, zmq.POLLOUT):
            return False
        try:
            self.push.send(buf, zmq.NOBLOCK, copy=False)
        except zmq.Again:  # the connection went between poll and send
            return False
        self.sent += 1
        return True

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
        for m in self.members:
            m.close()
        for sock in (self.push, self.sub):
            if sock is not None:
                sock.close(0)
        self.ctx.term()
