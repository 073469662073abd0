"""``kspacelab train``: a :class:`lightning.pytorch.cli.LightningCLI` over :class:`~kspacelab.training.ReconModule`
and :class:`kspacelab.data.dataset.SnuDataModule`.

YAML sections ``model:``, ``data:``, ``trainer:`` (LightningCLI/jsonargparse), dotted overrides, ``--print_config``,
plus ``--run-dir`` (checkpoints, logs and the resolved config), ``--seed`` and ``--ckpt_path``. Lightning does the
loop; this module only sets up the run folder's layout.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from kspacelab.errors import KspacelabError
from kspacelab.training.module import MONITOR, ReconModule

__all__ = ["BEST_CHECKPOINT", "LAST_CHECKPOINT", "ValidateAtMaxSteps", "build_cli", "train_main"]

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
            "--ckpt_path",
            type=str | None,
            default=None,
            help="Resume training from this checkpoint (usually RUN_DIR/checkpoints/last.ckpt).",
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
        first_process = os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"
        if first_process and not ckpt_path and ckpt_dir.is_dir() and any(ckpt_dir.glob("*.ckpt")):
            raise KspacelabError(
                f"{ckpt_dir}: holds checkpoints of an earlier run; resume with --ckpt_path "
                f"{ckpt_dir / LAST_CHECKPOINT} or choose another --run-dir"
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
                monitor=MONITOR,
                mode="max",
                save_top_k=1,
                save_last=True,
                auto_insert_metric_name=False,
                enable_version_counter=False,
            ),
            ValidateAtMaxSteps(),
        ]
        if loggers:
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        self.trainer_defaults["callbacks"] = callbacks
        kwargs.setdefault("default_root_dir", str(run_dir))
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


def build_cli(argv: Sequence[str], cli_class: Callable[..., LightningCLI] = _TrainCLI) -> LightningCLI:
    """Parse ``argv`` (the arguments after ``kspacelab train``) and instantiate model, data and trainer.

    Exits (``SystemExit``) for ``--help``, ``--print_config`` (status 0) and configuration errors (status 2,
    jsonargparse's message).
    """
    from kspacelab.data.dataset import SnuDataModule

    return cli_class(
        ReconModule,
        SnuDataModule,
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


def train_main(argv: Sequence[str]) -> int:
    """``kspacelab train --config FILE [--run-dir DIR] [--seed N] [--ckpt_path CKPT] [--section.key VALUE ...]``.

    Trains with Lightning; writes ``DIR/checkpoints/last.ckpt``, ``DIR/checkpoints/best.ckpt`` (best
    ``val/ssim``), CSV logs (and TensorBoard logs when installed) under ``DIR`` and the resolved configuration
    ``DIR/config.yaml``. Returns the exit status (0).
    """
    cli = build_cli(argv)
    ckpt_path = cli.config.get("ckpt_path")
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    if cli.trainer.is_global_zero:
        checkpoint = cli.trainer.checkpoint_callback
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.best_model_path:
            score = checkpoint.best_model_score
            shown = f" ({MONITOR} {float(score):.4f})" if score is not None else ""
            print(f"best checkpoint: {checkpoint.best_model_path}{shown}")
    return 0
