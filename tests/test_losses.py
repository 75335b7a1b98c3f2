"""APPO loss: finiteness, gradient flow, improvement on-policy, ratio clipping, stats."""

from __future__ import annotations

import ast
import dataclasses
import math
import sys
from pathlib import Path

import pytest
import torch

from learner.losses import STAT_KEYS, LossConfig, appo_loss
from learner.vtrace import from_importance_weights

REQUIRED_KEYS = {
    "losses/policy_loss",
    "losses/value_loss",
    "losses/entropy",
    "losses/approx_kl",
    "losses/clipfrac",
    "losses/rho_mean",
    "losses/total",
}


def make_batch(T: int = 6, B: int = 5, A: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(T, B, A, generator=g, requires_grad=True)
    actions = torch.randint(0, A, (T, B), generator=g)
    logp = torch.log_softmax(logits.detach(), -1).gather(-1, actions[..., None]).squeeze(-1)
    return {
        "logits": logits,
        "values": torch.randn(T, B, generator=g, requires_grad=True),
        "bootstrap_value": torch.randn(B, generator=g, requires_grad=True),
        "actions": actions,
        "behaviour_logp": logp + 0.3 * torch.randn(T, B, generator=g),  # mildly off-policy
        "rewards": torch.randn(T, B, generator=g),
        "discounts": 0.99 * (torch.rand(T, B, generator=g) > 0.1).float(),
    }


def test_finite_loss_and_stats() -> None:
    batch = make_batch()
    loss, stats = appo_loss(**batch, cfg=LossConfig())
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert REQUIRED_KEYS <= set(stats) and set(stats) == set(STAT_KEYS)
    assert all(isinstance(v, float) and math.isfinite(v) for v in stats.values())
    assert stats["losses/total"] == pytest.approx(loss.item(), rel=1e-6)
    assert 0.0 <= stats["losses/clipfrac"] <= 1.0
    assert stats["losses/approx_kl"] >= 0.0  # (r - 1) - log r >= 0 for every r > 0
    expected_entropy = torch.distributions.Categorical(logits=batch["logits"]).entropy().mean()
    assert stats["losses/entropy"] == pytest.approx(expected_entropy.item(), rel=1e-5)


def test_loss_combines_terms_with_coefficients() -> None:
    cfg = LossConfig(vf_coef=0.7, ent_coef=0.05)
    _, stats = appo_loss(**make_batch(seed=1), cfg=cfg)
    combined = (
        stats["losses/policy_loss"]
        + cfg.vf_coef * stats["losses/value_loss"]
        - cfg.ent_coef * stats["losses/entropy"]
    )
    assert stats["losses/total"] == pytest.approx(combined, rel=1e-5, abs=1e-6)


def test_gradient_flows_to_logits_and_values_only() -> None:
    batch = make_batch(seed=2)
    loss, _ = appo_loss(**batch, cfg=LossConfig())
    loss.backward()
    for name in ("logits", "values"):
        grad = batch[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    # Bootstrap value only feeds the (detached) V-trace targets.
    assert batch["bootstrap_value"].grad is None


def test_value_loss_uses_vtrace_targets() -> None:
    batch = make_batch(seed=3)
    cfg = LossConfig(lambda_=0.9, clip_rho=2.0, clip_pg_rho=1.5)
    _, stats = appo_loss(**batch, cfg=cfg)
    logp = torch.log_softmax(batch["logits"], -1).gather(-1, batch["actions"][..., None])[..., 0]
    vt = from_importance_weights(
        (logp - batch["behaviour_logp"]).detach(),
        batch["discounts"],
        batch["rewards"],
        batch["values"].detach(),
        batch["bootstrap_value"].detach(),
        clip_rho_threshold=2.0,
        clip_pg_rho_threshold=1.5,
        lambda_=0.9,
    )
    expected = 0.5 * (vt.vs - batch["values"].detach()).pow(2).mean()
    assert stats["losses/value_loss"] == pytest.approx(expected.item(), rel=1e-6)


def test_on_policy_stats_and_normalized_policy_loss() -> None:
    batch = make_batch(seed=4)
    logp = torch.log_softmax(batch["logits"].detach(), -1)
    batch["behaviour_logp"] = logp.gather(-1, batch["actions"][..., None]).squeeze(-1)
    _, stats = appo_loss(**batch, cfg=LossConfig(normalize_advantages=True))
    assert stats["losses/rho_mean"] == pytest.approx(1.0, abs=1e-6)
    assert stats["losses/approx_kl"] == pytest.approx(0.0, abs=1e-6)
    assert stats["losses/clipfrac"] == 0.0
    # Ratio is 1, so the surrogate is -mean(normalized adv) = 0.
    assert stats["losses/policy_loss"] == pytest.approx(0.0, abs=1e-5)

    _, raw = appo_loss(**batch, cfg=LossConfig(normalize_advantages=False))
    assert raw["losses/policy_loss"] != pytest.approx(0.0, abs=1e-3)


class TinyAgent(torch.nn.Module):
    """Linear policy and value heads over a feature vector."""

    def __init__(self, n_features: int, n_actions: int) -> None:
        super().__init__()
        self.pi = torch.nn.Linear(n_features, n_actions)
        self.v = torch.nn.Linear(n_features, 1)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pi(obs), self.v(obs).squeeze(-1)


def test_sgd_step_on_policy_improves_good_action() -> None:
    torch.manual_seed(0)
    T, B, F_, A = 8, 16, 5, 3
    agent = TinyAgent(F_, A)
    obs = torch.randn(T, B, F_)
    next_obs = torch.randn(B, F_)
    with torch.no_grad():
        logits, _ = agent(obs)
        actions = torch.distributions.Categorical(logits=logits).sample()
        behaviour_logp = torch.log_softmax(logits, -1).gather(-1, actions[..., None])[..., 0]
    rewards = (actions == 0).float()  # action 0 is the only rewarded one
    discounts = torch.zeros(T, B)  # one-step episodes: advantage of action 0 is positive
    cfg = LossConfig()

    def evaluate() -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        logits, values = agent(obs)
        _, bootstrap = agent(next_obs)
        loss, stats = appo_loss(
            logits, values, bootstrap, actions, behaviour_logp, rewards, discounts, cfg
        )
        return loss, stats, torch.softmax(logits, -1)[..., 0].mean()

    loss0, stats0, p0_before = evaluate()
    assert stats0["losses/clipfrac"] == 0.0 and stats0["losses/rho_mean"] == pytest.approx(1.0)
    opt = torch.optim.SGD(agent.parameters(), lr=0.05)
    opt.zero_grad()
    loss0.backward()
    opt.step()

    with torch.no_grad():
        loss1, _, p0_after = evaluate()
    assert loss1.item() < loss0.item()
    assert p0_after.item() > p0_before.item()


def test_far_off_policy_ratios_are_clipped() -> None:
    batch = make_batch(seed=5)
    logp = torch.log_softmax(batch["logits"].detach(), -1)
    logp = logp.gather(-1, batch["actions"][..., None]).squeeze(-1)

    batch["behaviour_logp"] = logp - 2.0  # ratio e^2, far outside [0.8, 1.2]
    _, stats = appo_loss(**batch, cfg=LossConfig(clip_eps=0.2))
    assert stats["losses/clipfrac"] == pytest.approx(1.0)
    assert stats["losses/rho_mean"] == pytest.approx(math.exp(2.0), rel=1e-5)
    assert stats["losses/approx_kl"] == pytest.approx(math.exp(2.0) - 1 - 2.0, rel=1e-5)

    g = torch.Generator().manual_seed(0)
    batch["behaviour_logp"] = logp + torch.randn(logp.shape, generator=g)  # mixed ratios
    _, stats = appo_loss(**batch, cfg=LossConfig(clip_eps=0.2))
    assert 0.0 < stats["losses/clipfrac"] < 1.0


@pytest.mark.parametrize("shift,expect_grad", [(-2.0, False), (2.0, True)])
def test_clipped_surrogate_gradient(shift: float, expect_grad: bool) -> None:
    """Positive advantage: ratio > 1 + eps gets no gradient; ratio < 1 - eps still does."""
    batch = make_batch(seed=6)
    batch["rewards"] = batch["rewards"].abs() + 1.0
    batch["values"] = torch.zeros_like(batch["values"], requires_grad=True)
    batch["discounts"] = torch.zeros_like(batch["discounts"])  # adv = rho * r > 0
    logp = torch.log_softmax(batch["logits"].detach(), -1)
    batch["behaviour_logp"] = logp.gather(-1, batch["actions"][..., None]).squeeze(-1) + shift
    cfg = LossConfig(ent_coef=0.0, normalize_advantages=False)
    loss, _ = appo_loss(**batch, cfg=cfg)
    loss.backward()
    has_grad = bool(batch["logits"].grad.abs().sum() > 0)
    assert has_grad == expect_grad


@pytest.mark.parametrize(
    "field,value",
    [
        ("logits", torch.zeros(6, 5)),
        ("values", torch.zeros(6, 4)),
        ("actions", torch.zeros(6, 5)),  # float actions
        ("behaviour_logp", torch.zeros(5, 5)),
        ("rewards", torch.zeros(6, 4)),
        ("bootstrap_value", torch.zeros(6)),
    ],
)
def test_bad_inputs_raise(field: str, value: torch.Tensor) -> None:
    batch = make_batch()
    batch[field] = value
    with pytest.raises(ValueError, match=field):
        appo_loss(**batch, cfg=LossConfig())


def test_config_is_frozen_and_validated() -> None:
    cfg = LossConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.clip_eps = 0.3  # type: ignore[misc]
    with pytest.raises(ValueError):
        LossConfig(clip_eps=0.0)
    with pytest.raises(ValueError):
        LossConfig(lambda_=1.5)


@pytest.mark.parametrize("module", ["vtrace.py", "losses.py"])
def test_modules_import_only_torch_numpy_stdlib(module: str) -> None:
    path = Path(__file__).resolve().parents[1] / "learner" / module
    # learner.vtrace and common.action_sampling (masking, torch only) are the in-package imports allowed:
    # other modules may pull zmq.
    allowed = set(sys.stdlib_module_names) | {"torch", "numpy", "learner.vtrace", "common.action_sampling"}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            assert not isinstance(node, ast.ImportFrom), f"{module}: relative import"
            continue
        for name in names:
            root = name.split(".")[0]
            assert root in allowed or name in allowed, f"{module} imports {name}"


def test_dual_clip_bounds_the_gradient_of_a_huge_ratio() -> None:
    """behaviour_logp at the floor a real actor can send (issue 8.1): ratio ~ e^69. With a negative
    advantage plain PPO's gradient is ratio-sized and overflows float32; dual clip cuts it."""
    from common.protocol import LOGP_FLOOR

    batch = make_batch(seed=7)
    batch["rewards"] = -(batch["rewards"].abs() + 1.0)
    batch["values"] = torch.zeros_like(batch["values"], requires_grad=True)
    batch["discounts"] = torch.zeros_like(batch["discounts"])  # adv = rho * r < 0
    batch["behaviour_logp"] = torch.full_like(batch["behaviour_logp"], LOGP_FLOOR)
    cfg = LossConfig(ent_coef=0.0, normalize_advantages=False)
    loss, _ = appo_loss(**batch, cfg=cfg)
    loss.backward()
    assert torch.isfinite(loss) and batch["logits"].grad.abs().max() == 0  # all ratios > 3
    batch["logits"].grad = None
    loss, _ = appo_loss(**batch, cfg=dataclasses.replace(cfg, dual_clip=None))
    loss.backward()
    assert batch["logits"].grad.abs().max() > 1e25  # what dual clip saves the update from


def test_advantages_are_normalised_per_call_as_the_docstring_says() -> None:
    """Issue 8.13: the words said "the whole batch" while the trainer normalises each minibatch."""
    src = Path(sys.modules[LossConfig.__module__].__file__).read_text()
    doc = src.split("normalize_advantages: bool = True", 1)[1].split('"""')[1]
    assert "minibatch" in doc and "whole" not in doc
    batch = make_batch(seed=8)
    halves = [{k: v[:, :2] if v.dim() > 1 else v[:2] for k, v in batch.items()},
              {k: v[:, 2:] if v.dim() > 1 else v[2:] for k, v in batch.items()}]
    halves[1]["rewards"] = halves[1]["rewards"] * 100  # another scale: normalised away per call
    per_call = [appo_loss(**h, cfg=LossConfig())[1]["losses/policy_loss"] for h in halves]
    assert abs(per_call[0]) < 5 and abs(per_call[1]) < 5


def _bandit_entropy_after_training(eps_per_column: list[float], updates: int = 300) -> float:
    """Train a one-state, 9-action policy whose every action pays the same (1 + noise) on
    batches drawn from ``(1 - eps) * pi + eps * uniform``, with a value head that lags (so the
    advantages are mostly positive, as in a game the policy is getting better at), and return
    the final entropy. No action is better: only a biased update concentrates the policy."""
    A, T = 9, 16
    g = torch.Generator().manual_seed(0)
    logits = torch.zeros(A, requires_grad=True)
    value = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([logits, value], lr=0.01)
    eps = torch.tensor(eps_per_column)
    B = eps.numel()
    for _ in range(updates):
        with torch.no_grad():
            pi = torch.softmax(logits, -1)
            mixture = (1 - eps[:, None]) * pi + eps[:, None] / A
            actions = torch.multinomial(mixture, T, replacement=True, generator=g).T
            behaviour = mixture.log().gather(-1, actions.T).T
            own = pi.log()[actions]
            rewards = 1.0 + 0.5 * torch.randn(T, B, generator=g)
        for _epoch in range(2):
            values = value.expand(T, B) * 0.1  # a slow value: the advantages stay positive
            loss, stats = appo_loss(logits.expand(T, B, A), values, values[-1].detach(), actions, behaviour,
                                    rewards, torch.zeros(T, B), LossConfig(), policy_logp=own)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return stats["losses/entropy"]


def test_advantage_normalisation_under_an_exploration_mixture_keeps_a_flat_game_uniform() -> None:
    """Issue 22: centring the rho-weighted advantages (rho * delta - mean) pushed every
    epsilon-drawn action down while the advantages were mostly positive; on a game where every
    action pays the same the policy narrowed (entropy 1.54 of a possible 2.20 after these 300
    updates of the Ape-X ladder, 0.00 after 400 at four epochs; the adaptive Airstriker run:
    0.05 against 0.60).
    Centred under the weights, the ladder keeps the policy as spread as no exploration does."""
    ladder = [0, 0.4, 0.16, 0.064, 0.026, 0.01, 0.0041, 0.0016, 0.00066] * 8
    uniform = math.log(9)
    assert _bandit_entropy_after_training(ladder) > 0.95 * uniform
    assert _bandit_entropy_after_training([0.0] * 72) > 0.95 * uniform  # as with no noise


def test_a_mixture_with_no_noise_is_the_loss_without_noise() -> None:
    """Issue 22: as eps goes to 0 the mixture path must become the no-noise one. Centring under
    the whole V-trace weight, rho * (delta - mean), did not: the policy's own drift since the
    actor acted (rho != 1, as after a first epoch) moved the advantages, and an Airstriker run
    with eps 1e-6 made 1,097 where one without noise made 1,297."""
    batch = make_batch(T=8, B=6, seed=3)  # behaviour_logp 0.3-noisy against the logits: rho != 1
    plain, plain_stats = appo_loss(**batch, cfg=LossConfig())
    mixed, mixed_stats = appo_loss(**batch, cfg=LossConfig(), policy_logp=batch["behaviour_logp"].clone())
    assert mixed.item() == pytest.approx(plain.item(), rel=1e-6, abs=1e-7)
    assert mixed_stats["losses/policy_loss"] == pytest.approx(plain_stats["losses/policy_loss"], rel=1e-6, abs=1e-7)
    plain.backward()
    grad_plain = batch["logits"].grad.clone()
    batch["logits"].grad = None
    appo_loss(**batch, cfg=LossConfig(), policy_logp=batch["behaviour_logp"].clone())[0].backward()
    assert torch.allclose(batch["logits"].grad, grad_plain, atol=1e-7)
