"""The asyncio learner: one task per role (control, receive, train, publish, report).

Updates and checkpoint writes run in a worker thread, so receiving never stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import zmq
import zmq.asyncio

from common import envs, protocol, transport
from common.config import Config, actor_epsilon, actor_seed, dump_toml, env_kwargs
from common.model import build_model, env_model_spec, spec_hash, state_to_numpy
from common.protocol import ProtocolError, RolloutSpec
from learner import checkpoint, run_info
from learner.batcher import Batch, Batcher, collate
from learner.eval_loop import EvalLoop
from learner.metrics import Metrics
from learner.progress import Console
from learner.trainer import Trainer, pick_device

log = logging.getLogger("learner")
HELLO_KEYS = {"v", "kind", "host", "pid", "previous_id"}


@dataclass
class ActorInfo:
    actor_id: int
    host: str
    pid: int
    seed: int
    last_seen: float


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


class Learner:
    def __init__(self, cfg: Config, run_dir: Path, *, keys: transport.CurveKeys | None = None):
        self.cfg = cfg
        self.run_dir = run_dir
        self.keys = keys
        is_retro = envs.is_retro_game(cfg.env)
        self.env_kwargs = env_kwargs(cfg, is_retro)
        sig, self.model_spec = env_model_spec(cfg)
        self.spec_hash = spec_hash(self.model_spec)
        self.spec = RolloutSpec(cfg.unroll_length, tuple(sig.obs_shape), sig.obs_dtype,
                                self.model_spec["frame_stack"], sig.n_actions, self.env_kwargs["frame_skip"])
        self.max_bytes = int(cfg.max_message_mb * (1 << 20))
        self.device = pick_device(cfg.device)
        torch.set_num_threads(torch_threads(cfg))
        self.trainer = Trainer(build_model(self.model_spec), cfg, self.device)
        self.session = secrets.token_hex(8)  # names this learner process; not a seed
        self.version = 0
        self.next_actor_id = 0
        counters: dict[str, Any] = {}
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
        self.evals = EvalLoop(run_dir, interval_min=cfg.eval_interval, max_steps=cfg.eval_max_steps,
                              record=self.metrics.log_eval)
        self.reached_end = False  # --total-frames, --stop-at-return or --max-minutes, not a signal
        self.batcher = Batcher(cfg.rollouts_per_batch, cfg.max_policy_lag)
        self.batcher.dropped_stale = int(counters.get("dropped_stale", 0))
        self.actors: dict[int, ActorInfo] = {}
        self.sync_round: dict[int, protocol.Rollout] = {}
        self.weights_msg = self._encode_weights()
        self.reject_log = RateLimitedLog()
        self.exit_code = 0
        # one worker thread: updates and checkpoint writes never overlap and never block receiving
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="update")

    # ------------------------------------------------------------------ state
    def _resume(self) -> dict[str, Any]:
        found = checkpoint.load_latest(self.run_dir / "checkpoints", self.device)
        if found is None:
            log.warning("--resume: no checkpoint in %s; starting fresh", self.run_dir / "checkpoints")
            return {}
        path, ckpt = found
        if ckpt.get("model_spec") != self.model_spec:
            raise ValueError(f"{path} was made for another environment or model; use another --run-dir")
        self.trainer.model.load_state_dict(ckpt["model"])
        self.trainer.optimizer.load_state_dict(ckpt["optimizer"])
        counters = dict(ckpt["counters"])
        self.version = int(counters.get("version", counters.get("updates", 0)))
        self.next_actor_id = int(counters.get("next_actor_id", 0))
        log.info("resumed %s: %d updates, %d frames", path, counters.get("updates", 0), counters.get("frames", 0))
        return counters

    def _encode_weights(self) -> bytes:
        return protocol.encode_weights(state_to_numpy(self.trainer.model), version=self.version,
                                       spec_hash=self.spec_hash, session=self.session)

    def _payload(self) -> dict[str, Any]:
        counters = self.metrics.counters()
        counters.update(version=self.version, next_actor_id=self.next_actor_id,
                        dropped_stale=self.batcher.dropped_stale)
        return {"model": self.trainer.model.state_dict(), "optimizer": self.trainer.optimizer.state_dict(),
                "counters": counters, "config": self.cfg.to_dict(), "model_spec": self.model_spec}

    def save_checkpoint(self) -> Path:
        return checkpoint.save(self.run_dir / "checkpoints", self.metrics.updates, self._payload(),
                               self.cfg.max_checkpoints)

    def live_actors(self) -> list[int]:
        cutoff = time.monotonic() - self.cfg.actor_timeout
        return [a.actor_id for a in self.actors.values() if a.last_seen >= cutoff]

    # ------------------------------------------------------------------ control
    def welcome(self, hello: dict[str, Any], addr: str = "") -> bytes:
        """Admit an actor; `addr` is the IP its connection comes from, as ZeroMQ saw it."""
        prev = hello.get("previous_id")
        live = set(self.live_actors())
        if type(prev) is int and 0 <= prev < self.next_actor_id and prev not in live:
            actor_id = prev  # an actor rejoining after a learner restart keeps its id and seed
        else:
            actor_id = self.next_actor_id
            self.next_actor_id += 1
        seed = actor_seed(self.cfg.seed, actor_id)
        host = str(hello.get("host", "?"))[:255]
        pid = hello.get("pid") if type(hello.get("pid")) is int else -1
        self.actors[actor_id] = ActorInfo(actor_id, host, pid, seed, time.monotonic())
        epsilon = actor_epsilon(self.cfg, actor_id)
        with open(self.run_dir / "actors.jsonl", "a") as fh:
            fh.write(json.dumps({"actor_id": actor_id, "host": host, "addr": addr, "pid": pid, "seed": seed,
                                 "epsilon": epsilon, "joined_at": time.time()}) + "\n")
        log.info("actor %d joined from %s (%s) pid %s (seed %d)", actor_id, host, addr or "?", pid, seed)
        settings = {
            "env": self.cfg.env, "env_kwargs": self.env_kwargs, "mode": self.cfg.mode,
            "unroll_length": self.cfg.unroll_length, "model": self.model_spec,
            "max_message_bytes": self.max_bytes, "publish_interval": self.cfg.publish_interval,
            "rollout_bytes": self.spec.max_rollout_bytes,
        }
        return protocol.encode("welcome", actor_id=actor_id, seed=seed, epsilon=epsilon,
                               session=self.session, settings=settings)

    def heartbeat(self, msg: dict[str, Any]) -> None:
        """An actor says it is alive (every ~2 s, also while it waits on us): it stays counted."""
        actor_id, session = protocol.validate_heartbeat(msg)
        if session != self.session:
            raise ProtocolError(f"heartbeat from actor {actor_id} of another learner session")
        info = self.actors.get(actor_id)
        if info is None:
            raise ProtocolError(f"heartbeat from unknown actor id {actor_id}")
        info.last_seen = time.monotonic()

    @staticmethod
    def _check_hello(msg: dict[str, Any]) -> None:
        if set(msg) - HELLO_KEYS:
            raise ProtocolError(f"hello has unknown fields {sorted(set(msg) - HELLO_KEYS)}")
        prev = msg.get("previous_id")
        if not isinstance(msg.get("host", ""), str) or type(msg.get("pid", 0)) is not int \
                or not (prev is None or type(prev) is int):
            raise ProtocolError("hello fields have the wrong types")

    async def control_task(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sock.recv_multipart(copy=False)
            if len(frames) != 2:
                self._reject("control message with %d frames", len(frames))
                continue
            try:
                msg = protocol.decode(frames[1].bytes, max_bytes=1 << 20)
                if msg["kind"] == "heartbeat":
                    self.heartbeat(msg)
                    continue
                if msg["kind"] != "hello":
                    raise ProtocolError(f"{msg['kind']} on the control socket")
                self._check_hello(msg)
            except ProtocolError as exc:
                self._reject("bad control message: %s", exc)
                continue
            await sock.send_multipart([frames[0].bytes, self.welcome(msg, _peer_address(frames[1]))])
            # the newcomer's SUB needs a moment to connect; then it need not wait for the timer
            asyncio.get_running_loop().call_later(0.3, self.publish_now.set)

    # ------------------------------------------------------------------ receive
    def _reject(self, fmt: str, *args: Any) -> None:
        self.metrics.rejected_messages += 1
        self.reject_log("rejected message: " + fmt, *args)

    def accept(self, buf: bytes) -> protocol.Rollout | None:
        """Decode and validate one rollout message; None (counted) when it fails."""
        try:
            msg = protocol.decode(buf, max_bytes=self.max_bytes)
            r = protocol.validate_rollout(msg, self.spec, latest_version=self.version,
                                          max_bytes=self.max_bytes)
            info = self.actors.get(r.actor_id)
            if info is None:
                raise ProtocolError(f"unknown actor id {r.actor_id}")
        except ProtocolError as exc:
            self._reject("%s", exc)
            return None
        info.last_seen = time.monotonic()
        m = self.metrics
        m.steps += r.steps
        m.frames += r.steps * self.spec.frame_skip
        for ep in r.episodes:
            m.add_episode(ep["return"])
        target = self.cfg.stop_at_return
        if target and r.episodes and len(m.returns) == m.returns.maxlen and m.mean_return() >= target:
            if not self.stop.is_set():
                self.console.say(f"reached --stop-at-return {target:g}: mean of the last {len(m.returns)} "
                                 f"episodes {m.mean_return():.1f} at {m.steps:,} steps, {m.wall_s():.1f} s")
            self.reached_end = True
            self.stop.set()
        return r

    async def receive_task(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            if self.cfg.mode == "async":
                while self.batcher.full:  # backpressure: let ZeroMQ's queues hold the actors back
                    await asyncio.sleep(0.002)
            buf = await sock.recv(copy=True)
            r = self.accept(buf)
            if r is None:
                continue
            if self.cfg.mode == "async":
                self.batcher.add(r, self.version)
                if self.batcher.ready():
                    self.data_ready.set()
            elif r.policy_version == self.version and r.actor_id not in self.sync_round:
                self.sync_round[r.actor_id] = r
                self._check_round()
            else:
                self.batcher.dropped_stale += 1

    def _check_round(self) -> None:
        if self.sync_round and set(self.live_actors()) <= set(self.sync_round):
            self.data_ready.set()

    # ------------------------------------------------------------------ train
    def _next_batch(self) -> Batch | None:
        if self.cfg.mode == "async":
            return self.batcher.take(self.version)
        if not (self.sync_round and set(self.live_actors()) <= set(self.sync_round)):
            return None
        rollouts = [self.sync_round[k] for k in sorted(self.sync_round)]
        self.sync_round = {}
        return collate(rollouts, self.version)

    def _update(self, batch: Batch, save: bool) -> tuple[dict[str, float], bytes]:
        """Worker thread: one update, the new weights encoded, a checkpoint when due."""
        stats = self.trainer.update(batch)
        if self.cfg.update_delay:
            time.sleep(self.cfg.update_delay)
        self.version += 1
        self.metrics.updates += 1
        weights = self._encode_weights()
        if save:
            self.save_checkpoint()
        return stats, weights

    async def train_task(self) -> None:
        while True:
            await self.data_ready.wait()
            self.data_ready.clear()
            batch = self._next_batch()
            if batch is None:
                continue
            save = (self.metrics.updates + 1) % self.cfg.save_interval == 0
            loop = asyncio.get_running_loop()
            stats, self.weights_msg = await loop.run_in_executor(self.worker, self._update, batch, save)
            self.metrics.lags.extend(int(x) for x in batch.lags)
            stats["charts/policy_lag_mean"] = float(batch.lags.mean())
            stats["charts/policy_lag_max"] = float(batch.lags.max())
            self.metrics.log_update(stats)
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
            try:
                await asyncio.wait_for(self.publish_now.wait(), self.cfg.publish_interval)
            except TimeoutError:
                pass
            self.publish_now.clear()

    async def report_task(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.report_interval)
            self.report()

    def report(self) -> dict[str, Any]:
        live = self.live_actors()
        if self.cfg.mode == "sync":
            self._check_round()  # an actor that went silent no longer holds the round up
        row = self.metrics.report(len(live), self.batcher.dropped_stale)
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
    async def run(self) -> int:
        self.stop = asyncio.Event()
        self.data_ready = asyncio.Event()
        self.publish_now = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        ctx = zmq.asyncio.Context()
        auth = None
        if self.keys is not None:
            from zmq.auth.asyncio import AsyncioAuthenticator

            auth = AsyncioAuthenticator(ctx)
            auth.start()
            auth.configure_curve(domain="*", location=str(Path(self.cfg.curve_dir) / "authorized"))
        socks = []
        try:
            for kind, offset in ((zmq.ROUTER, transport.CONTROL), (zmq.PULL, transport.ROLLOUTS),
                                 (zmq.PUB, transport.WEIGHTS)):
                s = transport.make_socket(ctx, kind, max_bytes=self.max_bytes, keys=self.keys, server=True,
                                          tcp_buffer=transport.rollout_tcp_buffer(self.spec.max_rollout_bytes))
                s.bind(transport.endpoint(self.cfg.bind, self.cfg.port, offset))
                socks.append(s)
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
            await asyncio.gather(*tasks, return_exceptions=True)
            for t in done:
                if t is not stopper and t.exception() is not None:
                    log.error("learner task failed; saving a checkpoint and stopping",
                              exc_info=t.exception())
                    self.exit_code = 1
        finally:
            self.evals.stop()
            for s in socks:
                s.close(linger=0)
            if auth is not None:
                auth.stop()
            ctx.term()
        # the single worker thread finishes an update in flight before the final save
        path = await loop.run_in_executor(self.worker, self.save_checkpoint)
        self.worker.shutdown(wait=True)
        self.report()
        self.console.close()
        if self.reached_end and self.cfg.eval_interval:
            await self.evals.run_once(path, "final", self._eval_counters())
        self.metrics.close()
        log.info("final checkpoint %s", path)
        print(f"learner stopped: {self.metrics.frames:,} frames, {self.metrics.updates} updates; "
              f"checkpoint {path}", flush=True)
        return self.exit_code
