"""Exact resume: crash-safe checkpoints and a restart that continues exactly where the run stopped.

* :class:`AtomicCheckpointIO` writes every checkpoint to a temporary name and renames it, so a process killed
  while saving (even with SIGKILL) leaves the previous ``last.ckpt`` intact.
* :class:`ExactResume` stores what Lightning does not: the position inside the epoch (batches already
  trained) and the global RNG states (torch, numpy, Python). On restart it restores the RNGs and tells the
  data module to skip the batches of the interrupted epoch that were already trained. The sampler's order
  depends only on ``(seed, epoch)`` and every random data draw (mask, MRAugment) only on ``(seed, epoch, file,
  slice)``, so the resumed run sees exactly the batches the uninterrupted run would have seen; on CPU with
  ``num_workers: 0`` or any number of workers the final weights are bitwise identical (tested).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = ["AtomicCheckpointIO", "ExactResume"]

_KEY = "kspacelab_resume"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to ``NAME.tmp`` in the same folder, then ``os.replace`` onto ``NAME``."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, target)


def _numpy_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "kind": str(kind),
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _set_numpy_state(state: dict[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["kind"], keys, state["pos"], state["has_gauss"], state["cached"]))


class ExactResume(L.Callback):
    """Save the in-epoch position and RNG states with every checkpoint; restore them on resume.

    The checkpoint entry holds only tensors, numbers and strings, so checkpoints still load with
    ``weights_only=True``.
    """

    def __init__(self) -> None:
        self._epoch = 0
        self._batches_done = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch != self._epoch:
            self._epoch, self._batches_done = trainer.current_epoch, 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._epoch = trainer.current_epoch
        self._batches_done = batch_idx + 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch, self._batches_done = (
            trainer.current_epoch + 1,
            0,
        )  # the next epoch starts from its beginning

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        python_state = random.getstate()
        checkpoint[_KEY] = {
            "epoch": self._epoch,
            "batches_done": self._batches_done,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": _numpy_state(),
            "python_rng": {
                "version": python_state[0],
                "state": list(python_state[1]),
                "gauss": python_state[2],
            },
        }

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        state = checkpoint.get(_KEY)
        if not isinstance(state, dict):
            return
        torch.set_rng_state(state["torch_rng"])
        _set_numpy_state(state["numpy_rng"])
        py = state["python_rng"]
        random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
        self._epoch, self._batches_done = int(state["epoch"]), int(state["batches_done"])
        datamodule = getattr(trainer, "datamodule", None)
        if self._batches_done > 0 and hasattr(datamodule, "resume_position"):
            datamodule.resume_position = (self._epoch, self._batches_done)  # type: ignore[union-attr]
