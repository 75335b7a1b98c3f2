"""The agent contract: how every caller turns observations into actions, and how the trainer
replays a rollout. A feed-forward model is the case with an empty state.

- `initial_state(batch)`: the state [B, *state_shape] an episode starts from (zeros).
- `step(obs, state, done)`: one decision for a batch; `done[b]` says obs[b] opens a new episode,
  so row b's state is reset first. Returns (logits, value, new state).
- `unroll(obs[T, B], state0, dones[T, B])`: the same T steps at once (the learner's truncated
  BPTT over one rollout); returns logits [T, B, A], values [T, B] and the state after every step.

The state is one float tensor: for the LSTM [B, 2, H] (h, then c), for feed-forward [B, 0].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

CELL_BOUND = 1e5
"""The LSTM's cell c is clamped to +-CELL_BOUND at every step (tanh saturates long before), so a
state a real actor sends is bounded: |h| <= 1, |c| <= CELL_BOUND. A step moves c by less than 1
(|f| < 1, |i * g| < 1), so |c| <= t after t steps of an episode: the bound acts only in
episodes longer than 100k steps. (It was 100: CartPole's 500-step episodes took a trained cell
past it, and each such rollout made the learner fall back to its 5x slower exact step loop.)"""


def _keep(done: Tensor, state: Tensor) -> Tensor:
    """state with the rows whose episode starts now zeroed (as TorchBeast's `notdone`)."""
    return state * (~done.bool()).to(state.dtype).view(-1, *([1] * (state.dim() - 1)))


class Agent(nn.Module):
    """Base of every policy network: `core(obs, state)` is the one thing a model defines besides
    its layers; reset handling and the sequence unroll live here, shared."""

    state_shape: tuple[int, ...] = (0,)
    state_bound: tuple[float, ...] = ()  # per row of the state's first axis: the most |x| can be

    @property
    def recurrent(self) -> bool:
        return self.state_shape != (0,)

    def initial_state(self, batch: int, device: torch.device | str | None = None) -> Tensor:
        if device is None:
            device = next(self.parameters()).device
        return torch.zeros((batch, *self.state_shape), device=device)

    def core(self, obs: Tensor, state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(logits, value, state) for a batch [B, *obs], no resets. Feed-forward: forward()."""
        logits, value = self(obs)
        return logits, value, state

    def step(self, obs: Tensor, state: Tensor, done: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.core(obs, _keep(done, state) if self.recurrent else state)

    def unroll(self, obs: Tensor, state0: Tensor, dones: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(logits [T, B, A], values [T, B], states [T, B, *state_shape]: the state after each
        step, before any reset). Feed-forward: one batched forward over all T*B observations."""
        T, B = obs.shape[:2]
        if not self.recurrent:
            logits, values = self(obs.flatten(0, 1))
            states = state0.unsqueeze(0).expand(T, *state0.shape)
            return logits.view(T, B, -1), values.view(T, B), states
        logits_t, values_t, states_t = [], [], []
        state = state0
        for t in range(T):
            logits, value, state = self.step(obs[t], state, dones[t])
            logits_t.append(logits)
            values_t.append(value)
            states_t.append(state)
        return torch.stack(logits_t), torch.stack(values_t), torch.stack(states_t)

    def policy_logits(self, obs: Tensor) -> Tensor:
        """Feed-forward logits only (callers that keep no state: scripted opponents, exports)."""
        return self(obs)[0]


def starts_from_dones(dones: Tensor) -> Tensor:
    """[T+1, B]: which observation of a rollout (frames 0..T) opens an episode, from the [T, B]
    done flags of its steps; frame 0 never does (the rollout's state already accounts for it)."""
    first = torch.zeros_like(dones[:1], dtype=torch.bool)
    return torch.cat([first, dones.bool()], dim=0)
