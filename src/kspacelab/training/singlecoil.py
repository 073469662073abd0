"""Lightning modules of the single-coil models: the baselines (``task: singlecoil``) and the generative texture
model (``task: generative``).

* :class:`SingleCoilModule` trains a single-coil model (fastMRI's U-Net on the zero-filled magnitude, the
  single-coil E2E-VarNet) with an L1 or SSIM loss relative to the volume's maximum. Validation reconstructs every
  validation slice once per acceleration (the data module's masks, seeded from the file name) and logs, per
  acceleration ``xN``, fastMRI's volume metrics ``val/nmse_xN``, ``val/psnr_xN``, ``val/ssim_xN`` (means over
  volumes, data range = the target volume's maximum), the hallucination index ``val/hallucination_xN``
  (:func:`kspacelab.metrics.hallucination_index`), and ``val/ssim``: the mean of the per-acceleration SSIMs, which
  selects the best checkpoint.
* :class:`GenerativeModule` trains the generative texture model (:class:`kspacelab.models.StylishNet`) against a
  PatchGAN discriminator with two optimisers and manual optimisation: per batch one discriminator step (real
  targets against detached generator outputs) and one generator step on
  ``L1 + kl_weight KL + texture_weight texture-L1 + gan_weight non-saturating GAN``. Lightning counts
  every optimiser step, so ``trainer.global_step`` (and ``max_steps``) advances by two per batch. The
  discriminator's weights and both optimisers' states are part of every checkpoint, so a run resumes exactly
  (:mod:`kspacelab.training.resume`); inference loads the generator only.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import lightning.pytorch as L
import numpy as np
import torch

from kspacelab import metrics
from kspacelab.errors import KspacelabError
from kspacelab.models import MODEL_REGISTRY
from kspacelab.models.base import InputSpec, ReconSample
from kspacelab.models.stylish import (
    PatchDiscriminator,
    discriminator_loss,
    generator_losses,
)
from kspacelab.training.module import (
    MONITOR,
    OptimizerName,
    ScheduleInterval,
    SchedulerName,
    build_configured_model,
    check_finite_batch,
    configure_optimization,
    data_range,
    records_of_all_ranks,
)

__all__ = ["GenerativeModule", "SingleCoilModule", "acc_label"]

SingleCoilLoss = Literal["l1", "ssim"]

#: One validation slice: (file name, acceleration, slice index, output (h, w), target (h, w)), float32 arrays.
_Record = tuple[str, int, int, np.ndarray, np.ndarray]


@contextlib.contextmanager
def _seeded(fork: contextlib.AbstractContextManager[Any], seed: int) -> Iterator[None]:
    """Inside ``fork`` (a :func:`torch.random.fork_rng`), the global RNG seeded with ``seed``."""
    with fork:
        torch.manual_seed(seed % 2**63)
        yield


def acc_label(acceleration: int) -> str:
    """The name of an acceleration in logs and tables: ``x4``, ``x8``, ``x16``, ``x32``."""
    return f"x{int(acceleration)}"


def volume_scores(records: Sequence[_Record]) -> dict[int, dict[str, float]]:
    """fastMRI's volume metrics of validation records, averaged over volumes per acceleration.

    Slices are grouped into volumes by ``(file, acceleration)`` and ordered by slice index; each volume is scored
    with :func:`kspacelab.metrics.fastmri_volume_scores` (as ``evaluate --metric fastmri`` scores). Returns
    ``{acceleration: {"nmse", "psnr", "ssim", "hallucination", "volumes"}}``.
    """
    volumes: dict[tuple[str, int], dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    for fname, acc, slice_num, output, target in records:
        volumes.setdefault((fname, acc), {})[slice_num] = (output, target)
    per_acc: dict[int, dict[str, list[float]]] = {}
    for (_, acc), slices in sorted(volumes.items()):
        order = sorted(slices)
        recon = np.stack([slices[s][0] for s in order]).astype(np.float64)
        target = np.stack([slices[s][1] for s in order]).astype(np.float64)
        for name, value in metrics.fastmri_volume_scores(target, recon).items():
            per_acc.setdefault(acc, {}).setdefault(name, []).append(value)
    return {
        acc: {**{name: math.fsum(v) / len(v) for name, v in values.items()}, "volumes": len(values["ssim"])}
        for acc, values in per_acc.items()
    }


class SingleCoilModule(L.LightningModule):
    """A single-coil reconstruction model (``task: singlecoil``) trained on NYU single-coil data.

    Batches are collated :class:`~kspacelab.models.base.ReconSample` of
    :class:`~kspacelab.data.singlecoil.SingleCoilDataModule`: ``masked_kspace (B, 1, H, W, 2)``, ``target (B, h,
    w)``, ``max_value (B,)``, ``acceleration (B,)`` (the exact acceleration of the mask).
    """

    monitor = MONITOR

    #: the registry task whose models this module trains
    task = "singlecoil"

    def __init__(
        self,
        model_name: str = "singlecoil_unet",
        model_kwargs: dict[str, Any] | None = None,
        loss: SingleCoilLoss = "l1",
        optimizer: OptimizerName = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        scheduler: SchedulerName = "step",
        warmup_epochs: float = 0.0,
        min_lr: float = 0.0,
        step_size: int = 40,
        gamma: float = 0.1,
        constant_epochs: float = 0.0,
        schedule_epochs: float | None = None,
        step_start_epoch: int = 0,
        warmup_start_factor: float | None = None,
        schedule_interval: ScheduleInterval = "step",
    ) -> None:
        """Args:
        model_name: a registered model of the ``singlecoil`` task (``singlecoil_unet``, ``singlecoil_varnet``).
        model_kwargs: its constructor arguments (a misspelt key fails with the allowed ones).
        loss: ``"l1"``: ``mean(|output - target|) / max_value`` per slice (fastMRI's U-Net trains with L1);
            ``"ssim"``: ``1 - SSIM`` (7x7 window, data range = the volume's maximum; fastMRI's VarNet loss).
        optimizer, lr, weight_decay, scheduler, warmup_epochs, min_lr, step_size, gamma, constant_epochs,
            schedule_epochs, step_start_epoch, warmup_start_factor, schedule_interval: as for
            :class:`~kspacelab.training.module.ReconModule` (defaults: fastMRI's U-Net recipe, step decay x0.1
            every 40 epochs, with Adam instead of RMSprop).
        """
        super().__init__()
        if loss not in ("l1", "ssim"):
            raise KspacelabError(f"model.loss: unknown loss {loss!r}; choose l1 or ssim")
        if not lr > 0 or weight_decay < 0:
            raise KspacelabError(f"model.lr must be positive and weight_decay >= 0, got {lr}, {weight_decay}")
        self.save_hyperparameters()
        self.model = self._build(model_name, model_kwargs)
        spec = getattr(self.model, "input_spec", None)
        self.input_spec: InputSpec = spec() if callable(spec) else InputSpec(multicoil=False)
        self._val_records: list[_Record] = []

    def _build(self, model_name: str, model_kwargs: dict[str, Any] | None) -> torch.nn.Module:
        """The registered model ``model_name`` of this module's task (one-line error otherwise)."""
        allowed = sorted(n for n, e in MODEL_REGISTRY.items() if e.task == self.task)
        if model_name not in allowed:
            raise KspacelabError(
                f"model.model_name: {model_name!r} is not a model of the {self.task!r} task; choose from {allowed}"
            )
        return build_configured_model(model_name, model_kwargs)

    def forward(self, batch: ReconSample) -> torch.Tensor:
        """Reconstruction ``(B, h, w)`` of a batch at the size of ``batch.target``."""
        h, w = batch.target.shape[-2:]
        image: torch.Tensor = self.model.reconstruct(batch, (int(h), int(w)))  # type: ignore[operator]
        return image

    def compute_loss(self, output: torch.Tensor, batch: ReconSample) -> torch.Tensor:
        """The training loss of a batch (``loss``), scale-free: images divided by the volume's maximum."""
        scale = data_range(batch)[:, None, None]
        output, target = output.float() / scale, batch.target.float() / scale
        if self.hparams["loss"] == "l1":
            return (output - target).abs().mean()
        return 1.0 - metrics.ssim_per_slice(output, target, 1.0).mean()

    def training_step(self, batch: ReconSample, batch_idx: int) -> torch.Tensor:
        """One optimisation step's loss; logs ``train/loss``.

        Raises:
            KspacelabError: NaN or Inf in the batch (:func:`~kspacelab.training.module.check_finite_batch`).
        """
        check_finite_batch(self, batch, "training")
        output = self(batch)
        loss = self.compute_loss(output, batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=output.shape[0])
        return loss

    # -- validation -------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_records = []

    def validation_step(self, batch: ReconSample, batch_idx: int) -> None:
        """Keep every slice's output and target for the volume metrics at the epoch end."""
        check_finite_batch(self, batch, "validation")
        output = self(batch).detach().float().cpu().numpy()
        target = batch.target.detach().float().cpu().numpy()
        accelerations = torch.as_tensor(batch.acceleration).reshape(-1).tolist()
        slices = torch.as_tensor(batch.slice_num).reshape(-1).tolist()
        for i, (fname, acc, slice_num) in enumerate(zip(batch.fname, accelerations, slices, strict=True)):
            self._val_records.append((str(fname), int(acc), int(slice_num), output[i], target[i]))

    def on_validation_epoch_end(self) -> None:
        """Log the volume metrics per acceleration and ``val/ssim`` (all ranks' slices pooled)."""
        records = records_of_all_ranks(self._val_records)
        self._val_records = []
        if not records:
            return
        scores = volume_scores(records)
        for acc, values in sorted(scores.items()):
            for name in ("nmse", "psnr", "ssim", "hallucination"):
                self.log(f"val/{name}_{acc_label(acc)}", values[name], sync_dist=True)
        mean_ssim = math.fsum(v["ssim"] for v in scores.values()) / len(scores)
        self.log(MONITOR, mean_ssim, prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> Any:
        """The optimiser and scheduler of the hyper-parameters (:func:`configure_optimization`)."""
        return configure_optimization(self)


class GenerativeModule(SingleCoilModule):
    """The generative texture model (``task: generative``) against a PatchGAN discriminator.

    Manual optimisation, per batch: the discriminator step (``discriminator_loss`` of real targets and detached
    outputs, in the generator's normalised units), then the generator step. Validation and the best checkpoint as
    :class:`SingleCoilModule`.
    """

    task = "generative"

    def __init__(
        self,
        model_name: str = "stylish",
        model_kwargs: dict[str, Any] | None = None,
        discriminator_kwargs: dict[str, Any] | None = None,
        kl_weight: float = 0.01,
        texture_weight: float = 1.0,
        gan_weight: float = 0.01,
        lr: float = 2e-4,
        discriminator_lr: float | None = None,
        betas: tuple[float, float] = (0.5, 0.999),
        gradient_clip: float | None = None,
        noise_seed: int = 0,
    ) -> None:
        """Args:
        model_name: a registered model of the ``generative`` task (``stylish``).
        model_kwargs: its constructor arguments.
        discriminator_kwargs: arguments of :class:`~kspacelab.models.stylish.PatchDiscriminator` (``in_chans``,
            ``chans``, ``num_layers``).
        kl_weight, texture_weight, gan_weight: weights of the generator's loss terms besides the L1 to the target
            (weight 1): KL of the texture posterior to N(0, I), L1 between texture statistics of output and target,
            non-saturating GAN loss (:func:`kspacelab.models.stylish.generator_losses`).
        lr: Adam learning rate of the generator (and texture encoder).
        discriminator_lr: Adam learning rate of the discriminator (default ``lr``).
        betas: Adam betas of both optimisers (GAN practice: 0.5, 0.999).
        gradient_clip: clip each network's gradient norm to this before its step (None: no clipping); set it here,
            not as ``trainer.gradient_clip_val``, which Lightning refuses with manual optimisation.
        noise_seed: the random draws of a training step (the generator's noise, the texture code's sample) come
            from a generator seeded with ``(noise_seed, global step, rank)``, not from the global RNG, which the
            data loaders also draw from: a resumed run draws exactly what the uninterrupted run drew.
        """
        for name, value in (
            ("kl_weight", kl_weight),
            ("texture_weight", texture_weight),
            ("gan_weight", gan_weight),
        ):
            if value < 0:
                raise KspacelabError(f"model.{name} must be >= 0, got {value}")
        if not lr > 0 or (discriminator_lr is not None and not discriminator_lr > 0):
            raise KspacelabError(
                f"model.lr and model.discriminator_lr must be positive, got {lr}, {discriminator_lr}"
            )
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise KspacelabError(f"model.betas must be two numbers in [0, 1), got {betas}")
        if gradient_clip is not None and not gradient_clip > 0:
            raise KspacelabError(f"model.gradient_clip must be positive (or null), got {gradient_clip}")
        super().__init__(model_name, model_kwargs, loss="l1", lr=lr)
        self.save_hyperparameters()
        self.automatic_optimization = False
        try:
            self.discriminator = PatchDiscriminator(**dict(discriminator_kwargs or {}))
        except TypeError as err:
            raise KspacelabError(f"model.discriminator_kwargs: {err}") from None

    def _step(self, optimizer: Any, loss: torch.Tensor, module: torch.nn.Module) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        clip = self.hparams.get("gradient_clip")
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(module.parameters(), float(clip))
        optimizer.step()

    def training_step(self, batch: ReconSample, batch_idx: int) -> torch.Tensor:
        """Discriminator step on the detached output, then the generator step against the updated discriminator;
        logs ``train/d_loss``, ``train/g_loss`` and the generator's terms ``train/l1``, ``train/kl``,
        ``train/texture``, ``train/gan``."""
        with self._step_rng():
            return self._adversarial_step(batch)

    def _step_rng(self) -> contextlib.AbstractContextManager[Any]:
        """The global RNG forked and seeded with ``(noise_seed, global_step, global_rank)`` for one step."""
        devices = [self.device] if self.device.type == "cuda" else []
        fork = torch.random.fork_rng(devices=devices)
        seed = (
            int(self.hparams["noise_seed"]) * 1_000_003 + int(self.global_step)
        ) * 7_919 + self.global_rank
        return _seeded(fork, seed)

    def _adversarial_step(self, batch: ReconSample) -> torch.Tensor:
        optimizers = self.optimizers()
        assert isinstance(optimizers, list)  # two optimisers (configure_optimizers)
        g_opt, d_opt = optimizers
        check_finite_batch(self, batch, "training")
        h, w = batch.target.shape[-2:]
        out = self.model.generate(batch, (int(h), int(w)), texture_source="target")  # type: ignore[operator]
        real, fake = out.target_normalised.detach(), out.normalised.detach()
        d_loss = discriminator_loss(self.discriminator(real), self.discriminator(fake))
        self._step(d_opt, d_loss, self.discriminator)
        self.toggle_optimizer(g_opt)  # the discriminator's weights need no gradients in the generator step
        hp = self.hparams
        terms = generator_losses(
            self.model,  # type: ignore[arg-type]
            out,
            self.discriminator(out.normalised),
            kl_weight=float(hp["kl_weight"]),
            texture_weight=float(hp["texture_weight"]),
            gan_weight=float(hp["gan_weight"]),
        )
        self._step(g_opt, terms["total"], self.model)
        self.untoggle_optimizer(g_opt)
        size = batch.target.shape[0]
        self.log("train/g_loss", terms["total"].detach(), prog_bar=True, batch_size=size)
        self.log("train/d_loss", d_loss.detach(), prog_bar=True, batch_size=size)
        for name in ("l1", "kl", "texture", "gan"):
            self.log(f"train/{name}", terms[name].detach(), batch_size=size)
        return terms["total"].detach()

    def configure_optimizers(self) -> Any:
        """Adam for the generator (with its texture encoder) and Adam for the discriminator."""
        hp = self.hparams
        betas = (float(hp["betas"][0]), float(hp["betas"][1]))
        generator = torch.optim.Adam(self.model.parameters(), lr=float(hp["lr"]), betas=betas)
        d_lr = float(hp["discriminator_lr"] if hp["discriminator_lr"] is not None else hp["lr"])
        discriminator = torch.optim.Adam(self.discriminator.parameters(), lr=d_lr, betas=betas)
        return [generator, discriminator]
