"""The agent contract: the step loop an actor runs equals the unroll the learner runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.agent import CELL_BOUND
from common.config import Config, ConfigError
from common.model import build_model, model_spec
from common.runspec import RunSpec
from tests.conftest import assert_learner_replays_exactly

SPECS = {
    "lstm-mlp": model_spec((4,), 1, 3, 16, "lstm", 8),
    "lstm-cnn": model_spec((84, 84), 1, 5, 16, "lstm", 8),
    "mlp": model_spec((4,), 1, 3, 16, "auto"),
}


def _obs(spec, T, B, g):
    shape = (T, B, spec["frame_stack"], *spec["frame_shape"]) if len(spec["frame_shape"]) == 2 else (T, B, *spec["frame_shape"])
    if len(spec["frame_shape"]) == 2:
        return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    return torch.randn(shape, generator=g)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_step_loop_equals_unroll_with_resets(name):
    torch.manual_seed(0)
    spec = SPECS[name]
    model = build_model(spec).eval()
    T, B, g = 7, 3, torch.Generator().manual_seed(1)
    obs = _obs(spec, T, B, g)
    dones = torch.zeros(T, B, dtype=torch.bool)
    dones[3, 0] = dones[5, 2] = dones[1, 1] = True
    state0 = model.initial_state(B)
    if model.recurrent:
        state0 = torch.rand(B, *model.state_shape, generator=g) - 0.5
    with torch.no_grad():
        logits_u, values_u, states_u = model.unroll(obs, state0, dones)
        state = state0
        for t in range(T):
            logits, value, state = model.step(obs[t], state, dones[t])
            torch.testing.assert_close(logits, logits_u[t], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(value, values_u[t], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(state, states_u[t], atol=1e-5, rtol=1e-5)


def test_reset_forgets_and_memory_matters():
    """A done row starts from zeros whatever it held; without a done the state changes the output."""
    torch.manual_seed(0)
    model = build_model(SPECS["lstm-mlp"]).eval()
    obs = torch.randn(2, 4)
    held = torch.rand(2, *model.state_shape) * 2 - 1
    with torch.no_grad():
        reset, _, _ = model.step(obs, held, torch.tensor([True, True]))
        fresh, _, _ = model.step(obs, model.initial_state(2), torch.tensor([False, False]))
        kept, _, _ = model.step(obs, held, torch.tensor([False, False]))
    torch.testing.assert_close(reset, fresh)
    assert not torch.allclose(kept, fresh)


def test_lstm_state_stays_within_its_bound():
    model = build_model(SPECS["lstm-mlp"]).eval()
    with torch.no_grad():
        for p in [*model.encoder.parameters(), *model.cell.parameters()]:
            p.fill_(5.0)  # a positive encoding, input and forget gates open: c grows by about 1 a step
        state = model.initial_state(1)
        state[:, 1] = CELL_BOUND - 200  # c grows by about 1 a step: past the bound in 300 steps
        for _ in range(300):
            _, _, state = model.step(torch.ones(1, 4), state, torch.tensor([False]))
    assert state[0, 0].abs().max() <= 1.0
    assert state[0, 1].abs().max() == pytest.approx(CELL_BOUND)


def test_native_unroll_equals_the_step_loop_with_gradients():
    """The learner's unroll runs torch's LSTM between resets; its logits, values, states and
    gradients equal the exact per-step loop (the `_cell` the actor steps)."""
    torch.manual_seed(0)
    model = build_model(SPECS["lstm-mlp"]).train()
    T, B, g = 40, 3, torch.Generator().manual_seed(2)
    obs = _obs(SPECS["lstm-mlp"], T, B, g)
    dones = torch.zeros(T, B, dtype=torch.bool)
    dones[0, 1] = dones[9, 0] = dones[9, 2] = dones[30, 1] = True
    state0 = torch.rand(B, *model.state_shape, generator=g) - 0.5
    x = model.encoder(obs.flatten(0, 1)).view(T, B, -1)
    native = model._unroll_native(x, state0, dones)
    assert native is not None, "no clamp acts here: the native path must run"
    steps = model._unroll_steps(x, state0, dones)
    grads = []
    for out in (native, steps):
        model.zero_grad()
        (out[0].square().sum() + out[1].sum()).backward(retain_graph=True)
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(native, steps, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_unroll_steps_exactly_where_the_clamp_acts():
    """A cell state that reaches the bound: the native path declines, and unroll equals the
    actor's clamped step loop."""
    model = build_model(SPECS["lstm-mlp"]).eval()
    with torch.no_grad():
        for p in [*model.encoder.parameters(), *model.cell.parameters()]:
            p.fill_(5.0)  # a positive encoding, gates open: c grows by about 1 a step
        T, B = 30, 2
        obs = torch.ones(T, B, 4)
        dones = torch.zeros(T, B, dtype=torch.bool)
        state0 = torch.zeros(B, *model.state_shape)
        state0[:, 1] = CELL_BOUND - 10  # reaches the bound after about 10 steps
        x = model.encoder(obs.flatten(0, 1)).view(T, B, -1)
        assert model._unroll_native(x, state0, dones) is None
        logits_u, _, states_u = model.unroll(obs, state0, dones)
        state = state0
        for t in range(T):
            logits, _, state = model.step(obs[t], state, dones[t])
            torch.testing.assert_close(logits, logits_u[t])
        assert states_u[:, :, 1].abs().max() == pytest.approx(CELL_BOUND)


def test_feed_forward_state_is_empty():
    model = build_model(SPECS["mlp"])
    assert not model.recurrent and model.initial_state(5).shape == (5, 0)


def test_model_choice():
    assert model_spec((84, 84), 4, 5, 16, "auto")["kind"] == "nature_cnn"
    assert model_spec((84, 84), 4, 5, 16, "mlp")["kind"] == "mlp"
    assert model_spec((4,), 1, 2, 16, "lstm")["encoder"] == "mlp"
    with pytest.raises(ValueError, match="needs image observations"):
        model_spec((4,), 1, 2, 16, "cnn")
    with pytest.raises(ConfigError, match="model must be one of"):
        Config(model="gru")
    spec = RunSpec.from_config(Config(env="CartPole-v1", model="lstm", lstm_hidden=32)).model
    assert spec.kind == "lstm" and spec.option("lstm_hidden") == 32


def test_learner_unroll_reproduces_the_actors_policy():
    """Rollouts a one-process actor collects with an LSTM (episodes ending inside them, the state
    carried across rollouts and reset on done) give V-trace ratios of exactly 1 when the learner
    replays them with the same weights: the state sent and the resets agree."""
    from actor.rollout import RolloutCollector
    from common.envs import make_env
    from learner.server import specs

    torch.manual_seed(3)
    cfg = Config(env="CartPole-v1", model="lstm", lstm_hidden=16, unroll_length=32, batch_size=128,
                 epochs=1, minibatches=1)
    kwargs, mspec, rspec = specs(cfg)
    model = build_model(mspec).eval()
    with torch.no_grad():
        model.policy.weight.mul_(1000.0)  # from its 0.01-gain start: logits that depend on the state
    collector = RolloutCollector(make_env("CartPole-v1", seed=4, **kwargs), actor_id=0, seed=4,
                                 unroll_length=32, frame_stack=1)
    rollouts = [collector.collect(model, 0) for _ in range(4)]
    assert sum(r.dones.sum() for r in rollouts) >= 3, "episodes must end inside the rollouts"
    assert np.abs(rollouts[1].core_state).max() > 0, "a later rollout starts from a held state"
    assert_learner_replays_exactly(model, cfg, rspec, rollouts)
