"""Training: the Lightning modules, schedules, recipes, checkpoint loading and the one entry point :func:`fit`.

* :mod:`~kspacelab.training.module`: :class:`ReconModule` (masked leaderboard-SSIM loss, per-acceleration
  leaderboard SSIM in validation, optimisers and schedules) and :func:`warmup_cosine_lr`;
* :mod:`~kspacelab.training.checkpoint`: :func:`load_model` returning a :class:`LoadedModel` (our Lightning
  checkpoints and fastMRI VarNet state dicts, ``weights_only=True``);
* :mod:`~kspacelab.training.recipes`: YAML recipes (bundled or by path), merging and overrides;
* :mod:`~kspacelab.training.run`: :func:`fit`, the only caller of LightningCLI, and :func:`fit_or_reuse`;
* :mod:`~kspacelab.training.stages`: staged recipes, one :func:`fit` per stage.
"""

from __future__ import annotations

from kspacelab.training.checkpoint import LoadedModel, Provenance, load_model, read_state_dict
from kspacelab.training.module import MONITOR, ReconModule, warmup_cosine_lr
from kspacelab.training.run import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    FitResult,
    ValidateAtMaxSteps,
    fit,
    fit_or_reuse,
)

__all__ = [
    "BEST_CHECKPOINT",
    "LAST_CHECKPOINT",
    "MONITOR",
    "FitResult",
    "LoadedModel",
    "Provenance",
    "ReconModule",
    "ValidateAtMaxSteps",
    "fit",
    "fit_or_reuse",
    "load_model",
    "read_state_dict",
    "warmup_cosine_lr",
]
