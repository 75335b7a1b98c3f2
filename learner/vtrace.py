"""V-trace off-policy correction (Espeholt et al. 2018, "IMPALA", section 4.1).

Modelled on TorchBeast's ``torchbeast/core/vtrace.py``. All tensors are time-major:
``[T, B]`` for per-step quantities and ``[B]`` for the bootstrap value.

Notation (with ``V_T := bootstrap_value``)::

    rho_t   = min(clip_rho_threshold, exp(log_rho_t))
    c_t     = lambda_ * min(1, exp(log_rho_t))
    delta_t = rho_t * (r_t + discount_t * V_{t+1} - V_t)
    vs_t    = V_t + delta_t + discount_t * c_t * (vs_{t+1} - V_{t+1}),   vs_T = V_T
    pg_advantage_t = min(clip_pg_rho_threshold, exp(log_rho_t))
                     * (r_t + discount_t * vs_{t+1} - V_t)

A threshold of ``None`` disables that clipping.

Truncation is not termination: at a step cut by a time limit the episode did not end, so its
target bootstraps from the value of the observation the time limit hid, ``V(x_final)``
(``final_values``), with the full discount, while the trace is still cut there (what follows
belongs to the next episode)::

    next_t = V(x_final)_t if truncated_t else V_{t+1}       (likewise vs_{t+1} in the advantage)
    c_t    = 0            if truncated_t
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["VTraceReturns", "from_importance_weights"]


class VTraceReturns(NamedTuple):
    """Outputs of :func:`from_importance_weights`; all ``[T, B]``, detached from the graph."""

    vs: Tensor
    """V-trace value targets ``v_s`` (regress the value net towards these)."""
    pg_advantages: Tensor
    """Importance-weighted advantages ``rho_s (r_s + discount_s v_{s+1} - V(x_s))`` for the policy."""
    pg_rhos: Tensor
    """The clipped importance weights ``rho_s`` of ``pg_advantages``."""
    pg_deltas: Tensor
    """``pg_advantages`` before the weights: ``r_s + discount_s v_{s+1} - V(x_s)``."""


def _check_threshold(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be positive or None, got {value!r}")


def _validate(
    log_rhos: Tensor,
    discounts: Tensor,
    rewards: Tensor,
    values: Tensor,
    bootstrap_value: Tensor,
    truncated: Tensor | None = None,
    final_values: Tensor | None = None,
) -> None:
    if values.dim() != 2:
        raise ValueError(f"values must be [T, B], got shape {tuple(values.shape)}")
    if (truncated is None) != (final_values is None):
        raise ValueError("truncated and final_values go together")
    pairs = [("log_rhos", log_rhos), ("discounts", discounts), ("rewards", rewards)]
    if truncated is not None:
        pairs += [("truncated", truncated), ("final_values", final_values)]
    for name, t in pairs:
        if t.shape != values.shape:
            raise ValueError(
                f"{name} must have the same [T, B] shape as values {tuple(values.shape)}, "
                f"got {tuple(t.shape)}"
            )
    if bootstrap_value.shape != values.shape[1:]:
        raise ValueError(
            f"bootstrap_value must be [B] = {tuple(values.shape[1:])}, "
            f"got {tuple(bootstrap_value.shape)}"
        )
    if values.shape[0] == 0:
        raise ValueError("need at least one time step (T >= 1)")


def _trace(deltas: Tensor, decay: Tensor) -> Tensor:
    """x_t = deltas_t + decay_t * x_{t+1}, x_T = 0: the backward recursion over T.

    Cheaper than the O(T^2) direct sum. On the CPU it runs in numpy, whose per-operation cost
    on a [B] row is a few times lower than torch's (it was a quarter of a small-model update).
    """
    cpu = deltas.device.type == "cpu"
    lib, d, k = (np, deltas.numpy(), decay.numpy()) if cpu else (torch, deltas, decay)
    out = lib.empty_like(d)
    acc = lib.zeros_like(d[0])
    for t in range(d.shape[0] - 1, -1, -1):
        acc = d[t] + k[t] * acc
        out[t] = acc
    return torch.from_numpy(out) if cpu else out


def from_importance_weights(
    log_rhos: Tensor,
    discounts: Tensor,
    rewards: Tensor,
    values: Tensor,
    bootstrap_value: Tensor,
    clip_rho_threshold: float | None = 1.0,
    clip_pg_rho_threshold: float | None = 1.0,
    lambda_: float = 1.0,
    truncated: Tensor | None = None,
    final_values: Tensor | None = None,
) -> VTraceReturns:
    """Compute V-trace value targets and policy-gradient advantages.

    Args:
        log_rhos: ``[T, B]`` log importance weights ``log pi(a_t|x_t) - log mu(a_t|x_t)``
            (target policy over behaviour policy) for the actions taken.
        discounts: ``[T, B]`` per-step discount, usually ``gamma * (1 - done_t)``; a zero
            cuts the trace so nothing after step ``t`` leaks into ``vs_t``.
        rewards: ``[T, B]`` rewards ``r_t``.
        values: ``[T, B]`` value estimates ``V(x_t)`` (gradients are not tracked).
        bootstrap_value: ``[B]`` value ``V(x_T)`` of the observation after the last step.
        clip_rho_threshold: ``rho_bar`` clipping the importance weights in the TD errors;
            ``None`` for no clipping.
        clip_pg_rho_threshold: clipping of the importance weights multiplying the policy
            gradient advantages; ``None`` for no clipping.
        lambda_: trace-cutting coefficient multiplying ``c_t`` (1.0 is plain V-trace).
        truncated: ``[T, B]`` bool, steps where a time limit (not the game) ended the episode;
            their discount stays ``gamma``. ``None``: no truncation.
        final_values: ``[T, B]`` ``V(x_final)`` of the observation after each truncated step
            (other entries are ignored); given with ``truncated``.

    Returns:
        :class:`VTraceReturns` with ``vs``, ``pg_advantages``, ``pg_rhos`` and ``pg_deltas``,
        all ``[T, B]`` with the dtype and device of ``values`` and no autograd history.

    Raises:
        ValueError: if shapes are inconsistent, ``T == 0`` or a threshold is not positive.
    """
    _validate(log_rhos, discounts, rewards, values, bootstrap_value, truncated, final_values)
    _check_threshold("clip_rho_threshold", clip_rho_threshold)
    _check_threshold("clip_pg_rho_threshold", clip_pg_rho_threshold)

    with torch.no_grad():
        rhos = torch.exp(log_rhos)
        clipped_rhos = rhos if clip_rho_threshold is None else rhos.clamp(max=clip_rho_threshold)
        cs = lambda_ * rhos.clamp(max=1.0)

        values_t_plus_1 = torch.cat([values[1:], bootstrap_value.unsqueeze(0)], dim=0)
        decay = discounts * cs
        if truncated is not None:
            values_t_plus_1 = torch.where(truncated, final_values, values_t_plus_1)
            decay = torch.where(truncated, torch.zeros_like(decay), decay)
        deltas = clipped_rhos * (rewards + discounts * values_t_plus_1 - values)

        vs = _trace(deltas, decay) + values

        # Policy gradient uses the one-step target built from the next V-trace target.
        vs_t_plus_1 = torch.cat([vs[1:], bootstrap_value.unsqueeze(0)], dim=0)
        if truncated is not None:
            vs_t_plus_1 = torch.where(truncated, final_values, vs_t_plus_1)
        clipped_pg_rhos = (
            rhos if clip_pg_rho_threshold is None else rhos.clamp(max=clip_pg_rho_threshold)
        )
        pg_deltas = rewards + discounts * vs_t_plus_1 - values

    return VTraceReturns(vs=vs, pg_advantages=clipped_pg_rhos * pg_deltas, pg_rhos=clipped_pg_rhos,
                         pg_deltas=pg_deltas)
