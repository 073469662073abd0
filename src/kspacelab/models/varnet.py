"""End-to-end variational network (E2E-VarNet, Sriram et al. 2020), state-dict compatible with fastMRI.

Inputs follow fastMRI: real-view masked k-space ``(B, C, H, W, 2)`` with a boolean mask ``(B, 1, 1, W, 1)``, or any
mask shape fastMRI accepts (:func:`kspacelab.physics.broadcast_line_mask`: ``(1, 1, 1, W, 1)``, ``(1, 1, W, 1)``,
...); native complex k-space ``(B, C, H, W)`` with a mask ``(B, 1, 1, W)`` is accepted too and gives the same
numbers. Internally everything runs on native complex tensors, which saves the stacking and copying of the
real-view arithmetic. ``W`` is the phase-encoding axis along which the mask runs.

``initial_kspace="grappa"`` is an extension for small compute budgets: the cascades start from the GRAPPA-filled
k-space (:func:`kspacelab.classical.grappa.grappa_kspace`, computed without gradients) instead of the measured
one, and each cascade's regulariser term is scaled by a learned ``reg_weight`` initialised to 0, so that the
untrained network returns the GRAPPA reconstruction exactly and training learns a correction to it (the idea of
the SNU 2022 entries that fed the challenge's GRAPPA images to their networks). The default, ``"zero_filled"``,
is fastMRI's E2E-VarNet.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kspacelab import physics
from kspacelab.classical.grappa import DEFAULT_LAMDA, grappa_kspace
from kspacelab.models.base import ReconModel, maybe_checkpoint
from kspacelab.models.unet import NormUnet
from kspacelab.physics import LowFreqs, broadcast_line_mask, keep_columns, low_frequency_window

__all__ = ["SensitivityModel", "VarNet", "VarNetBlock"]

INITIAL_KSPACE = ("zero_filled", "grappa")


class SensitivityModel(nn.Module):
    """Coil sensitivities from the ACS block: centre-only k-space -> coil images -> NormUnet -> / RSS.

    Every coil image goes through the NormUnet separately (coils folded into the batch); the maps are divided
    by their root sum of squares over coils so that ``sum_c |S_c|^2 = 1``.
    """

    def __init__(
        self,
        chans: int,
        num_pools: int,
        in_chans: int = 2,
        out_chans: int = 2,
        drop_prob: float = 0.0,
        mask_center: bool = True,
    ) -> None:
        """Args:
        chans: channels of the first U-Net level.
        num_pools: U-Net down-sampling steps.
        in_chans: real input channels of the U-Net (2: one complex coil image).
        out_chans: real output channels of the U-Net.
        drop_prob: channel-dropout probability.
        mask_center: keep only the ACS block of k-space before estimating.
        """
        super().__init__()
        self.mask_center = mask_center
        self.norm_unet = NormUnet(
            chans, num_pools, in_chans=in_chans, out_chans=out_chans, drop_prob=drop_prob
        )

    def forward(
        self, masked_kspace: torch.Tensor, mask: torch.Tensor, num_low_frequencies: LowFreqs = None
    ) -> torch.Tensor:
        """Args:
            masked_kspace: ``(B, C, H, W)`` complex or ``(B, C, H, W, 2)`` real view.
            mask: line mask broadcastable to ``masked_kspace`` (:func:`~kspacelab.physics.broadcast_line_mask`), e.g.
                ``(B, 1, 1, W)`` or ``(B, 1, 1, W, 1)``.
            num_low_frequencies: ACS width (int or ``(B,)``), None/0 to detect from the mask.

        Returns:
            sensitivity maps ``(B, C, H, W)`` in the representation of ``masked_kspace``.
        """
        real_view = not masked_kspace.is_complex()
        k = physics.to_complex(masked_kspace)
        if self.mask_center:
            start, num = low_frequency_window(broadcast_line_mask(mask, masked_kspace), num_low_frequencies)
            k = keep_columns(k, start, num)
        b, c, h, w = k.shape
        images = physics.ifft2c(k).reshape(b * c, 1, h, w)
        maps = self.norm_unet(images).reshape(b, c, h, w)
        maps = maps / physics.rss_complex(maps, dim=1).unsqueeze(1)
        return physics.to_real_view(maps) if real_view else maps


class VarNetBlock(nn.Module):
    """One cascade: ``k - where(mask, k - k0, 0) * dc_weight - g * E(model(E^H k))`` with ``E = F S``.

    ``g`` is 1 (fastMRI) or, with ``gated=True``, a learned ``reg_weight`` that starts at 0.
    """

    reg_weight: nn.Parameter | None

    def __init__(self, model: nn.Module, gated: bool = False) -> None:
        """Args:
        model: image regulariser mapping ``(B, 1, H, W)`` complex to the same shape (a :class:`NormUnet`).
        gated: scale the regulariser term by a learned scalar initialised to 0 (the cascade starts as pure
            soft data consistency).
        """
        super().__init__()
        self.model = model
        self.dc_weight = nn.Parameter(torch.ones(1))
        self.reg_weight = nn.Parameter(torch.zeros(1)) if gated else None

    def forward(
        self,
        current_kspace: torch.Tensor,
        ref_kspace: torch.Tensor,
        mask: torch.Tensor,
        sens_maps: torch.Tensor,
    ) -> torch.Tensor:
        """Args:
            current_kspace: ``(B, C, H, W)`` complex64, the current estimate.
            ref_kspace: ``(B, C, H, W)`` complex64, the measured (masked) k-space.
            mask: ``(B, 1, 1, W)`` bool.
            sens_maps: ``(B, C, H, W)`` complex64.

        Returns:
            the updated k-space ``(B, C, H, W)`` complex64.
        """
        soft_dc = physics.soft_data_consistency(current_kspace, ref_kspace, mask, self.dc_weight)
        image = self.model(physics.sens_reduce(current_kspace, sens_maps))
        if self.reg_weight is not None:
            image = image * self.reg_weight
        return current_kspace - soft_dc - physics.sens_expand(image, sens_maps)


class VarNet(ReconModel):
    """E2E-VarNet: a learned sensitivity model and ``num_cascades`` unrolled soft-DC + NormUnet cascades.

    ``state_dict()`` keys equal ``fastmri.models.VarNet``'s (``sens_net.norm_unet.unet.*``,
    ``cascades.{i}.model.unet.*``, ``cascades.{i}.dc_weight``).
    """

    def __init__(
        self,
        num_cascades: int = 12,
        sens_chans: int = 8,
        sens_pools: int = 4,
        chans: int = 18,
        pools: int = 4,
        mask_center: bool = True,
        use_checkpoint: bool = False,
        sens_checkpoint: bool = False,
        initial_kspace: str = "zero_filled",
        grappa_lamda: float = DEFAULT_LAMDA,
    ) -> None:
        """Args:
        num_cascades: unrolled cascades.
        sens_chans: first-level channels of the sensitivity U-Net.
        sens_pools: pooling levels of the sensitivity U-Net.
        chans: first-level channels of the cascade U-Nets.
        pools: pooling levels of the cascade U-Nets.
        mask_center: estimate sensitivities from the ACS block only.
        use_checkpoint: recompute each cascade in the backward pass (activation checkpointing).
        sens_checkpoint: recompute the sensitivity model in the backward pass.
        initial_kspace: ``"zero_filled"`` (fastMRI) or ``"grappa"``: start the cascades from GRAPPA-filled
            k-space with gated regularisers (module docstring); adds ``cascades.{i}.reg_weight`` to the state.
        grappa_lamda: GRAPPA Tikhonov weight for ``initial_kspace="grappa"``.
        """
        super().__init__()
        if initial_kspace not in INITIAL_KSPACE:
            raise ValueError(f"initial_kspace must be one of {INITIAL_KSPACE}, got {initial_kspace!r}")
        self.initial_kspace = initial_kspace
        self.grappa_lamda = grappa_lamda
        self.use_checkpoint = use_checkpoint
        self.sens_checkpoint = sens_checkpoint
        self.sens_net = SensitivityModel(sens_chans, sens_pools, mask_center=mask_center)
        gated = initial_kspace == "grappa"
        self.cascades = nn.ModuleList(
            VarNetBlock(NormUnet(chans, pools), gated=gated) for _ in range(num_cascades)
        )

    def forward(
        self,
        masked_kspace: torch.Tensor,
        mask: torch.Tensor,
        num_low_frequencies: LowFreqs = None,
        crop_size: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Args:
            masked_kspace: ``(B, C, H, W, 2)`` float real view or ``(B, C, H, W)`` complex.
            mask: sampling mask, ``(B, 1, 1, W, 1)`` for a real view or ``(B, 1, 1, W)`` for complex k-space, or any
                shape fastMRI accepts (:func:`~kspacelab.physics.broadcast_line_mask`); bool or 0/1 float.
            num_low_frequencies: ACS width (int or ``(B,)`` tensor); None or 0 to detect from the mask.
            crop_size: ``(h, w)`` to centre-crop (or zero-pad) the output image to.

        Returns:
            RSS magnitude image ``(B, H, W)`` float, or ``(B, h, w)`` with ``crop_size``.
        """
        k0 = physics.to_complex(masked_kspace)
        if k0.ndim != 4:
            raise ValueError(f"expected k-space (B, C, H, W) complex or (..., 2), got {tuple(k0.shape)}")
        line_mask = broadcast_line_mask(mask, masked_kspace)

        sens_maps = maybe_checkpoint(
            self.sens_net, k0, line_mask, num_low_frequencies, enabled=self.sens_checkpoint
        )

        k = self._grappa_start(k0, line_mask) if self.initial_kspace == "grappa" else k0
        for cascade in self.cascades:
            k = maybe_checkpoint(cascade, k, k0, line_mask, sens_maps, enabled=self.use_checkpoint)

        image = physics.rss_complex(physics.ifft2c(k), dim=1)
        return image if crop_size is None else physics.center_crop(image, crop_size)

    def _grappa_start(self, kspace: torch.Tensor, line_mask: torch.Tensor) -> torch.Tensor:
        """GRAPPA-filled ``(B, C, H, W)`` complex64 k-space, calibrated per batch item on its own ACS block.

        Raises:
            ValueError: a mask without a fully sampled centre block (GRAPPA needs one to calibrate).
        """
        with torch.no_grad(), torch.autocast(kspace.device.type, enabled=False):
            lines = line_mask[:, 0, 0, :]
            filled = [
                grappa_kspace(kspace[i : i + 1].to(torch.complex64), lines[i], lamda=self.grappa_lamda)
                for i in range(kspace.shape[0])
            ]
        return torch.cat(filled).to(kspace.dtype)
