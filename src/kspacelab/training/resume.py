"""Exact resume: crash-safe checkpoints and a restart that continues exactly where the run stopped.

* :class:`AtomicCheckpointIO` writes every checkpoint to a temporary name and renames it, so a process killed
  while saving (even with SIGKILL) leaves the previous ``last.ckpt`` intact.
* :class:`ExactResume` stores what Lightning does not: the position inside the epoch (batches already
  trained) and the global RNG states (torch, numpy, Python). On restart it restores the RNGs and tells the
  data module to skip the batches of the interrupted epoch that were already trained. The sampler's order
  depends only on ``(seed, epoch)`` and every random data draw (mask, MRAugment) only on ``(seed, epoch, file,
  slice)``, so the resumed run sees exactly the batches the uninterrupted run would have seen; on CPU with
  ``num_workers: 0`` or any number of workers the final weights are bitwise identical (tested).
* :class:`LastCheckpoint` writes ``last.ckpt`` after every validation (whether or not the score improved), every
  N optimiser steps when asked (deferred to the validation that follows when one does), and at the end of an
  epoch without validation.

Lightning restarts exactly from a checkpoint written after a training step or at the end of a validation, but
not from one written inside ``on_train_epoch_end`` (its own default when validation runs once per epoch, and
what kspacelab wrote before): with ``max_steps`` it skips the next epoch's data order. :class:`ExactResume`
therefore rewrites such a checkpoint's loop progress on load into the equivalent "validation of the epoch's
last batch just ended" state, so every checkpoint kspacelab has written resumes exactly.

Checkpoints are read through :func:`kspacelab.training.checkpoint.safe_load` (``weights_only=True``, refused
when the environment would make torch unpickle code), also when Lightning resumes (``trainer.fit(ckpt_path=...)``
goes through :meth:`AtomicCheckpointIO.load_checkpoint`).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from kspacelab.errors import KspacelabError
from kspacelab.training.checkpoint import safe_load

__all__ = ["AtomicCheckpointIO", "ExactResume", "LastCheckpoint"]

_KEY = "kspacelab_resume"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to ``NAME.tmp`` in the same folder, then ``os.replace`` onto ``NAME``; loading through
    :func:`~kspacelab.training.checkpoint.safe_load` (``weights_only=True``, whatever Lightning or the environment
    ask for)."""

    def __init__(self) -> None:
        super().__init__()
        self._preloaded: tuple[Path, dict[str, Any]] | None = None

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, target)

    def preload(self, path: Path, checkpoint: dict[str, Any]) -> None:
        """Hand over ``checkpoint``, already read (and checked) from ``path``: the next load of ``path`` returns it
        instead of reading the file again."""
        self._preloaded = (Path(path).resolve(), checkpoint)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Read a checkpoint with :func:`~kspacelab.training.checkpoint.safe_load`, whatever ``weights_only``
        Lightning asks for (one-line :class:`~kspacelab.errors.KspacelabError` for an unsafe or corrupt file)."""
        del weights_only  # always True
        target = Path(path).resolve()
        if self._preloaded is not None and self._preloaded[0] == target:
            checkpoint = self._preloaded[1]
            self._preloaded = None
            return checkpoint
        loaded = safe_load(target, map_location if map_location is not None else "cpu")
        if not isinstance(loaded, dict):
            raise KspacelabError(f"{target}: not a kspacelab training checkpoint (a {type(loaded).__name__})")
        return loaded


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


def _saved_in_epoch_end(progress: Any) -> bool:
    """Whether an epoch progress record was saved inside ``on_train_epoch_end`` (processed, not completed)."""
    if not isinstance(progress, dict):
        return False
    values = [progress.get(key) for key in ("ready", "started", "processed", "completed")]
    counts = [v for v in values if isinstance(v, int)]
    if len(counts) != 4:
        return False
    ready, started, processed, completed = counts
    return ready == started == processed == completed + 1


def normalise_epoch_end(checkpoint: dict[str, Any]) -> tuple[int, int] | None:
    """Rewrite the loop progress of a checkpoint written inside ``on_train_epoch_end`` into the state Lightning
    restarts from exactly: the end of the validation after the epoch's last trained batch (the epoch's processed
    count one lower). Lightning then finishes the epoch (its end-of-epoch hooks run again) and goes on with the
    next one.

    Returns:
        ``(epoch, batches of it trained)`` for a rewritten checkpoint, None when the checkpoint was written
        elsewhere (after a training step or a validation: left as it is).
    """
    loops = checkpoint.get("loops")
    fit = loops.get("fit_loop") if isinstance(loops, dict) else None
    progress = fit.get("epoch_progress") if isinstance(fit, dict) else None
    if not isinstance(progress, dict) or not _saved_in_epoch_end(progress.get("total")):
        return None
    assert isinstance(fit, dict)
    for key in ("current", "total"):
        if _saved_in_epoch_end(progress.get(key)):
            progress[key]["processed"] -= 1
    batches = fit.get("epoch_loop.batch_progress")
    current = batches.get("current") if isinstance(batches, dict) else None
    done = current.get("completed") if isinstance(current, dict) else None
    epoch = progress["current"].get("completed") if isinstance(progress.get("current"), dict) else None
    return (
        int(epoch) if isinstance(epoch, int) else 0,
        int(done) if isinstance(done, int) else 0,
    )


class ExactResume(L.Callback):
    """Save the in-epoch position and RNG states with every checkpoint; restore them on resume.

    The checkpoint entry holds only tensors, numbers and strings, so checkpoints still load with
    ``weights_only=True``. A checkpoint written inside ``on_train_epoch_end`` is rewritten on load by
    :func:`normalise_epoch_end` (module docstring).
    """

    def __init__(self) -> None:
        self._epoch = 0
        self._batches_done = 0
        self._fix_logging_step = False  # after a resume: set Lightning's logging step before it is used

    def _logging_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Right after a resume, set Lightning's logging step (``_batches_that_stepped``, one count per optimiser
        step) to the number of optimiser steps taken: Lightning restores it one too low from a checkpoint written
        at the end of a validation that was not on its schedule (the one at ``max_steps``) and from a rewritten
        end-of-epoch checkpoint."""
        if not self._fix_logging_step:
            return
        self._fix_logging_step = False
        epoch_loop = trainer.fit_loop.epoch_loop
        single = pl_module.automatic_optimization and len(trainer.optimizers) == 1
        if single and hasattr(epoch_loop, "_batches_that_stepped"):
            epoch_loop._batches_that_stepped = trainer.global_step

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch != self._epoch:
            self._epoch, self._batches_done = trainer.current_epoch, 0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._logging_step(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._epoch = trainer.current_epoch
        self._batches_done = batch_idx + 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._logging_step(trainer, pl_module)
        # the next epoch starts from its beginning
        self._epoch, self._batches_done = trainer.current_epoch + 1, 0

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
        rewritten = normalise_epoch_end(checkpoint)
        state = checkpoint.get(_KEY)
        if isinstance(state, dict):
            try:
                torch.set_rng_state(state["torch_rng"])
                _set_numpy_state(state["numpy_rng"])
                py = state["python_rng"]
                random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
                self._epoch, self._batches_done = int(state["epoch"]), int(state["batches_done"])
            except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
                raise KspacelabError(
                    f"{trainer.ckpt_path}: broken resume state in the checkpoint ({_KEY}): {err}"
                ) from None
        if rewritten is not None:
            self._epoch, self._batches_done = rewritten
        self._fix_logging_step = True
        datamodule = getattr(trainer, "datamodule", None)
        if self._batches_done > 0 and hasattr(datamodule, "resume_position"):
            datamodule.resume_position = (self._epoch, self._batches_done)  # type: ignore[union-attr]


class LastCheckpoint(ModelCheckpoint):
    """Write ``DIRPATH/last.ckpt`` after every validation, every ``every_n_train_steps`` optimiser steps (deferred
    to the end of the validation when one follows the step) and at the end of an epoch that ended without a
    validation: always the newest state, which Lightning's ``save_last`` does not guarantee (it rewrites
    ``last.ckpt`` only when the monitored score improved).
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int | None = None) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="last",
            monitor=None,
            save_top_k=1,
            save_last=False,
            # the hooks below decide when to save; this only has to be valid (and names the callback's state)
            every_n_train_steps=int(every_n_train_steps) if every_n_train_steps else None,
            enable_version_counter=False,
        )

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        step = checkpoint.get("global_step")
        resumed = Path(str(trainer.ckpt_path)).resolve() if trainer.ckpt_path else None
        ours = Path(str(self.dirpath), "last.ckpt").resolve() if self.dirpath else None
        if isinstance(step, int) and resumed is not None and resumed == ours:
            self._last_global_step_saved = step  # the state resumed from is this file already: not again

    def _save(self, trainer: L.Trainer) -> None:
        if not self._should_skip_saving_checkpoint(trainer):  # once per optimiser step
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))

    @staticmethod
    def _validation_follows(trainer: L.Trainer) -> bool:
        """Whether Lightning validates right after the current training batch."""
        loop = trainer.fit_loop.epoch_loop
        try:
            return bool(loop._should_check_val_fx(trainer.fit_loop._data_fetcher))  # type: ignore[arg-type]
        except Exception:  # a Lightning without these internals: save now
            return False

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        every = self._every_n_train_steps
        if every < 1 or trainer.global_step % every != 0 or self._validation_follows(trainer):
            return
        self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)  # skipped when the validation of the last batch already saved this step
