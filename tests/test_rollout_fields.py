"""The rollout field table: one entry makes a field travel, validate and batch; core_state bounds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from common import protocol
from common.agent import CELL_BOUND
from common.protocol import ProtocolError, RolloutSpec, decode, encode_rollout, validate_rollout
from tests.conftest import cartpole_rollout

H = 8
LSTM_SPEC = RolloutSpec(32, (4,), "float32", 1, 2, state_shape=(2, H), state_bound=(1.0, CELL_BOUND))
FF_SPEC = RolloutSpec(32, (4,), "float32", 1, 2)


def _state(h: float = 0.5, c: float = 3.0) -> np.ndarray:
    return np.stack([np.full(H, h), np.full(H, c)]).astype(np.float32)


def _roundtrip(r, spec):
    return validate_rollout(decode(encode_rollout(r)), spec, latest_version=5)


def test_core_state_travels_and_batches():
    from learner.batcher import collate

    rollouts = [dataclasses.replace(cartpole_rollout(b, seed=b), core_state=_state(0.1 * b, -b)) for b in range(3)]
    back = [_roundtrip(r, LSTM_SPEC) for r in rollouts]
    np.testing.assert_array_equal(back[2].core_state, rollouts[2].core_state)
    batch = collate(back, 0)
    assert batch.core_state.shape == (3, 2, H) and batch.actions.shape == (32, 3)
    np.testing.assert_array_equal(batch.core_state[1], _state(0.1, -1))


def test_feed_forward_rollouts_carry_an_empty_state():
    back = _roundtrip(cartpole_rollout(0), FF_SPEC)
    assert back.core_state.shape == (0,)


@pytest.mark.parametrize("state", [
    _state(h=1.5),  # |h| > 1: tanh never gives it
    _state(c=CELL_BOUND * 2),  # c beyond the clamp
    _state(c=np.nan),
    _state(h=np.inf),
    np.zeros((2, H + 1), np.float32),  # not the spec's shape
    np.zeros(0, np.float32),  # no state where the model has one
])
def test_hostile_core_state_is_rejected(state):
    r = dataclasses.replace(cartpole_rollout(0), core_state=state)
    with pytest.raises(ProtocolError):
        _roundtrip(r, LSTM_SPEC)


def test_state_at_its_bounds_is_accepted():
    r = dataclasses.replace(cartpole_rollout(0), core_state=_state(h=-1.0, c=-CELL_BOUND))
    assert _roundtrip(r, LSTM_SPEC).core_state.min() == -CELL_BOUND


def _non_negative(a: np.ndarray, spec: RolloutSpec, got: dict) -> None:
    if (a < 0).any():
        raise ProtocolError("step_ids must not be negative")


def test_a_new_field_is_one_table_entry(monkeypatch):
    """One entry added to ROLLOUT_FIELDS gives the Rollout, the encoder, the validation, the
    Batch and collate the new field (the classes are rebuilt from the table, as on import)."""
    from learner import batcher

    table = protocol.ROLLOUT_FIELDS + (protocol.RolloutField(
        "step_ids", "int32", lambda spec, got: (spec.unroll_length,), _non_negative, optional=True),)
    monkeypatch.setattr(protocol, "ROLLOUT_FIELDS", table)
    monkeypatch.setattr(protocol, "Rollout", protocol.rollout_class(table))
    monkeypatch.setattr(batcher, "Batch", batcher.batch_class(table))
    base = dataclasses.asdict(cartpole_rollout(0))
    rollouts = [protocol.Rollout(**{**base, "actor_id": b, "step_ids": np.arange(32, dtype=np.int32) + b})
                for b in range(2)]
    back = [_roundtrip(r, FF_SPEC) for r in rollouts]
    np.testing.assert_array_equal(back[1].step_ids, np.arange(32) + 1)
    assert batcher.collate(back, 0).step_ids.shape == (32, 2)
    bad = protocol.Rollout(**{**base, "step_ids": np.full(32, -1, np.int32)})
    with pytest.raises(ProtocolError, match="step_ids must not be negative"):
        _roundtrip(bad, FF_SPEC)
    missing = protocol.encode_rollout(cartpole_rollout(0))  # the field is optional: an empty one is not sent
    with pytest.raises(ProtocolError, match="step_ids"):
        validate_rollout(decode(missing), FF_SPEC, latest_version=5)
