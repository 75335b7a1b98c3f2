"""The actor host's inference loop over its emulator processes, without sockets.

One round (`step`): read which slots have a new observation, record each into its emulator's
rollout (frame stack, rewards, episode ends), run the policy once on every slot that is waiting
for an action, write the actions into the shared slots and give those emulators their turn.
Rollouts that a slot finishes are handed back to the caller, who sends them after the turns
went out, so the emulators step while the host encodes and sends.

There is no barrier between emulators: a round takes whichever are ready, so while the policy
runs on one group the others step (Sample Factory's double-buffered sampling, with the groups
formed by timing instead of by configuration).
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from actor.emulator_pool import EmulatorPool
from actor.exploration import AdaptiveEpsilon, explorer
from actor.inference import BatchedPolicy
from actor.rollout import RolloutBuilder
from actor.slots import SlotLayout
from common.action_sampling import own_logp, sample_actions
from common.protocol import Rollout

if TYPE_CHECKING:
    from common.runspec import Exploration, RunSpec


@dataclass(frozen=True)
class Member:
    """Who a slot's emulator acts for: an actor id of the learner, its seed and epsilon."""

    actor_id: int
    seed: int
    epsilon: float = 0.0


@dataclass
class SamplerStats:
    """Counters since the last `reset`: rounds, samples and seconds per part of a round."""

    rounds: int = 0
    batches: int = 0
    samples: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("wait", "observe", "infer", "infer_cpu", "sample", "turns"), 0.0))
    started: float = field(default_factory=time.perf_counter)

    def reset(self) -> None:
        self.rounds = self.batches = self.samples = 0
        self.seconds = dict.fromkeys(self.seconds, 0.0)
        self.started = time.perf_counter()


class Sampler:
    def __init__(self, pool: EmulatorPool, policy: BatchedPolicy, *, unroll_length: int,
                 frame_stack: int, frame_skip: int, max_abs_reward: float = 1e6, lives: bool = False,
                 exploration: Exploration | None = None, lockstep: bool = False):
        self.pool = pool
        self.lives = lives
        self.policy = policy
        self.unroll_length = unroll_length
        self.frame_stack = frame_stack
        self.frame_skip = frame_skip
        self.max_abs_reward = max_abs_reward
        n = pool.n
        self.members: list[Member | None] = [None] * n
        self.builders: list[RolloutBuilder | None] = [None] * n
        self.rngs: list[np.random.Generator | None] = [None] * n
        self.epsilon = np.zeros(n)
        self.exploration = exploration  # --exploration adaptive: a bandit per slot picks each episode's epsilon
        self.explorers: list[AdaptiveEpsilon | None] = [None] * n
        self.waiting: dict[int, None] = {}  # slots with an observation and no action yet (ordered)
        self.held: set[int] = set()  # slots that must not act now (the caller decides)
        # sync mode: act only when every running slot waits, on all of them in slot order. The
        # policy's numbers for a slot depend a little on which other slots share its batch (the
        # CNN's blocking), so batches made of whichever emulators answered first would make two
        # runs of one seed differ (Airstriker, 8 emulators: 1,297 and 1,092 at 2M frames)
        self.lockstep = lockstep
        self.stalled: set[int] = set()  # slots whose emulator stopped answering: lockstep goes on without them
        self.first_episode_hooks: list[Callable[[list[int]], None] | None] = [None] * n
        self.stats = SamplerStats()
        self.states = policy.initial_state(n)  # one recurrent state per emulator slot
        self.episode_start = np.ones(n, dtype=bool)  # the slot's next observation opens an episode
        first = pool.slots.obs[0]
        self._batch = np.empty((n, frame_stack, *first.shape), dtype=first.dtype)

    @classmethod
    def from_spec(cls, spec: RunSpec, n: int, device: torch.device, *, dtype: str = "float32",
                  **pool_options: Any) -> Sampler:
        """A sampler over n emulators of the game, preprocessing and model that a learner's
        run `spec` names (no emulator starts before `assign`)."""
        layout = SlotLayout(n, spec.model.frame_shape, spec.bounds.frame_dtype)
        pool = EmulatorPool(layout, spec, **pool_options)
        return cls(pool, BatchedPolicy(spec.model.as_dict(), device, n, dtype), unroll_length=spec.unroll_length,
                   frame_stack=spec.model.frame_stack, frame_skip=spec.env.frame_skip,
                   max_abs_reward=spec.bounds.max_abs_reward, lives=spec.bounds.lives,
                   exploration=spec.exploration, lockstep=spec.mode == "sync")

    def close(self) -> None:
        self.pool.close()

    # ------------------------------------------------------------------ membership
    def assign(self, k: int, member: Member) -> None:
        """Start slot k's emulator for `member` (a fresh process, seeded with its seed)."""
        self.members[k] = member
        self.builders[k] = None  # made from the emulator's first observation
        self.rngs[k] = np.random.default_rng(member.seed)
        self.epsilon[k] = member.epsilon
        self.explorers[k] = explorer(self.exploration, member.seed)
        self.waiting.pop(k, None)
        self.episode_start[k] = True
        self.pool.start(k, member.seed)

    def vacate(self, k: int) -> None:
        """Forget slot k's member and rollout in progress (its process is gone or retired)."""
        self.members[k] = None
        self.builders[k] = None
        self.waiting.pop(k, None)

    def restart_rollouts(self) -> None:
        """Drop every rollout in progress (the learner they were for is gone)."""
        for b in self.builders:
            if b is not None:
                b.restart()

    # ------------------------------------------------------------------ one round
    def observe(self, slots: list[int]) -> list[tuple[int, Rollout]]:
        """Record what each of `slots` returned; the rollouts that this completes."""
        pool_slots = self.pool.slots
        done = []
        for k in slots:
            b = self.builders[k]
            member = self.members[k]
            if member is None:
                continue
            if b is None:  # the emulator's first answer: its reset observation
                b = self.builders[k] = RolloutBuilder(
                    pool_slots.obs[k], actor_id=member.actor_id, unroll_length=self.unroll_length,
                    frame_stack=self.frame_stack, frame_skip=self.frame_skip, max_abs_reward=self.max_abs_reward,
                    lives=self.lives)
                if self.first_episode_hooks[k] is not None:
                    b.on_first_episode = self.first_episode_hooks[k]
                b.explorer = self.explorers[k]
                self.episode_start[k] = True
            else:
                term, trunc = bool(pool_slots.terminated[k]), bool(pool_slots.truncated[k])
                self.episode_start[k] |= term or trunc  # the state resets on done
                r = b.observe(pool_slots.obs[k], float(pool_slots.reward[k]), term, trunc,
                              float(pool_slots.raw_reward[k]), pool_slots.final[k] if trunc and not term else None,
                              game_over=bool(pool_slots.game_over[k]))
                if r is not None:
                    done.append((k, r))
            self.waiting[k] = None
        return done

    def turns(self) -> list[int]:
        """The slots the policy runs on now: every waiting slot that is not held; with `lockstep`,
        none until each running slot that is neither held nor stalled waits, then all of them in
        slot order."""
        batch = [k for k in self.waiting if k not in self.held]
        if self.lockstep and batch:
            if any(m is not None and k not in self.held and k not in self.waiting and k not in self.stalled
                   for k, m in enumerate(self.members)):
                return []
            batch.sort()
        return batch

    def act(self, policy_version: int) -> list[int]:
        """Run the policy on the slots whose turn it is (`turns`); give them their turns."""
        batch = self.turns()
        if not batch:
            return []
        clock = time.perf_counter
        t0 = clock()
        obs = self._batch[: len(batch)]
        for i, k in enumerate(batch):
            obs[i] = self.builders[k].stack.buf
        c0 = time.thread_time()
        starts = torch.from_numpy(self.episode_start[batch])
        state_in = self.states[batch] * (~starts).to(self.states.dtype).view(-1, *[1] * (self.states.dim() - 1))
        logits, self.states[batch] = self.policy.step(obs, state_in)
        self.episode_start[batch] = False
        t1 = clock()
        c1 = time.thread_time()
        uniforms = np.array([self.rngs[k].random() for k in batch])
        eps = np.array([self.epsilon[k] if self.explorers[k] is None else self.explorers[k].epsilon for k in batch])
        actions, logp = sample_actions(logits, uniforms, eps)
        own = own_logp(logits, actions) if eps.any() else None  # the PPO ratio's reference
        self.pool.slots.action[batch] = actions
        t2 = clock()
        self.pool.act(batch)
        t3 = clock()
        for i, k in enumerate(batch):
            mixed = own is not None and eps[i] > 0.0
            self.builders[k].act(int(actions[i]), float(logp[i]), policy_version,
                                 own_logp=float(own[i]) if mixed else None, core_state=state_in[i].numpy())
            del self.waiting[k]
        st = self.stats
        st.batches += 1
        st.samples += len(batch)
        st.seconds["infer"] += t1 - t0
        st.seconds["infer_cpu"] += c1 - c0  # CPU time of the forward pass (wall time minus preemption)
        st.seconds["sample"] += t2 - t1
        st.seconds["turns"] += t3 - t2 + clock() - t3
        return batch

    def step(self, policy_version: int, timeout: float) -> list[tuple[int, Rollout]]:
        """One round: wait up to `timeout` s for a slot to be ready (unless some wait already),
        observe, act. The rollouts finished in this round."""
        clock = time.perf_counter
        t0 = clock()
        ready = self.pool.ready()
        if not ready and not self.turns():
            select.select([self.pool.ready_fd], [], [], timeout)
            ready = self.pool.ready()
        t1 = clock()
        done = self.observe(ready)
        t2 = clock()
        self.act(policy_version)
        st = self.stats
        st.rounds += 1
        st.seconds["wait"] += t1 - t0
        st.seconds["observe"] += t2 - t1
        return done
