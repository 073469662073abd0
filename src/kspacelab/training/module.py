"""The Lightning module of every reconstruction model, and the learning-rate schedules.

:class:`ReconModule` wraps a registered model (:func:`kspacelab.models.build_model`) and trains it with the masked
leaderboard SSIM loss (:func:`kspacelab.metrics.masked_ssim_loss`, optionally ``sqrt``-area weighted, plus a
normalised L1 term); validation scores every slice with the leaderboard metric itself
(:func:`kspacelab.metrics.leaderboard_ssim_volume`, float64) and logs it per acceleration (as the leaderboard:
slices pooled, unweighted), beside ``time/train_s``: the wall seconds this process has spent in training batches
so far (validation excluded), for learning curves against time. Every constructor argument is a plain type, so a
checkpoint's ``hyper_parameters`` load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import lightning.pytorch as L
import torch
import torch.distributed as dist

from kspacelab import challenge
from kspacelab.errors import KspacelabError
from kspacelab.metrics import (
    FOREGROUND_THRESHOLDS,
    area_weight,
    foreground_mask,
    foreground_weights,
    leaderboard_ssim_volume,
    masked_ssim_loss,
    snu2026_box_ssim,
    snu2026_full_ssim,
    snu2026_loss,
    ssim_per_slice,
)
from kspacelab.models import MODEL_REGISTRY, build_model
from kspacelab.models.base import InputSpec, ReconSample

LossName = Literal["snu2025", "snu2026"]
#: a validation slice: (file name, slice, acceleration, leaderboard SSIM, SSIM_full or None, SSIM_bbox per box)
_ValRecord = tuple[str, int, int, float, float | None, tuple[float, ...]]

__all__ = [
    "MONITOR",
    "OptimizerName",
    "ReconModule",
    "RegularizerName",
    "ScheduleInterval",
    "SchedulerName",
    "check_finite_batch",
    "configure_optimization",
    "data_range",
    "linear_constant_step_lr",
    "step_lr_factor",
    "warmup_cosine_lr",
]

OptimizerName = Literal["adamw", "adam", "nadam", "rmsprop", "deepspeed_cpu_adamw"]
SchedulerName = Literal["none", "cosine", "step", "exponential", "linear_constant_step"]
RegularizerName = Literal["l1", "l2"]
ScheduleInterval = Literal["step", "epoch"]

#: Metric that selects the best checkpoint (maximised).
MONITOR = "val/ssim"


_T = TypeVar("_T")


def _deepspeed_cpu_adamw(params: Any, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """DeepSpeed's CPU AdamW (``DeepSpeedCPUAdam(adamw_mode=True)``): the optimiser step runs on the CPU, as
    ZeRO's optimiser offload needs (``pip install kspacelab[deepspeed]``)."""
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise KspacelabError(
            "model.optimizer 'deepspeed_cpu_adamw' needs DeepSpeed: pip install 'kspacelab[deepspeed]'"
        ) from None
    optimizer: torch.optim.Optimizer = DeepSpeedCPUAdam(
        params, lr=lr, weight_decay=weight_decay, adamw_mode=True
    )
    return optimizer


_OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "nadam": torch.optim.NAdam,
    "rmsprop": torch.optim.RMSprop,  # fastMRI's U-Net recipe
    "deepspeed_cpu_adamw": _deepspeed_cpu_adamw,
}
_SCHEDULERS = ("none", "cosine", "step", "exponential", "linear_constant_step")


# ----------------------------------------------------------------------------------------------------
# Learning-rate schedule
# ----------------------------------------------------------------------------------------------------
def warmup_cosine_lr(
    step: int, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0
) -> float:
    """Learning rate after ``step`` optimiser steps: linear warmup, then a half cosine down to ``min_lr``.

    * ``step < warmup_steps``: ``base_lr * (step + 1) / warmup_steps`` (the first step already moves);
    * ``warmup_steps <= step < total_steps``:
      ``min_lr + (base_lr - min_lr) * (1 + cos(pi * (step - warmup_steps) / (total_steps - warmup_steps))) / 2``;
    * ``step >= total_steps``: ``min_lr``.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def linear_constant_step_lr(
    step: int,
    warmup_steps: int,
    plateau_end: int,
    step_steps: int,
    gamma: float,
    start_factor: float | None = None,
) -> float:
    """Factor of the base rate after ``step`` scheduler steps (optimiser steps or epochs): a linear warm-up over
    ``warmup_steps``, 1 until ``plateau_end``, then ``gamma ** floor((step - plateau_end) / step_steps)``.

    The warm-up is ``(step + 1) / warmup_steps`` (the first step already moves) when ``start_factor`` is None,
    else torch's ``LinearLR(start_factor, 1.0, warmup_steps)``: ``start_factor + (1 - start_factor) * step /
    warmup_steps``; the whole sequence then equals torch's ``SequentialLR`` of LinearLR -> ConstantLR -> StepLR
    with milestones ``[warmup_steps, plateau_end]`` (sMaRtIfy's fine-tuning schedule).
    """
    if step < warmup_steps:
        if start_factor is None:
            return (step + 1) / warmup_steps
        return start_factor + (1.0 - start_factor) * step / warmup_steps
    if step < plateau_end:
        return 1.0
    return float(gamma ** ((step - plateau_end) // step_steps))


def step_lr_factor(epoch: int, step_size: int, gamma: float, start_epoch: int = 0) -> float:
    """Factor of the base rate in (0-based) ``epoch`` of ``StepLR(step_size, gamma)`` stepped at the end of every
    epoch from ``start_epoch`` on: ``gamma ** floor(max(0, epoch - start_epoch) / step_size)``.

    With ``start_epoch = 0`` this is torch's StepLR stepped every epoch; sMaRtIfy stepped its StepLR(11, 0.3)
    only from the end of epoch 5, so its rate drops in epochs 16 and 27.
    """
    return float(gamma ** (max(0, epoch - start_epoch) // step_size))


# ----------------------------------------------------------------------------------------------------
# Lightning module
# ----------------------------------------------------------------------------------------------------
def data_range(batch: ReconSample) -> torch.Tensor:
    """``max_value`` per slice ``(B,)`` in the target's dtype (the volume's maximum, the SSIM data range); where it is
    unknown (0) the slice's target maximum, never 0."""
    max_value = torch.as_tensor(batch.max_value, device=batch.target.device).to(batch.target.dtype)
    fallback = batch.target.detach().flatten(1).amax(dim=1).clamp_min(torch.finfo(batch.target.dtype).tiny)
    return torch.where(max_value > 0, max_value, fallback)


def _data_file(module: L.LightningModule, fname: str, what: str) -> str:
    """The path of the k-space (or image) file of volume ``fname`` in ``module``'s trainer's data module, else
    ``fname``."""
    try:
        datamodule = getattr(module.trainer, "datamodule", None)
    except RuntimeError:  # not attached to a trainer
        return fname
    for split in ("train_dataset", "val_dataset"):
        for info in getattr(getattr(datamodule, split, None), "volumes", None) or []:
            volume = getattr(info, "volume", None)
            if getattr(volume, "name", None) == fname:
                path = volume.kspace_path if what == "k-space" else volume.image_path  # type: ignore[union-attr]
                return str(path or fname)
    return fname


def check_finite_batch(module: L.LightningModule, batch: ReconSample, stage: str) -> None:
    """Refuse a batch whose k-space or target holds NaN or Inf (one line naming the file and the slice).

    Raises:
        KspacelabError: ``FILE: slice S: the training k-space holds NaN or Inf values`` (the first bad slice;
            ``FILE`` is the k-space file's path when ``module``'s data module knows it, else the volume's name).
    """
    named = (("k-space", batch.masked_kspace), ("target", batch.target))
    finite = [torch.isfinite(t.detach()).reshape(t.shape[0], -1).all(dim=1) for _, t in named]
    if bool(torch.stack(finite).all()):  # one device sync per step
        return
    slices = torch.as_tensor(batch.slice_num).reshape(-1).tolist()
    for (what, _), ok in zip(named, finite, strict=True):
        bad = (~ok).nonzero().reshape(-1).tolist()
        if bad:
            i = bad[0]
            where = _data_file(module, str(batch.fname[i]), what)
            raise KspacelabError(
                f"{where}: slice {int(slices[i])}: the {stage} {what} holds NaN or Inf values"
            )


def build_configured_model(model_name: str, model_kwargs: dict[str, Any] | None) -> torch.nn.Module:
    """The registered model ``model_name`` built with ``model_kwargs``; a bad argument is one line
    (:class:`KspacelabError` naming ``model.model_kwargs``)."""
    try:
        return build_model(model_name, **dict(model_kwargs or {}))
    except (TypeError, ValueError) as err:
        raise KspacelabError(f"model.model_kwargs: cannot build {model_name!r}: {err}") from None


def records_of_all_ranks(records: list[_T]) -> list[_T]:
    """``records`` of every rank, pooled in rank order (this rank's alone outside a multi-process run)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return records
    gathered: list[list[_T] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, records)
    return [r for part in gathered for r in (part or [])]


class ReconModule(L.LightningModule):
    """A reconstruction model trained with the masked leaderboard SSIM (the loss of the top 2025 entries).

    Batches are :class:`kspacelab.models.base.ReconSample` collated by ``default_collate``:
    ``masked_kspace (B, C, H, W, 2)``, ``mask (B, 1, 1, W, 1)``, ``target (B, h, w)``, ``max_value (B,)``,
    ``anatomy`` (B strings), ``acceleration (B,)``, ``fname`` (B strings), ``slice_num (B,)``. The model's
    output is cropped to the target size ``(h, w)``.

    Logged: ``train/loss`` (progress bar), ``val/ssim_acc{N}`` per acceleration present (leaderboard SSIM
    averaged over every validation slice of that acceleration) and ``val/ssim`` (mean of the per-acceleration
    values, as the leaderboard's total); and the 2026 challenge's scores of the validation set:
    ``val/ssim_full`` (SSIM_full, slices of known anatomy with a foreground), ``val/ssim_bbox`` (SSIM_bbox over the
    image files' lesion boxes, when there are any) and ``val/quality`` (their mean), each the mean of the
    per-acceleration means as the challenge computes its leaderboard.
    """

    monitor = MONITOR

    def __init__(
        self,
        model_name: str = "varnet",
        model_kwargs: dict[str, Any] | None = None,
        crop_height: dict[str, int] | None = None,
        area_weighted_loss: bool = False,
        background_weight: float = 0.0,
        l1_weight: float = 0.0,
        regularizer: RegularizerName = "l1",
        regularizer_start_epoch: int = 0,
        regularizer_masked: bool = False,
        loss: LossName = "snu2025",
        optimizer: OptimizerName = "adamw",
        lr: float = 3e-4,
        weight_decay: float = 1e-4,
        scheduler: SchedulerName = "cosine",
        warmup_epochs: float = 1.0,
        min_lr: float = 0.0,
        step_size: int = 11,
        gamma: float = 0.3,
        constant_epochs: float = 0.0,
        schedule_epochs: float | None = None,
        step_start_epoch: int = 0,
        warmup_start_factor: float | None = None,
        schedule_interval: ScheduleInterval = "step",
    ) -> None:
        """Args:
        model_name: a name of :data:`kspacelab.models.MODEL_REGISTRY` (``"varnet"``, ...).
        model_kwargs: keyword arguments of the model's constructor (a misspelt key fails with the allowed ones).
        crop_height: image-domain readout height per anatomy the inputs are cropped to before the network
            (``{"brain": 384, "knee": 416}``: Team EJ's memory saving); part of the model's
            :class:`~kspacelab.models.base.InputSpec`, so inference crops the same way.
        area_weighted_loss: multiply each slice's ``1 - SSIM`` by ``sqrt(area / max_area)`` of its
            foreground mask.
        background_weight: weight of the pixels outside the foreground mask in the loss (0: the leaderboard's
            masked SSIM; 1: unmasked; in between: sMaRtIfy's ``gamyun_shade_strength``). Validation always
            scores with the leaderboard metric.
        l1_weight: weight of an added regulariser term (0: none), per slice ``mean(|output - target|) /
            max_value`` (``regularizer: l1``) or ``mean((output - target) ** 2) / max_value ** 2`` (``l2``).
        regularizer: ``"l1"`` or ``"l2"``, the norm of the ``l1_weight`` term.
        regularizer_start_epoch: the term is added from this (0-based) epoch of the run on.
        regularizer_masked: compute the term on the foreground-weighted images of the SSIM (``output * W``,
            ``target * W``) and multiply it by the slice's area weight when the loss is area-weighted
            (sMaRtIfy's regulariser); False: on the whole images, unweighted.
        loss: ``"snu2025"`` (masked leaderboard SSIM, :func:`~kspacelab.metrics.masked_ssim_loss`) or
            ``"snu2026"`` (``1 - (SSIM_full + SSIM_bbox) / 2`` of the 2026 challenge,
            :func:`~kspacelab.metrics.snu2026_loss`, boxes from the image files' annotations; not with MRAugment,
            which moves the anatomy away from the boxes, nor with ``area_weighted_loss`` or ``background_weight``).
        optimizer: ``"adamw"``, ``"adam"``, ``"nadam"``, ``"rmsprop"`` or ``"deepspeed_cpu_adamw"`` (DeepSpeed's
            CPU AdamW, for ZeRO with the optimiser offloaded to the CPU; needs the ``deepspeed`` extra).
        lr: peak learning rate.
        weight_decay: weight decay of the optimiser (decoupled for AdamW).
        scheduler: ``"none"``; ``"cosine"`` (linear warmup over ``warmup_epochs``, then cosine to ``min_lr``,
            updated every optimiser step); ``"step"`` (``StepLR(step_size, gamma)`` per epoch);
            ``"exponential"`` (``ExponentialLR(gamma)`` per epoch); ``"linear_constant_step"`` (linear warm-up
            over ``warmup_epochs``, constant for ``constant_epochs``, then x ``gamma`` every ``step_size``
            epochs; per optimiser step: sMaRtIfy's Linear -> Constant -> Step sequence).
        warmup_epochs: warmup length of ``"cosine"`` and ``"linear_constant_step"`` in epochs (may be
            fractional; 0 for none).
        min_lr: final learning rate of ``"cosine"``.
        step_size: epochs between decays of ``"step"``.
        gamma: decay factor of ``"step"``, ``"exponential"`` and ``"linear_constant_step"``.
        constant_epochs: constant phase of ``"linear_constant_step"`` (epochs after the warm-up).
        schedule_epochs: length of the ``"cosine"`` schedule in epochs (``None``: the whole run). Longer than the
            run, the learning rate has not reached ``min_lr`` when training stops (EJ's stage 2: a 20-epoch
            cosine stopped after 15 epochs).
        step_start_epoch: ``"step"`` decays only from the end of this epoch on (:func:`step_lr_factor`).
        warmup_start_factor: ``"linear_constant_step"``'s warm-up as torch's ``LinearLR(start_factor)``
            (:func:`linear_constant_step_lr`); None: ``(i + 1) / warmup``.
        schedule_interval: ``"linear_constant_step"`` updated every optimiser ``"step"`` or every ``"epoch"``
            (sMaRtIfy's, whose lengths are whole epochs).

        Raises:
            KspacelabError: an unknown model/optimiser/scheduler name, a bad value, or model arguments the
                model does not accept (one line).
        """
        super().__init__()
        if loss not in ("snu2025", "snu2026"):
            raise KspacelabError(f"model.loss: unknown loss {loss!r}; choose snu2025 or snu2026")
        if loss == "snu2026" and (area_weighted_loss or background_weight != 0):
            raise KspacelabError(
                "model.loss snu2026 has no area weighting and masks the background as the 2026 metric does; "
                "set model.area_weighted_loss false and model.background_weight 0"
            )
        if optimizer not in _OPTIMIZERS:
            raise KspacelabError(
                f"model.optimizer: unknown optimiser {optimizer!r}; choose from {sorted(_OPTIMIZERS)}"
            )
        if scheduler not in _SCHEDULERS:
            raise KspacelabError(
                f"model.scheduler: unknown scheduler {scheduler!r}; choose from {list(_SCHEDULERS)}"
            )
        if not lr > 0:
            raise KspacelabError(f"model.lr must be positive, got {lr}")
        if warmup_epochs < 0 or min_lr < 0 or weight_decay < 0 or l1_weight < 0 or step_start_epoch < 0:
            raise KspacelabError(
                "model.warmup_epochs, min_lr, weight_decay, l1_weight and step_start_epoch must be >= 0"
            )
        if not 0 <= background_weight <= 1:
            raise KspacelabError(f"model.background_weight must lie in [0, 1], got {background_weight}")
        if regularizer not in ("l1", "l2") or regularizer_start_epoch < 0:
            raise KspacelabError(
                f"model.regularizer must be 'l1' or 'l2' (got {regularizer!r}) and "
                f"regularizer_start_epoch >= 0 (got {regularizer_start_epoch})"
            )
        if warmup_start_factor is not None and not 0 < warmup_start_factor <= 1:
            raise KspacelabError(f"model.warmup_start_factor must lie in (0, 1], got {warmup_start_factor}")
        if schedule_interval not in ("step", "epoch"):
            raise KspacelabError(
                f"model.schedule_interval must be 'step' or 'epoch', got {schedule_interval!r}"
            )
        if schedule_epochs is not None and not schedule_epochs > 0:
            raise KspacelabError(f"model.schedule_epochs must be positive (or null), got {schedule_epochs}")
        if step_size < 1 or not gamma > 0:
            raise KspacelabError(f"model.step_size must be >= 1 and gamma > 0, got {step_size}, {gamma}")
        reconstruction = sorted(n for n, e in MODEL_REGISTRY.items() if e.task == "reconstruction")
        if model_name not in reconstruction:
            raise KspacelabError(
                f"model.model_name: unknown reconstruction model {model_name!r}; registered: {reconstruction}"
            )
        self.save_hyperparameters()
        self.model = build_configured_model(model_name, model_kwargs)
        try:
            self.input_spec: InputSpec = self.model.input_spec().with_crop(crop_height)  # type: ignore[operator]
        except ValueError as err:
            raise KspacelabError(f"model.crop_height: {err}") from None
        self._val_records: list[_ValRecord] = []
        self._train_seconds = 0.0
        self._batch_start = 0.0

    # -- forward and loss -------------------------------------------------------------------------------
    def forward(self, batch: ReconSample) -> torch.Tensor:
        """Reconstruction ``(B, h, w)`` of a batch, cropped to the size of ``batch.target``."""
        h, w = batch.target.shape[-2:]
        image: torch.Tensor = self.model.reconstruct(batch, (int(h), int(w)))  # type: ignore[operator]
        return image

    @staticmethod
    def foreground(target: torch.Tensor, anatomy: Sequence[str]) -> torch.Tensor:
        """Leaderboard foreground mask ``(B, h, w)`` bool of each target slice by its anatomy.

        Slices of unknown anatomy (``""``, e.g. some NYU files) get an all-true mask (unmasked SSIM).
        """
        mask = torch.ones(target.shape, dtype=torch.bool, device=target.device)
        with torch.no_grad():
            for name in set(anatomy):
                if name not in FOREGROUND_THRESHOLDS:
                    continue
                index = [i for i, a in enumerate(anatomy) if a == name]
                mask[index] = foreground_mask(target[index].detach(), name)
        return mask

    @staticmethod
    def _data_range(batch: ReconSample) -> torch.Tensor:
        """:func:`data_range` of the batch."""
        return data_range(batch)

    @staticmethod
    def _volume_max_area(batch: ReconSample) -> torch.Tensor | None:
        """The batch's per-volume foreground maxima ``(B,)``, or None when any is unknown (0)."""
        value = getattr(batch, "max_area", None)
        if value is None:
            return None
        areas = torch.as_tensor(value, device=batch.target.device).reshape(-1).to(batch.target.dtype)
        return areas if bool((areas > 0).all()) else None

    def compute_loss(self, output: torch.Tensor, batch: ReconSample) -> torch.Tensor:
        """Training loss of a batch: masked ``1 - SSIM`` (optionally area-weighted) + ``l1_weight`` x regulariser.

        The SSIM is that of ``output * W`` against ``target * W`` with ``W`` 1 on the foreground mask and
        ``background_weight`` elsewhere. The regulariser (from ``regularizer_start_epoch`` on) is
        ``mean(|output - target|) / max_value`` (L1) or ``mean((output - target) ** 2) / max_value ** 2`` (L2) per
        slice, averaged over the batch (scale-free, like the SSIM); with ``regularizer_masked`` on ``output W``
        and ``target W`` and times the slice's area weight when the loss is area-weighted. ``max_area`` (volume maximum of the foreground area) is taken from the batch when the data
        pipeline provides it (the training set does); otherwise :func:`~kspacelab.metrics.masked_ssim_loss`
        uses the batch maximum.
        """
        output = output.float()  # the SSIM of half-precision outputs is computed in float32 anyway
        target = batch.target.float()
        data_range = self._data_range(batch)
        mask = self.foreground(batch.target, batch.anatomy)
        background = float(self.hparams.get("background_weight", 0.0))
        max_area = self._volume_max_area(batch)
        area_weighted = bool(self.hparams["area_weighted_loss"])
        if self.hparams.get("loss", "snu2025") == "snu2026":
            loss = snu2026_loss(output, target, data_range, mask, batch.boxes)
        else:
            loss = masked_ssim_loss(
                output,
                target,
                data_range,
                mask,
                area_weighted=area_weighted,
                max_area=max_area,
                background_weight=background,
            )
        l1_weight = float(self.hparams["l1_weight"])
        if l1_weight > 0 and self._epoch() >= int(self.hparams.get("regularizer_start_epoch", 0)):
            masked = bool(self.hparams.get("regularizer_masked", False))
            diff = output - target
            if masked:
                diff = diff * foreground_weights(mask, background).to(output.dtype)
            diff = diff.flatten(1) / data_range.to(output.dtype)[:, None]
            norm = self.hparams.get("regularizer", "l1")
            per_slice = diff.abs().mean(dim=1) if norm == "l1" else diff.square().mean(dim=1)
            if masked and area_weighted:
                per_slice = per_slice * area_weight(mask, max_area).to(per_slice.dtype)
            loss = loss + l1_weight * per_slice.mean()
        return loss

    def _epoch(self) -> int:
        """The current (0-based) training epoch; 0 outside a trainer."""
        try:
            return int(self.current_epoch)
        except RuntimeError:
            return 0

    def check_finite(self, batch: ReconSample, stage: str) -> None:
        """Refuse a batch whose k-space or target holds NaN or Inf (:func:`check_finite_batch`)."""
        check_finite_batch(self, batch, stage)

    def training_step(self, batch: ReconSample, batch_idx: int) -> torch.Tensor:
        """One optimisation step's loss; logs ``train/loss`` on the progress bar.

        Raises:
            KspacelabError: NaN or Inf in the batch's k-space or target (:meth:`check_finite`).
        """
        self.check_finite(batch, "training")
        output = self(batch)
        loss = self.compute_loss(output, batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=output.shape[0])
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._train_seconds += time.perf_counter() - self._batch_start

    def setup(self, stage: str) -> None:
        """Refuse the 2026 loss together with MRAugment (one line): augmented targets no longer match the boxes."""
        if self.hparams.get("loss") != "snu2026":
            return
        try:
            datamodule = getattr(self.trainer, "datamodule", None)
        except RuntimeError:  # not attached to a trainer
            return
        if getattr(datamodule, "augment_config", None):
            raise KspacelabError(
                "model.loss snu2026 cannot be combined with data.augment: MRAugment moves the anatomy away from "
                "the lesion boxes the loss scores"
            )

    # -- validation -------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_records = []

    @staticmethod
    def slice_scores(output: torch.Tensor, batch: ReconSample) -> list[float]:
        """Leaderboard SSIM (float64, :func:`~kspacelab.metrics.leaderboard_ssim_volume`) of every slice.

        Data range = ``max_value`` (the target's maximum where unknown); foreground mask from the target.
        Slices of unknown anatomy are scored without a mask (same SSIM, float64).
        """
        data_range = ReconModule._data_range(batch).detach().double().cpu()
        scores: list[float] = []
        for i, anatomy in enumerate(batch.anatomy):
            recon = output[i : i + 1].detach()
            target = batch.target[i : i + 1].detach()
            if anatomy in FOREGROUND_THRESHOLDS:
                value = leaderboard_ssim_volume(recon, target, data_range[i], anatomy)[0]
            else:
                value = ssim_per_slice(recon.double(), target.double(), float(data_range[i]))[0]
            scores.append(float(value))
        return scores

    @staticmethod
    def snu2026_scores(
        output: torch.Tensor, batch: ReconSample
    ) -> list[tuple[float | None, tuple[float, ...]]]:
        """The 2026 challenge's scores of every slice (float64): ``(SSIM_full or None, SSIM_bbox of each box)``.

        SSIM_full is None for a slice of unknown anatomy or with an empty valid-region mask; boxes come from
        ``batch.boxes`` (zero-width rows unused; boxes under 7 pixels after clipping skipped).
        """
        data_range = ReconModule._data_range(batch).detach().double().cpu()
        boxes = batch.boxes.detach().cpu().tolist() if batch.boxes is not None else [[]] * len(batch.anatomy)
        scores: list[tuple[float | None, tuple[float, ...]]] = []
        for i, anatomy in enumerate(batch.anatomy):
            recon = output[i].detach().double().cpu()
            target = batch.target[i].detach().double().cpu()
            full = None
            if anatomy in FOREGROUND_THRESHOLDS:
                full = snu2026_full_ssim(recon, target, data_range[i], anatomy)
            in_boxes = [
                snu2026_box_ssim(recon, target, data_range[i], (row[0], row[1], row[2], row[3]))
                for row in boxes[i]
                if row[2] > 0 and row[3] > 0
            ]
            scores.append((full, tuple(v for v in in_boxes if v is not None)))
        return scores

    def validation_step(self, batch: ReconSample, batch_idx: int) -> None:
        """Score every slice of the batch and keep ``(fname, slice, acceleration, ssim, ssim_full, box ssims)``
        for the epoch end."""
        self.check_finite(batch, "validation")
        output = self(batch)
        scores = self.slice_scores(output, batch)
        scores_2026 = self.snu2026_scores(output, batch)
        accelerations = torch.as_tensor(batch.acceleration).reshape(-1).tolist()
        slices = torch.as_tensor(batch.slice_num).reshape(-1).tolist()
        for fname, slice_num, acc, score, (full, in_boxes) in zip(
            batch.fname, slices, accelerations, scores, scores_2026, strict=True
        ):
            self._val_records.append((str(fname), int(slice_num), round(float(acc)), score, full, in_boxes))

    def on_validation_epoch_end(self) -> None:
        """Pool the slices of all ranks (duplicates from rank padding counted once), log the means."""
        records = records_of_all_ranks(self._val_records)
        unique = {(r[0], r[1], r[2]): (r[3], r[4], r[5]) for r in records}
        per_acc: dict[int, list[float]] = {}
        full: dict[int, list[float]] = {}
        in_boxes: dict[int, list[float]] = {}
        for (_, _, acc), (score, full_score, box_scores) in sorted(unique.items()):
            per_acc.setdefault(acc, []).append(score)
            if full_score is not None:
                full.setdefault(acc, []).append(full_score)
            in_boxes.setdefault(acc, []).extend(box_scores)
        if not per_acc:
            return
        means = {acc: math.fsum(values) / len(values) for acc, values in per_acc.items()}
        for acc, value in sorted(means.items()):
            self.log(f"val/ssim_{challenge.acc_folder(acc)}", value, sync_dist=True)
        self.log(MONITOR, math.fsum(means.values()) / len(means), prog_bar=True, sync_dist=True)
        leaderboard = {}
        for name, values in (("ssim_full", full), ("ssim_bbox", in_boxes)):
            per = [math.fsum(v) / len(v) for v in values.values() if v]
            if per:
                leaderboard[name] = math.fsum(per) / len(per)
                self.log(f"val/{name}", leaderboard[name], sync_dist=True)
        if len(leaderboard) == 2:
            self.log("val/quality", (leaderboard["ssim_full"] + leaderboard["ssim_bbox"]) / 2, sync_dist=True)
        self.log("time/train_s", self._train_seconds, sync_dist=True)
        self._val_records = []

    # -- optimisation -----------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        """The optimiser and scheduler named in the hyper-parameters (:func:`configure_optimization`)."""
        return configure_optimization(self)


# ----------------------------------------------------------------------------------------------------
# Optimisation (shared by every kspacelab Lightning module)
# ----------------------------------------------------------------------------------------------------
def _steps_per_epoch(trainer: L.Trainer) -> int:
    batches = trainer.num_training_batches
    if not math.isfinite(batches) and hasattr(trainer, "fit_loop"):
        # With max_steps and no max_epochs, estimated_stepping_batches does not load the train loader.
        trainer.fit_loop.setup_data()
        batches = trainer.num_training_batches
    if not math.isfinite(batches):
        raise KspacelabError("model.scheduler 'cosine' needs a training set of known length")
    return max(1, math.ceil(int(batches) / max(1, int(trainer.accumulate_grad_batches))))


def configure_optimization(module: L.LightningModule) -> Any:
    """Optimiser and scheduler from ``module.hparams``: ``optimizer``, ``lr``, ``weight_decay``, ``scheduler``,
    ``warmup_epochs``, ``min_lr``, ``step_size``, ``gamma``, ``constant_epochs``, ``schedule_epochs``,
    ``step_start_epoch``, ``warmup_start_factor``, ``schedule_interval`` (the arguments of :class:`ReconModule`).

    ``cosine`` steps every optimiser step (its length is ``schedule_epochs`` epochs of optimiser steps, or
    ``trainer.estimated_stepping_batches``), ``step``/``exponential`` every epoch, ``linear_constant_step`` every
    optimiser step or every epoch (``schedule_interval``). The schedules that step per epoch need no trainer.
    """
    hp = module.hparams
    optimizer = _OPTIMIZERS[hp["optimizer"]](
        module.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"]
    )
    name = hp["scheduler"]
    if name == "none":
        return optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    if name == "cosine":
        per_epoch = _steps_per_epoch(module.trainer)
        length = hp.get("schedule_epochs")
        if length is None:
            total = max(1, int(module.trainer.estimated_stepping_batches))
        else:
            total = max(1, round(float(length) * per_epoch))
        warmup = min(total, round(float(hp["warmup_epochs"]) * per_epoch))
        min_ratio = float(hp["min_lr"]) / float(hp["lr"])

        def factor(step: int) -> float:
            return warmup_cosine_lr(step, 1.0, warmup, total, min_ratio)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        interval = "step"
    elif name == "linear_constant_step":
        interval = str(hp.get("schedule_interval", "step"))
        per_epoch = _steps_per_epoch(module.trainer) if interval == "step" else 1
        warmup = round(float(hp["warmup_epochs"]) * per_epoch)
        plateau_end = warmup + round(float(hp.get("constant_epochs", 0.0)) * per_epoch)
        step_steps = max(1, int(hp["step_size"]) * per_epoch)
        gamma = float(hp["gamma"])
        start_factor = hp.get("warmup_start_factor")

        def sequence(step: int) -> float:
            return linear_constant_step_lr(step, warmup, plateau_end, step_steps, gamma, start_factor)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, sequence)
    elif name == "step":
        step_size, step_gamma = int(hp["step_size"]), float(hp["gamma"])
        start = int(hp.get("step_start_epoch", 0))

        def stepped(epoch: int) -> float:
            return step_lr_factor(epoch, step_size, step_gamma, start)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, stepped)
        interval = "epoch"
    else:
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=hp["gamma"])
        interval = "epoch"
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler, "interval": interval, "frequency": 1},
    }
