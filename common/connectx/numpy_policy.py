"""The ConnectX policy network's forward pass in numpy, for the exported Kaggle agent.

``layers`` is a list of ``(kind, params)``: ``("conv3x3", (w, b))`` (padding 1), ``("relu", ())``,
``("flatten", ())``, ``("linear", (w, b))``; ``torch_layers`` extracts it from a ConnectXNet.
This module imports only numpy, ``game`` and ``features``; ``learner export-kaggle`` copies it into
the submission.
"""

from __future__ import annotations

import numpy as np

from common.connectx.features import legal_mask, planes
from common.connectx.game import Game

MASK_LOGIT = -1e9  # the value of common.action_sampling.MASK_LOGIT (the export cannot import it)


def _conv3x3(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[C, H, W] -> [O, H, W], 3x3 kernel, zero padding 1 (torch's Conv2d(padding=1))."""
    _, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    out = np.zeros((w.shape[0], h, wd), np.float32)
    for i in range(3):
        for j in range(3):
            out += np.einsum("oc,chw->ohw", w[:, :, i, j], xp[:, i:i + h, j:j + wd])
    return out + b[:, None, None]


def forward(layers: list, x: np.ndarray) -> np.ndarray:
    """Policy logits of one observation ``x`` (uint8 or float [planes, 6, 7])."""
    x = x.astype(np.float32)
    for kind, params in layers:
        if kind == "conv3x3":
            x = _conv3x3(x, *params)
        elif kind == "relu":
            x = np.maximum(x, 0.0)
        elif kind == "flatten":
            x = x.reshape(-1)
        elif kind == "linear":
            x = params[0] @ x + params[1]
        else:
            raise ValueError(f"unknown layer {kind!r}")
    return x


def greedy_column(layers: list, board: list, mark: int) -> int:
    """The most likely legal column for ``mark`` (1 or 2) to play on a Kaggle board."""
    game = Game.from_board(list(board))
    own, opp = game.pieces[mark - 1], game.pieces[2 - mark]
    logits = forward(layers, planes(own, opp))
    return int(np.argmax(np.where(legal_mask(own, opp), logits, MASK_LOGIT)))
