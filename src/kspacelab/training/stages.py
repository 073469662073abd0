"""``kspacelab train --stages RECIPE``: staged training, each stage starting from the previous stage's weights.

A staged recipe (YAML) lists the stages in order; config paths are relative to the recipe (``config`` may be a
list of files, applied in order as repeated ``--config``)::

    stages:
      - {name: stage1, config: snu2025_promptmr_ej.yaml, args: ["--trainer.max_epochs", "15"]}
      - {name: stage2, config: snu2025_promptmr_ej.yaml, args: ["--trainer.max_epochs", "15", "--model.lr", "2e-4"]}

Stage ``N`` runs ``kspacelab train --config ... ARGS OVERRIDES --run-dir RUN_DIR/<name> --init_weights
RUN_DIR/<previous>/checkpoints/last.ckpt``: the weights carry over, the optimiser, the schedule, the
augmentation and the mask settings are the stage's own. Finished stages are reused, an interrupted stage
resumes from its ``last.ckpt`` when the same command is run again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kspacelab.errors import KspacelabError
from kspacelab.training.bundle import config_args, load_recipe, recipe_args, recipe_configs, train_or_reuse

__all__ = ["read_stages", "train_stages"]


def read_stages(path: str | Path) -> list[tuple[str, tuple[Path, ...], list[str]]]:
    """``(name, configs, args)`` of every stage of a staged recipe, in order (``configs`` applied in order)."""
    path = Path(path)
    raw = load_recipe(path, "stages", "staged recipe")
    stages = []
    for i, entry in enumerate(raw["stages"]):
        where = f"{path}: stages[{i}]"
        configs = recipe_configs(entry, path.parent, where)
        args = list(recipe_args(entry, where))
        stages.append((str(entry.get("name") or f"stage{i + 1}"), configs, args))
    names = [name for name, _, _ in stages]
    if len(set(names)) != len(names):
        raise KspacelabError(f"{path}: stage names must be unique, got {names}")
    return stages


def train_stages(
    recipe: str | Path, run_dir: str | Path, overrides: Sequence[str] = (), progress: bool = True
) -> Path:
    """Run every stage of ``recipe`` under ``run_dir``; returns the last stage's best checkpoint.

    Args:
        recipe: staged recipe YAML (module docstring).
        run_dir: one sub-folder per stage.
        overrides: extra ``kspacelab train`` arguments for every stage (e.g. ``--data.root DIR``).
        progress: progress bars.
    """
    run_dir = Path(run_dir)
    previous: Path | None = None
    best = run_dir
    for name, configs, args in read_stages(recipe):
        stage_dir = run_dir / name
        argv = [*config_args(configs), *args, *overrides, "--run-dir", str(stage_dir)]
        if previous is not None:
            argv += ["--init_weights", str(previous)]
        if not progress:
            argv += ["--trainer.enable_progress_bar", "false"]
        best = train_or_reuse(argv, stage_dir, f"stage {name}")
        previous = stage_dir / "checkpoints" / "last.ckpt"
    print(f"final weights: {best}")
    return best
