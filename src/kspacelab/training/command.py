"""``kspacelab train``: a :class:`lightning.pytorch.cli.LightningCLI` over :class:`~kspacelab.training.ReconModule`
and :class:`kspacelab.data.dataset.SnuDataModule` (``task: reconstruction``, the default), or over
:class:`~kspacelab.training.classifier.ClassifierModule` and :class:`kspacelab.data.anatomy.AnatomyDataModule`
(``task: anatomy_classifier``).

YAML sections ``model:``, ``data:``, ``trainer:`` (LightningCLI/jsonargparse), dotted overrides, ``--print_config``,
plus ``--run-dir`` (checkpoints, logs and the resolved config), ``--seed`` and ``--ckpt_path``. Lightning does the
loop; this module only sets up the run folder's layout.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from kspacelab.errors import KspacelabError
from kspacelab.training.module import MONITOR
from kspacelab.training.resume import AtomicCheckpointIO, ExactResume

#: ``task:`` of a config -> (Lightning module, data module) import paths.
TASKS: dict[str, tuple[str, str]] = {
    "reconstruction": ("kspacelab.training.module:ReconModule", "kspacelab.data.dataset:SnuDataModule"),
    "anatomy_classifier": (
        "kspacelab.training.classifier:ClassifierModule",
        "kspacelab.data.anatomy:AnatomyDataModule",
    ),
}

__all__ = ["BEST_CHECKPOINT", "LAST_CHECKPOINT", "TASKS", "ValidateAtMaxSteps", "build_cli", "train_main"]

#: File names of the checkpoints under ``RUN_DIR/checkpoints/``.
BEST_CHECKPOINT = "best.ckpt"
LAST_CHECKPOINT = "last.ckpt"


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

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        run_dir = Path(str(self.config["run_dir"]))
        run_dir.mkdir(parents=True, exist_ok=True)
        self.parser.save(
            self.config, run_dir / self.config_filename, skip_unset=False, overwrite=True, multifile=False
        )


def _tensorboard_available() -> bool:
    return any(importlib.util.find_spec(name) is not None for name in ("tensorboard", "tensorboardX"))


class _TrainCLI(LightningCLI):
    """LightningCLI with a run directory, resume path and the project's checkpoint/log layout."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--run_dir",
            "--run-dir",
            type=str | None,
            default=None,
            help="Run folder: checkpoints/{last,best}.ckpt, logs/ and config.yaml (required).",
        )
        parser.add_argument(
            "--task",
            type=str,
            default="reconstruction",
            help=f"What is trained: {' | '.join(TASKS)} (selects the model and data classes).",
        )
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="Resume training from this checkpoint (default: RUN_DIR/checkpoints/last.ckpt when it exists).",
        )
        parser.add_argument(
            "--init_weights",
            "--init-weights",
            type=str | None,
            default=None,
            help="Start from these model weights (a kspacelab checkpoint or a state dict) with a fresh optimiser "
            "and schedule, e.g. the previous stage of a staged recipe. Ignored when resuming.",
        )
        parser.add_argument(
            "--save_every_n_steps",
            "--save-every-n-steps",
            type=int | None,
            default=None,
            help="Also write RUN_DIR/checkpoints/last.ckpt every N optimiser steps (default: after every "
            "validation only). Checkpoints are written atomically.",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # The arguments always come from kspacelab's own command line (sys.argv also holds them).
        self.config = parser.parse_args(args)

    def before_instantiate_classes(self) -> None:
        run_dir = self.config.get("run_dir")
        if not run_dir:
            raise KspacelabError("train: --run-dir DIR is required (or run_dir: in the config)")
        root = self.config.get("data.root")
        if root is not None and not Path(str(root)).is_dir():
            raise KspacelabError(f"{root}: data root (data.root) is not a directory")
        ckpt_path = self.config.get("ckpt_path")
        if ckpt_path and not Path(ckpt_path).is_file():
            raise KspacelabError(f"{ckpt_path}: checkpoint to resume from not found")
        ckpt_dir = Path(run_dir) / "checkpoints"
        last = ckpt_dir / LAST_CHECKPOINT
        if not ckpt_path and last.is_file():
            self._check_same_model(Path(run_dir))
            self.config["ckpt_path"] = str(last)
            if os.environ.get("LOCAL_RANK", "0") == "0":
                print(f"resuming from {last}")
        elif not ckpt_path and ckpt_dir.is_dir() and any(ckpt_dir.glob("*.ckpt")):
            raise KspacelabError(
                f"{ckpt_dir}: holds checkpoints of an earlier run but no {LAST_CHECKPOINT}; pass --ckpt_path "
                "or choose another --run-dir"
            )

    def _check_same_model(self, run_dir: Path) -> None:
        """Refuse to resume a run folder whose saved configuration has a different model section."""
        saved_path = run_dir / "config.yaml"
        if not saved_path.is_file():
            return
        saved = (yaml.safe_load(saved_path.read_text()) or {}).get("model")
        current = yaml.safe_load(yaml.safe_dump(self.config.get("model").as_dict()))
        if saved is not None and saved != current:
            raise KspacelabError(
                f"{run_dir}: holds a run with a different model configuration; choose another --run-dir "
                "(or pass --ckpt_path explicitly)"
            )

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        run_dir = Path(str(self.config_init["run_dir"]))
        configured = self._get(self.config_init, "trainer", default={}).get("logger")
        loggers: list[Logger] = []
        if configured is not False:
            loggers.append(CSVLogger(save_dir=run_dir, name="logs"))
            if _tensorboard_available():
                loggers.append(TensorBoardLogger(save_dir=run_dir, name="tensorboard"))
            if isinstance(configured, Logger):
                loggers.append(configured)
            elif isinstance(configured, (list, tuple)):
                loggers.extend(configured)
        callbacks: list[Callback] = [
            ModelCheckpoint(
                dirpath=run_dir / "checkpoints",
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
        every = self.config_init.get("save_every_n_steps")
        if every:
            callbacks.append(
                ModelCheckpoint(
                    dirpath=run_dir / "checkpoints",
                    filename="step",
                    save_top_k=0,
                    save_last=True,
                    every_n_train_steps=int(every),
                    enable_version_counter=False,
                )
            )
        if loggers:
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        self.trainer_defaults["callbacks"] = callbacks
        kwargs.setdefault("default_root_dir", str(run_dir))
        self.trainer_defaults["plugins"] = [AtomicCheckpointIO()]
        kwargs.setdefault("logger", loggers if loggers else False)
        return super().instantiate_trainer(**kwargs)


def _translate_seed(argv: Sequence[str]) -> list[str]:
    """``--seed N`` / ``--seed=N`` -> LightningCLI's ``--seed_everything N``."""
    out: list[str] = []
    for arg in argv:
        if arg == "--seed":
            out.append("--seed_everything")
        elif arg.startswith("--seed="):
            out.append("--seed_everything=" + arg.split("=", 1)[1])
        else:
            out.append(arg)
    return out


def _import(path: str) -> Any:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def _task(argv: Sequence[str]) -> str:
    """The ``task`` of a run: ``--task X`` on the command line, else the last ``task:`` of the ``--config`` files."""
    task = "reconstruction"
    args = list(argv)
    for i, arg in enumerate(args):
        value = None
        if arg in ("--config", "--task") and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(("--config=", "--task=")):
            value = arg.split("=", 1)[1]
        if value is None:
            continue
        if arg.startswith("--task"):
            task = value
        elif Path(value).is_file():
            try:
                loaded = yaml.safe_load(Path(value).read_text())
            except yaml.YAMLError:
                continue  # jsonargparse reports the broken file
            if isinstance(loaded, dict) and isinstance(loaded.get("task"), str):
                task = loaded["task"]
    if task not in TASKS:
        raise KspacelabError(f"train: unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return task


def build_cli(argv: Sequence[str], cli_class: Callable[..., LightningCLI] = _TrainCLI) -> LightningCLI:
    """Parse ``argv`` (the arguments after ``kspacelab train``) and instantiate model, data and trainer.

    Exits (``SystemExit``) for ``--help``, ``--print_config`` (status 0) and configuration errors (status 2,
    jsonargparse's message).
    """
    model_class, data_class = (_import(path) for path in TASKS[_task(argv)])
    return cli_class(
        model_class,
        data_class,
        save_config_callback=_SaveRunConfig,
        save_config_kwargs={"save_to_log_dir": False, "overwrite": True},
        trainer_defaults={"use_distributed_sampler": False},
        seed_everything_default=0,
        parser_kwargs={
            "prog": "kspacelab train",
            "description": "Train a reconstruction model (Lightning). YAML sections model:, data:, trainer:; "
            "override any key with --section.key VALUE. --run-dir DIR (required) receives "
            "checkpoints/{last,best}.ckpt, logs/ and config.yaml; --seed N is --seed_everything N; "
            "--ckpt_path DIR/checkpoints/last.ckpt resumes.",
        },
        args=_translate_seed(argv),
        run=False,
        auto_configure_optimizers=False,
    )


def _load_initial_weights(module: L.LightningModule, path: Path) -> None:
    """Copy the model weights of ``path`` (kspacelab checkpoint or plain state dict) into ``module`` (strict)."""
    if not path.is_file():
        raise KspacelabError(f"{path}: --init_weights checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise KspacelabError(f"{path}: cannot read the checkpoint safely (weights_only): {first}") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise KspacelabError(f"{path}: no weights found")
    try:
        if any(k.startswith("model.") for k in state):
            module.load_state_dict(state, strict=True)
        else:
            module.model.load_state_dict(state, strict=True)  # type: ignore[union-attr]
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise KspacelabError(f"{path}: weights do not fit this model: {first}") from None
    print(f"initial weights from {path}")


def _split_run_args(argv: Sequence[str], option: str) -> tuple[str, str, list[str], bool]:
    """``(option value, run dir, other words, progress)`` of ``--bundle``/``--stages`` command lines."""
    words = list(argv)
    value = run_dir = None
    rest: list[str] = []
    progress = True
    i = 0
    while i < len(words):
        word = words[i]
        key, _, inline = word.partition("=")
        if key in (option, "--run-dir", "--run_dir"):
            found = inline if inline else (words[i + 1] if i + 1 < len(words) else None)
            if found is None:
                raise KspacelabError(f"train: {key} needs a value")
            if key == option:
                value = found
            else:
                run_dir = found
            i += 1 if inline else 2
            continue
        if word == "--quiet":
            progress = False
        else:
            rest.append(word)
        i += 1
    if run_dir is None:
        raise KspacelabError(f"train: {option} needs --run-dir DIR (one sub-folder per run)")
    assert value is not None
    return value, run_dir, rest, progress


def _train_stages_main(argv: Sequence[str]) -> int:
    """``kspacelab train --stages RECIPE --run-dir DIR [overrides]`` (:func:`kspacelab.training.stages.train_stages`)."""
    from kspacelab.training.stages import train_stages

    recipe, run_dir, rest, progress = _split_run_args(argv, "--stages")
    train_stages(recipe, run_dir, rest, progress=progress)
    return 0


def _train_bundle_main(argv: Sequence[str]) -> int:
    """``kspacelab train --bundle RECIPE --run-dir DIR [overrides]`` (:func:`kspacelab.training.bundle.train_bundle`)."""
    from kspacelab.training.bundle import train_bundle

    recipe, run_dir, rest, progress = _split_run_args(argv, "--bundle")
    train_bundle(recipe, run_dir, rest, progress=progress)
    return 0


def train_main(argv: Sequence[str]) -> int:
    """``kspacelab train --config FILE [--run-dir DIR] [--seed N] [--ckpt_path CKPT] [--section.key VALUE ...]``.

    Trains with Lightning; writes ``DIR/checkpoints/last.ckpt``, ``DIR/checkpoints/best.ckpt`` (best
    ``val/ssim``), CSV logs (and TensorBoard logs when installed) under ``DIR`` and the resolved configuration
    ``DIR/config.yaml``. Returns the exit status (0). With ``--bundle RECIPE`` it trains every member of a
    mixture-of-experts recipe instead (:mod:`kspacelab.training.bundle`).
    """
    argv = [*(["--data.merge_val_into_train", "true"] if "--use-val-for-final" in argv else [])] + [
        a for a in argv if a != "--use-val-for-final"
    ]
    if any(a == "--bundle" or a.startswith("--bundle=") for a in argv):
        return _train_bundle_main(argv)
    if any(a == "--stages" or a.startswith("--stages=") for a in argv):
        return _train_stages_main(argv)
    # ExactResume (training/resume.py) restores the position inside the epoch, so Lightning's warning about
    # non-resumable dataloaders does not apply to kspacelab runs.
    warnings.filterwarnings(
        "ignore", message="You're resuming from a checkpoint that ended before the epoch ended"
    )
    cli = build_cli(argv)
    ckpt_path = cli.config.get("ckpt_path")
    init = cli.config.get("init_weights")
    if init and not ckpt_path:
        _load_initial_weights(cli.model, Path(init))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    if cli.trainer.is_global_zero:
        checkpoint = cli.trainer.checkpoint_callback
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.best_model_path:
            score = checkpoint.best_model_score
            shown = f" ({checkpoint.monitor} {float(score):.4f})" if score is not None else ""
            print(f"best checkpoint: {checkpoint.best_model_path}{shown}")
    return 0
