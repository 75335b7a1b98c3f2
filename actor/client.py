"""The one-process actor: join the learner, then collect, push rollouts, adopt new weights
(the connection and its state machine: `actor.link.LearnerLink`)."""

from __future__ import annotations

import hashlib
import logging
import signal
import time
from typing import Any

import numpy as np
import torch

from actor.exploration import explorer
from actor.link import LearnerChanged, LearnerLink, Stop, Welcome
from actor.rollout import RolloutCollector
from actor.sync_pace import SyncPatience
from common import protocol, transport
from common.envs import EnvError
from common.families import family_for
from common.model import build_model

log = logging.getLogger("actor")


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
        if self.link.hooks is not None:
            self.link.hooks.on_new_session()

    def run(self) -> int:
        link = self.link
        welcome = link.join()
        s = welcome.settings
        log.info("joined %s as actor %d (seed %d, env %s, mode %s)", link.address,
                 welcome.actor_id, welcome.seed, s.env.id, s.mode)
        torch.set_num_threads(1)
        torch.manual_seed(welcome.seed)
        env = s.make_env(welcome.seed)
        model = build_model(s.model.as_dict()).eval()
        link.hooks = family_for(s.env.id).actor_hooks(env, model, s.model.as_dict(), welcome.seed)
        link.open_data_links(model)
        link.on_rejoin.append(self._adopt)
        self.collector = RolloutCollector(
            env, actor_id=welcome.actor_id, seed=welcome.seed,
            unroll_length=s.unroll_length, frame_stack=s.model.frame_stack,
            frame_skip=s.env.frame_skip, epsilon=welcome.epsilon,
            max_abs_reward=s.bounds.max_abs_reward, lives=s.bounds.lives,
            explorer=explorer(s.exploration, welcome.seed),
        )
        self.collector.on_first_episode = self._log_first_episode
        log.info("waiting for the first weights")
        link.wait_for_weights(model, -1)
        log.info("got weights version %d; acting", link.version)
        try:
            # sync: a round trains on what it has after sync_timeout; an actor whose rollout was
            # lost waits that long (two republishes and twice the recent rounds) for newer
            # weights, then sends another
            patience = SyncPatience(s.sync_timeout, s.publish_interval) if s.mode == "sync" else None
            self._loop(model, sync_patience=patience, publish_interval=s.publish_interval)
        finally:
            env.close()
        return 0

    def _loop(self, model: torch.nn.Module, *, sync_patience: SyncPatience | None, publish_interval: float) -> None:
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
            if sync_patience is not None:
                patience = sync_patience.seconds()
                if link.wait_for_weights(model, rollout.policy_version, give_up_after=patience):
                    sync_patience.seen(link.version, time.monotonic())
                else:
                    log.warning("no weights newer than version %d after %.0f s; sending another rollout "
                                "(the last one may have been lost)", rollout.policy_version, patience)
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


def install_signal_handlers(actor: Any) -> None:
    """SIGINT/SIGTERM stop `actor` (anything with a `link`) at its next tick."""
    def handler(signum: int, frame: Any) -> None:
        actor.link.stopping = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def run_until_stopped(actor: Any) -> int:
    """Run a one-process actor or an actor host (`run`, `close`, `link`) until a signal; its
    exit code: 0 stopped, 2 its environment failed, 3 the learner changed its settings."""
    install_signal_handlers(actor)
    try:
        actor.run()
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
        actor.close()
    return 0


def run(learner: str, keys: transport.CurveKeys | None = None) -> int:
    return run_until_stopped(ActorClient(learner, keys=keys))
