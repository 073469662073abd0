"""Single-coil baselines (NYU single-coil knee data): fastMRI's image-domain U-Net and E2E-VarNet with one coil.

Both take :attr:`ReconSample.masked_kspace` ``(B, 1, H, W, 2)`` (one coil, real view; ``W`` the phase-encoding
axis of the line mask) and return the magnitude ``(B, h, w)`` at the data's scale.

Intensity normalisation (``normalization``), shared by every single-coil model through :func:`intensity_stats`:

* ``"meanstd"``: fastMRI's ``normalize_instance`` of the zero-filled magnitude cropped to the output size: shift =
  its mean, scale = its (unbiased) standard deviation + 1e-11, per slice;
* ``"volume_max"``: shift 0, scale = the volume's maximum (:attr:`ReconSample.max_value`, the file's ``max``
  attr), so the data lies in [0, 1] per volume; where it is 0 (unknown) the slice's zero-filled maximum.

A model maps ``(x - shift) / scale`` and returns ``y * scale + shift``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from kspacelab import physics
from kspacelab.models.base import InputSpec, ReconModel, ReconSample, maybe_checkpoint
from kspacelab.models.unet import NormUnet, Unet
from kspacelab.models.varnet import VarNetBlock
from kspacelab.physics import broadcast_line_mask

__all__ = [
    "NORMALIZATIONS",
    "IntensityStats",
    "SingleCoilInput",
    "SingleCoilModel",
    "SingleCoilUnet",
    "SingleCoilVarNet",
    "check_normalization",
    "intensity_stats",
    "max_values",
    "single_coil_kspace",
    "zero_filled_image",
]

NORMALIZATIONS = ("meanstd", "volume_max")

#: added to the standard deviation before dividing, as fastMRI's UnetDataTransform does
STD_EPS = 1e-11
#: the range fastMRI's UnetDataTransform clamps the normalised U-Net input to
UNET_CLAMP = 6.0


class IntensityStats(NamedTuple):
    """Per-slice intensity normalisation ``(x - shift) / scale``; both float ``(B, 1, 1)``."""

    shift: torch.Tensor
    scale: torch.Tensor

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, h, w)`` at the data scale -> normalised units (for ``(B, 1, h, w)`` use :meth:`channel`)."""
        return (x - self.shift) / self.scale

    def denormalise(self, y: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalise`, ``(B, h, w)``."""
        return y * self.scale + self.shift

    def channel(self) -> IntensityStats:
        """The same statistics shaped ``(B, 1, 1, 1)`` for ``(B, 1, h, w)`` tensors."""
        return IntensityStats(self.shift.unsqueeze(1), self.scale.unsqueeze(1))


def check_normalization(normalization: str) -> str:
    """``normalization`` when it is one of :data:`NORMALIZATIONS`; ValueError (one line) otherwise."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    return normalization


def single_coil_kspace(masked_kspace: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Complex k-space ``(B, 1, H, W)`` and bool line mask ``(B, 1, 1, W)`` of a single-coil batch.

    Args:
        masked_kspace: ``(B, 1, H, W, 2)`` real view or ``(B, 1, H, W)`` complex.
        mask: any mask shape :func:`~kspacelab.physics.broadcast_line_mask` accepts, e.g. ``(B, 1, 1, W, 1)``.

    Raises:
        ValueError: k-space with more than one coil.
    """
    k0 = physics.to_complex(masked_kspace)
    if k0.ndim != 4 or k0.shape[1] != 1:
        raise ValueError(f"single-coil models need k-space (B, 1, H, W, 2), got {tuple(masked_kspace.shape)}")
    line_mask = broadcast_line_mask(mask, masked_kspace)
    return k0, line_mask[:, :1, :1, :]


def zero_filled_image(kspace: torch.Tensor, size: Sequence[int] | None) -> torch.Tensor:
    """Zero-filled complex image of complex k-space ``(..., H, W)``, centre-cropped (or zero-padded) to ``size``."""
    image = physics.ifft2c(kspace)
    return image if size is None else physics.center_crop(image, size)


def max_values(max_value: torch.Tensor | float | None, batch: int, device: torch.device) -> torch.Tensor:
    """:attr:`ReconSample.max_value` (a float, a ``(B,)`` tensor or None) as float32 ``(B,)``; 0 means unknown."""
    if max_value is None:
        return torch.zeros(batch, device=device)
    values = torch.as_tensor(max_value, device=device).to(torch.float32).reshape(-1)
    return values.expand(batch) if values.numel() == 1 else values


def intensity_stats(
    magnitude: torch.Tensor, normalization: str, max_value: torch.Tensor | float | None = None
) -> IntensityStats:
    """Normalisation statistics of a batch (module docstring).

    Args:
        magnitude: the zero-filled magnitude cropped to the output size, float ``(B, h, w)``.
        normalization: ``"meanstd"`` or ``"volume_max"``.
        max_value: the volumes' maxima, float or ``(B,)``; 0 or None where unknown (``volume_max`` only).
    """
    check_normalization(normalization)
    flat = magnitude.reshape(magnitude.shape[0], -1)
    if normalization == "meanstd":
        std, mean = torch.std_mean(flat, dim=1)
        return IntensityStats(mean[:, None, None], (std + STD_EPS)[:, None, None])
    volume = max_values(max_value, flat.shape[0], flat.device).to(flat.dtype)
    slice_max = flat.amax(dim=1)
    scale = torch.where(volume > 0, volume, slice_max)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return IntensityStats(torch.zeros_like(scale)[:, None, None], scale[:, None, None])


class SingleCoilInput(NamedTuple):
    """What every single-coil model starts from (:meth:`of`).

    Attributes:
        kspace: measured k-space ``(B, 1, H, W)`` complex at the data scale.
        mask: bool line mask ``(B, 1, 1, W)``.
        zero_filled: zero-filled magnitude ``(B, h, w)`` at the output size.
        stats: the batch's normalisation (:func:`intensity_stats` of ``zero_filled``).
        crop_size: output ``(h, w)``; None for ``(H, W)``.
    """

    kspace: torch.Tensor
    mask: torch.Tensor
    zero_filled: torch.Tensor
    stats: IntensityStats
    crop_size: Sequence[int] | None

    @classmethod
    def of(
        cls,
        masked_kspace: torch.Tensor,
        mask: torch.Tensor,
        crop_size: Sequence[int] | None,
        normalization: str,
        max_value: torch.Tensor | float | None = None,
    ) -> SingleCoilInput:
        """The input of a batch: ``masked_kspace (B, 1, H, W, 2)``, ``mask`` e.g. ``(B, 1, 1, W, 1)``, the output
        size, the normalisation and the volume maxima ``(B,)`` (0 where unknown)."""
        k0, line_mask = single_coil_kspace(masked_kspace, mask)
        magnitude = zero_filled_image(k0, crop_size)[:, 0].abs()
        stats = intensity_stats(magnitude, normalization, max_value)
        return cls(k0, line_mask, magnitude, stats, crop_size)


class SingleCoilModel(ReconModel):
    """Base of the single-coil models: the input spec, the normalisation option and the ReconModel calls.

    A subclass sets ``normalization`` and implements :meth:`image` (normalised units in, data scale out).
    """

    normalization: str

    def input_spec(self) -> InputSpec:
        """Single-coil k-space, no adjacent slices, no readout crop."""
        return InputSpec(multicoil=False)

    def forward(
        self,
        masked_kspace: torch.Tensor,
        mask: torch.Tensor,
        num_low_frequencies: physics.LowFreqs = None,
        crop_size: Sequence[int] | None = None,
        max_value: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """Args:
            masked_kspace: ``(B, 1, H, W, 2)`` float real view (or ``(B, 1, H, W)`` complex).
            mask: line mask, e.g. ``(B, 1, 1, W, 1)``.
            num_low_frequencies: unused (the ReconModel call; no sensitivity estimation).
            crop_size: output ``(h, w)``; None keeps ``(H, W)``.
            max_value: volume maxima ``(B,)`` for ``volume_max`` (0 where unknown).

        Returns:
            magnitude ``(B, h, w)`` float at the data's scale.
        """
        del num_low_frequencies
        return self.image(SingleCoilInput.of(masked_kspace, mask, crop_size, self.normalization, max_value))

    def image(self, batch: SingleCoilInput) -> torch.Tensor:
        """The reconstruction ``(B, h, w)`` of ``batch`` at the data scale."""
        raise NotImplementedError

    def reconstruct(self, sample: ReconSample, size: Sequence[int] | None = None) -> torch.Tensor:
        """Magnitude ``(B, h, w)`` of a collated batch (uses ``sample.max_value`` for ``volume_max``)."""
        out = tuple(size) if size is not None else sample.output_size()
        image: torch.Tensor = self(
            sample.masked_kspace, sample.mask, crop_size=out, max_value=sample.max_value
        )
        return image


class SingleCoilUnet(SingleCoilModel):
    """fastMRI's single-coil U-Net baseline: U-Net on the normalised zero-filled magnitude.

    Pipeline (fastMRI's ``UnetDataTransform`` + ``UnetModule``): ``ifft2c`` of the masked k-space, complex centre
    crop to the output size, magnitude, normalisation (``meanstd``: ``(x - mean) / (std + 1e-11)`` clamped to
    [-6, 6]; ``volume_max``: ``x / max``, not clamped), :class:`~kspacelab.models.unet.Unet` ``(1 -> 1)``,
    un-normalisation. ``state_dict()`` keys are ``unet.*``: those of fastMRI's ``UnetModule`` checkpoints, whose
    ``unet.`` part is fastMRI's ``Unet(1, 1, chans, num_pool_layers)``.
    """

    def __init__(
        self,
        chans: int = 32,
        num_pool_layers: int = 4,
        drop_prob: float = 0.0,
        normalization: str = "meanstd",
    ) -> None:
        """Args:
        chans: first-level channels of the U-Net.
        num_pool_layers: down-sampling steps.
        drop_prob: channel-dropout probability.
        normalization: ``"meanstd"`` (fastMRI) or ``"volume_max"`` (module docstring).
        """
        super().__init__()
        self.normalization = check_normalization(normalization)
        self.unet = Unet(1, 1, chans, num_pool_layers, drop_prob)

    def image(self, batch: SingleCoilInput) -> torch.Tensor:
        """U-Net of the normalised zero-filled magnitude, un-normalised (:meth:`SingleCoilModel.image`)."""
        image = batch.stats.normalise(batch.zero_filled)
        if self.normalization == "meanstd":
            image = image.clamp(-UNET_CLAMP, UNET_CLAMP)
        return batch.stats.denormalise(self.unet(image.unsqueeze(1)).squeeze(1))


class SingleCoilVarNet(SingleCoilModel):
    """E2E-VarNet for one coil: ``num_cascades`` :class:`~kspacelab.models.varnet.VarNetBlock` cascades (soft data
    consistency + :class:`~kspacelab.models.unet.NormUnet` regulariser) with the coil sensitivity fixed to 1, so
    the coil operators ``E = F S`` and ``E^H`` are the plain centred FFTs; no sensitivity network.

    Output ``|ifft2c(k)|`` centre-cropped. ``state_dict()`` keys (``cascades.{i}.model.unet.*``,
    ``cascades.{i}.dc_weight``) are those of :class:`~kspacelab.models.VarNet`'s cascades.

    Normalisation: the k-space is divided by the scale of :func:`intensity_stats` and the output image multiplied
    back (the ``meanstd`` shift is not applied: a constant image offset is not a k-space scaling that the data
    consistency commutes with). The network is scale-equivariant (each NormUnet normalises its own input and the
    data consistency is linear), so both normalisations give the same output up to rounding; the option only
    keeps the numbers in a range of order 1.
    """

    def __init__(
        self,
        num_cascades: int = 12,
        chans: int = 18,
        pools: int = 4,
        normalization: str = "meanstd",
        use_checkpoint: bool = False,
    ) -> None:
        """Args:
        num_cascades: unrolled cascades.
        chans: first-level channels of each cascade's U-Net.
        pools: pooling levels of each cascade's U-Net.
        normalization: ``"meanstd"`` or ``"volume_max"`` (class docstring).
        use_checkpoint: recompute each cascade in the backward pass (activation checkpointing).
        """
        super().__init__()
        self.normalization = check_normalization(normalization)
        self.use_checkpoint = use_checkpoint
        self.cascades = nn.ModuleList(VarNetBlock(NormUnet(chans, pools)) for _ in range(num_cascades))

    def image(self, batch: SingleCoilInput) -> torch.Tensor:
        """The cascades on the scaled k-space, magnitude, crop, scaled back (:meth:`SingleCoilModel.image`)."""
        k0 = batch.kspace / batch.stats.scale.unsqueeze(1)  # (B, 1, H, W) / (B, 1, 1, 1)
        ones = torch.ones_like(k0)  # the one coil's sensitivity
        k = k0
        for cascade in self.cascades:
            k = maybe_checkpoint(cascade, k, k0, batch.mask, ones, enabled=self.use_checkpoint)
        return zero_filled_image(k, batch.crop_size)[:, 0].abs() * batch.stats.scale
