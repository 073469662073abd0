"""PromptMR+ (Xin et al., ECCV 2024): unrolled k-space cascades of prompt U-Nets over adjacent slices.

Inputs follow :class:`kspacelab.models.VarNet`: masked k-space ``(B, adj * C, H, W, 2)`` real view (or
``(B, adj * C, H, W)`` complex) with the ``adj = num_adj_slices`` adjacent slices stacked along the coil axis in
slice order (the centre slice's coils are the middle block ``[adj // 2 * C, (adj // 2 + 1) * C)``, as
:class:`kspacelab.data.dataset.SliceDataset` builds them, edge slices clamped), a boolean line mask
``(B, 1, 1, W, 1)`` (or ``(B, 1, 1, W)``) and the ACS width; the output is the centre slice's RSS image.

The network:

1. **Sensitivities** (:class:`PromptSensitivityModel`): the ACS block of k-space -> coil images; with
   ``use_sens_adj`` every coil's ``adj`` slices go through a :class:`NormPromptUnet` together (otherwise every
   slice and coil alone); the maps are divided by their RSS over coils, per slice. ``compute_sens_per_coil``
   runs the U-Net one coil at a time (and, with checkpointing, recomputes it one coil at a time), which bounds
   the sensitivity net's activation memory by one coil's.
2. **Cascades** (:class:`PromptMRCascade`): ``k <- k - where(mask, k - k0, 0) * dc_weight - E(D(E^H k))``
   with the per-slice coil operators ``E = F S`` / ``E^H`` and the denoiser ``D`` a :class:`NormPromptUnet`.
3. **Adaptive input** (``adaptive_input``, ``n_buffer``): the denoiser also sees a buffer of ``n_buffer``
   images, initially ``n_buffer`` copies of ``x0 = E^H k0`` and after each cascade
   ``[A^H A x, latent, x0, A^H A x - x0, ...]`` (``A^H A x = E^H where(mask, k, 0)``, ``latent`` the third
   block of the denoiser's own output channels), truncated or padded with ``A^H A x - x0`` to ``n_buffer``.
4. **History** (``n_history``): every decoder level fuses its input with the same level's inputs of the
   previous ``n_history`` cascades (copies of itself in the first cascade), see
   :class:`kspacelab.models.promptmr_blocks.UpBlock`.
5. ``use_checkpoint`` recomputes each cascade and the sensitivity net in the backward pass.

Parameter names, shapes and counts are the reference implementation's (hellopipu/PromptMR-plus), so its state
dicts load with ``strict=True`` (see :mod:`kspacelab.models.promptmr_compat` for reading the configuration off
them and for kspacelab's older names, upgraded on load). With ``shared_prelu`` (the default) every CAB except
the first of each U-Net uses one PReLU slope for the whole model, as the reference's default argument
``act=nn.PReLU()`` does; ``shared_prelu=False`` gives every CAB its own. Counts
(``sum(p.numel() for p in model.parameters())``, a shared parameter once; the prompt banks are parameters with
``requires_grad=False`` unless ``learnable_prompt``) are pinned by ``tests/test_promptmr.py``: 92,859,005 for the
reference configuration (the constructor's defaults), 34,225,281 for Team EJ's and 6,014,179 for sMaRtIfy's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kspacelab import physics
from kspacelab.models.base import InputSpec, ReconModel, maybe_checkpoint
from kspacelab.models.promptmr_blocks import History, PromptUnet
from kspacelab.models.promptmr_compat import is_legacy_state_dict, shared_prelu_conflict, upgrade_legacy_keys
from kspacelab.physics import LowFreqs, broadcast_line_mask, keep_columns, low_frequency_window

__all__ = ["NormPromptUnet", "PromptMR", "PromptMRCascade", "PromptSensitivityModel"]

IntList = Sequence[int]
_MULTIPLE = 8  # three stride-2 levels


def reduce_slices(kspace: torch.Tensor, sens_maps: torch.Tensor, adj: int) -> torch.Tensor:
    """Per-slice ``E^H``: ``(B, adj * C, H, W)`` complex k-space -> ``(B, adj, H, W)`` complex images."""
    b, ac, h, w = kspace.shape
    shape = (b, adj, ac // adj, h, w)
    return physics.sens_reduce(kspace.reshape(shape), sens_maps.reshape(shape), coil_dim=2)[:, :, 0]


def expand_slices(images: torch.Tensor, sens_maps: torch.Tensor, adj: int) -> torch.Tensor:
    """Per-slice ``E``: ``(B, adj, H, W)`` complex images -> ``(B, adj * C, H, W)`` complex k-space."""
    b, ac, h, w = sens_maps.shape
    maps = sens_maps.reshape(b, adj, ac // adj, h, w)
    return physics.sens_expand(images.unsqueeze(2), maps).reshape(b, ac, h, w)


def _pad_amounts(n: int) -> tuple[int, int]:
    total = (-n) % _MULTIPLE
    return total // 2, total - total // 2


class NormPromptUnet(nn.Module):
    """:class:`PromptUnet` on complex images: normalise, pad to multiples of 8, run, undo.

    The complex input (image channels, then the buffer's) becomes real channels (all real parts, then all
    imaginary parts), normalised by one mean and unbiased standard deviation per sample over all channels and
    pixels. With a buffer the U-Net has ``(1 + n_buffer)`` times the channels in and out; the output is split
    into the image (first block) and the ``latent`` (third block) that feeds the next cascade's buffer.
    """

    def __init__(
        self,
        chans: int,
        n_feat0: int,
        feature_dim: IntList,
        prompt_dim: IntList,
        len_prompt: IntList,
        prompt_size: IntList,
        n_enc_cab: IntList,
        n_dec_cab: IntList,
        n_skip_cab: IntList,
        n_bottleneck_cab: int,
        reduction: int = 4,
        use_ca: bool = True,
        learnable_prompt: bool = False,
        n_buffer: int = 0,
        n_history: int = 0,
        act: nn.Module | None = None,
    ) -> None:
        """Args:
        chans: complex image channels (the number of adjacent slices, or 1).
        n_buffer: complex buffer blocks of ``chans`` channels each appended to the input (0: none; else >= 3).
        act: a PReLU shared by the CABs (see :class:`PromptUnet`), None for one per CAB.
        Other arguments: those of :class:`PromptUnet`.
        """
        super().__init__()
        if n_buffer < 0 or 0 < n_buffer < 3:
            raise ValueError(f"n_buffer must be 0 or at least 3 (image, latent, x0, ...), got {n_buffer}")
        self.chans = chans
        self.n_buffer = n_buffer
        real = 2 * chans * (1 + n_buffer)
        self.unet = PromptUnet(
            real,
            real,
            n_feat0,
            feature_dim,
            prompt_dim,
            len_prompt,
            prompt_size,
            n_enc_cab,
            n_dec_cab,
            n_skip_cab,
            n_bottleneck_cab,
            reduction=reduction,
            use_ca=use_ca,
            learnable_prompt=learnable_prompt,
            n_history=n_history,
            act=act,
        )

    def forward(
        self, x: torch.Tensor, history: History | None = None, buffer: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, History | None]:
        """Args:
            x: ``(N, chans, H, W)`` complex images.
            history: decoder features of the previous cascades (see :class:`PromptUnet`) or None.
            buffer: ``(N, n_buffer * chans, H, W)`` complex, required when ``n_buffer > 0``.

        Returns:
            ``(image (N, chans, H, W) complex, latent (N, chans, H, W) complex or None, history)``.
        """
        if (buffer is None) != (self.n_buffer == 0):
            raise ValueError(f"this denoiser expects {'a' if self.n_buffer else 'no'} buffer")
        z = x if buffer is None else torch.cat([x, buffer], dim=1)
        n, c, h, w = z.shape
        real = torch.cat([z.real, z.imag], dim=1)
        std, mean = torch.std_mean(real.reshape(n, -1), dim=1)
        std, mean = std.view(n, 1, 1, 1), mean.view(n, 1, 1, 1)
        top, bottom = _pad_amounts(h)
        left, right = _pad_amounts(w)
        padded = F.pad((real - mean) / std, [left, right, top, bottom])
        out, history = self.unet(padded, history)
        out = out[..., top : top + h, left : left + w] * std + mean
        result = torch.complex(out[:, :c], out[:, c:])
        image = result[:, : self.chans]
        latent = result[:, 2 * self.chans : 3 * self.chans] if self.n_buffer else None
        return image, latent, history


class PromptSensitivityModel(nn.Module):
    """Coil sensitivities from the ACS block with a :class:`NormPromptUnet`, normalised per slice.

    Returns maps ``(B, adj * C, H, W)`` complex with ``sum_c |S_{s,c}|^2 = 1`` for every slice ``s``.
    """

    def __init__(
        self,
        num_adj_slices: int,
        n_feat0: int,
        feature_dim: IntList,
        prompt_dim: IntList,
        len_prompt: IntList,
        prompt_size: IntList,
        n_enc_cab: IntList,
        n_dec_cab: IntList,
        n_skip_cab: IntList,
        n_bottleneck_cab: int,
        reduction: int = 4,
        use_ca: bool = True,
        learnable_prompt: bool = False,
        use_sens_adj: bool = True,
        mask_center: bool = True,
        per_coil: bool = False,
        use_checkpoint: bool = False,
        act: nn.Module | None = None,
    ) -> None:
        """Args:
        num_adj_slices: adjacent slices stacked along the coil axis.
        use_sens_adj: a coil's adjacent slices are the U-Net's channels (else one slice at a time).
        mask_center: keep only the ACS block of k-space.
        per_coil: run the U-Net one coil at a time (less activation memory).
        use_checkpoint: with ``per_coil``, recompute every coil's U-Net in the backward pass separately.
        act: a PReLU shared by the CABs, None for one per CAB.
        Other arguments: those of :class:`NormPromptUnet` (with ``chans = num_adj_slices`` or 1).
        """
        super().__init__()
        self.num_adj_slices = num_adj_slices
        self.use_sens_adj = use_sens_adj
        self.mask_center = mask_center
        self.per_coil = per_coil
        self.use_checkpoint = use_checkpoint
        self.norm_unet = NormPromptUnet(
            num_adj_slices if use_sens_adj else 1,
            n_feat0,
            feature_dim,
            prompt_dim,
            len_prompt,
            prompt_size,
            n_enc_cab,
            n_dec_cab,
            n_skip_cab,
            n_bottleneck_cab,
            reduction=reduction,
            use_ca=use_ca,
            learnable_prompt=learnable_prompt,
            act=act,
        )

    def _denoise(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm_unet(images)[0]

    def forward(
        self, kspace: torch.Tensor, mask: torch.Tensor, num_low_frequencies: LowFreqs = None
    ) -> torch.Tensor:
        """Args:
            kspace: ``(B, adj * C, H, W)`` complex masked k-space.
            mask: ``(B, 1, 1, W)`` bool line mask.
            num_low_frequencies: ACS width (int or ``(B,)``), None/0 to detect from the mask.

        Returns:
            ``(B, adj * C, H, W)`` complex sensitivity maps.
        """
        if self.mask_center:
            start, num = low_frequency_window(mask, num_low_frequencies)
            kspace = keep_columns(kspace, start, num)
        b, ac, h, w = kspace.shape
        adj = self.num_adj_slices
        images = physics.ifft2c(kspace).reshape(b, adj, ac // adj, h, w)
        if self.use_sens_adj:
            batch = images.transpose(1, 2).reshape(b * (ac // adj), adj, h, w)
        else:
            batch = images.reshape(b * ac, 1, h, w)
        if self.per_coil:
            parts = [
                maybe_checkpoint(self._denoise, item, enabled=self.use_checkpoint) for item in batch.split(1)
            ]
            maps = torch.cat(parts)
        else:
            maps = self._denoise(batch)
        if self.use_sens_adj:
            maps = maps.reshape(b, ac // adj, adj, h, w).transpose(1, 2)
        else:
            maps = maps.reshape(b, adj, ac // adj, h, w)
        maps = maps / physics.rss_complex(maps, dim=2).unsqueeze(2)
        return maps.reshape(b, ac, h, w)


class PromptMRCascade(nn.Module):
    """One cascade: ``k - where(mask, k - k0, 0) * dc_weight - E(D(E^H k))`` per adjacent slice."""

    def __init__(self, model: NormPromptUnet, num_adj_slices: int) -> None:
        super().__init__()
        self.model = model
        self.num_adj_slices = num_adj_slices
        self.dc_weight = nn.Parameter(torch.ones(1))

    def forward(
        self,
        kspace: torch.Tensor,
        ref_kspace: torch.Tensor,
        mask: torch.Tensor,
        sens_maps: torch.Tensor,
        history: History | None = None,
        buffer: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, History | None]:
        """Args:
            kspace: ``(B, adj * C, H, W)`` complex, the current estimate.
            ref_kspace: ``(B, adj * C, H, W)`` complex, the measured k-space.
            mask: ``(B, 1, 1, W)`` bool.
            sens_maps: ``(B, adj * C, H, W)`` complex.
            history: decoder features of the previous cascades, or None.
            buffer: ``(B, n_buffer * adj, H, W)`` complex adaptive input, or None.

        Returns:
            ``(k-space (B, adj * C, H, W), latent (B, adj, H, W) or None, history)``.
        """
        adj = self.num_adj_slices
        soft_dc = physics.soft_data_consistency(kspace, ref_kspace, mask, self.dc_weight)
        image, latent, history = self.model(reduce_slices(kspace, sens_maps, adj), history, buffer)
        return kspace - soft_dc - expand_slices(image, sens_maps, adj), latent, history


def _upgrade_on_load(
    module: nn.Module,
    state_dict: dict[str, torch.Tensor],
    prefix: str,
    local_metadata: dict[str, Any],
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    """``load_state_dict`` pre-hook of :class:`PromptMR`: older kspacelab names are renamed in place, and weights
    with a PReLU per block are refused by a model that shares one (instead of silently keeping the last)."""
    del local_metadata, strict, missing_keys, unexpected_keys
    own = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if is_legacy_state_dict(own):
        for key in own:
            del state_dict[prefix + key]
        state_dict.update({prefix + k: v for k, v in upgrade_legacy_keys(own).items()})
    if getattr(module, "shared_prelu", False):
        conflict = shared_prelu_conflict(state_dict, prefix)
        if conflict is not None:
            error_msgs.append(conflict)


class PromptMR(ReconModel):
    """PromptMR+ with the reference implementation's configuration names (defaults: its reference configuration).

    ``model(masked_kspace, mask, num_low_frequencies=None, crop_size=None)`` returns the centre slice's RSS
    image ``(B, H, W)`` (or ``(B, h, w)`` with ``crop_size``), as :meth:`kspacelab.models.VarNet.forward`.
    """

    def __init__(
        self,
        num_cascades: int = 12,
        num_adj_slices: int = 5,
        n_feat0: int = 48,
        feature_dim: IntList = (72, 96, 120),
        prompt_dim: IntList = (24, 48, 72),
        sens_n_feat0: int = 24,
        sens_feature_dim: IntList = (36, 48, 60),
        sens_prompt_dim: IntList = (12, 24, 36),
        len_prompt: IntList = (5, 5, 5),
        prompt_size: IntList = (64, 32, 16),
        n_enc_cab: IntList = (2, 3, 3),
        n_dec_cab: IntList = (2, 2, 3),
        n_skip_cab: IntList = (1, 1, 1),
        n_bottleneck_cab: int = 3,
        no_use_ca: bool = False,
        reduction: int = 4,
        learnable_prompt: bool = False,
        adaptive_input: bool = True,
        n_buffer: int = 4,
        n_history: int = 11,
        use_sens_adj: bool = True,
        compute_sens_per_coil: bool = False,
        use_checkpoint: bool = False,
        mask_center: bool = True,
        shared_prelu: bool = True,
    ) -> None:
        """Args:
        num_cascades: unrolled cascades.
        num_adj_slices: odd number of adjacent slices stacked along the coil axis (must equal the data's).
        n_feat0, feature_dim, prompt_dim: channels of the cascade U-Nets (full resolution, three levels,
            prompts per level).
        sens_n_feat0, sens_feature_dim, sens_prompt_dim: the same for the sensitivity U-Net.
        len_prompt, prompt_size: prompt bank length and size per level (both U-Nets).
        n_enc_cab, n_dec_cab, n_skip_cab, n_bottleneck_cab: CABs per level (both U-Nets).
        no_use_ca: switch channel attention off in every CAB.
        reduction: channel-attention reduction.
        learnable_prompt: train the prompt banks (default: fixed random prompts).
        adaptive_input: feed the cascades the ``n_buffer`` adaptive-input buffer.
        n_buffer: buffer blocks (0 or >= 3; ignored without ``adaptive_input``).
        n_history: previous cascades' decoder features fused into each decoder level (0: none).
        use_sens_adj: the sensitivity net sees a coil's adjacent slices together.
        compute_sens_per_coil: sensitivity U-Net one coil at a time (memory).
        use_checkpoint: activation checkpointing per cascade and for the sensitivity net (per coil with
            ``compute_sens_per_coil``).
        mask_center: sensitivities from the ACS block only.
        shared_prelu: one PReLU slope for every CAB of the model except the first CAB of each U-Net, as in the
            reference implementation (False: one per CAB, as kspacelab's models before this option).
        """
        super().__init__()
        if num_adj_slices < 1 or num_adj_slices % 2 == 0:
            raise ValueError(f"num_adj_slices must be a positive odd integer, got {num_adj_slices}")
        if num_cascades < 0 or n_history < 0 or n_buffer < 0 or reduction < 1:
            raise ValueError("num_cascades, n_history and n_buffer must be >= 0 and reduction >= 1")
        self.num_adj_slices = num_adj_slices
        self.n_buffer = n_buffer if adaptive_input else 0
        self.use_checkpoint = use_checkpoint
        self.compute_sens_per_coil = compute_sens_per_coil
        self.shared_prelu = shared_prelu
        act = nn.PReLU() if shared_prelu else None
        shared = {
            "len_prompt": len_prompt,
            "prompt_size": prompt_size,
            "n_enc_cab": n_enc_cab,
            "n_dec_cab": n_dec_cab,
            "n_skip_cab": n_skip_cab,
            "n_bottleneck_cab": n_bottleneck_cab,
            "reduction": reduction,
            "use_ca": not no_use_ca,
            "learnable_prompt": learnable_prompt,
            "act": act,
        }
        self.sens_net = PromptSensitivityModel(
            num_adj_slices,
            sens_n_feat0,
            sens_feature_dim,
            sens_prompt_dim,
            use_sens_adj=use_sens_adj,
            mask_center=mask_center,
            per_coil=compute_sens_per_coil,
            use_checkpoint=use_checkpoint,
            **shared,  # type: ignore[arg-type]
        )
        self.cascades = nn.ModuleList(
            PromptMRCascade(
                NormPromptUnet(
                    num_adj_slices,
                    n_feat0,
                    feature_dim,
                    prompt_dim,
                    n_buffer=self.n_buffer,
                    n_history=n_history,
                    **shared,  # type: ignore[arg-type]
                ),
                num_adj_slices,
            )
            for _ in range(num_cascades)
        )
        self.register_load_state_dict_pre_hook(_upgrade_on_load)

    def input_spec(self) -> InputSpec:
        """``num_adj_slices`` adjacent slices stacked along the coil axis."""
        return InputSpec(num_adj_slices=self.num_adj_slices)

    def sensitivity_maps(
        self, kspace: torch.Tensor, mask: torch.Tensor, num_low_frequencies: LowFreqs = None
    ) -> torch.Tensor:
        """Sensitivity maps ``(B, adj * C, H, W)`` complex of complex k-space and a ``(B, 1, 1, W)`` mask."""
        enabled = self.use_checkpoint and not self.compute_sens_per_coil
        maps: torch.Tensor = maybe_checkpoint(
            self.sens_net, kspace, mask, num_low_frequencies, enabled=enabled
        )
        return maps

    def _next_buffer(self, ffx: torch.Tensor, latent: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """``[A^H A x, latent, x0, A^H A x - x0, ...]`` truncated/padded to ``n_buffer`` blocks."""
        blocks = [ffx, latent, x0] + [ffx - x0] * max(0, self.n_buffer - 3)
        return torch.cat(blocks[: self.n_buffer], dim=1)

    def forward(
        self,
        masked_kspace: torch.Tensor,
        mask: torch.Tensor,
        num_low_frequencies: LowFreqs = None,
        crop_size: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Args:
            masked_kspace: ``(B, adj * C, H, W, 2)`` float real view or ``(B, adj * C, H, W)`` complex.
            mask: ``(B, 1, 1, W, 1)`` (real view) or ``(B, 1, 1, W)``; bool or 0/1.
            num_low_frequencies: ACS width (int or ``(B,)`` tensor); None or 0 to detect from the mask.
            crop_size: ``(h, w)`` to centre-crop (or zero-pad) the output to.

        Returns:
            the centre slice's RSS image ``(B, H, W)`` float, or ``(B, h, w)``.
        """
        k0 = physics.to_complex(masked_kspace)
        if k0.ndim != 4:
            raise ValueError(f"expected k-space (B, C, H, W) complex or (..., 2), got {tuple(k0.shape)}")
        adj = self.num_adj_slices
        b, ac, h, w = k0.shape
        if ac % adj:
            raise ValueError(f"{ac} stacked coils are not a multiple of num_adj_slices={adj}")
        line_mask = broadcast_line_mask(mask, masked_kspace)
        sens_maps = self.sensitivity_maps(k0, line_mask, num_low_frequencies)

        kspace = k0
        x0 = reduce_slices(k0, sens_maps, adj) if self.n_buffer else None
        buffer = None if x0 is None else x0.repeat(1, self.n_buffer, 1, 1)
        history: History | None = None
        zero = torch.zeros((), dtype=k0.dtype, device=k0.device)
        last = len(self.cascades) - 1
        for i, cascade in enumerate(self.cascades):
            kspace, latent, history = maybe_checkpoint(
                cascade, kspace, k0, line_mask, sens_maps, history, buffer, enabled=self.use_checkpoint
            )
            if x0 is not None and latent is not None and i < last:
                ffx = reduce_slices(torch.where(line_mask, kspace, zero), sens_maps, adj)
                buffer = self._next_buffer(ffx, latent, x0)

        centre = kspace.reshape(b, adj, ac // adj, h, w)[:, adj // 2]
        image = physics.rss_complex(physics.ifft2c(centre), dim=1)
        return image if crop_size is None else physics.center_crop(image, crop_size)
