"""V-trace against a direct numpy transcription of the IMPALA equations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from learner.vtrace import VTraceReturns, from_importance_weights


def _clip(x: np.ndarray, threshold: float | None) -> np.ndarray:
    return x if threshold is None else np.minimum(threshold, x)


def reference_vtrace(
    log_rhos: np.ndarray,
    discounts: np.ndarray,
    rewards: np.ndarray,
    values: np.ndarray,
    bootstrap_value: np.ndarray,
    clip_rho_threshold: float | None = 1.0,
    clip_pg_rho_threshold: float | None = 1.0,
    lambda_: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Direct sum form: vs_s = V_s + sum_{t>=s} (prod_{i=s}^{t-1} discount_i c_i) delta_t."""
    T, B = values.shape
    rhos = np.exp(log_rhos)
    clipped_rhos = _clip(rhos, clip_rho_threshold)
    cs = lambda_ * np.minimum(1.0, rhos)
    v_ext = np.concatenate([values, bootstrap_value[None]], axis=0)  # V_0 .. V_T
    vs = np.zeros((T, B))
    for b in range(B):
        for s in range(T):
            total = 0.0
            for t in range(s, T):
                delta_t = clipped_rhos[t, b] * (
                    rewards[t, b] + discounts[t, b] * v_ext[t + 1, b] - v_ext[t, b]
                )
                prod = 1.0
                for i in range(s, t):
                    prod *= discounts[i, b] * cs[i, b]
                total += prod * delta_t
            vs[s, b] = values[s, b] + total
    vs_ext = np.concatenate([vs, bootstrap_value[None]], axis=0)
    pg = np.zeros((T, B))
    for b in range(B):
        for s in range(T):
            pg[s, b] = _clip(rhos[s, b], clip_pg_rho_threshold) * (
                rewards[s, b] + discounts[s, b] * vs_ext[s + 1, b] - values[s, b]
            )
    return vs, pg


def random_inputs(
    T: int = 7, B: int = 4, seed: int = 0, rho_scale: float = 1.0
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    log_rhos = rng.normal(0.0, rho_scale, size=(T, B))
    log_rhos[rng.random((T, B)) < 0.25] += 3.0  # some large ratios so clipping matters
    discounts = np.full((T, B), 0.9) * (rng.random((T, B)) > 0.2)  # ~20% episode ends
    discounts[min(1, T - 1), 0] = 0.0  # guarantee at least one cut
    return {
        "log_rhos": log_rhos,
        "discounts": discounts,
        "rewards": rng.normal(size=(T, B)),
        "values": rng.normal(size=(T, B)),
        "bootstrap_value": rng.normal(size=(B,)),
    }


def to_torch(d: dict[str, np.ndarray], dtype: torch.dtype = torch.float64) -> dict:
    return {k: torch.as_tensor(v, dtype=dtype) for k, v in d.items()}


def run(d: dict[str, np.ndarray], **kw) -> VTraceReturns:
    return from_importance_weights(**to_torch(d), **kw)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "clip_rho,clip_pg_rho",
    [(1.0, 1.0), (2.0, 0.5), (None, None), (None, 1.0), (1.5, None)],
)
def test_matches_numpy_reference(seed: int, clip_rho, clip_pg_rho) -> None:
    d = random_inputs(seed=seed)
    out = run(d, clip_rho_threshold=clip_rho, clip_pg_rho_threshold=clip_pg_rho)
    vs_ref, pg_ref = reference_vtrace(
        **d, clip_rho_threshold=clip_rho, clip_pg_rho_threshold=clip_pg_rho
    )
    np.testing.assert_allclose(out.vs.numpy(), vs_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out.pg_advantages.numpy(), pg_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("lambda_", [0.0, 0.5, 0.95])
def test_lambda_matches_numpy_reference(lambda_: float) -> None:
    d = random_inputs(seed=11)
    out = run(d, lambda_=lambda_)
    vs_ref, pg_ref = reference_vtrace(**d, lambda_=lambda_)
    np.testing.assert_allclose(out.vs.numpy(), vs_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out.pg_advantages.numpy(), pg_ref, rtol=1e-10, atol=1e-10)
    # lambda < 1 shortens the trace, so the result must actually differ from lambda = 1.
    assert not torch.allclose(out.vs, run(d).vs)


def test_float32_matches_reference() -> None:
    d = random_inputs(T=20, B=3, seed=5)
    out = from_importance_weights(**to_torch(d, torch.float32))
    assert out.vs.dtype == torch.float32
    vs_ref, pg_ref = reference_vtrace(**d)
    np.testing.assert_allclose(out.vs.numpy(), vs_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.pg_advantages.numpy(), pg_ref, rtol=1e-4, atol=1e-4)


def test_on_policy_is_n_step_return() -> None:
    d = random_inputs(T=9, B=3, seed=3)
    d["log_rhos"] = np.zeros_like(d["log_rhos"])
    out = run(d, lambda_=1.0)

    T, B = d["values"].shape
    expected = np.zeros((T, B))
    for b in range(B):
        for s in range(T):
            ret, disc = 0.0, 1.0
            for t in range(s, T):
                ret += disc * d["rewards"][t, b]
                disc *= d["discounts"][t, b]
            expected[s, b] = ret + disc * d["bootstrap_value"][b]
    np.testing.assert_allclose(out.vs.numpy(), expected, rtol=1e-10, atol=1e-10)
    # On-policy, the advantage is the n-step return minus the baseline.
    np.testing.assert_allclose(
        out.pg_advantages.numpy(), expected - d["values"], rtol=1e-10, atol=1e-10
    )


def test_zero_discount_cuts_trace() -> None:
    d = random_inputs(T=8, B=2, seed=4)
    cut = 3
    d["discounts"][:] = 0.9
    d["discounts"][cut, :] = 0.0
    base = run(d, clip_rho_threshold=None, clip_pg_rho_threshold=None)

    perturbed = {k: v.copy() for k, v in d.items()}
    perturbed["rewards"][cut + 1 :] += 10.0
    perturbed["values"][cut + 1 :] -= 5.0
    perturbed["bootstrap_value"] += 7.0
    out = run(perturbed, clip_rho_threshold=None, clip_pg_rho_threshold=None)

    # Nothing after the cut may reach steps up to and including the cut.
    torch.testing.assert_close(out.vs[: cut + 1], base.vs[: cut + 1], rtol=0, atol=0)
    torch.testing.assert_close(
        out.pg_advantages[: cut + 1], base.pg_advantages[: cut + 1], rtol=0, atol=0
    )
    # Sanity: the steps after the cut do see the perturbation.
    assert not torch.allclose(out.vs[cut + 1 :], base.vs[cut + 1 :])


@pytest.mark.parametrize("clip_rho,clip_pg_rho", [(1.0, 1.0), (2.0, 1.5), (0.5, 3.0)])
def test_large_log_rhos_are_clipped(clip_rho: float, clip_pg_rho: float) -> None:
    d = random_inputs(T=6, B=3, seed=6)
    d["log_rhos"] = 5.0 + np.abs(d["log_rhos"])  # every rho far above every threshold
    out = run(d, clip_rho_threshold=clip_rho, clip_pg_rho_threshold=clip_pg_rho)

    # At log(max threshold), every clip saturates exactly: rho -> clip_rho, c -> 1, pg -> clip_pg.
    at_threshold = dict(
        d, log_rhos=np.full_like(d["log_rhos"], math.log(max(clip_rho, clip_pg_rho, 1.0)))
    )
    ref = run(at_threshold, clip_rho_threshold=clip_rho, clip_pg_rho_threshold=clip_pg_rho)
    torch.testing.assert_close(out.vs, ref.vs)
    torch.testing.assert_close(out.pg_advantages, ref.pg_advantages)

    # pg advantages carry exactly the clip_pg_rho weight.
    vs_next = torch.cat([out.vs[1:], torch.as_tensor(d["bootstrap_value"])[None]])
    td = to_torch(d)
    expected_pg = clip_pg_rho * (td["rewards"] + td["discounts"] * vs_next - td["values"])
    torch.testing.assert_close(out.pg_advantages, expected_pg)

    # Without thresholds the huge rhos pass straight through.
    unclipped = run(d, clip_rho_threshold=None, clip_pg_rho_threshold=None)
    assert not torch.allclose(unclipped.vs, out.vs)
    assert not torch.allclose(unclipped.pg_advantages, out.pg_advantages)
    expected_unclipped_pg = torch.exp(td["log_rhos"]) * (
        td["rewards"]
        + td["discounts"] * torch.cat([unclipped.vs[1:], td["bootstrap_value"][None]])
        - td["values"]
    )
    torch.testing.assert_close(unclipped.pg_advantages, expected_unclipped_pg)


def test_outputs_carry_no_grad() -> None:
    td = to_torch(random_inputs(seed=8))
    td["values"].requires_grad_(True)
    td["log_rhos"].requires_grad_(True)
    out = from_importance_weights(**td)
    assert isinstance(out, VTraceReturns)
    assert not out.vs.requires_grad and not out.pg_advantages.requires_grad
    assert out.vs.shape == out.pg_advantages.shape == td["values"].shape


def test_single_step() -> None:
    d = random_inputs(T=1, B=5, seed=9)
    out = run(d)
    vs_ref, pg_ref = reference_vtrace(**d)
    np.testing.assert_allclose(out.vs.numpy(), vs_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out.pg_advantages.numpy(), pg_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "field,shape",
    [
        ("log_rhos", (5, 4)),
        ("discounts", (6, 3)),
        ("rewards", (6,)),
        ("values", (6, 4, 1)),
        ("bootstrap_value", (3,)),
        ("bootstrap_value", (1, 4)),
    ],
)
def test_shape_mismatch_raises(field: str, shape: tuple[int, ...]) -> None:
    td = to_torch(random_inputs(T=6, B=4, seed=10))
    td[field] = torch.zeros(shape, dtype=torch.float64)
    with pytest.raises(ValueError, match=field):
        from_importance_weights(**td)


def test_empty_time_and_bad_threshold_raise() -> None:
    td = to_torch(random_inputs(T=3, B=2, seed=12))
    empty = {k: (v[:0] if v.dim() == 2 else v) for k, v in td.items()}
    with pytest.raises(ValueError, match="T >= 1"):
        from_importance_weights(**empty)
    with pytest.raises(ValueError, match="clip_rho_threshold"):
        from_importance_weights(**td, clip_rho_threshold=0.0)


# ---------------------------------------------------------------------------- truncation (issue 8.13)


def reference_truncated(d: dict[str, np.ndarray], truncated: np.ndarray, final_values: np.ndarray,
                        lambda_: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Loops over the equations: a time limit bootstraps from V(x_final) with the full discount
    and ends the trace; termination (discount 0) ends it too."""
    T, B = d["values"].shape
    rhos = np.exp(d["log_rhos"])
    crho, cs = np.minimum(1.0, rhos), lambda_ * np.minimum(1.0, rhos)
    v_next = np.concatenate([d["values"][1:], d["bootstrap_value"][None]])
    v_next = np.where(truncated, final_values, v_next)
    vs = np.zeros((T, B))
    for b in range(B):
        for s in range(T):
            total, prod = 0.0, 1.0
            for t in range(s, T):
                delta = crho[t, b] * (d["rewards"][t, b] + d["discounts"][t, b] * v_next[t, b] - d["values"][t, b])
                total += prod * delta
                if truncated[t, b]:
                    break
                prod *= d["discounts"][t, b] * cs[t, b]
            vs[s, b] = d["values"][s, b] + total
    vs_next = np.concatenate([vs[1:], d["bootstrap_value"][None]])
    vs_next = np.where(truncated, final_values, vs_next)
    pg = crho * (d["rewards"] + d["discounts"] * vs_next - d["values"])
    return vs, pg


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("lambda_", [1.0, 0.9])
def test_truncation_matches_numpy_loop(seed: int, lambda_: float) -> None:
    d = random_inputs(T=9, B=4, seed=seed)
    rng = np.random.default_rng(100 + seed)
    truncated = (rng.random((9, 4)) < 0.2) & (d["discounts"] > 0)  # a time limit is not an end
    truncated[4, 1] = True
    d["discounts"][4, 1] = 0.9
    final_values = rng.normal(size=(9, 4)) * 3
    out = from_importance_weights(**to_torch(d), lambda_=lambda_, truncated=torch.as_tensor(truncated),
                                  final_values=torch.as_tensor(final_values))
    vs_ref, pg_ref = reference_truncated(d, truncated, final_values, lambda_)
    np.testing.assert_allclose(out.vs.numpy(), vs_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out.pg_advantages.numpy(), pg_ref, rtol=1e-10, atol=1e-10)
    # what the old code did (truncation as termination) is different: a wrong target
    as_end = dict(d, discounts=np.where(truncated, 0.0, d["discounts"]))
    assert not np.allclose(run(as_end, lambda_=lambda_).vs.numpy(), vs_ref)


def test_without_truncations_nothing_changes() -> None:
    d = random_inputs(T=7, B=3, seed=21)
    none = torch.zeros(7, 3, dtype=torch.bool)
    out = from_importance_weights(**to_torch(d), truncated=none, final_values=torch.full((7, 3), 1e9))
    torch.testing.assert_close(out.vs, run(d).vs, rtol=0, atol=0)
    with pytest.raises(ValueError, match="together"):
        from_importance_weights(**to_torch(d), truncated=none)
