"""Staged training (``kspacelab train --stages RECIPE``): each stage starts from the previous stage's weights.

A staged recipe (YAML) lists the stages in order; ``config`` is a path relative to the recipe or the name of a
bundled recipe, or a list of them applied in order; ``args`` are override words::

    stages:
      - {name: stage1, config: snu2025_promptmr_ej.yaml, args: ["--trainer.max_epochs", "15"]}
      - {name: stage2, config: [snu2025_promptmr_ej.yaml, snu2025_ej_stage2.yaml]}

Stage ``N`` is one :func:`~kspacelab.training.run.fit` into ``RUN_DIR/<name>`` with ``init_weights =
RUN_DIR/<previous>/checkpoints/last.ckpt``: the weights carry over. A stage that trains a different model names
the config key that receives the previous stage's best checkpoint instead, ``previous_as:
model.model_kwargs.init_from`` (a two-stage model whose first stage is the previous stage's model); the optimiser, the schedule, the augmentation
and the mask settings are the stage's own. Finished stages are reused, and an interrupted stage resumes from its
``last.ckpt`` when the same command is run again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kspacelab.errors import KspacelabError
from kspacelab.training.recipes import load_recipe, recipe_args, recipe_configs
from kspacelab.training.run import LAST_CHECKPOINT, fit_or_reuse

__all__ = ["Stage", "read_stages", "train_stages"]


@dataclass(frozen=True)
class Stage:
    """One stage of a staged recipe."""

    name: str
    configs: tuple[Path, ...]  # merged in order
    args: tuple[str, ...]  # override words
    previous_as: str | None = None  # a config key that receives the previous stage's best checkpoint


def read_stages(path: str | Path) -> list[Stage]:
    """Every stage of a staged recipe, in order (one-line errors naming the recipe and the entry)."""
    path = Path(path)
    raw = load_recipe(path, "stages", "staged recipe")
    stages = []
    for i, entry in enumerate(raw["stages"]):
        where = f"{path}: stages[{i}]"
        if not isinstance(entry, dict):
            raise KspacelabError(f"{where}: must be a mapping with 'config'")
        previous_as = entry.get("previous_as")
        if previous_as is not None and (not isinstance(previous_as, str) or "." not in previous_as):
            raise KspacelabError(
                f"{where}: 'previous_as' must be a config key such as model.model_kwargs.init_from"
            )
        stages.append(
            Stage(
                str(entry.get("name") or f"stage{i + 1}"),
                recipe_configs(entry, path.parent, where),
                recipe_args(entry, where),
                previous_as,
            )
        )
    names = [stage.name for stage in stages]
    if len(set(names)) != len(names):
        raise KspacelabError(f"{path}: stage names must be unique, got {names}")
    return stages


def train_stages(
    recipe: str | Path,
    run_dir: str | Path,
    overrides: Sequence[str] = (),
    extra_configs: Sequence[Path] = (),
    progress: bool = True,
    init_weights: Path | None = None,
) -> Path:
    """Run every stage of ``recipe`` under ``run_dir``; returns the last stage's best checkpoint.

    Args:
        recipe: staged recipe YAML (module docstring).
        run_dir: one sub-folder per stage.
        overrides: override words for every stage, after the stage's own ``args`` (e.g. ``--data.root DIR``).
        extra_configs: recipes merged on top of every stage's configs (a bundle member's ``config``).
        progress: progress bars.
        init_weights: the first stage starts from these model weights (a bundle member fine-tuned from another
            member); None: from scratch.
    """
    run_dir = Path(run_dir)
    previous: Path | None = init_weights
    best = run_dir
    for stage in read_stages(recipe):
        stage_dir = run_dir / stage.name
        handover = (
            [] if stage.previous_as is None or previous is None else [f"--{stage.previous_as}", str(best)]
        )
        best = fit_or_reuse(
            [*stage.configs, *extra_configs],
            [*stage.args, *overrides, *handover],
            stage_dir,
            f"stage {stage.name}",
            init_weights=previous if stage.previous_as is None else None,
            progress=progress,
        )
        previous = stage_dir / "checkpoints" / LAST_CHECKPOINT
    print(f"final weights: {best}")
    return best
