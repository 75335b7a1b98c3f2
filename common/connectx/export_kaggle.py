"""`learner export-kaggle RUN --out submission.py`: a ConnectX policy as one Kaggle submission file.

The file needs numpy and the standard library only. It holds, verbatim, the game, feature and
numpy-forward modules the policy was trained and evaluated with (common/connectx/game.py,
features.py, numpy_policy.py), the weights (float32, zlib + base64) and, last, the agent:
``agent(observation, configuration) -> column``, greedy over the masked policy.
"""

from __future__ import annotations

import base64
import io
import re
import textwrap
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from common.connectx import features, game, numpy_policy

_SOURCES = (game, features, numpy_policy)
_PROJECT_IMPORT = re.compile(r"^from common\.[\w.]+ import .*$|^from __future__ import .*$", re.M)


def torch_layers(model: nn.Module) -> list[tuple[str, tuple[np.ndarray, ...]]]:
    """A ConnectXNet's policy path (torso, then policy head) as numpy_policy layers."""
    out: list[tuple[str, tuple[np.ndarray, ...]]] = []
    for m in [*model.torso, model.policy]:
        params = tuple(p.detach().cpu().numpy().astype(np.float32) for p in (getattr(m, "weight", None),
                                                                               getattr(m, "bias", None))
                       if p is not None)
        if isinstance(m, nn.Conv2d):
            if m.kernel_size != (3, 3) or m.padding != (1, 1) or m.stride != (1, 1):
                raise ValueError(f"only 3x3 convolutions with padding 1 export, got {m}")
            out.append(("conv3x3", params))
        elif isinstance(m, nn.Linear):
            out.append(("linear", params))
        elif isinstance(m, nn.ReLU):
            out.append(("relu", ()))
        elif isinstance(m, nn.Flatten):
            out.append(("flatten", ()))
        else:
            raise ValueError(f"layer {type(m).__name__} has no numpy twin")
    return out


def _module_source(module) -> str:
    text = Path(module.__file__).read_text()
    return _PROJECT_IMPORT.sub("", text).strip()


def submission_source(model: nn.Module, origin: str) -> str:
    """The text of the submission file for ``model``; ``origin`` says where it came from."""
    layers = torch_layers(model)
    arrays = {f"p{i}_{k}": a for i, (_, params) in enumerate(layers) for k, a in enumerate(params)}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    blob = base64.b64encode(zlib.compress(buf.getvalue(), 9)).decode()
    spec = [(kind, [f"p{i}_{k}" for k in range(len(params))]) for i, (kind, params) in enumerate(layers)]
    parts = [
        f'"""retrofleet ConnectX agent ({origin}).\n\nGreedy over the masked policy; numpy and the '
        'standard library only. Kaggle calls the last function, agent(observation, configuration)."""',
        "from __future__ import annotations",
        "import base64\nimport io\nimport zlib",
        *(f"# ---- {Path(m.__file__).name}\n{_module_source(m)}" for m in _SOURCES),
        "# ---- weights\n_WEIGHTS = (\n" + "\n".join(f'    "{line}"' for line in textwrap.wrap(blob, 96))
        + "\n)",
        f"_SPEC = {spec!r}",
        textwrap.dedent('''\
            def _layers():
                data = np.load(io.BytesIO(zlib.decompress(base64.b64decode(_WEIGHTS))), allow_pickle=False)
                return [(kind, tuple(data[name] for name in names)) for kind, names in _SPEC]


            _LAYERS = _layers()


            def agent(observation, configuration):
                """Kaggle's entry point: the column to play for observation.board / observation.mark."""
                get = observation.get if isinstance(observation, dict) else lambda k: getattr(observation, k)
                return greedy_column(_LAYERS, get("board"), int(get("mark")))'''),
    ]
    return "\n\n\n".join(parts) + "\n"


def write_submission(model: nn.Module, out: str | Path, origin: str) -> Path:
    out = Path(out)
    out.write_text(submission_source(model, origin))
    return out


def export_policy(policy: Any, out: str | Path) -> tuple[Path, str]:
    """A run's loaded policy (``spec``, ``model``, ``checkpoint``) as a submission file; returns
    the path and the checkpoint it came from. ValueError for a policy of another game."""
    if policy.spec["kind"] != "connectx":
        raise ValueError(f"{policy.checkpoint} is not a ConnectX policy")
    origin = f"{policy.checkpoint}"
    return write_submission(policy.model, out, origin), origin


class SubmissionPlayer:
    """A submission file's ``agent`` as an opponent-style player (``act(own, opp)``), called the
    way Kaggle calls it: a fresh observation {board, mark} and the configuration each move."""

    CONFIGURATION = {"rows": 6, "columns": 7, "inarow": 4, "actTimeout": 2, "timeout": 2}

    def __init__(self, path: str | Path, name: str = "submission"):
        import importlib.util

        spec = importlib.util.spec_from_file_location(f"submission_{abs(hash(str(path)))}", path)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot load {path} as Python")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.agent = module.agent
        self.name = name

    def act(self, own: int, opp: int) -> int:
        g = game.Game()
        first = bin(own).count("1") == bin(opp).count("1")
        g.pieces = [own, opp] if first else [opp, own]
        return self.agent({"board": g.board(), "mark": 1 if first else 2}, dict(self.CONFIGURATION))
