"""StylishNet: a texture-modulated U-Net generator with hard data consistency, for extreme single-coil undersampling.

Generator. The input is the zero-filled *complex* image at the full k-space grid ``(H, W)``, divided by the
normalisation scale of :func:`~kspacelab.models.singlecoil.intensity_stats` (2 channels: real, imaginary). A U-Net
encoder (:class:`~kspacelab.models.unet.ConvBlock`, average pooling) feeds a decoder whose every block is
``transposed conv -> concat skip -> 2 x (3x3 conv -> noise injection -> AdaIN -> LeakyReLU(0.2))``; a 1x1
convolution gives a complex residual added to the input. Noise injection is StyleGAN's per-pixel Gaussian noise
times a learned per-channel weight initialised to 0, sampled in training mode only (eval is deterministic).

Texture code. A :class:`TextureEncoder` (strided 3x3 convolutions, trained from scratch) maps a normalised
magnitude image of the output region ``(h, w)`` zero-padded onto the full grid ``(B, 1, H, W)`` to the posterior
``(mu, logvar)`` of a code: one ``style_dim`` vector per image, or with ``spatial_modulation`` a code map
``(B, style_dim, H / 8, W / 8)`` (rounded up) on the generator's grid that each decoder block's AdaIN resizes
(bilinear) to its resolution (per-pixel, SPADE-like modulation). Training encodes the target
(``texture_source="target"``, reparameterised sample); inference uses the prior mean 0, or with
``proxy_guidance`` the code of the proxy: the magnitude of the zero-filled image high-pass filtered (the measured
k-space within ``proxy_cutoff`` of the k-space radius removed, :func:`high_pass`). With ``proxy_guidance`` the
target is high-pass filtered the same way before encoding, so the encoder sees the same kind of input in
training and inference (:meth:`StylishNet.texture_input`).

Data consistency. The generated complex image's k-space takes the measured values at the sampled lines
(hard DC, on the full grid, in normalised units ``k0 / scale``), then magnitude, centre crop to ``(h, w)`` and
multiplication by ``scale``: the k-space of the output before magnitude and crop
(:attr:`GeneratorOutput.kspace`) equals the measured k-space at every sampled line.

Normalised units (``normalised``, ``target_normalised``, the losses, the discriminator): ``(x - shift) / scale``
with the statistics of the zero-filled magnitude (``meanstd``: mean and std; ``volume_max``: 0 and the volume's
maximum), as the other single-coil models.

Losses (functions): :func:`kl_divergence`, :func:`texture_l1` (L1 between fixed, parameter-free texture
statistics: local mean absolute responses of derivative and Laplacian filters at 3 scales,
:meth:`StylishNet.texture_features`; no pretrained network), :func:`generator_gan_loss` (non-saturating),
:func:`discriminator_loss`, and :func:`generator_losses` (L1 + 0.01 KL + texture L1 + 0.01 GAN).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from kspacelab import physics
from kspacelab.models.base import ReconSample
from kspacelab.models.singlecoil import SingleCoilInput, SingleCoilModel, check_normalization
from kspacelab.models.unet import ConvBlock, TransposeConvBlock, concat_skip, encode, encoder_blocks

__all__ = [
    "TEXTURE_SOURCES",
    "AdaIN",
    "GeneratorOutput",
    "NoiseInjection",
    "PatchDiscriminator",
    "StyledConv",
    "StylishNet",
    "TextureEncoder",
    "discriminator_loss",
    "generator_gan_loss",
    "generator_losses",
    "high_pass",
    "kl_divergence",
    "texture_l1",
]

TEXTURE_SOURCES = ("target", "proxy")
_SLOPE = 0.2
_EPS = 1e-5
#: scales (average-pooling factors) of the texture statistics
TEXTURE_SCALES = (1, 2, 4)


class GeneratorOutput(NamedTuple):
    """What :meth:`StylishNet.generate` returns.

    Attributes:
        image: magnitude ``(B, h, w)`` float at the data scale, after data consistency.
        normalised: the same image in normalised units, ``(B, 1, h, w)``.
        target_normalised: the sample's target in those units, ``(B, 1, h, w)``.
        mu: texture posterior mean, ``(B, style_dim)``, or with spatial modulation ``(B, style_dim, H', W')`` on the
            full k-space grid (:meth:`TextureEncoder.code_size` of ``(H, W)``).
        logvar: texture posterior log-variance, shaped as ``mu``.
        kspace: the k-space of the complex output before magnitude and crop, ``(B, 1, H, W, 2)`` float at the
            data scale (equals the measured k-space at the sampled lines).
    """

    image: torch.Tensor
    normalised: torch.Tensor
    target_normalised: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    kspace: torch.Tensor


def radial_frequency(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """Distance of each k-space sample of a centred ``(height, width)`` grid from the centre, relative to the
    k-space radius along each axis (1 at the middle of an edge), float32 ``(height, width)``."""
    ky = (torch.arange(height, device=device) - height // 2) / (height / 2)
    kx = (torch.arange(width, device=device) - width // 2) / (width / 2)
    return torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)


def high_pass(image: torch.Tensor, cutoff: float) -> torch.Tensor:
    """The image with the k-space inside ``cutoff`` of the k-space radius (:func:`radial_frequency`) set to 0.

    Args:
        image: ``(..., h, w)`` real or complex.
        cutoff: relative radius in [0, 1]; 0 keeps everything.

    Returns:
        complex ``(..., h, w)``.
    """
    kspace = physics.fft2c(image if image.is_complex() else image.to(torch.complex64))
    keep = radial_frequency(image.shape[-2], image.shape[-1], image.device) >= cutoff
    return physics.ifft2c(
        torch.where(keep, kspace, torch.zeros((), dtype=kspace.dtype, device=kspace.device))
    )


def _instance_norm(x: torch.Tensor) -> torch.Tensor:
    """Per-(sample, channel) zero mean, unit (biased) variance over ``H, W``; ``(B, C, H, W)``."""
    return F.instance_norm(x, eps=_EPS)


class AdaIN(nn.Module):
    """Adaptive instance normalisation: ``instance_norm(x) * scale + shift`` with ``(scale, shift)`` an affine map
    of the style: a ``(B, style_dim)`` vector (per channel; a linear layer) or, with ``spatial``, a code map
    ``(B, style_dim, h', w')`` upsampled (bilinear) to the features' size (per pixel; a 1x1 convolution).

    The affine map starts at ``scale = 1, shift = 0`` for a zero style (biases 1 and 0).
    """

    def __init__(self, channels: int, style_dim: int, spatial: bool = False) -> None:
        """Args:
        channels: feature channels ``C``.
        style_dim: code channels.
        spatial: per-pixel modulation from a code map instead of one vector.
        """
        super().__init__()
        self.channels = channels
        self.spatial = spatial
        self.affine: nn.Module = (
            nn.Conv2d(style_dim, 2 * channels, kernel_size=1)
            if spatial
            else nn.Linear(style_dim, 2 * channels)
        )
        bias: torch.Tensor = self.affine.bias  # type: ignore[assignment]
        with torch.no_grad():
            bias[:channels].fill_(1.0)
            bias[channels:].zero_()

    def modulation(self, style: torch.Tensor, size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, shift)``: ``(B, C, 1, 1)`` each for a vector style, ``(B, C, *size)`` for a code map."""
        if self.spatial:
            if style.ndim != 4:
                raise ValueError(f"spatial AdaIN needs a code map (B, D, h, w), got {tuple(style.shape)}")
            style = F.interpolate(style, size=tuple(size), mode="bilinear", align_corners=False)
            params = self.affine(style)
        else:
            if style.ndim != 2:
                raise ValueError(f"AdaIN needs a code vector (B, D), got {tuple(style.shape)}")
            params = self.affine(style)[:, :, None, None]
        return params[:, : self.channels], params[:, self.channels :]

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` features and a style -> ``(B, C, H, W)``."""
        scale, shift = self.modulation(style, x.shape[-2:])
        return _instance_norm(x) * scale + shift


class NoiseInjection(nn.Module):
    """StyleGAN noise: ``x + weight * n`` with ``n`` one standard-normal value per pixel (shared by the channels)
    and ``weight`` a learned per-channel scale initialised to 0. Training mode only: in eval mode ``x`` is
    returned unchanged, so reconstructions are deterministic."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> same."""
        if not self.training:
            return x
        noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], dtype=x.dtype, device=x.device)
        return x + self.weight * noise


class StyledConv(nn.Module):
    """3x3 convolution (no bias) -> noise injection (optional) -> AdaIN -> LeakyReLU(0.2)."""

    noise: nn.Module | None

    def __init__(self, in_chans: int, out_chans: int, style_dim: int, noise: bool, spatial: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, kernel_size=3, padding=1, bias=False)
        self.noise = NoiseInjection(out_chans) if noise else None
        self.adain = AdaIN(out_chans, style_dim, spatial)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W)`` -> ``(B, out_chans, H, W)``."""
        x = self.conv(x)
        if self.noise is not None:
            x = self.noise(x)
        return F.leaky_relu(self.adain(x, style), _SLOPE)


class StyledDecoderBlock(nn.Module):
    """Transposed-conv upsampling (``2 * out_chans -> out_chans``), concatenation with the skip, two
    :class:`StyledConv` stages."""

    def __init__(self, out_chans: int, style_dim: int, noise: bool, spatial: bool) -> None:
        super().__init__()
        self.up = TransposeConvBlock(2 * out_chans, out_chans)
        self.conv1 = StyledConv(2 * out_chans, out_chans, style_dim, noise, spatial)
        self.conv2 = StyledConv(out_chans, out_chans, style_dim, noise, spatial)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """``(B, 2C, H/2, W/2)`` and skip ``(B, C, H, W)`` -> ``(B, C, H, W)``."""
        x = concat_skip(self.up(x), skip)
        return self.conv2(self.conv1(x, style), style)


class TextureEncoder(nn.Module):
    """Texture code posterior of a normalised magnitude image: ``num_layers`` stride-2 3x3 convolutions with
    LeakyReLU(0.2) (channels ``chans * 2**i``), a 1x1 convolution to ``2 * style_dim`` channels, averaged over the
    image unless ``spatial``. Trained from scratch (no pretrained weights)."""

    def __init__(
        self,
        in_chans: int = 1,
        chans: int = 16,
        style_dim: int = 64,
        num_layers: int = 3,
        spatial: bool = False,
    ) -> None:
        super().__init__()
        self.style_dim = style_dim
        self.spatial = spatial
        self.num_layers = num_layers
        layers: list[nn.Module] = []
        cin = in_chans
        for i in range(num_layers):
            layers += [nn.Conv2d(cin, chans * 2**i, kernel_size=3, stride=2, padding=1), nn.LeakyReLU(_SLOPE)]
            cin = chans * 2**i
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(cin, 2 * style_dim, kernel_size=1)

    def code_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h', w')`` of the code map of an ``(height, width)`` image (spatial mode)."""
        for _ in range(self.num_layers):
            height, width = (height - 1) // 2 + 1, (width - 1) // 2 + 1
        return height, width

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 1, h, w)`` -> ``(mu, logvar)``, each ``(B, style_dim)`` or ``(B, style_dim, h', w')``."""
        params = self.head(self.features(image))
        if not self.spatial:
            params = params.mean(dim=(2, 3))
        return params[:, : self.style_dim], params[:, self.style_dim :]


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix): 4x4 convolutions, ``num_layers`` of stride 2 (channels ``chans *
    min(2**i, 8)``), one of stride 1, then a 4x4 convolution to one logit per patch; instance normalisation
    after every convolution but the first and the last, LeakyReLU(0.2). Input ``(B, in_chans, h, w)`` with
    ``h, w >= 2**(num_layers + 2)``, output logits ``(B, 1, h', w')``."""

    def __init__(self, in_chans: int = 1, chans: int = 64, num_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_chans, chans, 4, stride=2, padding=1), nn.LeakyReLU(_SLOPE)]
        width = chans
        for i in range(1, num_layers + 1):
            out = chans * min(2**i, 8)
            stride = 2 if i < num_layers else 1
            layers += [
                nn.Conv2d(width, out, 4, stride=stride, padding=1, bias=False),
                nn.InstanceNorm2d(out, affine=True),
                nn.LeakyReLU(_SLOPE),
            ]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, h, w)`` -> patch logits ``(B, 1, h', w')``."""
        out: torch.Tensor = self.layers(image)
        return out


def _texture_filters() -> torch.Tensor:
    """Fixed 3x3 filters ``(5, 1, 3, 3)``: horizontal and vertical central differences, the Laplacian and the
    two diagonal differences."""
    dx = torch.tensor([[0.0, 0.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]) / 2
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    diag = torch.tensor([[-1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]) / 2
    return torch.stack([dx, dx.T, lap, diag, diag.flip(1)]).unsqueeze(1)


class StylishNet(SingleCoilModel):
    """Texture-modulated U-Net generator with hard data consistency (module docstring).

    ``generate`` is the training call (texture code from the target, GAN and texture losses); ``reconstruct``
    (and ``forward``, the ReconModel call) return :attr:`GeneratorOutput.image` with the inference code (prior mean
    0, or the proxy's code with ``proxy_guidance``).
    """

    def __init__(
        self,
        chans: int = 32,
        num_pool_layers: int = 4,
        style_dim: int = 64,
        encoder_chans: int = 16,
        noise: bool = True,
        spatial_modulation: bool = False,
        proxy_guidance: bool = False,
        proxy_cutoff: float = 0.1,
        normalization: str = "meanstd",
    ) -> None:
        """Args:
        chans: first-level channels of the generator U-Net (doubling per level).
        num_pool_layers: down-sampling steps of the generator.
        style_dim: channels of the texture code.
        encoder_chans: first-level channels of the texture encoder.
        noise: noise injection in every decoder convolution.
        spatial_modulation: per-pixel code map (SPADE-like) instead of one code vector per image.
        proxy_guidance: at inference, take the texture code from the high-pass filtered zero-filled image (the
            target is filtered the same way in training).
        proxy_cutoff: relative k-space radius below which the proxy (and, with ``proxy_guidance``, the target)
            loses its content, in [0, 1).
        normalization: ``"meanstd"`` or ``"volume_max"`` (:mod:`kspacelab.models.singlecoil`).
        """
        super().__init__()
        if not 0.0 <= proxy_cutoff < 1.0:
            raise ValueError(f"proxy_cutoff must lie in [0, 1), got {proxy_cutoff!r}")
        self.normalization = check_normalization(normalization)
        self.style_dim = style_dim
        self.spatial_modulation = spatial_modulation
        self.proxy_guidance = proxy_guidance
        self.proxy_cutoff = proxy_cutoff
        widths = [chans * 2**level for level in range(num_pool_layers)]
        self.down = encoder_blocks(2, widths)
        self.bottleneck = ConvBlock(widths[-1], 2 * widths[-1])
        self.up = nn.ModuleList(
            StyledDecoderBlock(width, style_dim, noise, spatial_modulation) for width in reversed(widths)
        )
        self.out_conv = nn.Conv2d(chans, 2, kernel_size=1)
        self.encoder = TextureEncoder(1, encoder_chans, style_dim, spatial=spatial_modulation)
        self.register_buffer("texture_filters", _texture_filters(), persistent=False)

    # ------------------------------------------------------------------ generator

    def generator(self, image: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """Normalised complex image ``(B, 1, H, W)`` and texture code -> complex ``(B, 1, H, W)`` (input + residual,
        before data consistency)."""
        x = torch.cat([image.real, image.imag], dim=1)
        x, skips = encode(self.down, x)
        x = self.bottleneck(x)
        for block in self.up:
            x = block(x, skips.pop(), code)
        # back to float32 under autocast: the data consistency and the magnitude run in full precision
        residual = self.out_conv(x).to(image.real.dtype)
        return image + torch.complex(residual[:, :1], residual[:, 1:])

    def texture_input(self, batch: SingleCoilInput, target: torch.Tensor | None, source: str) -> torch.Tensor:
        """The texture encoder's input: an image of the output region ``(h, w)``, zero-padded onto the full
        k-space grid ``(B, 1, H, W)`` so that a spatial code map lies on the generator's grid.

        ``"target"``: the normalised target; with ``proxy_guidance`` the magnitude of its high-pass filtered image
        divided by the scale. ``"proxy"``: the magnitude of the high-pass filtered zero-filled image (filtered on
        the full grid, then cropped) divided by the scale. The filter removes the shift, so the proxy and the
        filtered target are in the same units.
        """
        stats = batch.stats.channel()
        region = tuple(batch.crop_size) if batch.crop_size is not None else batch.kspace.shape[-2:]
        if source == "target":
            if target is None:
                raise ValueError("texture_source='target' needs the sample's target")
            image = physics.center_crop(target, region).unsqueeze(1)
            if self.proxy_guidance:
                image = high_pass(image, self.proxy_cutoff).abs() / stats.scale
            else:
                image = stats.normalise(image)
        else:
            filtered = high_pass(physics.ifft2c(batch.kspace), self.proxy_cutoff)
            image = physics.center_crop(filtered, region).abs() / stats.scale
        return physics.center_crop(image, batch.kspace.shape[-2:])

    def texture_code(
        self, batch: SingleCoilInput, target: torch.Tensor | None, texture_source: str | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(code, mu, logvar)`` for ``texture_source`` (:meth:`generate`; ``target`` ``(B, h, w)`` at the data
        scale or None); the code is a reparameterised sample in training mode and ``mu`` in eval mode, and the
        prior mean 0 (``mu = logvar = 0``) when no source is used."""
        if texture_source is None:
            texture_source = "proxy" if self.proxy_guidance else None
        elif texture_source not in TEXTURE_SOURCES:
            raise ValueError(
                f"texture_source must be one of {TEXTURE_SOURCES} or None, got {texture_source!r}"
            )
        if texture_source is None:
            b, _, height, width = batch.kspace.shape
            code_size = self.encoder.code_size(height, width) if self.spatial_modulation else ()
            mu = batch.zero_filled.new_zeros((b, self.style_dim, *code_size))
            return mu, mu, mu
        mu, logvar = self.encoder(self.texture_input(batch, target, texture_source))
        code = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return code, mu, logvar

    def generate(
        self, sample: ReconSample, size: Sequence[int] | None = None, texture_source: str | None = None
    ) -> GeneratorOutput:
        """Generate a batch (module docstring).

        Args:
            sample: a collated single-coil batch (``masked_kspace (B, 1, H, W, 2)``, ``target (B, h, w)``,
                ``max_value (B,)``).
            size: output ``(h, w)``; default the sample's output size.
            texture_source: ``"target"`` (training), ``"proxy"`` (high-pass filtered zero-filled image) or None
                (inference: the proxy with ``proxy_guidance``, else the prior mean 0).
        """
        out = tuple(size) if size is not None else sample.output_size()
        batch = SingleCoilInput.of(
            sample.masked_kspace, sample.mask, out, self.normalization, sample.max_value
        )
        stats = batch.stats.channel()
        target_normalised = stats.normalise(physics.center_crop(sample.target, out).unsqueeze(1))
        code, mu, logvar = self.texture_code(batch, sample.target, texture_source)
        return self._finish(batch, code, mu, logvar, target_normalised)

    def _finish(
        self,
        batch: SingleCoilInput,
        code: torch.Tensor,
        mu: torch.Tensor,
        logvar: torch.Tensor,
        target_normalised: torch.Tensor,
    ) -> GeneratorOutput:
        """Generator, hard data consistency, magnitude, crop and the bookkeeping of the units."""
        stats = batch.stats.channel()
        k0 = batch.kspace / stats.scale  # normalised units (scale only: DC stays linear)
        generated = self.generator(physics.ifft2c(k0), code)
        kspace = torch.where(batch.mask, k0, physics.fft2c(generated))
        magnitude = physics.ifft2c(kspace).abs()
        if batch.crop_size is not None:
            magnitude = physics.center_crop(magnitude, batch.crop_size)
        image = magnitude * stats.scale
        return GeneratorOutput(
            image=image[:, 0],
            normalised=stats.normalise(image),
            target_normalised=target_normalised,
            mu=mu,
            logvar=logvar,
            kspace=physics.to_real_view(kspace * stats.scale),
        )

    def image(self, batch: SingleCoilInput) -> torch.Tensor:
        """The inference reconstruction ``(B, h, w)`` (:meth:`SingleCoilModel.image`; no target needed)."""
        code, mu, logvar = self.texture_code(batch, None, None)
        return self._finish(batch, code, mu, logvar, batch.zero_filled.unsqueeze(1)).image

    # ------------------------------------------------------------------ texture statistics

    def texture_features(self, image_normalised: torch.Tensor) -> list[torch.Tensor]:
        """Parameter-free texture statistics of ``(B, 1, h, w)`` at the scales :data:`TEXTURE_SCALES`: the local
        (3x3) mean of the absolute responses of :func:`_texture_filters` (borders replicated, so a constant offset
        gives no response), one ``(B, 5, h / s, w / s)`` per scale."""
        filters: torch.Tensor = self.texture_filters  # type: ignore[assignment]
        features = []
        for scale in TEXTURE_SCALES:
            x = F.avg_pool2d(image_normalised, scale) if scale > 1 else image_normalised
            response = F.conv2d(F.pad(x, [1, 1, 1, 1], mode="replicate"), filters.to(x.dtype)).abs()
            features.append(F.avg_pool2d(response, 3, stride=1, padding=1, count_include_pad=False))
        return features


# ---------------------------------------------------------------------- losses


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, 1))`` per code element, averaged over all elements (batch and code):
    ``mean(0.5 * (mu^2 + exp(logvar) - 1 - logvar))``; a scalar, 0 for ``mu = logvar = 0``."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).mean()


def texture_l1(model: StylishNet, output_n: torch.Tensor, target_n: torch.Tensor) -> torch.Tensor:
    """Mean over scales of the L1 distance between :meth:`StylishNet.texture_features` of the output and of the
    target (both ``(B, 1, h, w)`` normalised); a scalar."""
    pairs = zip(model.texture_features(output_n), model.texture_features(target_n), strict=True)
    losses = [F.l1_loss(out, ref) for out, ref in pairs]
    return torch.stack(losses).mean()


def generator_gan_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss ``mean(softplus(-D(G)))``; a scalar."""
    return F.softplus(-fake_logits).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss ``mean(softplus(-D(real))) + mean(softplus(D(fake)))``; a scalar."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_losses(
    model: StylishNet,
    output: GeneratorOutput,
    fake_logits: torch.Tensor,
    kl_weight: float = 0.01,
    texture_weight: float = 1.0,
    gan_weight: float = 0.01,
) -> dict[str, torch.Tensor]:
    """The generator's objective: ``l1`` (normalised output vs target) + ``kl_weight * kl`` + ``texture_weight *
    texture`` + ``gan_weight * gan``; returns the four terms and their weighted sum ``total`` (scalars)."""
    terms = {
        "l1": F.l1_loss(output.normalised, output.target_normalised),
        "kl": kl_divergence(output.mu, output.logvar),
        "texture": texture_l1(model, output.normalised, output.target_normalised),
        "gan": generator_gan_loss(fake_logits),
    }
    terms["total"] = (
        terms["l1"] + kl_weight * terms["kl"] + texture_weight * terms["texture"] + gan_weight * terms["gan"]
    )
    return terms
