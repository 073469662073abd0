"""Feature-domain VarNet (Giannakopoulos et al. 2024) and its LSKA variant (SNU FastMRI Challenge 2025, GeekSeek).

The network reconstructs in a learned feature space instead of the image:

1. **Encode.** Sensitivities come from the ACS block as in E2E-VarNet (:class:`~kspacelab.models.varnet.
   SensitivityModel`). The coil-combined image ``x0 = E^H k0`` (2 real channels) is normalised per channel by its
   mean and (biased) variance over the image and mapped to ``feature_chans`` channels by one 5 x 5 convolution
   (:class:`FeatureEncoder`); :class:`FeatureDecoder` is the 5 x 5 map back, un-normalised. The k-space is
   multiplied by ``kspace_mult_factor`` (1e6) inside the network and divided again at the output.
2. **Feature cascades** (:class:`FeatureBlock`), ``f <- IN(f)`` then
   ``f - dc_weight * Enc(E^H where(mask, E Dec(f) - k0, 0)) - U(A(f))``: the data-consistency residual is decoded
   to k-space and re-encoded (the encoder and decoder are shared by all cascades), ``U`` is a U-Net
   (:class:`Unet2d`) on the centre crop of the features (outside the crop the term is ``A(f)`` itself, as in
   fastMRI), ``A`` an optional attention (:class:`AttentionPE`, fastMRI's FIVarNet). Every third cascade ends with
   two more 5 x 5 convolutions (``image_conv_cascades``).
3. **Image cascades**: E2E-VarNet cascades (:class:`~kspacelab.models.varnet.VarNetBlock` with a NormUnet) on the
   decoded k-space; the output is the RSS image.

:class:`FeatureVarNet` (registry name ``feature_varnet``) takes ``cascade_counts = [a, b, c]``: ``a`` feature
cascades whose U-Nets carry :class:`~kspacelab.models.lska.LSKA` after the encoder convolutions of the
``lska_levels`` deepest encoder stages and of the bottleneck, ``b`` feature cascades with plain U-Nets and ``c``
image cascades. :class:`FIVarNet` is fastMRI's FIVarNet (``fastmri_examples/feature_varnet``): the same
constructor arguments, state-dict names and outputs, so weights trained with fastMRI's example load.

Shapes: k-space ``(B, C, H, W, 2)`` real view or ``(B, C, H, W)`` complex, mask ``(B, 1, 1, W, 1)`` or
``(B, 1, 1, W)``; features ``(B, F, H, W)`` float32. Unlike fastMRI (batch size 1 only) any batch size works: the
normalisation statistics are per batch item.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from kspacelab import physics
from kspacelab.models.base import ReconModel, ReconSample, maybe_checkpoint
from kspacelab.models.lska import LSKA, LSKA_DECOMPOSITIONS
from kspacelab.models.unet import ConvBlock, NormUnet, TransposeConvBlock
from kspacelab.models.varnet import SensitivityModel, VarNetBlock
from kspacelab.physics import LowFreqs, broadcast_line_mask

__all__ = [
    "AttentionPE",
    "FIVarNet",
    "FeatureBlock",
    "FeatureDecoder",
    "FeatureEncoder",
    "FeatureVarNet",
    "Unet2d",
    "UnetLevel",
]

_SLOPE = 0.2


def _to_channels(image: torch.Tensor) -> torch.Tensor:
    """Complex ``(B, 1, H, W)`` -> float ``(B, 2, H, W)`` (real, imaginary)."""
    return torch.cat([image.real, image.imag], dim=1)


def _to_complex(chans: torch.Tensor) -> torch.Tensor:
    """Float ``(B, 2, H, W)`` -> complex ``(B, 1, H, W)``."""
    return torch.complex(chans[:, :1].contiguous(), chans[:, 1:].contiguous())


def _channel_stats(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-item, per-channel mean and biased variance of ``(B, 2, H, W)``, each ``(B, 2, 1, 1)``."""
    var, mean = torch.var_mean(image, dim=(-2, -1), keepdim=True, correction=0)
    return mean, var


def _crop_window(in_size: int, crop: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of fastMRI's ``center_crop``."""
    start = (in_size - crop) // 2
    return start, start + crop


def _uncrop_window(in_size: int, crop: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` where fastMRI's feature VarNet writes a cropped map back (one row lower than the
    crop when ``in_size - crop`` is odd, as the reference does)."""
    pad = (in_size - crop) // 2
    start = pad + 1 if (in_size - crop) % 2 else pad
    return start, in_size - pad


class FeatureEncoder(nn.Module):
    """Normalised image ``(B, in_chans, H, W)`` -> features ``(B, feature_chans, H, W)``: one 5 x 5 convolution."""

    def __init__(self, in_chans: int, feature_chans: int = 32) -> None:
        super().__init__()
        self.feature_chans = feature_chans
        self.encoder = nn.Sequential(nn.Conv2d(in_chans, feature_chans, kernel_size=5, padding=2))

    def forward(self, image: torch.Tensor, means: torch.Tensor, variances: torch.Tensor) -> torch.Tensor:
        """``image``: ``(B, in_chans, H, W)``; ``means``, ``variances``: ``(B, in_chans, 1, 1)``."""
        out: torch.Tensor = self.encoder((image - means) * torch.rsqrt(variances))
        return out


class FeatureDecoder(nn.Module):
    """Features ``(B, feature_chans, H, W)`` -> image ``(B, out_chans, H, W)``: 5 x 5 convolution, un-normalised."""

    def __init__(self, feature_chans: int = 32, out_chans: int = 2) -> None:
        super().__init__()
        self.feature_chans = feature_chans
        self.decoder = nn.Conv2d(feature_chans, out_chans, kernel_size=5, padding=2)

    def forward(self, features: torch.Tensor, means: torch.Tensor, variances: torch.Tensor) -> torch.Tensor:
        """Inverse of :class:`FeatureEncoder`'s normalisation after the convolution."""
        return self.decoder(features) * torch.sqrt(variances) + means


class AttentionPE(nn.Module):
    """fastMRI's FIVarNet attention: self-attention within groups of ``acceleration`` phase-encode columns.

    Instance norm, plus a sinusoidal encoding of the column index; q, k, v are 1 x 1 convolutions followed by one
    shared 3 x 3 convolution of dilation 2; the columns ``j, j + m, ..., j + (accel - 1) m`` (``m = W' / accel``
    after reflect-padding ``W`` to ``W'``, a multiple of ``accel``) of a row attend to each other; the result goes
    through a 1 x 1 projection and is added to the input. ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, in_chans: int) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.norm = nn.InstanceNorm2d(in_chans)
        self.q = nn.Conv2d(in_chans, in_chans, kernel_size=1)
        self.k = nn.Conv2d(in_chans, in_chans, kernel_size=1)
        self.v = nn.Conv2d(in_chans, in_chans, kernel_size=1)
        self.proj_out = nn.Conv2d(in_chans, in_chans, kernel_size=1)
        self.dilated_conv = nn.Conv2d(in_chans, in_chans, kernel_size=3, padding=2, dilation=2)

    @staticmethod
    def _padding(width: int, accel: int) -> tuple[int, int]:
        total = (-width) % accel
        return total - total // 2, total // 2

    @classmethod
    def to_blocks(cls, x: torch.Tensor, accel: int) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B * H * m, C, accel)``: column ``k m + j`` of row ``h`` at ``[(b, h, j), :, k]``."""
        b, c, h, _ = x.shape
        left, right = cls._padding(x.shape[-1], accel)
        x = F.pad(x, (left, right, 0, 0), mode="reflect")
        m = x.shape[-1] // accel
        return x.reshape(b, c, h, accel, m).permute(0, 2, 4, 1, 3).reshape(b * h * m, c, accel)

    @classmethod
    def from_blocks(cls, x: torch.Tensor, shape: tuple[int, int, int, int], accel: int) -> torch.Tensor:
        """Inverse of :meth:`to_blocks` for an input of ``shape = (B, C, H, W)``."""
        b, c, h, w = shape
        left, right = cls._padding(w, accel)
        m = (w + left + right) // accel
        x = x.reshape(b, h, m, c, accel).permute(0, 3, 1, 4, 2).reshape(b, c, h, accel * m)
        return x[..., left : left + w]

    @staticmethod
    def positional_encoding(height: int, width: int, device: torch.device) -> torch.Tensor:
        """``(H, W)``: ``sin(h * 10000^(-2 floor(j / 2) / W))`` (fastMRI's encoding, its sine half)."""
        freqs = torch.tensor([1 / (10000 ** (2 * (i // 2) / width)) for i in range(width)], device=device)
        positions = torch.arange(height, dtype=torch.float, device=device).unsqueeze(1)
        return torch.sin(positions * freqs.unsqueeze(0))

    def forward(self, x: torch.Tensor, accel: int) -> torch.Tensor:
        """``x + proj_out(attention(x))``, ``(B, C, H, W)``."""
        shape = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        h = self.norm(x) + self.positional_encoding(shape[2], shape[3], x.device)
        q = self.to_blocks(self.dilated_conv(self.q(h)), accel)
        k = self.to_blocks(self.dilated_conv(self.k(h)), accel)
        v = self.to_blocks(self.dilated_conv(self.v(h)), accel)
        weights = torch.softmax(
            torch.bmm(q.transpose(1, 2), k) * shape[1] ** -0.5, dim=2
        )  # (N, accel, accel)
        out = torch.bmm(v, weights.transpose(1, 2))  # out[:, :, j] = sum_i v[:, :, i] weights[j, i]
        return x + self.proj_out(self.from_blocks(out, shape, accel))


class UnetLevel(nn.Module):
    """One level of :class:`Unet2d`: ``left_block`` (two 3 x 3 convolutions), optional attention, and, unless it is
    the bottleneck, average-pool -> ``child`` -> ``upsample`` -> ``right_block`` on ``[skip, upsampled]``."""

    def __init__(
        self,
        child: UnetLevel | None,
        in_planes: int,
        out_planes: int,
        drop_prob: float = 0.0,
        attention: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.in_planes = in_planes
        self.out_planes = out_planes
        self.left_block = ConvBlock(in_planes, out_planes, drop_prob)
        self.attention = attention
        self.child = child
        if child is not None:
            self.downsample = nn.AvgPool2d(kernel_size=2, stride=2, padding=0)
            self.upsample = TransposeConvBlock(child.out_planes, out_planes)
            self.right_block = ConvBlock(2 * out_planes, out_planes, drop_prob)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(N, in_planes, H, W)`` -> ``(N, out_planes, H, W)``; ``H``, ``W`` divisible by the levels below."""
        image = self.left_block(image)
        if self.attention is not None:
            image = image + self.attention(image)
        if self.child is None:
            return image
        return self.right_block(torch.cat((image, self.upsample(self.child(self.downsample(image)))), 1))


class Unet2d(nn.Module):
    """fastMRI's recursive U-Net of the feature VarNet (``layer.child.child...``), optionally with LSKA.

    Widths ``chans * 2^i`` for ``i = 0..num_pool_layers`` (the last is the bottleneck); the input is reflect-padded
    at the right and bottom to a multiple of ``2^num_pool_layers`` and the output cropped back. The last layer is a
    1 x 1 convolution, then (without ``output_bias``) instance norm and LeakyReLU(0.2).

    With ``lska_kernel`` > 0 an :class:`~kspacelab.models.lska.LSKA` is added as a residual
    (``x + LSKA(x)``) after the left block of the bottleneck and of the ``lska_levels`` deepest encoder levels.
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        chans: int = 32,
        num_pool_layers: int = 4,
        drop_prob: float = 0.0,
        output_bias: bool = False,
        lska_kernel: int = 0,
        lska_levels: int = 0,
        lska_clamp: float = 0.0,
    ) -> None:
        super().__init__()
        if lska_kernel and not 0 <= lska_levels <= num_pool_layers:
            raise ValueError(f"lska_levels must be in [0, {num_pool_layers}], got {lska_levels}")
        self.in_chans = in_chans
        self.out_planes = out_chans
        self.factor = 2**num_pool_layers

        def attention(width: int, depth: int) -> nn.Module | None:
            deep = depth >= num_pool_layers - lska_levels  # the bottleneck has depth num_pool_layers
            return LSKA(width, lska_kernel, lska_clamp) if lska_kernel and deep else None

        layer: UnetLevel | None = None
        for depth in range(num_pool_layers, 0, -1):  # from the bottleneck outwards
            planes = 2 ** (depth - 1)
            out = 2 * planes * chans
            layer = UnetLevel(layer, planes * chans, out, drop_prob, attention(out, depth))
        self.layer = UnetLevel(layer, in_chans, chans, drop_prob, attention(chans, 0))
        final: list[nn.Module] = [nn.Conv2d(chans, out_chans, kernel_size=1, bias=output_bias)]
        if not output_bias:
            final += [nn.InstanceNorm2d(out_chans), nn.LeakyReLU(negative_slope=_SLOPE, inplace=True)]
        self.final_conv = nn.Sequential(*final)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(N, in_chans, H, W)`` -> ``(N, out_chans, H, W)``."""
        height, width = image.shape[-2:]
        pad_h, pad_w = (-height) % self.factor, (-width) % self.factor
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), mode="reflect")
        out: torch.Tensor = self.final_conv(self.layer(image))
        return out[:, :, :height, :width]


class _Context(NamedTuple):
    """What every feature cascade reads besides the features (fixed for one forward pass)."""

    sens_maps: torch.Tensor  # (B, C, H, W) complex
    means: torch.Tensor  # (B, 2, 1, 1)
    variances: torch.Tensor  # (B, 2, 1, 1)
    mask: torch.Tensor  # (B, 1, 1, W) bool
    ref_kspace: torch.Tensor  # (B, C, H, W) complex, scaled
    crop: tuple[int, int] | None  # feature-processor crop


class FeatureBlock(nn.Module):
    """One feature cascade (fastMRI's ``FeatureVarNetBlock``, or ``AttentionFeatureVarNetBlock`` with an
    ``attention_layer``); see the module docstring. ``encoder`` and ``decoder`` are shared with the network."""

    def __init__(
        self,
        encoder: FeatureEncoder,
        decoder: FeatureDecoder,
        feature_processor: nn.Module,
        attention_layer: AttentionPE | None = None,
        acceleration: int = 4,
        use_extra_feature_conv: bool = False,
    ) -> None:
        super().__init__()
        chans = encoder.feature_chans
        self.encoder = encoder
        self.decoder = decoder
        self.feature_processor = feature_processor
        self.attention_layer = attention_layer
        self.acceleration = acceleration
        self.use_image_conv = use_extra_feature_conv
        self.dc_weight = nn.Parameter(torch.ones(1))
        self.input_norm = nn.InstanceNorm2d(chans)
        if use_extra_feature_conv:
            self.output_norm = nn.InstanceNorm2d(chans)
            self.output_conv = nn.Sequential(
                nn.Conv2d(chans, chans, kernel_size=5, padding=2, bias=False),
                nn.InstanceNorm2d(chans),
                nn.LeakyReLU(negative_slope=_SLOPE, inplace=True),
                nn.Conv2d(chans, chans, kernel_size=5, padding=2, bias=False),
                nn.InstanceNorm2d(chans),
                nn.LeakyReLU(negative_slope=_SLOPE, inplace=True),
            )
        self.zero: torch.Tensor
        self.register_buffer("zero", torch.zeros(1, 1, 1, 1, 1))  # fastMRI's state dict carries it

    def dc_term(self, features: torch.Tensor, ctx: _Context) -> torch.Tensor:
        """``dc_weight * Enc(E^H where(mask, E Dec(features) - k0, 0))``, ``(B, F, H, W)``."""
        est = physics.sens_expand(
            _to_complex(self.decoder(features, ctx.means, ctx.variances)), ctx.sens_maps
        )
        residual = physics.soft_data_consistency(est, ctx.ref_kspace, ctx.mask, 1.0)
        image = _to_channels(physics.sens_reduce(residual, ctx.sens_maps))
        return self.dc_weight * self.encoder(image, ctx.means, ctx.variances)

    def regulariser(self, features: torch.Tensor, crop: tuple[int, int] | None) -> torch.Tensor:
        """The U-Net on the centre ``crop`` of ``features``, written back into a copy of them (fastMRI's)."""
        if crop is None or tuple(crop) == tuple(features.shape[-2:]):
            out: torch.Tensor = self.feature_processor(features)
            return out
        rows, cols = (_crop_window(n, c) for n, c in zip(features.shape[-2:], crop, strict=True))
        processed = self.feature_processor(features[..., rows[0] : rows[1], cols[0] : cols[1]].contiguous())
        rows, cols = (_uncrop_window(n, c) for n, c in zip(features.shape[-2:], crop, strict=True))
        out = features.clone()
        out[..., rows[0] : rows[1], cols[0] : cols[1]] = processed
        return out

    def forward(self, features: torch.Tensor, ctx: _Context) -> torch.Tensor:
        """``(B, F, H, W)`` -> ``(B, F, H, W)``."""
        features = self.input_norm(features)
        updated = features - self.dc_term(features, ctx)
        if self.attention_layer is not None:
            features = self.attention_layer(features, self.acceleration)
        updated = updated - self.regulariser(features, ctx.crop)
        if self.use_image_conv:
            updated = self.output_norm(updated)
            updated = updated + self.output_conv(updated)
        return updated


class FeatureVarNet(ReconModel):
    """Feature-domain VarNet with ``cascade_counts = [LSKA feature, plain feature, image]`` cascades.

    The defaults are the 2025 GeekSeek configuration ([5, 10, 3], 12 feature channels, U-Nets of 24 channels and 4
    pools with LSKA k = 7, image cascades NormUnet 18 / 4, sens_chans 8). ``forward`` follows fastMRI's VarNet call
    and returns the RSS image, centre-cropped to ``crop_size`` when given.
    """

    def __init__(
        self,
        cascade_counts: Sequence[int] = (5, 10, 3),
        feature_chans: int = 12,
        unet_chans: int = 24,
        unet_pools: int = 4,
        image_chans: int = 18,
        image_pools: int = 4,
        sens_chans: int = 8,
        sens_pools: int = 4,
        mask_center: bool = True,
        lska_kernel: int = 7,
        lska_levels: int = 2,
        lska_clamp: float = 0.0,
        pe_attention: bool = False,
        acceleration: int = 4,
        image_conv_cascades: Sequence[int] | None = None,
        kspace_mult_factor: float = 1e6,
        crop_features: bool = True,
        use_checkpoint: bool = False,
    ) -> None:
        """Args:
        cascade_counts: ``[a, b, c]``: feature cascades with LSKA U-Nets, feature cascades with plain U-Nets,
            image-space E2E-VarNet cascades.
        feature_chans: channels of the feature space (encoder output).
        unet_chans, unet_pools: first-level width and pooling levels of the feature cascades' U-Nets.
        image_chans, image_pools: the same for the image cascades' NormUnets.
        sens_chans, sens_pools: the sensitivity U-Net's.
        mask_center: estimate sensitivities from the ACS block only.
        lska_kernel: LSKA effective kernel size (7, 11, 23, 35, 53) of the first ``a`` cascades.
        lska_levels: deepest encoder levels carrying LSKA besides the bottleneck (0..unet_pools).
        lska_clamp: clamp of the LSKA attention map (0: none).
        pe_attention: fastMRI's :class:`AttentionPE` before the U-Net of every feature cascade.
        acceleration: column grouping of :class:`AttentionPE` (fastMRI's FIVarNet argument).
        image_conv_cascades: feature cascades ending with two extra 5 x 5 convolutions (default: every third,
            0, 3, 6, ...).
        kspace_mult_factor: k-space scale inside the network (undone at the output).
        crop_features: run the feature U-Nets on the centre ``crop_size`` of the features only (fastMRI's); else
            on the whole field of view.
        use_checkpoint: recompute each cascade in the backward pass (activation checkpointing).
        """
        super().__init__()
        counts = [int(n) for n in cascade_counts]
        if len(counts) != 3 or min(counts) < 0 or counts[0] + counts[1] < 1:
            raise ValueError(
                f"cascade_counts must be [LSKA feature, plain feature, image] cascades (>= 0, at least one "
                f"feature cascade), got {list(cascade_counts)}"
            )
        if counts[0] and lska_kernel not in LSKA_DECOMPOSITIONS:
            raise ValueError(f"lska_kernel must be one of {sorted(LSKA_DECOMPOSITIONS)}, got {lska_kernel}")
        if counts[0] and not 0 <= lska_levels <= unet_pools:
            raise ValueError(f"lska_levels must be in [0, unet_pools = {unet_pools}], got {lska_levels}")
        if kspace_mult_factor <= 0 or not math.isfinite(kspace_mult_factor):
            raise ValueError(f"kspace_mult_factor must be a positive number, got {kspace_mult_factor}")
        num_feature = counts[0] + counts[1]
        if image_conv_cascades is None:
            image_conv_cascades = [i for i in range(num_feature) if i % 3 == 0]
        self.cascade_counts = counts
        self.image_conv_cascades = list(image_conv_cascades)
        self.kspace_mult_factor = kspace_mult_factor
        self.crop_features = crop_features
        self.use_checkpoint = use_checkpoint
        self.sens_net = SensitivityModel(sens_chans, sens_pools, mask_center=mask_center)
        self.encoder = FeatureEncoder(in_chans=2, feature_chans=feature_chans)
        self.decoder = FeatureDecoder(feature_chans=feature_chans, out_chans=2)
        self.cascades = nn.Sequential(
            *(
                FeatureBlock(
                    self.encoder,
                    self.decoder,
                    Unet2d(
                        feature_chans,
                        feature_chans,
                        chans=unet_chans,
                        num_pool_layers=unet_pools,
                        lska_kernel=lska_kernel if i < counts[0] else 0,
                        lska_levels=lska_levels,
                        lska_clamp=lska_clamp,
                    ),
                    AttentionPE(feature_chans) if pe_attention else None,
                    acceleration,
                    use_extra_feature_conv=i in self.image_conv_cascades,
                )
                for i in range(num_feature)
            )
        )
        self.image_cascades = nn.ModuleList(
            VarNetBlock(NormUnet(image_chans, image_pools)) for _ in range(counts[2])
        )
        self.decode_norm = nn.InstanceNorm2d(feature_chans)

    def full_image(
        self,
        masked_kspace: torch.Tensor,
        mask: torch.Tensor,
        num_low_frequencies: LowFreqs = None,
        crop_size: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """RSS image ``(B, H, W)`` of the whole field of view; ``crop_size`` only sets the feature U-Nets' crop."""
        k0 = physics.to_complex(masked_kspace) * self.kspace_mult_factor
        if k0.ndim != 4:
            raise ValueError(
                f"expected k-space (B, C, H, W) complex or (..., 2), got {tuple(masked_kspace.shape)}"
            )
        line_mask = broadcast_line_mask(mask, masked_kspace)
        sens_maps = self.sens_net(k0, line_mask, num_low_frequencies)
        image = _to_channels(physics.sens_reduce(k0, sens_maps))
        means, variances = _channel_stats(image)
        ctx = _Context(sens_maps, means, variances, line_mask, k0, self._feature_crop(image, crop_size))
        features = self.encoder(image, means, variances)
        for block in self.cascades:
            features = maybe_checkpoint(block, features, ctx, enabled=self.use_checkpoint)
        decoded = _to_complex(self.decoder(self.decode_norm(features), means, variances))
        kspace = physics.sens_expand(decoded, sens_maps)
        for cascade in self.image_cascades:
            kspace = maybe_checkpoint(cascade, kspace, k0, line_mask, sens_maps, enabled=self.use_checkpoint)
        return physics.rss_complex(physics.ifft2c(kspace / self.kspace_mult_factor), dim=1)

    def _feature_crop(self, image: torch.Tensor, crop_size: Sequence[int] | None) -> tuple[int, int] | None:
        """fastMRI's crop of the feature U-Nets: ``crop_size``, square of the image width when the image is
        narrower (its "FLAIR 203" rule), never larger than the image."""
        if crop_size is None or not self.crop_features:
            return None
        height, width = image.shape[-2:]
        crop = (int(crop_size[0]), int(crop_size[1]))
        if width < crop[1]:
            crop = (width, width)
        return min(crop[0], height), min(crop[1], width)

    def forward(
        self,
        masked_kspace: torch.Tensor,
        mask: torch.Tensor,
        num_low_frequencies: LowFreqs = None,
        crop_size: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Args:
            masked_kspace: ``(B, C, H, W, 2)`` float real view or ``(B, C, H, W)`` complex.
            mask: ``(B, 1, 1, W, 1)`` / ``(B, 1, 1, W)`` or any shape fastMRI accepts; bool or 0/1.
            num_low_frequencies: ACS width (int or ``(B,)``), None or 0 to detect from the mask.
            crop_size: ``(h, w)`` of the output (and of the feature U-Nets' crop).

        Returns:
            RSS magnitude ``(B, h, w)`` (``(B, H, W)`` without ``crop_size``), float32.
        """
        image = self.full_image(masked_kspace, mask, num_low_frequencies, crop_size)
        return image if crop_size is None else physics.center_crop(image, crop_size)


class FIVarNet(FeatureVarNet):
    """fastMRI's FIVarNet (``fastmri_examples/feature_varnet/feature_varnet.py``): ``num_cascades`` feature cascades
    with :class:`AttentionPE` and U-Nets of 32 channels, then ``num_cascades`` image cascades of width ``chans``.

    Same constructor arguments, state-dict names and outputs as the reference; like it, ``forward`` returns the
    whole field of view (``crop_size`` only sets the feature crop) and :meth:`reconstruct` crops to the output size.
    """

    def __init__(
        self,
        num_cascades: int = 12,
        sens_chans: int = 8,
        sens_pools: int = 4,
        chans: int = 18,
        pools: int = 4,
        acceleration: int = 4,
        mask_center: bool = True,
        image_conv_cascades: Sequence[int] | None = None,
        kspace_mult_factor: float = 1e6,
    ) -> None:
        super().__init__(
            cascade_counts=(0, num_cascades, num_cascades),
            feature_chans=chans,
            unet_chans=32,
            unet_pools=pools,
            image_chans=chans,
            image_pools=pools,
            sens_chans=sens_chans,
            sens_pools=sens_pools,
            mask_center=mask_center,
            pe_attention=True,
            acceleration=acceleration,
            image_conv_cascades=image_conv_cascades,
            kspace_mult_factor=kspace_mult_factor,
        )

    def forward(
        self,
        masked_kspace: torch.Tensor,
        mask: torch.Tensor,
        num_low_frequencies: LowFreqs = None,
        crop_size: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """fastMRI's call and result: the RSS image ``(B, H, W)`` of the whole field of view."""
        return self.full_image(masked_kspace, mask, num_low_frequencies, crop_size)

    def reconstruct(self, sample: ReconSample, size: Sequence[int] | None = None) -> torch.Tensor:
        """The image centre-cropped to ``size`` (default: the sample's output size), ``(B, h, w)``."""
        out = tuple(size) if size is not None else sample.output_size()
        image = self(sample.masked_kspace, sample.mask, sample.num_low_frequencies, crop_size=out)
        return physics.center_crop(image, out)
