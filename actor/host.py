"""`actor --emulators N`: an actor host. N emulator processes step and preprocess; this process
runs the policy on every observation that is ready, holds the host's one rollouts and one
weights connection, cuts rollouts and pushes them in the same wire format as a one-process actor.

Each emulator acts for an actor id of its own (its own hello, seed, epsilon, token, control
connection and heartbeats): to the learner a host with N emulators is N actors. An emulator
that stops answering loses its heartbeats (the learner stops counting it) until it answers
again; one whose process dies is started again, after a backoff, as a new actor.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
import zmq

from actor.client import run_until_stopped
from actor.inference import pick_device
from actor.link import LearnerLink, Membership, Welcome
from actor.mode import HOST_MODEL_KINDS
from actor.sampler import Member, Sampler
from actor.sync_pace import SyncPatience
from common import protocol, transport
from common.envs import EnvError

log = logging.getLogger("actor")

STALL_S = 3.0  # an emulator silent this long is stalled: its heartbeats stop until it answers
START_S = 60.0  # an emulator's first answer (its process starting, the env's reset) may take this long
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
HEALTHY_S = 120.0  # an emulator that ran this long died by accident, not in a crash loop: backoff from the start
OUTBOX_PER_SLOT = 2  # finished rollouts an emulator may have waiting before it is held back


@dataclass
class SlotInfo:
    member: Membership
    restarts: int = 0
    restart_at: float | None = None  # when its process died: start again at this time
    outbox: deque[bytes] = field(default_factory=deque)
    wait_version: int | None = None  # sync mode: hold until weights newer than this ...
    wait_since: float = 0.0  # ... or until the learner's round has surely passed without it
    stalled: bool = False


class ActorHost:
    def __init__(self, learner: str, emulators: int, *, keys: transport.CurveKeys | None = None,
                 device: str = "auto", dtype: str = "float32", report_interval: float = 30.0):
        if emulators < 1:
            raise ValueError(f"an actor host needs at least one emulator, got {emulators}")
        self.link = LearnerLink(learner, keys=keys)
        self.n = emulators
        self.device = pick_device(device)
        self.dtype = dtype
        self.report_interval = report_interval
        self.sampler: Sampler | None = None
        self.slots: list[SlotInfo] = []

    # ------------------------------------------------------------------ start
    def _join(self) -> None:
        link = self.link
        s = link.join().settings
        if s.model.kind not in HOST_MODEL_KINDS or s.bounds.episode_extras:
            raise EnvError(f"the actor host does not run {s.model.kind} policies (action masks, "
                           "game-family hooks): run one-process actors (launch.sh --actor-mode process)")
        log.info("joined %s (env %s, mode %s); %d emulators, policy on %s (%s)", link.address, s.env.id,
                 s.mode, self.n, self.device, self.dtype)
        torch.set_num_threads(1)
        self.sampler = Sampler.from_spec(s, self.n, self.device, dtype=self.dtype)
        members = [link.members[0]] + [link.add_member() for _ in range(1, self.n)]
        for m in members[1:]:
            m.join()
        link.open_data_links(self.sampler.policy.cpu_model)
        for k, m in enumerate(members):
            m.on_rejoin.append(partial(self._rejoined, k))
            self.slots.append(SlotInfo(m))
            self._hook_first_episode(k)
            self._start(k)

    def _start(self, k: int) -> None:
        w = self.slots[k].member.welcome
        self.sampler.assign(k, Member(w.actor_id, w.seed, w.epsilon))
        log.info("emulator %d joined %s as actor %d (seed %d, epsilon %.3g, pid %s)", k, self.link.address,
                 w.actor_id, w.seed, w.epsilon, self.sampler.pool.pids()[k])

    def _rejoined(self, k: int, welcome: Welcome) -> None:
        """Slot k's member joined again (a restarted learner, or one that forgot it): what was
        made under its old id and token is dropped; its emulator goes on."""
        info = self.slots[k]
        info.outbox.clear()
        info.wait_version = None
        if self.sampler.members[k] is not None:
            self.sampler.members[k] = Member(welcome.actor_id, welcome.seed, welcome.epsilon)
        b = self.sampler.builders[k]
        if b is not None:
            b.restart()
            b.actor_id = welcome.actor_id

    # ------------------------------------------------------------------ supervision
    def _supervise(self) -> None:
        """Emulators that died are started again (as new actors, after a backoff); emulators that
        stopped answering lose their heartbeats until they answer."""
        pool, now = self.sampler.pool, time.monotonic()
        for k, code in pool.exited():
            info = self.slots[k]
            if pool.state[k].answered == 0 and code == 2:
                raise EnvError(f"emulator {k} could not make its environment (see the line above); "
                               "stopping the host")
            if now - pool.state[k].started_at >= HEALTHY_S:
                info.restarts = 0
            self.sampler.vacate(k)
            info.outbox.clear()
            info.member.alive = False
            delay = RESTART_BACKOFF_S[min(info.restarts, len(RESTART_BACKOFF_S) - 1)]
            info.restart_at = now + delay
            log.warning("emulator %d (actor %d) exited with code %s; restarting it as a new actor in %.0f s",
                        k, info.member.welcome.actor_id, code, delay)
        for k, info in enumerate(self.slots):
            if info.restart_at is not None and now >= info.restart_at:
                info.restart_at = None
                info.restarts += 1
                info.member.join()  # a new actor id and seed, as a restarted actor process gets
                info.member.alive = True
                info.stalled = False
                self._start(k)
        stalled = set(pool.stalled(STALL_S))
        for k, info in enumerate(self.slots):
            s = pool.state[k]
            first_turn = s.answered == 0 and s.proc is not None and now - s.started_at < START_S
            now_stalled = k in stalled and not first_turn
            if now_stalled != info.stalled:
                info.stalled = now_stalled
                info.member.alive = not now_stalled and info.restart_at is None
                if now_stalled:
                    log.warning("emulator %d (actor %d) has not answered for %.0f s; its heartbeats stop",
                                k, info.member.welcome.actor_id, STALL_S)
                else:
                    log.info("emulator %d (actor %d) answers again", k, info.member.welcome.actor_id)
        # sync mode's lockstep waits for every running emulator but these
        self.sampler.stalled = {k for k, info in enumerate(self.slots) if info.stalled}

    # ------------------------------------------------------------------ main loop
    def _hold(self, running: bool, sync_patience: SyncPatience | None) -> set[int]:
        """Slots that must not act now: all while the link is not running; otherwise those with a
        full outbox and, in sync mode, those waiting for the next version."""
        if not running:
            return set(range(self.n))
        held, version, now = set(), self.link.version, time.monotonic()
        patience = sync_patience.seconds() if sync_patience is not None else None
        for k, info in enumerate(self.slots):
            if len(info.outbox) >= OUTBOX_PER_SLOT:
                held.add(k)
            elif patience is not None and info.wait_version is not None:
                if version > info.wait_version:
                    info.wait_version = None
                elif now - info.wait_since > patience:
                    log.warning("emulator %d: no weights newer than version %d after %.0f s; acting on "
                                "(its last rollout may have been lost)", k, info.wait_version, patience)
                    info.wait_version = None
                else:
                    held.add(k)
        return held

    def _flush(self) -> None:
        """Push waiting rollouts, oldest slot first, while the learner's queue takes them."""
        for info in self.slots:
            while info.outbox and self.link.try_send(info.outbox[0]):
                info.outbox.popleft()

    def run(self) -> int:
        self._join()
        link, sampler = self.link, self.sampler
        s = link.welcome.settings
        # sync: a round trains on what it has after sync_timeout; an emulator whose rollout was
        # lost waits that long (two republishes and twice the recent rounds) for newer weights,
        # then acts on
        patience = SyncPatience(s.sync_timeout, s.publish_interval) if s.mode == "sync" else None
        frame_skip = s.env.frame_skip
        log.info("waiting for the first weights")
        poller, sub = zmq.Poller(), None
        poller.register(sampler.pool.ready_fd, zmq.POLLIN)
        next_tick = next_supervise = time.monotonic()
        last_report, frames, acting = time.monotonic(), 0, False
        while True:
            if link.sub is not sub:  # (re)opened after a link loss
                if sub is not None:
                    poller.unregister(sub)
                sub = link.sub
                poller.register(sub, zmq.POLLIN)
            t0 = time.perf_counter()
            events = dict(poller.poll(5 if any(i.outbox for i in self.slots) else 50))
            sampler.stats.seconds["wait"] += time.perf_counter() - t0
            now = time.monotonic()
            if now >= next_tick:  # signals, link watches, control notes, heartbeats
                next_tick = now + 0.02
                link.tick()
            if (sub in events or link.version < 0) and link.poll_weights(sampler.policy.cpu_model):
                sampler.policy.refresh()
                if patience is not None:
                    patience.seen(link.version, now)
            running = link.running()
            if running != acting:
                acting = running
                log.info("got weights version %d; acting" if running else "holding back (link %s)",
                         link.version if running else link.state.value)
            for k, r in sampler.observe(sampler.pool.ready()):
                info = self.slots[k]
                info.outbox.append(protocol.encode_rollout(r, token=info.member.welcome.token))
                if patience is not None:
                    info.wait_version, info.wait_since = r.policy_version, now
                frames += r.steps * frame_skip
            # holds after the finished rollouts are read: in sync mode a slot whose rollout just
            # ended must not step again with the same weights (its next rollout would be stale)
            sampler.held = self._hold(running, patience)
            sampler.act(link.version)
            self._flush()
            if now >= next_supervise:
                next_supervise = now + 0.5
                self._supervise()
            if now - last_report >= self.report_interval:
                self._report(now - last_report, frames)
                last_report, frames = now, 0

    def _hook_first_episode(self, k: int) -> None:
        """Log each emulator's first episode (length, action digest), as a one-process actor does."""
        def hook(actions: list[int], k: int = k) -> None:
            digest = hashlib.sha1(np.asarray(actions, dtype=np.int32).tobytes()).hexdigest()[:12]
            log.info("emulator %d (actor %d) first episode: %d steps, action digest %s", k,
                     self.slots[k].member.welcome.actor_id, len(actions), digest)
        self.sampler.first_episode_hooks[k] = hook

    def _report(self, seconds: float, frames: int) -> None:
        st = self.sampler.stats
        wall = time.perf_counter() - st.started
        up = sum(1 for i in self.slots if i.member.alive)
        log.info("%d/%d emulators up, %.0f frames/s, version %d, mean batch %.2f | inference %.0f%% "
                 "of this process, waiting %.0f%%", up, self.n, frames / seconds, self.link.version,
                 st.samples / max(st.batches, 1), 100 * st.seconds["infer"] / wall, 100 * st.seconds["wait"] / wall)
        st.reset()

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.close()
        self.link.close()


def run(learner: str, emulators: int, keys: transport.CurveKeys | None = None, *, device: str = "auto",
        dtype: str = "float32") -> int:
    return run_until_stopped(ActorHost(learner, emulators, keys=keys, device=device, dtype=dtype))
