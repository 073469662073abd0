"""Training: the Lightning module, learning-rate schedules, checkpoint loading and ``kspacelab train``.

* :mod:`~kspacelab.training.module`: :class:`ReconModule` (masked leaderboard-SSIM loss, per-acceleration
  leaderboard SSIM in validation, optimisers and schedules) and :func:`warmup_cosine_lr`;
* :mod:`~kspacelab.training.checkpoint`: :func:`load_model` (our Lightning checkpoints and fastMRI VarNet state
  dicts, ``weights_only=True``) and :func:`model_data_settings`;
* :mod:`~kspacelab.training.command`: :func:`train_main`, the ``kspacelab train`` program (LightningCLI).
"""

from __future__ import annotations

from kspacelab.training.checkpoint import load_model, model_data_settings
from kspacelab.training.command import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    ValidateAtMaxSteps,
    build_cli,
    train_main,
)
from kspacelab.training.module import MONITOR, ReconModule, warmup_cosine_lr

__all__ = [
    "BEST_CHECKPOINT",
    "LAST_CHECKPOINT",
    "MONITOR",
    "ReconModule",
    "ValidateAtMaxSteps",
    "build_cli",
    "load_model",
    "model_data_settings",
    "train_main",
    "warmup_cosine_lr",
]
