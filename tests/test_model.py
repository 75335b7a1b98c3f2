"""The actor acts with `policy_logits`; it must give exactly the logits of the full forward pass."""

from __future__ import annotations

import torch

from common.model import board_spec, build_model, model_spec


def test_policy_logits_match_forward():
    torch.manual_seed(0)
    cases = [
        (model_spec((84, 84), 4, 12, 64), torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)),
        (model_spec((4,), 1, 2, 64), torch.randn(3, 1, 4)),
        # ConnectX boards, as the actor's stack of one and as plain planes; MLP and CNN
        (board_spec((9, 6, 7), 7, 32, 0, 0), torch.randint(0, 2, (3, 1, 9, 6, 7), dtype=torch.uint8)),
        (board_spec((9, 6, 7), 7, 32, 8, 2), torch.randint(0, 2, (3, 9, 6, 7), dtype=torch.uint8)),
    ]
    for spec, obs in cases:
        model = build_model(spec).eval()
        with torch.inference_mode():
            logits, values = model(obs)
            assert values.shape == (3,)
            torch.testing.assert_close(model.policy_logits(obs), logits, rtol=0, atol=0)
