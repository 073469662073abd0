"""Two-stage reconstruction: a (frozen) multi-coil first stage and an image refiner on a second, classical image.

The SNU 2022 3rd-place system: an E2E-VarNet reconstructs the slice; an RCAN refines the stack
``[first-stage image, GRAPPA image]`` into the final image. Here the first stage is any registered multi-coil
model (``first_stage``, ``first_stage_kwargs``), the second image is an image dataset of the file (``second_image``,
default ``image_grappa``; where the file lacks it the data pipeline computes ``InputSpec.classical_fallback`` and
caches it), and the refiner is an :class:`~kspacelab.models.rcan.RCAN`.

* **Residual**: the refiner's output is added to the base image, the first-stage image (``residual_base:
  first_stage``, the team's) or the second image (``second_image``, for when the classical image is the stronger
  one), and its last convolution starts at zero, so an untrained refiner returns the base image exactly.
* **Normalisation at the start and the end only**: both input images are normalised by the base image's per-slice
  mean and standard deviation (one pair for the stack); the refiner's output is multiplied back.
* **Frozen first stage** (``freeze_first_stage``): no gradients, always in eval mode, run under ``no_grad`` (no
  stored activations). ``init_from`` names a checkpoint whose weights the first stage starts from (read by the
  trainer, not by the constructor, so a trained two-stage checkpoint loads without that file).
* **First-stage cache** (``first_stage_cache``, entries; 0 = off): a frozen first stage is a fixed function of its
  inputs, so its images are kept in memory (least recently used dropped first), keyed by the content of the
  k-space, the mask, the centre-block length and the output size. Training on files' fixed masks then runs the
  first stage once per slice instead of once per step. The cache empties whenever the first stage's weights are
  loaded or the model moves to another device or dtype.
* **Self-ensemble in the image domain** (:meth:`reconstruct_ensemble`, ``reconstruct --tta``): the first stage runs
  once; the refiner runs on each member of ``ensemble`` (``identity``, ``hflip``, ``rot180``, ``hflip_rot180``) of
  the input pair, each output is transformed back, and the outputs are averaged.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from kspacelab.classical import METHODS as CLASSICAL_METHODS
from kspacelab.models.base import InputSpec, ReconModel, ReconSample
from kspacelab.models.rcan import RCAN
from kspacelab.models.registry import model_entry

__all__ = ["ENSEMBLE_MEMBERS", "RefinedModel"]

_Transform = Callable[[torch.Tensor], torch.Tensor]


def _hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def _rot180(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-2, -1)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


#: Self-ensemble members: name -> (transform, inverse) of images ``(..., H, W)``.
ENSEMBLE_MEMBERS: dict[str, tuple[_Transform, _Transform]] = {
    "identity": (_identity, _identity),
    "hflip": (_hflip, _hflip),
    "rot180": (_rot180, _rot180),
    "hflip_rot180": (lambda x: x.flip(-2), lambda x: x.flip(-2)),  # h-flip then 180-degree turn = v-flip
}
_RESIDUAL_BASES = ("first_stage", "second_image")


def _cache_key(sample: ReconSample, size: Sequence[int]) -> str:
    """Digest of everything a frozen first stage reads: k-space, mask, centre-block length, output size."""
    digest = hashlib.blake2b(digest_size=20)
    for tensor in (sample.masked_kspace, sample.mask):
        digest.update(f"{tuple(tensor.shape)}{tensor.dtype}{tensor.device}".encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    low = sample.num_low_frequencies
    lows = low.tolist() if isinstance(low, torch.Tensor) else low
    digest.update(f"{lows}|{tuple(int(s) for s in size)}".encode())
    return digest.hexdigest()


class RefinedModel(ReconModel):
    """First stage + RCAN refiner on ``[first-stage image, second image]``; see the module docstring."""

    def __init__(
        self,
        first_stage: str = "varnet",
        first_stage_kwargs: dict[str, Any] | None = None,
        freeze_first_stage: bool = True,
        init_from: str | None = None,
        second_image: str = "image_grappa",
        classical_fallback: str = "grappa",
        n_feats: int = 64,
        n_resgroups: int = 4,
        n_resblocks: int = 8,
        reduction: int = 16,
        res_scale: float = 1.0,
        bottleneck: bool = True,
        use_checkpoint: bool = False,
        inplace: bool = True,
        ensemble: Sequence[str] = ("identity", "hflip"),
        first_stage_cache: int = 0,
        residual_base: str = "first_stage",
    ) -> None:
        """Args:
        first_stage: registry name of a multi-coil reconstruction model.
        first_stage_kwargs: its constructor arguments.
        freeze_first_stage: keep the first stage fixed (no gradients, eval mode, no stored activations).
        init_from: checkpoint the first stage starts from (a kspacelab checkpoint of that model, or its state dict).
        second_image: image dataset of the file fed to the refiner beside the first-stage image.
        classical_fallback: what the data pipeline computes (and caches) where a file lacks ``second_image``:
            ``grappa``, ``sense``, ``cs`` or ``zero-filled``.
        n_feats, n_resgroups, n_resblocks, reduction, res_scale, bottleneck, use_checkpoint, inplace: the RCAN's
            (:class:`~kspacelab.models.rcan.RCAN`).
        ensemble: self-ensemble members for :meth:`reconstruct_ensemble` (1 to 4 of :data:`ENSEMBLE_MEMBERS`).
        first_stage_cache: first-stage images kept in memory when the first stage is frozen (0: none); each
            costs ``B x h x w`` floats (590 KB for one 384 x 384 slice).
        residual_base: the image the refiner's residual is added to, ``first_stage`` or ``second_image``.
        """
        super().__init__()
        entry = model_entry(first_stage)
        if entry.task != "reconstruction" or entry.cls is RefinedModel:
            raise ValueError(f"first_stage must be a multi-coil reconstruction model, got {first_stage!r}")
        if classical_fallback not in CLASSICAL_METHODS:
            raise ValueError(
                f"classical_fallback must be one of {', '.join(CLASSICAL_METHODS)}, got {classical_fallback!r}"
            )
        if residual_base not in _RESIDUAL_BASES:
            raise ValueError(
                f"residual_base must be one of {', '.join(_RESIDUAL_BASES)}, got {residual_base!r}"
            )
        if first_stage_cache < 0:
            raise ValueError(f"first_stage_cache must be >= 0, got {first_stage_cache}")
        members = list(ensemble)
        unknown = [m for m in members if m not in ENSEMBLE_MEMBERS]
        if not members or unknown or len(set(members)) != len(members):
            raise ValueError(
                f"ensemble must name distinct members of {list(ENSEMBLE_MEMBERS)}, got {members}"
            )
        self.first_stage = entry.build(**dict(first_stage_kwargs or {}))
        self.freeze_first_stage = freeze_first_stage
        self.init_from = init_from
        self.second_image = second_image
        self.classical_fallback = classical_fallback
        self.ensemble = members
        self.residual_base = residual_base
        self.refiner = RCAN(
            in_chans=2,
            out_chans=1,
            n_feats=n_feats,
            n_resgroups=n_resgroups,
            n_resblocks=n_resblocks,
            reduction=reduction,
            res_scale=res_scale,
            bottleneck=bottleneck,
            use_checkpoint=use_checkpoint,
            inplace=inplace,
        )
        with (
            torch.no_grad()
        ):  # the refiner's residual starts at zero: untrained, the output is the base image
            self.refiner.tail.weight.zero_()
            if self.refiner.tail.bias is not None:
                self.refiner.tail.bias.zero_()
        if freeze_first_stage:
            self.first_stage.requires_grad_(False)
            self.first_stage.eval()
        self.first_stage_cache = first_stage_cache if freeze_first_stage else 0
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.first_stage.register_load_state_dict_post_hook(lambda module, keys: self._cache.clear())

    def _apply(self, fn: Any, recurse: bool = True) -> RefinedModel:  # .to(), .cuda(), .double(), ...
        self._cache.clear()
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True) -> RefinedModel:
        """As :meth:`torch.nn.Module.train`, but a frozen first stage stays in eval mode."""
        super().train(mode)
        if self.freeze_first_stage:
            self.first_stage.eval()
        return self

    def input_spec(self) -> InputSpec:
        """The first stage's inputs plus the second image."""
        first = self.first_stage.input_spec()  # type: ignore[operator]
        return InputSpec(
            num_adj_slices=first.num_adj_slices,
            extra_images=(*first.extra_images, self.second_image),
            classical_fallback=self.classical_fallback,
        )

    def pretrained_parts(self) -> list[tuple[nn.Module, str]]:
        """``(module, checkpoint)`` pairs the trainer loads before the first step: the first stage's ``init_from``."""
        return [(self.first_stage, self.init_from)] if self.init_from else []

    def first_stage_image(self, sample: ReconSample, size: Sequence[int]) -> torch.Tensor:
        """``(B, h, w)`` image of the first stage (no graph kept when it is frozen)."""
        if not self.freeze_first_stage:
            return self.first_stage.reconstruct(sample, size)  # type: ignore[operator]
        key = _cache_key(sample, size) if self.first_stage_cache else ""
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        with torch.no_grad():
            image = self.first_stage.reconstruct(sample, size)  # type: ignore[operator]
        if key:
            self._cache[key] = image
            while len(self._cache) > self.first_stage_cache:
                self._cache.popitem(last=False)
        return image

    def refine(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """``base + refiner([first, second])`` with the normalisation of the module docstring; ``(B, h, w)``."""
        second = second.to(first.dtype)
        base = first if self.residual_base == "first_stage" else second
        mean = base.mean(dim=(-2, -1), keepdim=True)
        std = base.std(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(base.dtype).tiny)
        stack = torch.stack(((first - mean) / std, (second - mean) / std), dim=1)
        return base + self.refiner(stack)[:, 0] * std

    def _inputs(self, sample: ReconSample, size: Sequence[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
        out = tuple(size) if size is not None else sample.output_size()
        if sample.extra_images is None or sample.extra_images.shape[-3] < 1:
            raise ValueError(f"the refiner needs the sample's {self.second_image!r} image")
        second = sample.extra_images[:, -1]
        if tuple(second.shape[-2:]) != out:
            raise ValueError(f"the second image is {tuple(second.shape[-2:])}, the output {out}")
        return self.first_stage_image(sample, out), second

    def reconstruct(self, sample: ReconSample, size: Sequence[int] | None = None) -> torch.Tensor:
        """Refined magnitude image ``(B, h, w)``."""
        first, second = self._inputs(sample, size)
        return self.refine(first, second)

    def reconstruct_ensemble(self, sample: ReconSample, size: Sequence[int] | None = None) -> torch.Tensor:
        """Image-domain self-ensemble over :attr:`ensemble` (the first stage runs once)."""
        first, second = self._inputs(sample, size)
        outputs = []
        for name in self.ensemble:
            forward, inverse = ENSEMBLE_MEMBERS[name]
            outputs.append(inverse(self.refine(forward(first), forward(second))))
        return torch.stack(outputs).mean(dim=0)
