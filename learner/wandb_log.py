"""--wandb: the learner's metrics also go to Weights & Biases (optional: pip install 'retrofleet[wandb]').

WANDB_MODE=offline writes the run under RUN_DIR/wandb/ without an account (`wandb sync` uploads
it later). A resumed run continues the same W&B run (its id is kept in RUN_DIR/wandb_id).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from common.config import Config, ConfigError


def start(cfg: Config, run_dir: Path) -> Any:
    """A W&B run for this learner run."""
    try:
        import wandb
    except ImportError:
        raise ConfigError("--wandb needs the wandb package: pip install 'retrofleet[wandb]' "
                          "(or .venv/bin/pip install wandb)") from None
    id_file = run_dir / "wandb_id"
    run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(6)  # not a seed
    id_file.write_text(run_id + "\n")
    return wandb.init(project=cfg.wandb_project, name=run_dir.name, id=run_id, resume="allow",
                      dir=str(run_dir), config=cfg.to_dict(),
                      settings=wandb.Settings(console="off", x_disable_stats=True))
