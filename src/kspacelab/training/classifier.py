"""Lightning module of the anatomy classifier that routes volumes to experts (``task: anatomy_classifier``).

Cross-entropy on labelled image slices (:class:`kspacelab.data.anatomy.AnatomyDataModule`); validation logs the
slice accuracy and the volume accuracy (slice logits averaged per volume, as the router decides). The best
checkpoint is chosen by ``val/accuracy`` (volume accuracy; ties broken by the lower ``val/loss`` through
``val/score``). The optimiser arguments are those of :class:`~kspacelab.training.module.ReconModule`.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import torch
import torch.nn.functional as F

from kspacelab.data.anatomy import AnatomyItem
from kspacelab.training.module import (
    OptimizerName,
    SchedulerName,
    build_configured_model,
    configure_optimization,
    records_of_all_ranks,
)

__all__ = ["CLASSIFIER_MONITOR", "ClassifierModule"]

#: Metric that selects the best classifier checkpoint (maximised): volume accuracy minus 1e-3 x val loss.
CLASSIFIER_MONITOR = "val/score"


class ClassifierModule(L.LightningModule):
    """Trains a registered classifier model (default ``anatomy_classifier``) on labelled slices."""

    monitor = CLASSIFIER_MONITOR

    def __init__(
        self,
        model_name: str = "anatomy_classifier",
        model_kwargs: dict[str, Any] | None = None,
        optimizer: OptimizerName = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        scheduler: SchedulerName = "cosine",
        warmup_epochs: float = 0.5,
        min_lr: float = 0.0,
        step_size: int = 11,
        gamma: float = 0.3,
        constant_epochs: float = 0.0,
        schedule_epochs: float | None = None,
    ) -> None:
        """Args:
        model_name: a registered model mapping images ``(B, H, W)`` to logits ``(B, classes)``.
        model_kwargs: its constructor arguments.
        optimizer, lr, weight_decay, scheduler, warmup_epochs, min_lr, step_size, gamma, constant_epochs,
            schedule_epochs: as for :class:`~kspacelab.training.module.ReconModule`.
        """
        super().__init__()
        self.save_hyperparameters()
        self.model = build_configured_model(model_name, model_kwargs)
        self._val_records: list[tuple[str, torch.Tensor, int]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, classes)`` of images ``(B, H, W)``."""
        out: torch.Tensor = self.model(images)
        return out

    def training_step(self, batch: AnatomyItem, batch_idx: int) -> torch.Tensor:
        """Cross-entropy of the batch; logs ``train/loss`` and ``train/accuracy``."""
        logits = self(batch.image)
        labels = torch.as_tensor(batch.label, device=logits.device)
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(labels))
        self.log("train/accuracy", accuracy, batch_size=len(labels))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_records = []

    def validation_step(self, batch: AnatomyItem, batch_idx: int) -> None:
        """Keep ``(fname, logits, label)`` of every slice for the epoch end."""
        logits = self(batch.image).detach().float().cpu()
        labels = torch.as_tensor(batch.label).reshape(-1).tolist()
        for fname, row, label in zip(batch.fname, logits, labels, strict=True):
            self._val_records.append((str(fname), row, int(label)))

    def on_validation_epoch_end(self) -> None:
        """Log ``val/loss``, ``val/slice_accuracy``, ``val/accuracy`` (per volume) and ``val/score``."""
        records = records_of_all_ranks(self._val_records)
        if not records:
            return
        logits = torch.stack([r[1] for r in records])
        labels = torch.tensor([r[2] for r in records])
        loss = float(F.cross_entropy(logits, labels))
        slice_accuracy = float((logits.argmax(dim=1) == labels).float().mean())
        per_volume: dict[str, list[int]] = {}
        volume_label: dict[str, int] = {}
        for i, (fname, _, label) in enumerate(records):
            per_volume.setdefault(fname, []).append(i)
            volume_label[fname] = label
        correct = [
            int(logits[index].mean(dim=0).argmax()) == volume_label[fname]
            for fname, index in per_volume.items()
        ]
        volume_accuracy = sum(correct) / len(correct)
        self.log("val/loss", loss, sync_dist=True)
        self.log("val/slice_accuracy", slice_accuracy, sync_dist=True)
        self.log("val/accuracy", volume_accuracy, prog_bar=True, sync_dist=True)
        self.log(CLASSIFIER_MONITOR, volume_accuracy - 1e-3 * loss, sync_dist=True)
        self._val_records = []

    def configure_optimizers(self) -> Any:
        """As :class:`~kspacelab.training.module.ReconModule` (:func:`configure_optimization`)."""
        return configure_optimization(self)
