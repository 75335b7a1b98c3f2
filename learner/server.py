"""The asyncio learner: one task per role (control, receive, train, publish, report).

Updates and checkpoint writes run in a worker thread, so receiving never stops. The worker
owns the model; the event loop owns every counter and applies what the worker hands back.
Who may send what is the registry's business (learner/registry.py), what episode statistics
must look like the episode book's (learner/episodes.py).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import secrets
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zmq
import zmq.asyncio

from common import envs, protocol, transport
from common.config import Config, dump_toml, resume_changes
from common.families import env_settings, family_for
from common.model import build_model, env_model_spec, spec_hash, state_spec, state_to_numpy
from common.protocol import CONTROL_LIMITS, ProtocolError, RolloutSpec
from learner import checkpoint, run_info
from learner.arm_stats import ArmStats
from learner.batcher import Batch, Batcher, collate
from learner.episodes import EpisodeBook
from learner.eval_loop import EvalLoop, FamilyEvalLoop
from learner.metrics import Metrics, open_fds
from learner.progress import Console
from learner.registry import IdentityError, Registry
from learner.rounds import SyncRound
from learner.trainer import Trainer, UpdateResult, finite_parameters, pick_device

log = logging.getLogger("learner")
HELLO_KEYS = {"v", "kind", "host", "pid", "previous_id"}
CONTROL_MAX_BYTES = 64 << 10  # hello and heartbeat are a few dozen bytes
JOIN_PUBLISH_DELAY, JOIN_PUBLISH_GAP = 0.3, 1.0  # seconds: weights for newcomers, coalesced
YIELD_S = 0.005  # a receiving task runs at most this long before it lets the others run


class PortInUse(OSError):
    """The learner's port (or P+1, P+2) is taken; one line names it."""


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


def torch_threads(cfg: Config) -> int:
    """The learner's torch threads: --torch-threads, else half the cores (actors here need the rest)."""
    return cfg.torch_threads or max(1, (os.cpu_count() or 2) // 2)


def specs(cfg: Config) -> tuple[dict[str, Any], dict[str, Any], RolloutSpec]:
    """What a configuration agrees with its actors: make_env's arguments, the model spec and
    the rollout spec (the shapes and bounds every rollout must keep)."""
    kwargs = env_settings(cfg)
    sig, model = env_model_spec(cfg)
    spec = RolloutSpec(cfg.unroll_length, tuple(sig.obs_shape), sig.obs_dtype, model["frame_stack"],
                       sig.n_actions, kwargs["frame_skip"], cfg.max_abs_reward,
                       envs.time_limit(cfg.env, kwargs), action_mask=sig.action_mask,
                       episode_extras=sig.episode_extras, state_shape=state_spec(model)[0],
                       state_bound=state_spec(model)[1], lives=sig.lives,
                       n_arms=len(cfg.arms()) if cfg.exploration == "adaptive" else 0)
    return kwargs, model, spec


def actor_settings(cfg: Config) -> dict[str, Any]:
    """What every welcome tells an actor: the environment, the model, the rollouts it sends."""
    kwargs, model, spec = specs(cfg)
    return {"env": cfg.env, "env_kwargs": kwargs, "mode": cfg.mode, "unroll_length": cfg.unroll_length,
            "model": model, "max_message_bytes": int(cfg.max_message_mb * (1 << 20)),
            "publish_interval": cfg.publish_interval, "rollout_bytes": spec.max_rollout_bytes,
            "max_abs_reward": cfg.max_abs_reward, "sync_timeout": cfg.sync_timeout,
            "episode_extras": spec.episode_extras, "lives": spec.lives,
            "exploration": {"arms": list(cfg.arms()), "window": cfg.bandit_window, "bonus": cfg.bandit_bonus}
            if spec.n_arms else None}


class Learner:
    def __init__(self, cfg: Config, run_dir: Path, *, keys: transport.CurveKeys | None = None):
        self.cfg = cfg
        self.run_dir = run_dir
        self.keys = keys
        self.env_kwargs, self.model_spec, self.spec = specs(cfg)
        self.settings = actor_settings(cfg)
        self.spec_hash = spec_hash(self.model_spec)
        self.max_bytes = int(cfg.max_message_mb * (1 << 20))
        self.rollout_bytes = min(self.max_bytes, self.spec.max_message_bytes)
        self.device = pick_device(cfg.device)
        torch.set_num_threads(torch_threads(cfg))
        torch.manual_seed(cfg.seed)  # the initial weights and the minibatch order follow --seed
        self.trainer = Trainer(build_model(self.model_spec), cfg, self.device, frames_per_step=self.spec.frame_skip)
        self.episodes = EpisodeBook(self.spec, rewards_are_returns=not cfg.clip_rewards)
        self.arm_stats = ArmStats(cfg.arms(), cfg.return_window) if self.spec.n_arms else None
        self.session = secrets.token_hex(8)  # names this learner process; not a seed
        self.version = 0
        counters: dict[str, Any] = {}
        deleted = checkpoint.claim_run_dir(run_dir, resume=cfg.resume, overwrite=cfg.overwrite)
        if deleted:
            print(f"--overwrite: deleted the earlier run's {', '.join(deleted)} in {run_dir}", flush=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.resume:
            counters = self._resume()
        (run_dir / "config.toml").write_text(dump_toml(cfg))
        run_info.write(run_dir)
        wandb_run = None
        if cfg.wandb:
            from learner import wandb_log

            wandb_run = wandb_log.start(cfg, run_dir)
        self.metrics = Metrics(run_dir, start=counters, return_window=cfg.return_window, wandb_run=wandb_run)
        self.console = Console(cfg)
        self.registry = Registry(cfg, run_dir, next_actor_id=int(counters.get("next_actor_id", 0)))
        self.reached_end = False  # --total-frames, --stop-at-return or --max-minutes, not a signal
        # a game family's own part of the learner, if it has one
        self.hooks = family_for(cfg.env).learner_hooks(cfg, run_dir, self.model_spec, self.spec_hash,
                                                       self.session, counters)
        if self.hooks is None:
            self.evals = EvalLoop(run_dir, interval_min=cfg.eval_interval, max_steps=cfg.eval_max_steps,
                                  record=self.metrics.log_eval)
        else:
            self.evals = FamilyEvalLoop(run_dir, self.hooks, interval_min=cfg.eval_interval,
                                        record=self._family_eval)
        self.batcher = Batcher(cfg.rollouts_per_batch, cfg.max_policy_lag)
        self.batcher.dropped_stale = int(counters.get("dropped_stale", 0))
        self.round = SyncRound(self.version, timeout=cfg.sync_timeout, min_actors=cfg.min_actors)
        self.round_timer: asyncio.TimerHandle | None = None
        weights = self._encode_weights()
        if weights is None:
            raise ValueError("the model to start from holds non-finite weights")
        self.weights_msg = weights
        self.reject_log = RateLimitedLog()
        self.refuse_log = RateLimitedLog()
        self.join_publish: asyncio.TimerHandle | None = None
        self.last_join_publish = 0.0
        self.exit_code = 0
        # one worker thread: updates and checkpoint writes never overlap and never block receiving
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="update")

    # ------------------------------------------------------------------ state
    def _resume(self) -> dict[str, Any]:
        """Model, optimizer and counters from the newest loadable checkpoint. The settings given
        now apply (the learning rate and Adam's epsilon reach the optimizer), except those that
        fix the model and the data, which raise; one line says what changed."""
        found = checkpoint.load_latest(self.run_dir / "checkpoints", self.device)
        if found is None:
            raise checkpoint.RunDirError(f"--resume: no checkpoint in {self.run_dir / 'checkpoints'} loads")
        path, ckpt = found
        changed = resume_changes(ckpt.get("config", {}), self.cfg)  # names a refused flag first
        if ckpt.get("model_spec") != self.model_spec:
            raise ValueError(f"{path} was made for another environment or model; use another --run-dir")
        self.trainer.model.load_state_dict(ckpt["model"])
        if not finite_parameters(self.trainer.model):
            raise ValueError(f"{path} holds non-finite weights; move it away to resume from an older one")
        self.trainer.optimizer.load_state_dict(ckpt["optimizer"])
        for group in self.trainer.optimizer.param_groups:  # the flags given now, not the saved ones
            group["lr"], group["eps"] = self.cfg.lr, self.cfg.adam_eps
        counters = dict(ckpt["counters"])
        self.trainer.frames_done = int(counters.get("frames", 0))  # --anneal-lr goes on from there
        self.version = int(counters.get("version", counters.get("updates", 0)))
        log.info("resumed %s: %d updates, %d frames", path, counters.get("updates", 0), counters.get("frames", 0))
        if changed:
            print("--resume: settings changed from the checkpoint's: "
                  + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items())), flush=True)
        return counters

    def _encode_weights(self, version: int | None = None) -> bytes | None:
        """The model's weights as a message, or None when any is not finite (never published)."""
        state = state_to_numpy(self.trainer.model)
        if not all(np.isfinite(a).all() for a in state.values()):
            log.error("the model holds non-finite weights; they are not published")
            return None
        return protocol.encode_weights(state, version=self.version if version is None else version,
                                       spec_hash=self.spec_hash, session=self.session)

    def counters(self) -> dict[str, Any]:
        """What a checkpoint records besides the weights; read in the event loop, which owns it."""
        counters = self.metrics.counters()
        counters.update(version=self.version, next_actor_id=self.registry.next_actor_id,
                        dropped_stale=self.batcher.dropped_stale)
        if self.hooks is not None:
            counters[self.hooks.counters_key] = self.hooks.counters()
        return counters

    def save_checkpoint(self, counters: dict[str, Any]) -> Path | None:
        """Worker thread (which owns the model): write a checkpoint unless a weight is non-finite.
        A failed write (no file descriptors left, a full disk) is logged; the next one is tried."""
        if not finite_parameters(self.trainer.model):
            log.error("the model holds non-finite weights; checkpoint not written")
            return None
        payload = {"model": self.trainer.model.state_dict(), "optimizer": self.trainer.optimizer.state_dict(),
                   "counters": counters, "config": self.cfg.to_dict(), "model_spec": self.model_spec}
        try:
            return checkpoint.save(self.run_dir / "checkpoints", counters["updates"], payload,
                                   self.cfg.max_checkpoints)
        except OSError as exc:
            log.error("checkpoint at update %d not written: %s", counters["updates"], exc)
            return None

    def live_actors(self) -> list[int]:
        return self.registry.live(time.monotonic())

    # ------------------------------------------------------------------ control
    def _user_id(self, frame: zmq.Frame) -> str | None:
        """The CURVE key (z85) a message came with: ZeroMQ's User-Id, which the ZAP handler sets."""
        if self.keys is None:
            return None
        try:
            return frame.get("User-Id")
        except zmq.ZMQError:
            return None

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

    @staticmethod
    def _check_hello(msg: dict[str, Any]) -> None:
        if set(msg) - HELLO_KEYS:
            raise ProtocolError(f"hello has unknown fields {sorted(set(msg) - HELLO_KEYS)}")
        prev = msg.get("previous_id")
        if not isinstance(msg.get("host", ""), str) or type(msg.get("pid", 0)) is not int \
                or not (prev is None or type(prev) is int):
            raise ProtocolError("hello fields have the wrong types")

    def _schedule_join_publish(self) -> None:
        """Weights for a newcomer soon (its SUB needs a moment to connect), at most one such
        broadcast per JOIN_PUBLISH_GAP however many join: a hello flood costs no broadcasts."""
        if self.join_publish is not None:
            return
        loop = asyncio.get_running_loop()
        delay = max(JOIN_PUBLISH_DELAY, self.last_join_publish + JOIN_PUBLISH_GAP - loop.time())

        def fire() -> None:
            self.join_publish = None
            self.last_join_publish = loop.time()
            self.publish_now.set()

        self.join_publish = loop.call_later(delay, fire)

    async def control_task(self, sock: zmq.asyncio.Socket) -> None:
        kinds = {"hello": CONTROL_LIMITS, "heartbeat": CONTROL_LIMITS}
        turn = time.monotonic()
        while True:
            frames = await sock.recv_multipart(copy=False)
            now = time.monotonic()
            if now - turn > YIELD_S:  # a backlog of control messages must not starve the other tasks
                await asyncio.sleep(0)
                turn = now
            if len(frames) != 2:
                self._reject("control message with %d frames", len(frames))
                continue
            peer, body = frames[0].bytes, frames[1]
            if not self.registry.admit(peer, now):
                self.refuse_log("control messages over the rate limits dropped (%d so far)",
                                self.registry.rate_limited)
                continue
            user_id = self._user_id(body)
            reply = None
            try:
                msg = protocol.decode(body.buffer, max_bytes=CONTROL_MAX_BYTES, kinds=kinds)
                if msg["kind"] == "heartbeat":
                    self.heartbeat(msg, user_id)
                    continue
                self._check_hello(msg)
                if self.registry.may_answer(now, peer):
                    reply = self.welcome(msg, user_id, _peer_address(body))
                else:
                    self.refuse_log("control messages over the rate limits dropped (%d so far)",
                                    self.registry.rate_limited)
            except IdentityError as exc:
                self._reject("bad control message: %s", exc)
                if self.registry.may_answer(now):  # tell a forgotten actor to join again
                    reply = protocol.encode("rejoin", reason=str(exc)[:200])
            except ProtocolError as exc:
                self._reject("bad control message: %s", exc)
            if reply is not None:
                await sock.send_multipart([peer, reply])
                if msg["kind"] == "hello":
                    self._schedule_join_publish()

    # ------------------------------------------------------------------ receive
    def _reject(self, fmt: str, *args: Any) -> None:
        self.metrics.rejected_messages += 1
        self.reject_log("rejected message: " + fmt, *args)

    def accept(self, buf: Any, user_id: str | None = None) -> protocol.Rollout | None:
        """Decode and validate one rollout message; None (counted) when it fails."""
        try:
            msg = protocol.decode(buf, max_bytes=self.rollout_bytes, kinds={"rollout": self.spec.limits})
            # who sent it first: a forger costs a decode, not a decompression and validation
            self.registry.verify(*protocol.rollout_identity(msg), user_id, time.monotonic())
            r = protocol.validate_rollout(msg, self.spec, latest_version=self.version,
                                          max_bytes=self.max_bytes)
            episodes = self.episodes.check(r)
        except ProtocolError as exc:
            if self.hooks is not None:
                self.hooks.on_rejected(exc)
            self._reject("%s", exc)
            return None
        if self.hooks is not None:
            self.hooks.on_rollout(r, episodes)
        m = self.metrics
        m.steps += r.steps
        m.frames += r.steps * self.spec.frame_skip
        for ep in episodes:
            m.add_episode(ep.ret, ep.verified)
        if self.arm_stats is not None:
            for ep, sent in zip(episodes, r.episodes, strict=True):
                self.arm_stats.add(sent["arm"], ep.ret)
        target = self.cfg.stop_at_return
        if target and r.episodes and len(m.returns) == m.returns.maxlen and m.mean_return() >= target:
            if not self.stop.is_set():
                self.console.say(f"reached --stop-at-return {target:g}: mean of the last {len(m.returns)} "
                                 f"episodes {m.mean_return():.1f} at {m.steps:,} steps, {m.wall_s():.1f} s")
            self.reached_end = True
            self.stop.set()
        return r

    async def receive_task(self, sock: zmq.asyncio.Socket) -> None:
        turn = time.monotonic()
        while True:
            if self.cfg.mode == "async":
                while self.batcher.full:  # backpressure: let ZeroMQ's queues hold the actors back
                    await asyncio.sleep(0.002)
            frame = await sock.recv(copy=False)
            now = time.monotonic()
            if now - turn > YIELD_S:  # a flood of rollouts must not starve the other tasks
                await asyncio.sleep(0)
                turn = now
            r = self.accept(frame.buffer, self._user_id(frame))
            if r is None:
                continue
            if self.cfg.mode == "async":
                self.batcher.add(r, self.version)
                if self.batcher.ready():
                    self.data_ready.set()
            elif self.round.offer(r, now):
                self._check_round()
            else:
                self.batcher.dropped_stale += 1

    def _check_round(self) -> None:
        """Sync mode: wake the train task when the round is complete, or when it times out."""
        loop = asyncio.get_running_loop()
        if self.round.complete(self.live_actors(), time.monotonic()):
            self.data_ready.set()
        elif self.round_timer is None and self.round.deadline() is not None:
            def expire() -> None:
                self.round_timer = None
                self._check_round()

            self.round_timer = loop.call_later(max(0.0, self.round.deadline() - time.monotonic()) + 0.01,
                                               expire)

    # ------------------------------------------------------------------ train
    def _next_batch(self) -> Batch | None:
        if self.cfg.mode == "async":
            return self.batcher.take(self.version)
        if not self.round.complete(self.live_actors(), time.monotonic()):
            return None
        return collate(self.round.take(), self.version)  # no round is open until the next version

    def _update(self, batch: Batch, version: int) -> tuple[UpdateResult, bytes | None]:
        """Worker thread: one update and, unless it was skipped, the new weights as `version`.
        It changes nothing the event loop owns: the loop applies the result."""
        result = self.trainer.update(batch)
        if self.cfg.update_delay:
            time.sleep(self.cfg.update_delay)
        if result.skipped is not None:
            return result, None
        weights = self._encode_weights(version)
        if weights is None:
            result.skipped = "weights"
        return result, weights

    def _apply(self, batch: Batch, result: UpdateResult, weights: bytes | None) -> None:
        """Event loop: take an update's result; a skipped one leaves version and weights as they were."""
        if weights is None:
            self.metrics.skipped_updates += 1
            log.warning("update skipped: non-finite %s on a batch from actors %s; the weights stay "
                        "at version %d (%d skipped so far)", result.skipped,
                        sorted({int(a) for a in batch.actor_ids}), self.version, self.metrics.skipped_updates)
            return
        self.version += 1
        self.metrics.updates += 1
        self.weights_msg = weights
        stats = result.stats
        self.metrics.lags.extend(int(x) for x in batch.lags)
        stats["charts/policy_lag_mean"] = float(batch.lags.mean())
        stats["charts/policy_lag_max"] = float(batch.lags.max())
        self.metrics.log_update(stats)

    async def train_task(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.data_ready.wait()
            self.data_ready.clear()
            batch = self._next_batch()
            if batch is None:
                continue
            result, weights = await loop.run_in_executor(self.worker, self._update, batch, self.version + 1)
            self._apply(batch, result, weights)
            if self.cfg.mode == "sync":
                self.round.open(self.version)  # the weights of this version are published next
            if weights is not None and self.metrics.updates % self.cfg.save_interval == 0:
                await loop.run_in_executor(self.worker, self.save_checkpoint, self.counters())
            self.publish_now.set()
            if self.cfg.mode == "async" and self.batcher.ready():
                self.data_ready.set()
            if self.cfg.total_frames and self.metrics.frames >= self.cfg.total_frames:
                log.info("reached --total-frames %d", self.cfg.total_frames)
                self.reached_end = True
                self.stop.set()

    # ------------------------------------------------------------------ publish, report
    async def publish_task(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            await sock.send(self.weights_msg, copy=False)
            if self.hooks is not None:
                for msg in self.hooks.messages():
                    await sock.send(msg, copy=False)
            try:
                async with asyncio.timeout(self.cfg.publish_interval):
                    await self.publish_now.wait()
            except TimeoutError:
                pass
            self.publish_now.clear()

    async def report_task(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.report_interval)
            if self.hooks is not None and self.hooks.due():
                await self.snapshot()
            self.report()

    def _family_eval(self, row: dict[str, Any]) -> None:
        """A game family's evaluation: TensorBoard now, metrics.jsonl with the next report."""
        self.metrics.log_scalars(self.hooks.on_eval(row), step=row["frames"])

    async def snapshot(self) -> str:
        """A snapshot of the current policy, kept by the family's hooks (weights copied between updates)."""
        loop = asyncio.get_running_loop()
        state = await loop.run_in_executor(self.worker, state_to_numpy, self.trainer.model)
        name = self.hooks.add_snapshot(state)
        log.info("snapshot %s taken at update %d", name, self.metrics.updates)
        self.publish_now.set()
        return name

    def report(self) -> dict[str, Any]:
        for actor_id in self.registry.prune(time.monotonic()):
            self.episodes.forget(actor_id)
        live = self.live_actors()
        if self.cfg.mode == "sync":
            self._check_round()  # an actor that went silent no longer holds the round up
        row = self.metrics.report(len(live), self.batcher.dropped_stale,
                                  rate_limited=self.registry.rate_limited, fds=open_fds(),
                                  **(self.arm_stats.report() if self.arm_stats is not None else {}),
                                  family=None if self.hooks is None else self.hooks.report(),
                                  family_scalars=None if self.hooks is None else self.hooks.scalars)
        self.console.report(row)
        return row

    # ------------------------------------------------------------------ progress, end, evaluation
    async def tick_task(self) -> None:
        """The progress bar moves between reports."""
        while True:
            await asyncio.sleep(0.5)
            self.console.tick(self.metrics.frames, self.metrics.mean_return())

    async def max_minutes_task(self) -> None:
        await asyncio.sleep(self.cfg.max_minutes * 60.0)
        self.console.say(f"reached --max-minutes {self.cfg.max_minutes:g}")
        self.reached_end = True
        self.stop.set()

    def _eval_counters(self) -> dict[str, Any]:
        return {"wall_s": round(self.metrics.wall_s(), 2), "frames": self.metrics.frames,
                "updates": self.metrics.updates}

    async def _eval_snapshot(self) -> Path:
        """The current weights for an evaluation, written by the worker thread between updates."""
        payload = {"model": self.trainer.model.state_dict(), "config": self.cfg.to_dict(),
                   "model_spec": self.model_spec, "counters": self._eval_counters()}
        path = self.run_dir / "eval" / "policy.pt"
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.worker, checkpoint.write_atomic, path, payload)

    def _background_tasks(self) -> list[Any]:
        tasks = [self.tick_task()]
        if self.cfg.max_minutes:
            tasks.append(self.max_minutes_task())
        if self.cfg.eval_interval:
            tasks.append(self.evals.task(self._eval_snapshot, self._eval_counters))
        return tasks

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

    # ------------------------------------------------------------------ main
    def _bind(self, ctx: zmq.asyncio.Context) -> list[zmq.asyncio.Socket]:
        """The three sockets, bound; PortInUse (every socket closed, so ctx.term() returns) when
        a port is taken."""
        socks: list[zmq.asyncio.Socket] = []
        for kind, offset, limit in ((zmq.ROUTER, transport.CONTROL, CONTROL_MAX_BYTES),
                                    (zmq.PULL, transport.ROLLOUTS, self.rollout_bytes),
                                    (zmq.PUB, transport.WEIGHTS, self.max_bytes)):
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

    async def run(self) -> int:
        self.stop = asyncio.Event()
        self.data_ready = asyncio.Event()
        self.publish_now = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        ctx = zmq.asyncio.Context()
        auth = None
        socks: list[zmq.asyncio.Socket] = []
        try:
            if self.keys is not None:
                from zmq.auth.asyncio import AsyncioAuthenticator

                auth = AsyncioAuthenticator(ctx)
                auth.start()
                auth.configure_curve(domain="*", location=str(Path(self.cfg.curve_dir) / "authorized"))
            socks = self._bind(ctx)
            control, pull, pub = socks
            print(f"learner ready: tcp://{self.cfg.bind}:{self.cfg.port} (run dir {self.run_dir}, "
                  f"device {self.device}, env {self.cfg.env}, mode {self.cfg.mode}, "
                  f"preset {self.cfg.preset})", flush=True)
            self.console.start(self.metrics.frames)
            tasks = [asyncio.create_task(c) for c in (
                self.control_task(control), self.receive_task(pull), self.train_task(),
                self.publish_task(pub), self.report_task(), *self._background_tasks(),
                *([self.authorized_task(auth)] if auth is not None else []))]
            stopper = asyncio.create_task(self.stop.wait())
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                t.cancel()
            _, stuck = await asyncio.wait(tasks, timeout=5)  # a stop never waits on a task for long
            if stuck:
                log.error("tasks still running 5 s after the stop: %s; stopping anyway",
                          ", ".join(t.get_coro().__name__ for t in stuck))
            for t in done:
                if t is not stopper and t.exception() is not None:
                    log.error("learner task failed; saving a checkpoint and stopping",
                              exc_info=t.exception())
                    self.exit_code = 1
        except PortInUse:
            self.worker.shutdown(wait=True)
            self.metrics.close()
            self.registry.close()
            raise
        finally:
            self.evals.stop()
            for s in socks:
                s.close(linger=0)
            if auth is not None:
                auth.stop()
            ctx.term()
        # the single worker thread finishes an update in flight before the final save
        path = await loop.run_in_executor(self.worker, self.save_checkpoint, self.counters())
        self.worker.shutdown(wait=True)
        self.report()
        self.console.close()
        if self.reached_end and self.cfg.eval_interval and path is not None:
            await self.evals.run_once(path, "final", self._eval_counters())
        self.metrics.close()
        self.registry.close()
        log.info("final checkpoint %s", path)
        print(f"learner stopped: {self.metrics.frames:,} frames, {self.metrics.updates} updates; "
              f"checkpoint {path}", flush=True)
        return self.exit_code
