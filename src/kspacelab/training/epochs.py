"""Per-epoch records of a run: a checkpoint after every epoch (``keep_every_epoch``) and ``loss_log.npy``.

* :func:`every_epoch_checkpoint` (recipe key ``checkpoint: {keep_every_epoch: true}``) keeps ``checkpoints/epoch{N:03d}.ckpt``, the state at the end of every (0-based)
  epoch ``N``, next to ``best.ckpt`` and ``last.ckpt`` (the 2025 teams kept one file per epoch and chose among
  them afterwards).
* :class:`LossLog` writes ``RUN_DIR/loss_log.npy`` after every epoch: float64 ``(epochs, 3)``, one row per
  epoch with ``[epoch, mean training loss, validation loss]``; the validation loss is ``1 - val/ssim`` (NaN
  when the epoch did not validate). Each stage of a staged recipe has its own run folder, so its own log, in
  the layout of the teams' ``val_loss_log.npy`` plus the training loss.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from kspacelab.formats import atomic_npy
from kspacelab.training.module import MONITOR

__all__ = ["LOSS_LOG", "LossLog", "every_epoch_checkpoint", "read_loss_log"]

#: File name of the loss log in the run folder.
LOSS_LOG = "loss_log.npy"


def every_epoch_checkpoint(checkpoints: Path) -> ModelCheckpoint:
    """A callback that writes ``checkpoints/epoch{N:03d}.ckpt`` at the end of every training epoch and keeps
    them all."""
    return ModelCheckpoint(
        dirpath=checkpoints,
        filename="epoch{epoch:03d}",
        monitor=None,
        save_top_k=-1,
        every_n_epochs=1,
        save_on_train_epoch_end=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )


def read_loss_log(path: Path) -> np.ndarray:
    """The rows of a loss log (``(0, 3)`` when the file does not exist)."""
    if not path.is_file():
        return np.empty((0, 3), dtype=np.float64)
    rows = np.load(path, allow_pickle=False)
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


class LossLog(Callback):
    """Append ``[epoch, mean training loss, 1 - val/ssim]`` to ``RUN_DIR/loss_log.npy`` after every epoch
    (rank zero; written atomically). A resumed run keeps the rows of the epochs before the one it resumes in."""

    def __init__(self, run_dir: Path, monitor: str = MONITOR) -> None:
        self.path = Path(run_dir) / LOSS_LOG
        self.monitor = monitor
        self._total = 0.0
        self._count = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._total, self._count = 0.0, 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self._total += float(loss.detach())
            self._count += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        epoch = int(trainer.current_epoch)
        train = self._total / self._count if self._count else math.nan
        score = trainer.callback_metrics.get(self.monitor)
        val = 1.0 - float(score) if score is not None else math.nan
        rows = read_loss_log(self.path)
        rows = rows[rows[:, 0] < epoch]
        atomic_npy(self.path, np.vstack([rows, [[float(epoch), train, val]]]))
