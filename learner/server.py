"""The learner process: binds its three sockets and runs one asyncio task per role.

This module only wires the rooms, each with one job:
learner/gateway.py (control, registry, admission, identity), learner/data_source.py (async
batches or sync rounds behind one interface), learner/update_worker.py (the thread that owns
the model: update, checkpoint, weights), learner/publisher.py (weights on PUB),
learner/lifecycle.py (run directory, metrics, the run's end) and learner/family_hooks.py (what
a game family adds). The event loop owns every counter and applies what the worker hands back.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import secrets
import signal
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from common import transport
from common.config import Config
from common.model import build_model, spec_hash
from common.protocol import Rollout, RolloutSpec
from common.runspec import RunSpec
from learner.batcher import Batch
from learner.data_source import make_source
from learner.family_hooks import eval_loop, hooks_for
from learner.gateway import CONTROL_MAX_BYTES, YIELD_S, Gateway
from learner.lifecycle import Lifecycle
from learner.metrics import Metrics
from learner.publisher import Publisher
from learner.trainer import Trainer, UpdateResult, pick_device
from learner.update_worker import UpdateWorker, seed_torch

log = logging.getLogger("learner")
STOP_GRACE_S = 5  # a stop never waits on a task for longer


class PortInUse(OSError):
    """The learner's port (or P+1, P+2) is taken; one line names it."""


def torch_threads(cfg: Config) -> int:
    """The learner's torch threads: --torch-threads, else --learner-share of the cores, rounded
    half down, at least 1 (actors here need the rest): half of 2 or 3 cores is 1, 0.8 of 2 is 2."""
    return cfg.torch_threads or max(1, math.ceil((os.cpu_count() or 2) * cfg.learner_share - 0.5))


def specs(cfg: Config) -> tuple[dict[str, Any], dict[str, Any], RolloutSpec]:
    """make_env's arguments, the model spec and the rollout spec a configuration gives."""
    run = RunSpec.from_config(cfg)
    return run.env_kwargs, run.model.as_dict(), run.rollout


def actor_settings(cfg: Config) -> dict[str, Any]:
    """What every welcome tells an actor: the run spec on the wire."""
    return RunSpec.from_config(cfg).to_wire()


class Learner:
    """The rooms of one learner session, wired together."""

    def __init__(self, cfg: Config, run_dir: Path, *, keys: transport.CurveKeys | None = None):
        self.cfg, self.run_dir, self.keys = cfg, run_dir, keys
        self.run_spec = RunSpec.from_config(cfg)  # built once; the welcome sends it
        self.model_spec, self.spec = self.run_spec.model.as_dict(), self.run_spec.rollout
        self.settings = self.run_spec.to_wire()
        self.spec_hash = spec_hash(self.model_spec)
        self.device = pick_device(cfg.device)
        seed_torch(cfg, torch_threads(cfg))  # the initial weights and the minibatch order follow --seed
        self.session = secrets.token_hex(8)  # names this learner process; not a seed
        self.worker = UpdateWorker(Trainer(build_model(self.model_spec), cfg, self.device,
                                           frames_per_step=self.spec.frame_skip), cfg,
                                   self.model_spec, self.spec_hash, self.session)
        self.life = Lifecycle(cfg, run_dir, lambda: self.worker.resume(run_dir), n_arms=self.spec.n_arms)
        counters = self.life.start
        self.version = int(counters.get("version", counters.get("updates", 0)))
        self.hooks = hooks_for(cfg, run_dir, self.model_spec, self.spec_hash, self.session, counters)
        self.evals = eval_loop(self.hooks, run_dir, cfg, self.metrics)
        self.gateway = Gateway(cfg, run_dir, self.spec, self.settings, self.session, self.metrics,
                               curve=keys is not None, next_actor_id=int(counters.get("next_actor_id", 0)),
                               on_rejected=self.hooks.on_rejected)
        self.source = make_source(cfg, self.version, self.gateway.live_actors,
                                  int(counters.get("dropped_stale", 0)))
        weights = self.worker.encode_weights(self.version)
        if weights is None:
            raise ValueError("the model to start from holds non-finite weights")
        self.publisher = Publisher(weights, cfg.publish_interval, self.hooks.messages)
        self.exit_code = 0

    @property
    def metrics(self) -> Metrics:
        return self.life.metrics

    @property
    def rollout_bytes(self) -> int:
        return self.gateway.rollout_bytes

    @property
    def dropped_stale(self) -> int:
        """Rollouts dropped as too old: by the data source, and those made before their actor joined again."""
        return self.source.dropped_stale + self.gateway.superseded

    def counters(self) -> dict[str, Any]:
        """What a checkpoint records besides the weights; read in the event loop, which owns it."""
        counters = self.metrics.counters()
        counters.update(version=self.version, next_actor_id=self.gateway.registry.next_actor_id,
                        dropped_stale=self.dropped_stale)
        family = self.hooks.counters()
        if family is not None:
            counters[self.hooks.counters_key] = family
        return counters

    async def checkpoint(self) -> Path | None:
        return await self.worker.call(self.worker.save_checkpoint, self.run_dir, self.counters())

    # ------------------------------------------------------------------ receive
    def welcome(self, hello: dict[str, Any], user_id: str | None = None, addr: str = "") -> bytes | None:
        return self.gateway.welcome(hello, user_id, addr)

    def accept(self, buf: Any, user_id: str | None = None) -> Rollout | None:
        """Admit one rollout message and count it; None (counted as rejected) when it fails."""
        admitted = self.gateway.admit_rollout(buf, user_id, self.version)
        if admitted is None:
            return None
        r, episodes = admitted
        self.hooks.on_rollout(r, episodes)
        self.life.count(r, episodes, self.spec.frame_skip)
        return r

    async def receive_task(self, sock: zmq.asyncio.Socket) -> None:
        turn = time.monotonic()
        while True:
            await self.source.wait_for_room()
            frame = await sock.recv(copy=False)
            now = time.monotonic()
            if now - turn > YIELD_S:  # a flood of rollouts must not starve the other tasks
                await asyncio.sleep(0)
                turn = now
            r = self.accept(frame.buffer, self.gateway.user_id(frame))
            if r is not None:
                self.source.offer(r, self.version)

    # ------------------------------------------------------------------ train
    def _apply(self, batch: Batch, result: UpdateResult, weights: bytes | None) -> None:
        """Event loop: take an update's result; a skipped one leaves version and weights as they were."""
        m = self.metrics
        if weights is None:
            m.skipped_updates += 1
            log.warning("update skipped: non-finite %s on a batch from actors %s; the weights stay "
                        "at version %d (%d skipped so far)", result.skipped,
                        sorted({int(a) for a in batch.actor_ids}), self.version, m.skipped_updates)
            return
        self.version += 1
        m.updates += 1
        self.publisher.weights_msg = weights
        stats = result.stats
        m.lags.extend(int(x) for x in batch.lags)
        stats["charts/policy_lag_mean"] = float(batch.lags.mean())
        stats["charts/policy_lag_max"] = float(batch.lags.max())
        m.log_update(stats)

    async def train_task(self) -> None:
        while True:
            await self.source.ready.wait()
            self.source.ready.clear()
            batch = self.source.take(self.version)
            if batch is None:
                continue
            result, weights = await self.worker.call(self.worker.update, batch, self.version + 1)
            self._apply(batch, result, weights)
            self.source.updated(self.version)
            if weights is not None and self.metrics.updates % self.cfg.save_interval == 0:
                await self.checkpoint()
            self.publisher.wake()
            self.life.check_frames()

    # ------------------------------------------------------------------ report, snapshots, evaluation
    async def report_task(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.report_interval)
            if self.hooks.due():
                await self.snapshot()
            self.report()

    async def snapshot(self) -> str:
        """A snapshot of the current policy, kept by the family's hooks (weights copied between updates)."""
        name = self.hooks.add_snapshot(await self.worker.call(self.worker.state))
        log.info("snapshot %s taken at update %d", name, self.metrics.updates)
        self.publisher.wake()
        return name

    def report(self) -> dict[str, Any]:
        self.gateway.prune()
        live = self.gateway.live_actors()
        self.source.check()  # an actor that went silent no longer holds a sync round up
        return self.life.report(len(live), self.dropped_stale, self.gateway.registry.rate_limited,
                                self.hooks.report(), self.hooks.scalars)

    async def _eval_snapshot(self) -> Path:
        """The current weights for an evaluation, written by the worker thread between updates."""
        return await self.worker.call(self.worker.write_policy, self.run_dir / "eval" / "policy.pt",
                                      self.life.eval_counters())

    def _background_tasks(self) -> list[Any]:
        tasks = [self.life.tick_task()]
        if self.cfg.max_minutes:
            tasks.append(self.life.max_minutes_task())
        if self.cfg.eval_interval:
            tasks.append(self.evals.task(self._eval_snapshot, self.life.eval_counters))
        return tasks

    # ------------------------------------------------------------------ main
    def _bind(self, ctx: zmq.asyncio.Context) -> list[zmq.asyncio.Socket]:
        """The three sockets, bound; PortInUse (every socket closed, so ctx.term() returns) when
        a port is taken."""
        socks: list[zmq.asyncio.Socket] = []
        for kind, offset, limit in ((zmq.ROUTER, transport.CONTROL, CONTROL_MAX_BYTES),
                                    (zmq.PULL, transport.ROLLOUTS, self.rollout_bytes),
                                    (zmq.PUB, transport.WEIGHTS, self.gateway.max_bytes)):
            s = transport.make_socket(ctx, kind, max_bytes=limit, keys=self.keys, server=True,
                                      tcp_buffer=transport.rollout_tcp_buffer(self.spec.max_rollout_bytes))
            socks.append(s)
            address = transport.endpoint(self.cfg.bind, self.cfg.port, offset)
            try:
                s.bind(address)
            except zmq.ZMQError as exc:
                for t in socks:
                    t.close(linger=0)
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUse(f"port {self.cfg.port + offset} ({address}) is already in use; is "
                                    f"another learner running? Pick another --port") from None
                raise OSError(f"cannot bind {address}: {exc}") from None
        return socks

    async def _serve(self, ctx: zmq.asyncio.Context, auth: Any) -> None:
        """Every task until the stop (a signal, the run's end, or a task that failed)."""
        control, pull, pub = self._bind(ctx)
        socks = [control, pull, pub]
        try:
            if not self.cfg.resume:
                # a run that started can always be resumed: a learner killed before its first
                # --save-interval would otherwise leave --resume nothing (written once the ports
                # are ours, so a learner that could not bind leaves the run directory free)
                await self.checkpoint()
            print(f"learner ready: tcp://{self.cfg.bind}:{self.cfg.port} (run dir {self.run_dir}, "
                  f"device {self.device}, env {self.cfg.env}, mode {self.cfg.mode}, "
                  f"preset {self.cfg.preset})", flush=True)
            self.life.console.start(self.metrics.frames)
            tasks = [asyncio.create_task(c) for c in (
                self.gateway.control_task(control, self.publisher.soon_for_newcomer), self.receive_task(pull),
                self.train_task(), self.publisher.task(pub), self.report_task(), *self._background_tasks(),
                *([self.gateway.authorized_task(auth)] if auth is not None else []))]
            stopper = asyncio.create_task(self.life.stop.wait())
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                t.cancel()
            _, stuck = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
            if stuck:
                log.error("tasks still running 5 s after the stop: %s; stopping anyway",
                          ", ".join(t.get_coro().__name__ for t in stuck))
            for t in done:
                if t is not stopper and t.exception() is not None:
                    log.error("learner task failed; saving a checkpoint and stopping", exc_info=t.exception())
                    self.exit_code = 1
        finally:
            for s in socks:
                s.close(linger=0)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.life.stop.set)
        ctx = zmq.asyncio.Context()
        auth = None
        try:
            if self.keys is not None:
                from zmq.auth.asyncio import AsyncioAuthenticator

                auth = AsyncioAuthenticator(ctx)
                auth.start()
                auth.configure_curve(domain="*", location=str(Path(self.cfg.curve_dir) / "authorized"))
            await self._serve(ctx, auth)
        except PortInUse:
            self.worker.shutdown()
            self.metrics.close()
            self.gateway.close()
            raise
        finally:
            self.evals.stop()
            if auth is not None:
                auth.stop()
            ctx.term()
        path = await self.checkpoint()  # the single worker thread finishes an update in flight first
        self.worker.shutdown()
        if self.life.reached_end and self.cfg.eval_interval and path is not None:
            await self.evals.run_once(path, "final", self.life.eval_counters())
        self.report()  # after the final evaluation, so its result reaches metrics.jsonl too
        self.life.console.close()
        self.metrics.close()
        self.gateway.close()
        log.info("final checkpoint %s", path)
        print(f"learner stopped: {self.metrics.frames:,} frames, {self.metrics.updates} updates; "
              f"checkpoint {path}", flush=True)
        return self.exit_code
