"""One training entry point: :func:`fit` (the only caller of LightningCLI), and :func:`fit_or_reuse`.

``fit(configs, overrides, run_dir)`` merges the recipes (:mod:`kspacelab.training.recipes`), picks the Lightning
module and data module from the task of ``model.model_name`` in the model registry (reconstruction: the
:class:`~kspacelab.training.module.ReconModule` on an SNU dataset; anatomy_classifier: the classifier on labelled
images), validates the whole configuration against their signatures (a misspelt key is one line naming it), hands
the data module the model's :class:`~kspacelab.models.base.InputSpec` and trains. The run folder receives
``checkpoints/{last,best}.ckpt`` (written atomically), ``logs/`` (CSV, and TensorBoard when installed) and the
resolved ``config.yaml``. Running the same command again resumes from ``last.ckpt`` exactly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import yaml
from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from kspacelab.data.anatomy import AnatomyDataModule
from kspacelab.data.dataset import SnuDataModule
from kspacelab.errors import KspacelabError
from kspacelab.models import model_entry
from kspacelab.models.base import check_config
from kspacelab.training import recipes
from kspacelab.training.checkpoint import read_state_dict
from kspacelab.training.classifier import ClassifierModule
from kspacelab.training.module import MONITOR, ReconModule
from kspacelab.training.resume import AtomicCheckpointIO, ExactResume

__all__ = ["BEST_CHECKPOINT", "LAST_CHECKPOINT", "FitResult", "ValidateAtMaxSteps", "fit", "fit_or_reuse"]

#: File names of the checkpoints under ``RUN_DIR/checkpoints/``.
BEST_CHECKPOINT = "best.ckpt"
LAST_CHECKPOINT = "last.ckpt"
_RUN_MARKER = "kspacelab-run.json"

#: The Lightning module and data module that train the models of each task.
_TRAINING_CLASSES: dict[str, tuple[type[L.LightningModule], type[L.LightningDataModule]]] = {
    "reconstruction": (ReconModule, SnuDataModule),
    "anatomy_classifier": (ClassifierModule, AnatomyDataModule),
}


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` left in the run folder (None when it only printed the configuration)."""

    run_dir: Path
    best: Path | None
    last: Path | None


class ValidateAtMaxSteps(Callback):
    """Ask the loop to stop (and therefore to validate) when ``max_steps`` is reached mid-epoch.

    Lightning ends a run at ``max_steps`` without validating unless the step happens to end an epoch; this
    callback sets ``trainer.should_stop`` on the last step so the final weights are always validated and
    ``best.ckpt``/``last.ckpt`` are written.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True


class _SaveRunConfig(SaveConfigCallback):
    """Write the fully resolved configuration to ``RUN_DIR/config.yaml`` (rank zero)."""

    def __init__(self, *args: Any, run_dir: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run_dir = run_dir

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.parser.save(
            self.config,
            self.run_dir / self.config_filename,
            skip_unset=False,
            overwrite=True,
            multifile=False,
        )


def _tensorboard_available() -> bool:
    return any(importlib.util.find_spec(name) is not None for name in ("tensorboard", "tensorboardX"))


class _PrintedConfigError(Exception):
    """Raised after ``print_config`` printed the resolved configuration (nothing is instantiated)."""


class _TrainCLI(LightningCLI):
    """LightningCLI over a parsed configuration dict, with the run folder's checkpoint and log layout."""

    def __init__(
        self, *args: Any, run_dir: Path, save_every_n_steps: int | None, print_config: bool, **kwargs: Any
    ) -> None:
        self.run_dir = run_dir
        self.save_every_n_steps = save_every_n_steps
        self.print_config = print_config
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        try:
            self.config = parser.parse_object(args)
        except ArgumentError as err:
            message = " ".join(str(err).split())
            raise KspacelabError(f"train: invalid configuration: {message}") from None
        self._check_model_arguments()
        if self.print_config:
            print(parser.dump(self.config, skip_none=False), end="")
            raise _PrintedConfigError

    def _check_model_arguments(self) -> None:
        """The model's arguments against its typed config (one line naming a misspelt key)."""
        name = str(self.config.get("model.model_name"))
        try:
            entry = model_entry(name)
            check_config(name, entry.config, dict(self.config.get("model.model_kwargs") or {}))
        except ValueError as err:
            raise KspacelabError(f"model.model_kwargs: {err}") from None

    def before_instantiate_classes(self) -> None:
        """Check the data root before anything is built."""
        root = self.config.get("data.root")
        if root is not None and not Path(str(root)).is_dir():
            raise KspacelabError(f"{root}: data root (data.root) is not a directory")

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        configured = self._get(self.config_init, "trainer", default={}).get("logger")
        loggers: list[Logger] = []
        if configured is not False:
            loggers.append(CSVLogger(save_dir=self.run_dir, name="logs"))
            if _tensorboard_available():
                loggers.append(TensorBoardLogger(save_dir=self.run_dir, name="tensorboard"))
            if isinstance(configured, Logger):
                loggers.append(configured)
            elif isinstance(configured, (list, tuple)):
                loggers.extend(configured)
        callbacks: list[Callback] = [
            ModelCheckpoint(
                dirpath=self.run_dir / "checkpoints",
                filename=Path(BEST_CHECKPOINT).stem,
                monitor=getattr(self.model_class, "monitor", MONITOR),
                mode="max",
                save_top_k=1,
                save_last=True,
                auto_insert_metric_name=False,
                enable_version_counter=False,
            ),
            ValidateAtMaxSteps(),
            ExactResume(),
        ]
        if self.save_every_n_steps:
            callbacks.append(
                ModelCheckpoint(
                    dirpath=self.run_dir / "checkpoints",
                    filename="step",
                    save_top_k=0,
                    save_last=True,
                    every_n_train_steps=int(self.save_every_n_steps),
                    enable_version_counter=False,
                )
            )
        if loggers:
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        self.trainer_defaults["callbacks"] = callbacks
        kwargs.setdefault("default_root_dir", str(self.run_dir))
        self.trainer_defaults["plugins"] = [AtomicCheckpointIO()]
        kwargs.setdefault("logger", loggers if loggers else False)
        return super().instantiate_trainer(**kwargs)


def _training_classes(
    config: Mapping[str, Any],
) -> tuple[type[L.LightningModule], type[L.LightningDataModule]]:
    """The Lightning module and data module of the task of ``model.model_name`` (default ``varnet``)."""
    model = config.get("model") or {}
    name = model.get("model_name", "varnet") if isinstance(model, dict) else "varnet"
    try:
        entry = model_entry(str(name))
    except ValueError as err:
        raise KspacelabError(f"model.model_name: {err}") from None
    return _TRAINING_CLASSES[entry.task]


def _resume_path(run_dir: Path, ckpt_path: str | Path | None, config: Mapping[str, Any]) -> Path | None:
    """The checkpoint to resume from: ``ckpt_path``, else the run folder's ``last.ckpt`` (same model only)."""
    if ckpt_path:
        path = Path(ckpt_path)
        if not path.is_file():
            raise KspacelabError(f"{path}: checkpoint to resume from not found")
        return path
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / LAST_CHECKPOINT
    if last.is_file():
        saved_path = run_dir / "config.yaml"
        saved = (yaml.safe_load(saved_path.read_text()) or {}).get("model") if saved_path.is_file() else None
        current = yaml.safe_load(yaml.safe_dump(config.get("model")))
        if saved is not None and saved != current:
            raise KspacelabError(
                f"{run_dir}: holds a run with a different model configuration; choose another --run-dir "
                "(or pass --ckpt_path explicitly)"
            )
        if os.environ.get("LOCAL_RANK", "0") == "0":
            print(f"resuming from {last}")
        return last
    if ckpt_dir.is_dir() and any(ckpt_dir.glob("*.ckpt")):
        raise KspacelabError(
            f"{ckpt_dir}: holds checkpoints of an earlier run but no {LAST_CHECKPOINT}; pass --ckpt_path "
            "or choose another --run-dir"
        )
    return None


def _load_initial_weights(module: L.LightningModule, path: Path) -> None:
    """Copy the model weights of ``path`` (kspacelab checkpoint or plain state dict) into ``module`` (strict)."""
    if not path.is_file():
        raise KspacelabError(f"{path}: --init_weights checkpoint not found")
    state = read_state_dict(path)
    try:
        module.model.load_state_dict(state, strict=True)  # type: ignore[union-attr]
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise KspacelabError(f"{path}: weights do not fit this model: {first}") from None
    print(f"initial weights from {path}")


def fit(
    configs: Sequence[str | Path],
    overrides: Sequence[str] | Mapping[str, Any] = (),
    run_dir: str | Path | None = None,
    seed: int | None = None,
    ckpt_path: str | Path | None = None,
    init_weights: str | Path | None = None,
    save_every_n_steps: int | None = None,
    print_config: bool = False,
    progress: bool = True,
) -> FitResult:
    """Train one model as the recipes ``configs`` (merged in order) and ``overrides`` say.

    Args:
        configs: recipe paths or names of bundled recipes (:func:`kspacelab.training.recipes.find_config`).
        overrides: ``--section.key VALUE`` words or a ``{"section.key": value}`` mapping.
        run_dir: run folder (required unless ``print_config``).
        seed: global seed (``seed_everything``); default the recipe's, else 0.
        ckpt_path: resume from this checkpoint; default the run folder's ``last.ckpt`` when it exists.
        init_weights: start from these model weights (a kspacelab checkpoint or a state dict) with a fresh
            optimiser and schedule (the previous stage of a staged recipe); ignored when resuming.
        save_every_n_steps: also write ``last.ckpt`` every N optimiser steps.
        print_config: print the resolved configuration and return without training.
        progress: progress bars.

    Returns:
        the run folder and its best and last checkpoints.

    Raises:
        KspacelabError: a bad recipe, override, data root or checkpoint (one line).
    """
    config = recipes.compose(configs, overrides)
    if seed is not None:
        config["seed_everything"] = int(seed)
    if not progress:
        recipes.set_dotted(config, "trainer.enable_progress_bar", False)
    module_class, data_class = _training_classes(config)
    if run_dir is None and not print_config:
        raise KspacelabError("train: --run-dir DIR is required")
    folder = Path(run_dir) if run_dir is not None else Path(".")
    # ExactResume (training/resume.py) restores the position inside the epoch, so Lightning's warning about
    # non-resumable dataloaders does not apply to kspacelab runs.
    warnings.filterwarnings(
        "ignore", message="You're resuming from a checkpoint that ended before the epoch ended"
    )
    try:
        cli = _TrainCLI(
            module_class,
            data_class,
            run_dir=folder,
            save_every_n_steps=save_every_n_steps,
            print_config=print_config,
            save_config_callback=_SaveRunConfig,
            save_config_kwargs={"save_to_log_dir": False, "overwrite": True, "run_dir": folder},
            trainer_defaults={"use_distributed_sampler": False},
            seed_everything_default=0,
            parser_kwargs={"prog": "kspacelab train", "exit_on_error": False},
            args=config,
            run=False,
            auto_configure_optimizers=False,
        )
    except _PrintedConfigError:
        return FitResult(folder, None, None)
    resolved = cli.config.as_dict()
    resume = _resume_path(folder, ckpt_path, resolved)
    if hasattr(cli.datamodule, "set_input_spec"):
        cli.datamodule.set_input_spec(cli.model.input_spec)
    if init_weights and resume is None:
        _load_initial_weights(cli.model, Path(init_weights))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=resume)
    best = folder / "checkpoints" / BEST_CHECKPOINT
    last = folder / "checkpoints" / LAST_CHECKPOINT
    if cli.trainer.is_global_zero:
        checkpoint = cli.trainer.checkpoint_callback
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.best_model_path:
            score = checkpoint.best_model_score
            shown = f" ({checkpoint.monitor} {float(score):.4f})" if score is not None else ""
            print(f"best checkpoint: {checkpoint.best_model_path}{shown}")
    return FitResult(folder, best if best.is_file() else None, last if last.is_file() else None)


def fit_or_reuse(
    configs: Sequence[str | Path],
    overrides: Sequence[str],
    run_dir: str | Path,
    label: str,
    init_weights: str | Path | None = None,
    extra: Any = None,
    progress: bool = True,
) -> Path:
    """:func:`fit` into ``run_dir`` unless a finished run of the same recipes (their texts), overrides, initial
    weights and ``extra`` (e.g. a description of the data) is there; returns its best checkpoint.

    An unfinished run of the same request is resumed; any other content of ``run_dir`` is replaced.
    """
    run_dir = Path(run_dir)
    paths = [recipes.find_config(c) for c in configs]
    wanted = {
        "configs": [str(p) for p in paths],
        "texts": [p.read_text() for p in paths],
        "overrides": list(overrides),
        "init_weights": None if init_weights is None else str(init_weights),
        "extra": extra,
    }
    wanted = json.loads(json.dumps(wanted))
    checkpoint = run_dir / "checkpoints" / BEST_CHECKPOINT
    marker = run_dir / _RUN_MARKER
    if checkpoint.is_file() and marker.is_file() and json.loads(marker.read_text()) == wanted:
        print(f"reusing {label} in {run_dir}")
        return checkpoint
    started = run_dir / (_RUN_MARKER + ".started")
    same_unfinished = started.is_file() and json.loads(started.read_text()) == wanted
    if run_dir.exists() and not (same_unfinished and (run_dir / "checkpoints" / LAST_CHECKPOINT).is_file()):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started.write_text(json.dumps(wanted))
    print(f"training {label} in {run_dir}")
    result = fit(paths, overrides, run_dir, init_weights=init_weights, progress=progress)
    if result.best is None:
        raise KspacelabError(f"{run_dir}: training ended without a best checkpoint")
    marker.write_text(json.dumps(wanted))
    return result.best
