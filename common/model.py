"""Actor-critic networks shared by actor and learner: Nature CNN for images, MLP for vectors,
a small CNN for ConnectX boards, and an LSTM core after either encoder. Every one is an
:class:`common.agent.Agent`."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from common.agent import CELL_BOUND, Agent


def _init(layer: nn.Module, gain: float = float(np.sqrt(2))) -> nn.Module:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class NatureCNN(Agent):
    """Mnih et al. 2015 torso on [N, stack, H, W] uint8 frames; policy and value heads."""

    def __init__(self, in_channels: int, frame_size: int, n_actions: int):
        super().__init__()
        self.torso = nn.Sequential(
            _init(nn.Conv2d(in_channels, 32, 8, stride=4)), nn.ReLU(),
            _init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
            _init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flat = self.torso(torch.zeros(1, in_channels, frame_size, frame_size)).shape[1]
        self.fc = nn.Sequential(_init(nn.Linear(n_flat, 512)), nn.ReLU())
        self.policy = _init(nn.Linear(512, n_actions), 0.01)
        self.value = _init(nn.Linear(512, 1), 1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fc(self.torso(obs.float() * (1.0 / 255.0)))
        return self.policy(h), self.value(h).squeeze(-1)

    def policy_logits(self, obs: torch.Tensor) -> torch.Tensor:
        """Logits only: what an actor needs to act."""
        return self.policy(self.fc(self.torso(obs.float() * (1.0 / 255.0))))


class MLP(Agent):
    """Two tanh layers each for policy and value (CleanRL's CartPole agent)."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int):
        super().__init__()

        def trunk() -> nn.Sequential:
            return nn.Sequential(_init(nn.Linear(obs_dim, hidden)), nn.Tanh(),
                                 _init(nn.Linear(hidden, hidden)), nn.Tanh())

        self.policy = nn.Sequential(trunk(), _init(nn.Linear(hidden, n_actions), 0.01))
        self.value = nn.Sequential(trunk(), _init(nn.Linear(hidden, 1), 1.0))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs.float().flatten(1)
        return self.policy(x), self.value(x).squeeze(-1)

    def policy_logits(self, obs: torch.Tensor) -> torch.Tensor:
        """Logits only, skipping the separate value trunk: what an actor needs to act."""
        return self.policy(obs.float().flatten(1))


class ConnectXNet(Agent):
    """ConnectX [N, planes, 6, 7] boards: ``blocks`` 3x3 conv layers of ``channels`` (none: an
    MLP on the flat planes), two shared hidden layers, policy and value heads."""

    def __init__(self, in_planes: int, rows: int, columns: int, n_actions: int, channels: int,
                 blocks: int, hidden: int):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_planes
        for _ in range(blocks):
            layers += [_init(nn.Conv2d(c_in, channels, 3, padding=1)), nn.ReLU()]
            c_in = channels
        self.torso = nn.Sequential(*layers, nn.Flatten(),
                                   _init(nn.Linear(c_in * rows * columns, hidden)), nn.ReLU(),
                                   _init(nn.Linear(hidden, hidden)), nn.ReLU())
        self.policy = _init(nn.Linear(hidden, n_actions), 0.01)
        self.value = _init(nn.Linear(hidden, 1), 1.0)

    @staticmethod
    def _planes(obs: torch.Tensor) -> torch.Tensor:
        """[N, planes, 6, 7], also from [N, stack, planes, 6, 7] (the learner's stacks of one)."""
        return obs.float().reshape(obs.shape[0], -1, *obs.shape[-2:])

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.torso(self._planes(obs))
        return self.policy(h), self.value(h).squeeze(-1)

    def policy_logits(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy(self.torso(self._planes(obs)))


MODEL_CHOICES = ("auto", "cnn", "mlp", "lstm")


class RecurrentNet(Agent):
    """An encoder (the Nature CNN's torso, or an MLP trunk), an LSTM cell, policy and value heads.
    The cell's c is clamped to +-CELL_BOUND each step, so every state an actor holds is bounded."""

    def __init__(self, spec: dict[str, Any]):
        super().__init__()
        stack, frame = spec["frame_stack"], spec["frame_shape"]
        if spec["encoder"] == "cnn":
            cnn = NatureCNN(stack, frame[0], 1)
            self.encoder: nn.Module = nn.Sequential(cnn.torso, cnn.fc)
            self.scale, n_feat = 1.0 / 255.0, 512
        else:
            hidden = spec["hidden"]
            self.encoder = nn.Sequential(nn.Flatten(), _init(nn.Linear(int(np.prod(frame)) * stack, hidden)),
                                         nn.Tanh())
            self.scale, n_feat = 1.0, hidden
        h = spec["lstm_hidden"]
        self.cell = nn.LSTMCell(n_feat, h)
        self.policy = _init(nn.Linear(h, spec["n_actions"]), 0.01)
        self.value = _init(nn.Linear(h, 1), 1.0)
        self.state_shape = (2, h)
        self.state_bound = (1.0, CELL_BOUND)

    def _cell(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h, c = self.cell(x, (state[:, 0], state[:, 1]))
        c = c.clamp(-CELL_BOUND, CELL_BOUND)
        return self.policy(h), self.value(h).squeeze(-1), torch.stack([h, c], dim=1)

    def core(self, obs: Tensor, state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self._cell(self.encoder(obs.float() * self.scale), state)

    def unroll(self, obs: Tensor, state0: Tensor, dones: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(logits, values, states) over [T, B] observations from state0, the state reset where
        `dones` is set; states[t] is the state after step t (for no-gradient uses only).

        The encoder sees all T*B observations at once. The cell runs as torch's native LSTM over
        the stretches between resets (one call each, no Python step loop: 20x faster on CPU);
        that equals stepping `_cell` as long as no cell value reaches the clamp, which a
        no-gradient replay of the cell state checks; where one does, the exact step loop runs."""
        T, B = obs.shape[:2]
        x = self.encoder(obs.flatten(0, 1).float() * self.scale).view(T, B, -1)
        out = self._unroll_native(x, state0, dones)
        return out if out is not None else self._unroll_steps(x, state0, dones)

    def _unroll_native(self, x: Tensor, state0: Tensor, dones: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        T, B = x.shape[:2]
        cell = self.cell
        params = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
        keep = (~dones.bool()).to(x.dtype).unsqueeze(-1)  # [T, B, 1]
        cuts = [0, *(dones[1:].bool().any(dim=1).nonzero().flatten() + 1).tolist(), T]
        h, c = state0[:, 0], state0[:, 1]
        hs = []
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            h, c = h * keep[a], c * keep[a]
            out, h, c = torch.lstm(x[a:b], (h[None], c[None]), params, True, 1, 0.0, self.training, False, False)
            h, c = h[0], c[0]
            hs.append(out)
        H = torch.cat(hs)
        with torch.no_grad():  # every step's cell state, replayed from the gates
            h_in = torch.cat([state0[None, :, 0], H[:-1]]) * keep
            gates = F.linear(x, cell.weight_ih, cell.bias_ih) + F.linear(h_in, cell.weight_hh, cell.bias_hh)
            i, f, g, _ = gates.chunk(4, -1)
            f, ig = torch.sigmoid(f), torch.sigmoid(i) * torch.tanh(g)
            c, cs = state0[:, 1], []
            for t in range(T):
                c = f[t] * (c * keep[t]) + ig[t]
                cs.append(c)
            C = torch.stack(cs)
            if not bool(C.abs().max() < CELL_BOUND):  # the clamp would act: step exactly
                return None
        return self.policy(H), self.value(H).squeeze(-1), torch.stack([H.detach(), C], dim=2)

    def _unroll_steps(self, x: Tensor, state0: Tensor, dones: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        T, B = x.shape[:2]
        keep = (~dones.bool()).to(x.dtype).view(T, B, 1)
        h, c = state0[:, 0], state0[:, 1]
        hs, cs = [], []
        for t in range(T):
            h, c = self.cell(x[t], (h * keep[t], c * keep[t]))
            c = c.clamp(-CELL_BOUND, CELL_BOUND)
            hs.append(h)
            cs.append(c)
        H, C = torch.stack(hs), torch.stack(cs)
        return self.policy(H), self.value(H).squeeze(-1), torch.stack([H, C], dim=2).detach()

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """(logits, value) from the initial state: one observation with no memory."""
        logits, value, _ = self.core(obs, self.initial_state(len(obs), obs.device))
        return logits, value


def model_spec(frame_shape: tuple[int, ...], frame_stack: int, n_actions: int, hidden: int,
               model: str = "auto", lstm_hidden: int = 128) -> dict[str, Any]:
    """Everything that fixes the architecture; travels in the welcome message. `model`: auto
    (the Nature CNN for images, the MLP for vectors), cnn, mlp, or lstm (an LSTM core of
    `lstm_hidden` units after the encoder auto picks)."""
    image = len(frame_shape) == 2
    if model not in MODEL_CHOICES:
        raise ValueError(f"model must be one of {', '.join(MODEL_CHOICES)}, got {model!r}")
    if model == "cnn" and not image:
        raise ValueError(f"--model cnn needs image observations, this env gives {tuple(frame_shape)}")
    encoder = "cnn" if (model == "cnn" or (model in ("auto", "lstm") and image)) else "mlp"
    spec = {
        "kind": "nature_cnn" if encoder == "cnn" else "mlp",
        "frame_shape": list(frame_shape),
        "frame_stack": frame_stack if image else 1,
        "n_actions": n_actions,
        "hidden": hidden,
    }
    if model == "lstm":
        spec.update(kind="lstm", encoder=encoder, lstm_hidden=lstm_hidden)
    return spec


def state_spec(spec: dict[str, Any]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(shape, bound per row) of the recurrent state a model of `spec` carries: what a rollout's
    core_state must be. ((0,), ()) for feed-forward models."""
    if spec["kind"] == "lstm":
        return (2, spec["lstm_hidden"]), (1.0, CELL_BOUND)
    return (0,), ()


def board_spec(frame_shape: tuple[int, ...], n_actions: int, hidden: int, channels: int, blocks: int) -> dict[str, Any]:
    """The ConnectX network's spec (``frame_shape`` = planes, rows, columns)."""
    return {"kind": "connectx", "frame_shape": list(frame_shape), "frame_stack": 1, "n_actions": n_actions,
            "hidden": hidden, "channels": channels, "blocks": blocks}


def spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def build_model(spec: dict[str, Any]) -> nn.Module:
    if spec["kind"] == "nature_cnn":
        return NatureCNN(spec["frame_stack"], spec["frame_shape"][0], spec["n_actions"])
    if spec["kind"] == "mlp":
        return MLP(int(np.prod(spec["frame_shape"])) * spec["frame_stack"], spec["n_actions"], spec["hidden"])
    if spec["kind"] == "lstm":
        return RecurrentNet(spec)
    if spec["kind"] == "connectx":
        planes, rows, columns = spec["frame_shape"]
        return ConnectXNet(planes, rows, columns, spec["n_actions"], spec["channels"], spec["blocks"],
                           spec["hidden"])
    raise ValueError(f"unknown model kind {spec['kind']!r}")


def state_to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().to("cpu", torch.float32).numpy() for k, v in model.state_dict().items()}


def expected_params(model: nn.Module) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(v.shape), "float32") for k, v in model.state_dict().items()}


def load_numpy_state(model: nn.Module, state: dict[str, np.ndarray]) -> None:
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
