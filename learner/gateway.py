"""The gateway to the actors: who may talk to the learner, and what they may send.

The control socket (hello / welcome / heartbeat / rejoin), the rate limits on it, the registry
of actors (ids, tokens, CURVE keys, liveness: learner/registry.py), the episode book
(learner/episodes.py), and the admission of each rollout message: decoded against the agreed
spec, its sender verified, its contents validated. What fails is dropped, counted and logged at
a limited rate; it never raises out of a receive loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from common import protocol
from common.config import Config
from common.protocol import CONTROL_LIMITS, ProtocolError, RolloutSpec
from learner.episodes import Episode, EpisodeBook
from learner.metrics import Metrics
from learner.registry import IdentityError, Registry, SupersededToken

log = logging.getLogger("learner")
HELLO_KEYS = {"v", "kind", "host", "pid", "previous_id"}
CONTROL_MAX_BYTES = 64 << 10  # hello and heartbeat are a few dozen bytes
YIELD_S = 0.005  # a receiving task runs at most this long before it lets the others run


def _peer_address(frame: zmq.Frame) -> str:
    """The sender's IP as the connection shows it (libzmq's Peer-Address property)."""
    try:
        return str(frame.get("Peer-Address"))
    except (zmq.ZMQError, OSError):
        return ""


class RateLimitedLog:
    """Log the first problem, then at most one summary line per `interval` seconds."""

    def __init__(self, interval: float = 5.0):
        self.interval, self.last, self.suppressed = interval, 0.0, 0

    def __call__(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval:
            extra = f" (+{self.suppressed} more since the last report)" if self.suppressed else ""
            log.warning(msg + extra, *args)
            self.last, self.suppressed = now, 0
        else:
            self.suppressed += 1


def check_hello(msg: dict[str, Any]) -> None:
    """ProtocolError unless a hello holds only known fields of the right types."""
    if set(msg) - HELLO_KEYS:
        raise ProtocolError(f"hello has unknown fields {sorted(set(msg) - HELLO_KEYS)}")
    prev = msg.get("previous_id")
    if not isinstance(msg.get("host", ""), str) or type(msg.get("pid", 0)) is not int \
            or not (prev is None or type(prev) is int):
        raise ProtocolError("hello fields have the wrong types")


class Gateway:
    """Control, registry, admission and identity of the actors of one learner session."""

    def __init__(self, cfg: Config, run_dir: Path, spec: RolloutSpec, settings: dict[str, Any], session: str,
                 metrics: Metrics, *, curve: bool, next_actor_id: int,
                 on_rejected: Callable[[ProtocolError], None]):
        self.cfg, self.spec, self.settings, self.session = cfg, spec, settings, session
        self.metrics = metrics
        self.curve = curve
        self.on_rejected = on_rejected  # the game family's: e.g. counting illegal moves
        self.max_bytes = int(cfg.max_message_mb * (1 << 20))
        self.rollout_bytes = min(self.max_bytes, spec.max_message_bytes)
        self.registry = Registry(cfg, run_dir, next_actor_id=next_actor_id)
        self.episodes = EpisodeBook(spec, rewards_are_returns=not cfg.clip_rewards)
        self.reject_log = RateLimitedLog()
        self.refuse_log = RateLimitedLog()
        self.superseded = 0  # rollouts made before their actor joined again: dropped, reported as stale

    def live_actors(self) -> list[int]:
        return self.registry.live(time.monotonic())

    def prune(self) -> None:
        """Forget actors silent for long (and their unfinished episodes)."""
        for actor_id in self.registry.prune(time.monotonic()):
            self.episodes.forget(actor_id)

    def close(self) -> None:
        self.registry.close()

    def user_id(self, frame: zmq.Frame) -> str | None:
        """The CURVE key (z85) a message came with: ZeroMQ's User-Id, which the ZAP handler sets."""
        if not self.curve:
            return None
        try:
            return frame.get("User-Id")
        except zmq.ZMQError:
            return None

    def reject(self, fmt: str, *args: Any) -> None:
        self.metrics.rejected_messages += 1
        self.reject_log("rejected message: " + fmt, *args)

    # ------------------------------------------------------------------ control
    def welcome(self, hello: dict[str, Any], user_id: str | None = None, addr: str = "") -> bytes | None:
        """The welcome for a valid hello (a new registry entry), or None when the registry is full;
        `addr` is the IP its connection comes from, as ZeroMQ saw it."""
        info = self.registry.join(hello, user_id, time.monotonic(), addr)
        if info is None:
            self.refuse_log("hello refused: %d actors registered (--max-actors)", len(self.registry.actors))
            return None
        self.episodes.start(info.actor_id, fresh=hello.get("previous_id") is None)
        return protocol.encode("welcome", actor_id=info.actor_id, seed=info.seed, epsilon=info.epsilon,
                               session=self.session, token=info.token, settings=self.settings)

    def heartbeat(self, msg: dict[str, Any], user_id: str | None = None) -> None:
        """An actor says it is alive (every ~2 s, also while it waits on us): it stays counted."""
        actor_id, session, token = protocol.validate_heartbeat(msg)
        if session != self.session:
            raise ProtocolError(f"heartbeat from actor {actor_id} of another learner session")
        self.registry.verify(actor_id, token, user_id, time.monotonic())

    def _answer(self, peer: bytes, body: zmq.Frame, now: float) -> tuple[bytes | None, bool]:
        """The reply to one control message (None: none) and whether it welcomes a newcomer."""
        kinds = {"hello": CONTROL_LIMITS, "heartbeat": CONTROL_LIMITS}
        user_id = self.user_id(body)
        try:
            msg = protocol.decode(body.buffer, max_bytes=CONTROL_MAX_BYTES, kinds=kinds)
            if msg["kind"] == "heartbeat":
                self.heartbeat(msg, user_id)
                return None, False
            check_hello(msg)
            if self.registry.may_answer(now, peer):
                reply = self.welcome(msg, user_id, _peer_address(body))
                return reply, reply is not None
            self.refuse_log("control messages over the rate limits dropped (%d so far)", self.registry.rate_limited)
        except SupersededToken:  # a heartbeat sent before the actor's new welcome reached it
            return None, False  # it has joined again already: no rejoin note, nothing rejected
        except IdentityError as exc:
            self.reject("bad control message: %s", exc)
            if self.registry.may_answer(now):  # tell a forgotten actor to join again
                return protocol.encode("rejoin", reason=str(exc)[:200]), False
        except ProtocolError as exc:
            self.reject("bad control message: %s", exc)
        return None, False

    async def control_task(self, sock: zmq.asyncio.Socket, on_join: Callable[[], None]) -> None:
        """Answer hellos and heartbeats; `on_join` after each welcome.

        After each awaited message, what is already queued is read without a round through the
        event loop (a flood's backlog, held in kernel buffers after its sockets closed, is
        dropped at the rate limits' own cost, not an await's), for at most YIELD_S at a time."""
        queued = zmq.Socket.shadow(sock.underlying)
        while True:
            frames = await sock.recv_multipart(copy=False)
            turn = time.monotonic()
            while frames is not None:
                reply = self._control(frames, turn)
                if reply is not None:
                    await sock.send_multipart(reply[:2])
                    if reply[2]:
                        on_join()
                if time.monotonic() - turn > YIELD_S:  # a backlog must not starve the other tasks
                    await asyncio.sleep(0)
                    turn = time.monotonic()
                try:
                    frames = queued.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    frames = None

    def _control(self, frames: list[zmq.Frame], now: float) -> tuple[bytes, bytes, bool] | None:
        """(peer, reply, joined) for one control message; None when it gets no reply."""
        if len(frames) != 2:
            self.reject("control message with %d frames", len(frames))
            return None
        peer, body = frames[0].bytes, frames[1]
        if not self.registry.admit(peer, now):
            self.refuse_log("control messages over the rate limits dropped (%d so far)",
                            self.registry.rate_limited)
            return None
        reply, joined = self._answer(peer, body, now)
        return None if reply is None else (peer, reply, joined)

    async def authorized_task(self, auth: Any) -> None:
        """Admit actor keys added to authorized/ while the learner runs (`learner keygen DIR
        --actors K` again, or a fleet on Ray growing): the directory is reread when it changes."""
        directory = Path(self.cfg.curve_dir) / "authorized"

        def listing() -> list[tuple[str, float]]:
            try:
                return sorted((p.name, p.stat().st_mtime) for p in directory.glob("*.key"))
            except OSError:
                return []

        seen = listing()
        while True:
            await asyncio.sleep(1.0)
            now = listing()
            if now != seen:
                seen = now
                auth.configure_curve(domain="*", location=str(directory))
                log.info("%s changed: %d actor keys admitted", directory, len(now))

    # ------------------------------------------------------------------ rollouts
    def admit_rollout(self, buf: Any, user_id: str | None, version: int) -> tuple[protocol.Rollout,
                                                                                  list[Episode]] | None:
        """Decode and validate one rollout message (the learner is at `version`): the rollout and
        its episodes as the episode book checked them, or None (counted) when it fails."""
        try:
            msg = protocol.decode(buf, max_bytes=self.rollout_bytes, kinds={"rollout": self.spec.limits})
            # who sent it first: a forger costs a decode, not a decompression and validation
            self.registry.verify(*protocol.rollout_identity(msg), user_id, time.monotonic())
            r = protocol.validate_rollout(msg, self.spec, latest_version=version, max_bytes=self.max_bytes)
            episodes = self.episodes.check(r)
        except SupersededToken:
            self.superseded += 1  # made before its actor joined again: old, not hostile
            return None
        except ProtocolError as exc:
            self.on_rejected(exc)
            self.reject("%s", exc)
            return None
        return r, episodes
