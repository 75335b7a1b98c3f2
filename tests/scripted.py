"""A client that speaks the wire protocol by hand, for hostile and fault tests.

It joins like an actor (hello -> welcome) and then sends exactly what a test tells it to:
well-formed rollouts with chosen values, heartbeats, forgeries. Real ZeroMQ sockets on
127.0.0.1, nothing mocked on the learner's side.
"""

from __future__ import annotations

from typing import Any

import msgpack
import zmq

from common import protocol, transport
from common.protocol import Rollout


class ScriptedActor:
    """Control (DEALER), rollouts (PUSH) and weights (SUB) sockets to a learner on 127.0.0.1."""

    def __init__(self, port: int, ctx: zmq.Context | None = None, keys: transport.CurveKeys | None = None):
        self.port = port
        self.keys = keys
        self.ctx = ctx or zmq.Context.instance()
        self.dealer = self._socket(zmq.DEALER, 0)
        self.push = self._socket(zmq.PUSH, 1)
        self.sub = self._socket(zmq.SUB, 2)
        self.welcome: dict[str, Any] = {}

    def _socket(self, kind: int, offset: int) -> zmq.Socket:
        s = self.ctx.socket(kind)
        s.linger = 0
        transport.apply_curve(s, self.keys, server=False)
        if kind == zmq.SUB:
            s.setsockopt(zmq.SUBSCRIBE, b"")
        s.connect(f"tcp://127.0.0.1:{self.port + offset}")
        return s

    @property
    def actor_id(self) -> int:
        return self.welcome["actor_id"]

    def join(self, previous_id: int | None = None, timeout_ms: int = 10_000) -> dict[str, Any]:
        self.dealer.send(protocol.encode("hello", host="scripted", pid=1, previous_id=previous_id))
        assert self.dealer.poll(timeout_ms), "no welcome"
        self.welcome = protocol.decode(self.dealer.recv())
        assert self.welcome["kind"] == "welcome", self.welcome
        return self.welcome

    def identity(self) -> dict[str, Any]:
        """The fields that bind a message to this actor (none before it joined; no token from a
        learner that hands out none, so that these tests can run against older code too)."""
        if not self.welcome:
            return {}
        return {"actor_id": self.actor_id, **({"token": self.welcome["token"]} if "token" in self.welcome else {})}

    def heartbeat(self, **overrides: Any) -> None:
        self.dealer.send(protocol.encode("heartbeat", **{**self.identity(), "session": self.welcome["session"],
                                                        **overrides}))

    def rollout_message(self, r: Rollout, **overrides: Any) -> bytes:
        """`r` as this actor would send it, with any field replaced (well-formed: valid msgpack)."""
        msg = msgpack.unpackb(protocol.encode_rollout(r), raw=False)
        msg.update(self.identity())
        msg.update(overrides)
        return msgpack.packb(msg, use_bin_type=True)

    def send(self, buf: bytes, timeout_ms: int = 10_000) -> None:
        assert self.push.poll(timeout_ms, zmq.POLLOUT), "the learner takes no rollouts"
        self.push.send(buf)

    def newest_weights(self, timeout_ms: int = 10_000) -> dict[str, Any]:
        """The newest weights message published (waits for one)."""
        assert self.sub.poll(timeout_ms), "no weights published"
        msg = None
        while self.sub.poll(0 if msg is not None else timeout_ms):
            msg = protocol.decode(self.sub.recv(), max_bytes=64 << 20)
        return msg

    def close(self) -> None:
        for s in (self.dealer, self.push, self.sub):
            s.close(0)


class ScriptedLearner:
    """The learner's three sockets bound on 127.0.0.1, driven by a test: it answers hellos,
    publishes the weights it is given, and reads (or loses) rollouts."""

    def __init__(self, port: int, settings: dict[str, Any], weights: bytes, session: str = "scripted"):
        self.settings, self.weights, self.session = settings, weights, session
        self.ctx = zmq.Context()
        self.router, self.pull, self.pub = (self.ctx.socket(k) for k in (zmq.ROUTER, zmq.PULL, zmq.PUB))
        for offset, s in enumerate((self.router, self.pull, self.pub)):
            s.linger = 0
            s.bind(f"tcp://127.0.0.1:{port + offset}")
        self.peer: bytes | None = None

    def welcome_next_hello(self, actor_id: int = 0, timeout_ms: int = 30_000) -> dict[str, Any]:
        """Wait for a hello and welcome it; the hello's fields."""
        while True:
            assert self.router.poll(timeout_ms), "no hello"
            self.peer, body = self.router.recv_multipart()
            msg = protocol.decode(body)
            if msg["kind"] == "hello":
                break
        self.router.send_multipart([self.peer, protocol.encode(
            "welcome", actor_id=actor_id, seed=1, epsilon=0.0, session=self.session, token="t" * 32,
            settings=self.settings)])
        return msg

    def publish(self) -> None:
        self.pub.send(self.weights)

    def close(self) -> None:
        for s in (self.router, self.pull, self.pub):
            s.close(0)
        self.ctx.term()
