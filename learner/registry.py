"""The actor registry: who joined, with which secret and key, who is alive, who is forgotten.

- Control messages are taken within rate limits: each peer (one ZeroMQ connection) gets
  PEER_RATE a second (PEER_BURST at once), checked before a message is even decoded; answers
  (welcomes, rejoin notes) are limited to ANSWER_RATE a second in all. A connection gets one
  welcome (an actor opens a fresh connection for each hello it sends), so a flood of hellos on
  the same connections cannot use up the answers a newcomer needs. A hello is answered only
  while fewer than --max-actors actors are registered. The welcome hands out an id, a seed and
  a secret token (sent over ROUTER to that peer only).
- Every later rollout and heartbeat must carry the id's token and, with CURVE, come from the
  public key that joined (`verify`).
- An actor is *confirmed* by its first heartbeat or rollout: only then is it counted, logged
  and written to actors.jsonl, so a flood of hellos costs no log lines and no disk.
- Actors never confirmed within UNCONFIRMED_S, or silent for FORGET_S (at least ten actor
  timeouts), are forgotten (`prune`): their id no longer takes rollouts.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.config import Config, actor_epsilon, actor_seed
from common.protocol import ProtocolError

log = logging.getLogger("learner")

PEER_RATE, PEER_BURST = 2.0, 6  # control messages a second from one connection (an actor: 0.5)
ANSWER_RATE, ANSWER_BURST = 20.0, 40  # welcomes and rejoin notes a second, in all
PEERS_TRACKED = 4096  # per-connection buckets kept (the least recently used go first)
UNCONFIRMED_S = 30.0  # a welcomed actor that never sends a heartbeat or rollout is forgotten
FORGET_MIN_S = 60.0


class IdentityError(ProtocolError):
    """A message whose actor id, token or key does not match a registered actor."""


class SupersededToken(IdentityError):
    """A message with the token an actor held before it joined again (sent before its new
    welcome reached it): honest and late, dropped without counting it as an attack."""


SUPERSEDED_S = 30.0  # how long after a rejoin the token it replaced is still recognised


class TokenBucket:
    """`rate` events a second on average, `burst` at once."""

    def __init__(self, rate: float, burst: int, now: float):
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.last = float(burst), now
        self.welcomed = False  # for a peer's bucket: that connection got its welcome

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class ActorInfo:
    actor_id: int
    host: str
    pid: int
    seed: int
    epsilon: float
    token: str
    user_id: str | None  # the CURVE public key (z85) it joined with
    joined_at: float  # wall clock, for actors.jsonl
    last_seen: float  # monotonic
    confirmed: bool = False
    addr: str = ""  # the IP its connection came from, as ZeroMQ saw it
    superseded: str = ""  # the token this id held before it joined again
    superseded_until: float = 0.0  # monotonic; after this the old token is merely wrong


class Registry:
    """Ids, tokens, keys and liveness of the actors; actors.jsonl (kept open for the run)."""

    def __init__(self, cfg: Config, run_dir: Path, *, next_actor_id: int = 0, now: float | None = None):
        now = time.monotonic() if now is None else now
        self.cfg = cfg
        self.actors: dict[int, ActorInfo] = {}
        self.next_actor_id = next_actor_id
        self.answers = TokenBucket(ANSWER_RATE, ANSWER_BURST, now)
        self.peers: OrderedDict[bytes, TokenBucket] = OrderedDict()
        self.rate_limited = 0  # control messages dropped by the rate limits
        self.forget_after = max(FORGET_MIN_S, 10 * cfg.actor_timeout)
        self.file = open(run_dir / "actors.jsonl", "a", buffering=1)  # noqa: SIM115 (kept open)

    # ---------------------------------------------------------------- joining
    def admit(self, peer: bytes, now: float) -> bool:
        """May this peer's control message be read? (Before decoding it: a flooding connection
        costs a lookup a message, and cannot use up what the others share.)"""
        bucket = self.peers.pop(peer, None) or TokenBucket(PEER_RATE, PEER_BURST, now)
        self.peers[peer] = bucket
        while len(self.peers) > PEERS_TRACKED:
            self.peers.popitem(last=False)
        if bucket.take(now):
            return True
        self.rate_limited += 1
        return False

    def may_answer(self, now: float, peer: bytes | None = None) -> bool:
        """Within the overall budget of welcomes and rejoin notes? With `peer` (a hello): only
        if that connection has had no welcome yet."""
        bucket = self.peers.get(peer) if peer is not None else None
        if (bucket is None or not bucket.welcomed) and self.answers.take(now):
            if bucket is not None:
                bucket.welcomed = True
            return True
        self.rate_limited += 1
        return False

    def join(self, hello: dict[str, Any], user_id: str | None, now: float, addr: str = "") -> ActorInfo | None:
        """Register the sender of a valid hello (`addr`: the IP its connection comes from); None
        when --max-actors live actors are in."""
        if len(self.actors) >= self.cfg.max_actors:
            self.prune(now)
            if len(self.actors) >= self.cfg.max_actors and not self._evict_unconfirmed():
                return None
        prev = hello.get("previous_id")
        if type(prev) is int and 0 <= prev < self.next_actor_id and prev not in self.live(now):
            actor_id = prev  # an actor rejoining after a learner restart keeps its id and seed
        else:
            actor_id = self.next_actor_id
            self.next_actor_id += 1
        pid = hello.get("pid")
        info = ActorInfo(actor_id, str(hello.get("host", "?"))[:255], pid if type(pid) is int else -1,
                         actor_seed(self.cfg.seed, actor_id), actor_epsilon(self.cfg, actor_id),
                         secrets.token_hex(16), user_id, time.time(), now, addr=addr)
        old = self.actors.get(actor_id)
        if old is not None and (old.user_id is None or old.user_id == user_id):
            # its messages sent before the new welcome reached it still carry the old token
            info.superseded, info.superseded_until = old.token, now + SUPERSEDED_S
        self.actors[actor_id] = info
        return info

    def _evict_unconfirmed(self) -> bool:
        """Make room by forgetting the oldest actor that never confirmed; False if none."""
        waiting = [a for a in self.actors.values() if not a.confirmed]
        if not waiting:
            return False
        del self.actors[min(waiting, key=lambda a: a.last_seen).actor_id]
        return True

    # ---------------------------------------------------------------- identity
    def verify(self, actor_id: int, token: str, user_id: str | None, now: float) -> ActorInfo:
        """The registered actor a rollout or heartbeat comes from; IdentityError if the id is
        unknown, the token is not its token or the CURVE key is not the key it joined with."""
        info = self.actors.get(actor_id)
        if info is None:
            raise IdentityError(f"unknown actor id {actor_id}")
        same_key = info.user_id is None or user_id == info.user_id
        if not hmac.compare_digest(info.token.encode(), token.encode()):
            if same_key and info.superseded and now < info.superseded_until and hmac.compare_digest(
                    info.superseded.encode(), token.encode()):
                raise SupersededToken(f"actor {actor_id}'s token from before it joined again")
            raise IdentityError(f"wrong token for actor {actor_id}")
        if not same_key:
            raise IdentityError(f"actor {actor_id} joined with another CURVE key")
        info.last_seen = now
        if not info.confirmed:
            self._confirm(info)
        return info

    def _confirm(self, info: ActorInfo) -> None:
        info.confirmed = True
        log.info("actor %d joined from %s (%s) pid %s (seed %d)", info.actor_id, info.host, info.addr or "?",
                 info.pid, info.seed)
        try:
            self.file.write(json.dumps({"actor_id": info.actor_id, "host": info.host, "addr": info.addr,
                                        "pid": info.pid,
                                        "seed": info.seed, "epsilon": info.epsilon,
                                        "joined_at": info.joined_at}) + "\n")
        except OSError as exc:  # a full disk: the actor still trains
            log.error("cannot write actors.jsonl: %s", exc)

    # ---------------------------------------------------------------- liveness
    def live(self, now: float) -> list[int]:
        """Confirmed actors heard from within --actor-timeout."""
        cutoff = now - self.cfg.actor_timeout
        return [a.actor_id for a in self.actors.values() if a.confirmed and a.last_seen >= cutoff]

    def prune(self, now: float) -> list[int]:
        """Forget actors unconfirmed for UNCONFIRMED_S or silent for forget_after; their ids."""
        gone = [a.actor_id for a in self.actors.values()
                if now - a.last_seen > (self.forget_after if a.confirmed else UNCONFIRMED_S)]
        for actor_id in gone:
            del self.actors[actor_id]
        return gone

    def close(self) -> None:
        self.file.close()
