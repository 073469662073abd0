"""ESPIRiT coil sensitivity maps and the SENSE forward model shared by SENSE and compressed sensing.

Readout crop
------------
Both model-based methods reconstruct the readout-cropped problem: the k-space is cropped in the image
domain to the output height ``h`` (:func:`kspacelab.physics.crop_readout`, what the learned models
do). The readout is fully sampled, so the SENSE problem is separable along it and the crop changes nothing
for the rows that are kept, while it halves the work on the 2x oversampled SNU files (``H = 2 h``).

ESPIRiT (Uecker et al., MRM 2014), in torch
--------------------------------------------
* Calibration block: the ACS columns (:func:`kspacelab.classical.grappa.detect_acs`) times the central
  ``calib_rows`` readout rows of the cropped k-space. Every ``kh x kw`` patch of it (all coils) is a vector of
  length ``F = C kh kw``; the signal subspace is spanned by the eigenvectors of ``sum_q p_q p_q^H`` whose
  singular values exceed ``threshold`` times the largest (eigen-decomposition of the ``F x F`` Gram matrix
  instead of an SVD of the tall calibration matrix; complex128).
* Kernel: ``kernel`` rows by ``min(kernel, n_acs // 2)`` columns, so that at least half of the ACS positions
  remain to calibrate on. Measured on the ellipse phantom of ``tests/test_grappa.py`` at acc4 (SENSE / zero-filled
  NRMSE): a 10-line ACS (W = 131, 8 coils) gives 1.02 with a 6 x 6 kernel, 0.13 with 5 x 5 and 0.10 with this
  rule's 6 x 5; a 9-line ACS (W = 100, 4 coils) 5.7 with 6 x 6, 0.19 with 4 x 4 and 0.20 with 6 x 4. ACS blocks
  of 12 lines or more (every demo and SNU file) keep 6 x 6.
* With ``P = U U^H`` the projector on that subspace, "project every patch and average the k^2 estimates of
  each sample" is a convolution of the multi-coil k-space, i.e. a ``C x C`` matrix ``G(x)`` per pixel:
  ``G_{c'c}(x) = sum_d h_{c'c}(d) exp(-2 pi i d . (x - x0) / N)`` with
  ``h_{c'c}(d) = (1 / (kh kw)) sum_{p' - p = d} P[(c', p), (c, p')]``, ``|d| < k`` per axis and ``x0 = N // 2``
  (the origin of the centred FFT). The sum over the ``(2 kh - 1)(2 kw - 1)`` lags is evaluated exactly with
  two small DFT matrices, in chunks of rows.
* True coil images satisfy ``G(x) m(x) = m(x)``: the maps are the eigenvector of ``G(x)`` with eigenvalue 1,
  found by ``iterations`` power iterations started from the low-resolution coil images (the ACS block alone,
  zero-filled), then rotated so that their inner product with those coil images is real and positive. The
  maps therefore carry the low-resolution phase of the object: the SENSE image ``x`` is nearly real, which
  helps the wavelet prior of compressed sensing and leaves magnitudes unchanged.
* Maps have unit norm per pixel; they are zeroed where the eigenvalue is below ``eig_crop``.

Defaults (:data:`DEFAULT_ESPIRIT`) were chosen by leaderboard SSIM on the validation split of
``kspacelab simulate --preset demo --seed 0`` (35 slices; total = mean of acc4 and acc8), scored with SENSE
(``python benchmarks/tune_classical.py --data DIR --stage espirit ...``; SENSE Tikhonov 1e-2, 20 iterations,
except for the last item):

* eigenvalue crop 0 vs 0.9 (kernel 6, 24 rows, threshold 0.02): 0.9153 vs 0.9344: without the crop SENSE
  spends its unknowns on the background;
* threshold 0.01 / 0.02 / 0.05 (crop 0.9): 0.9323 / 0.9344 / 0.9380; kernel 4 vs 6 (threshold 0.05):
  0.9325 vs 0.9380; 24 vs 48 calibration rows: 0.9380 vs 0.9380 (24: cheaper);
* threshold x crop (kernel 6): 0.05 with crop 0.8 / 0.9 / 0.95: 0.9334 / 0.9380 / 0.9391; 0.1: 0.9386 /
  0.9333 / 0.8915; 0.2: 0.9009 / 0.7995 / 0.6643; kernel 8, threshold 0.05: 0.9380 / 0.9175 / 0.9003. Too
  aggressive a crop cuts anatomy (knee acc8 falls first);
* power iterations 4 vs 12 (SENSE 1e-3, 40 iterations): 0.9610 vs 0.9611 -> 4 (the start is already close);
* with the final SENSE (1e-3, 40 iterations), threshold 0.01 / 0.02 / 0.05 x crop 0.7 / 0.8 / 0.9:
  0.9452 / 0.9476 / 0.9523 (crop 0.7), 0.9488 / 0.9519 / 0.9564 (0.8), 0.9551 / 0.9579 / 0.9610 (0.9).

Chosen: kernel 6, 24 rows, threshold 0.02, crop 0.9, 4 power iterations. Threshold 0.05 scored 0.0031 more on
the demo split but cut holes into the object of the test phantom with an 11-line ACS and a 6 x 6 kernel (4 %
of the object's pixels below the crop; SENSE / zero-filled NRMSE 0.99 instead of 0.21); 0.02 is also sigpy's
default.

Forward model (hybrid space)
----------------------------
After the inverse FFT along the readout, every row is an independent 1-D problem along ``W``:
``A x = M F_W (S x)``, with ``F_W`` the centred orthonormal FFT along ``W`` and ``M`` the line mask.
``A^H A x = S^H P_M (S x)`` where ``P_M u = F_W^H M F_W u`` keeps the measured lines of coil images ``u``;
:class:`SenseModel` applies it with 1-D FFTs only. With unit-norm maps ``||A|| <= 1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kspacelab.classical.grappa import MIN_ACS_WIDTH, detect_acs
from kspacelab.classical.noise import noise_variance
from kspacelab.classical.zero_filled import as_complex_kspace, as_line_mask
from kspacelab.physics import center_crop, crop_readout, ifft2c, rss_complex

__all__ = [
    "DEFAULT_ESPIRIT",
    "EspiritConfig",
    "PreparedSlices",
    "SenseModel",
    "conjugate_gradient",
    "espirit_maps",
    "prepare",
]

_CHUNK_ELEMENTS = 1 << 23  # complex entries of the per-pixel matrices G(x) held at once (64 MiB)


@dataclass(frozen=True)
class EspiritConfig:
    """ESPIRiT calibration settings.

    Attributes:
        kernel: kernel size in k-space samples (both axes; the phase-encoding size is capped at half the ACS
            width, see the module docstring).
        calib_rows: readout rows of the calibration block (centred on the DC row; capped at the height).
        threshold: singular-value threshold of the signal subspace, relative to the largest singular value.
        eig_crop: maps are set to zero where the eigenvalue of ``G(x)`` is below this (0: keep everywhere).
        iterations: power iterations for the leading eigenvector.
    """

    kernel: int = 6
    calib_rows: int = 24
    threshold: float = 0.02
    eig_crop: float = 0.9
    iterations: int = 4

    def __post_init__(self) -> None:
        if self.kernel < 1 or self.calib_rows < 1 or self.iterations < 1:
            raise ValueError(f"kernel, calib_rows and iterations must be >= 1, got {self}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold}")
        if not 0 <= self.eig_crop < 1:
            raise ValueError(f"eig_crop must lie in [0, 1), got {self.eig_crop}")


DEFAULT_ESPIRIT = EspiritConfig()


def _signal_projector(calib: torch.Tensor, kh: int, kw: int, threshold: float) -> torch.Tensor:
    """Projector ``U U^H`` on the signal subspace of the calibration patches.

    Args:
        calib: ``(S, C, rh, rw)`` complex calibration block.
        kh, kw: kernel size.
        threshold: relative singular-value threshold.

    Returns:
        ``(S, F, F)`` complex128, features ordered ``(coil, row, column)``.
    """
    n_slices, n_coils = calib.shape[:2]
    patches = calib.to(torch.complex128).unfold(2, kh, 1).unfold(3, kw, 1)  # (S, C, nh, nw, kh, kw)
    n_feat = n_coils * kh * kw
    rows = patches.permute(0, 2, 3, 1, 4, 5).reshape(n_slices, -1, n_feat)  # one patch per row
    gram = rows.transpose(-1, -2) @ rows.conj()  # sum_q p_q p_q^H
    gram = 0.5 * (gram + gram.mH)
    evals, evecs = torch.linalg.eigh(gram)  # ascending; eigenvalues are squared singular values
    keep = evals > (threshold**2) * evals[..., -1:].clamp_min(torch.finfo(torch.float64).tiny)
    basis = evecs * keep[:, None, :]
    return basis @ basis.mH


def _lag_kernel(projector: torch.Tensor, n_coils: int, kh: int, kw: int) -> torch.Tensor:
    """``h_{c'c}(d)`` of the module docstring: ``(S, C, C, 2 kh - 1, 2 kw - 1)`` complex128."""
    n_slices = projector.shape[0]
    p = projector.reshape(n_slices, n_coils, kh, kw, n_coils, kh, kw).permute(0, 1, 4, 2, 5, 3, 6)
    p = p.reshape(n_slices, n_coils, n_coils, kh * kh, kw * kw)
    device = projector.device
    lag_h = (torch.arange(kh, device=device)[None, :] - torch.arange(kh, device=device)[:, None]).reshape(-1)
    lag_w = (torch.arange(kw, device=device)[None, :] - torch.arange(kw, device=device)[:, None]).reshape(-1)
    out = p.new_zeros(n_slices, n_coils, n_coils, 2 * kh - 1, kw * kw).index_add_(3, lag_h + kh - 1, p)
    out = out.new_zeros(n_slices, n_coils, n_coils, 2 * kh - 1, 2 * kw - 1).index_add_(4, lag_w + kw - 1, out)
    return out / (kh * kw)


def _lag_dft(size: int, k: int, device: torch.device) -> torch.Tensor:
    """``exp(-2 pi i d (x - size // 2) / size)`` for ``x < size``, ``|d| < k`` -> ``(size, 2k - 1)`` complex64."""
    x = torch.arange(size, dtype=torch.float64, device=device) - size // 2
    d = torch.arange(-(k - 1), k, dtype=torch.float64, device=device)
    angle = (-2.0 * math.pi / size) * torch.outer(x, d)
    return torch.polar(torch.ones_like(angle), angle).to(torch.complex64)


def _espirit_chunk(
    lags: torch.Tensor, e_h: torch.Tensor, e_w: torch.Tensor, start: torch.Tensor, iterations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Leading eigenvector and eigenvalue of ``G(x)`` for a block of rows.

    Args:
        lags: ``(S, C, C, A, B)`` complex64 lag kernel.
        e_h: ``(r, A)`` DFT rows of the block; ``e_w``: ``(W, B)``.
        start: ``(S, C, r, W)`` starting vectors (low-resolution coil images).

    Returns:
        maps ``(S, C, r, W)`` (unit norm, phase of ``start``) and eigenvalues ``(S, r, W)``.
    """
    g = (e_h @ lags @ e_w.transpose(0, 1)).permute(0, 3, 4, 1, 2).contiguous()  # (S, r, W, C, C)
    tiny = torch.finfo(torch.float32).tiny
    start_px = start.permute(0, 2, 3, 1).unsqueeze(-1)  # (S, r, W, C, 1): one vector per pixel
    v = start_px / rss_complex(start_px, dim=-2).clamp_min(tiny)[..., None, :]
    for i in range(iterations):
        v = g @ v
        if i % 4 == 3 or i == iterations - 1:  # eigenvalues lie in [0, 1]: normalising now and then suffices
            v = v / rss_complex(v, dim=-2).clamp_min(tiny)[..., None, :]
    eig = (v.conj() * (g @ v)).sum((-2, -1)).real
    inner = (v.conj() * start_px).sum((-2, -1))  # rotate v so that <v, start> is real and positive
    magnitude = inner.abs()
    rotation = torch.where(magnitude > 0, inner / magnitude.clamp_min(tiny), torch.ones_like(inner))
    maps = (v.squeeze(-1) * rotation[..., None]).permute(0, 3, 1, 2)
    return maps, eig


def espirit_maps(
    kspace: torch.Tensor,
    acs: tuple[int, int],
    config: EspiritConfig = DEFAULT_ESPIRIT,
    return_eigenvalues: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """ESPIRiT sensitivity maps from the ACS block of multi-coil k-space (see the module docstring).

    Args:
        kspace: ``(S, C, H, W)`` complex64 torch k-space (any device); only the ACS columns are read.
        acs: ``(start, stop)`` fully sampled column range.
        config: calibration settings.
        return_eigenvalues: also return the eigenvalue map.

    Returns:
        maps ``(S, C, H, W)`` complex64, unit norm per pixel (zero where the eigenvalue is below
        ``config.eig_crop``); with ``return_eigenvalues`` also ``(S, H, W)`` float32 eigenvalues (about 1 where
        there is signal).

    Raises:
        ValueError: an ACS block narrower than ``MIN_ACS_WIDTH`` columns or outside ``0..W``.
    """
    n_slices, n_coils, height, width = kspace.shape
    start, stop = int(acs[0]), int(acs[1])
    if not (0 <= start < stop <= width) or stop - start < MIN_ACS_WIDTH:
        raise ValueError(f"acs must be a range of >= {MIN_ACS_WIDTH} columns inside 0..{width}, got {acs}")
    rows = min(config.calib_rows, height)
    r0 = height // 2 - rows // 2
    calib = kspace[:, :, r0 : r0 + rows, start:stop]
    kh, kw = min(config.kernel, rows), max(1, min(config.kernel, (stop - start) // 2))
    lags = _lag_kernel(_signal_projector(calib, kh, kw, config.threshold), n_coils, kh, kw).to(
        torch.complex64
    )

    low = torch.zeros_like(kspace)
    low[:, :, :, start:stop] = kspace[:, :, :, start:stop]
    low_images = ifft2c(low)
    e_h = _lag_dft(height, kh, kspace.device)
    e_w = _lag_dft(width, kw, kspace.device)
    step = max(1, _CHUNK_ELEMENTS // max(1, n_slices * n_coils * n_coils * width))
    maps, eigs = [], []
    for r in range(0, height, step):
        v, eig = _espirit_chunk(
            lags, e_h[r : r + step], e_w, low_images[:, :, r : r + step], config.iterations
        )
        maps.append(v)
        eigs.append(eig)
    out = torch.cat(maps, dim=2)
    eigenvalues = torch.cat(eigs, dim=1).to(torch.float32)
    if config.eig_crop > 0:
        out = out * (eigenvalues >= config.eig_crop)[:, None]
    return (out, eigenvalues) if return_eigenvalues else out


class SenseModel:
    """Hybrid-space SENSE model on readout-cropped data (module docstring).

    Args:
        maps: ``(S, C, h, W)`` complex64 unit-norm sensitivity maps.
        mask: ``(W,)`` bool sampled lines (centred k-space order).
    """

    def __init__(self, maps: torch.Tensor, mask: torch.Tensor) -> None:
        self.maps = maps
        self.mask = mask
        # the centred FFT is fftshift(fft(ifftshift(.))); keep k-space in unshifted order inside P_M
        self._mask_unshifted = torch.fft.ifftshift(mask.to(maps.real.dtype), dim=-1)

    def measured_part(self, coil_images: torch.Tensor) -> torch.Tensor:
        """``P_M u``: the part of coil images ``u`` (``(S, C, h, W)``) that the measured lines carry."""
        k = torch.fft.fft(torch.fft.ifftshift(coil_images, dim=-1), dim=-1, norm="ortho")
        return torch.fft.fftshift(torch.fft.ifft(k * self._mask_unshifted, dim=-1, norm="ortho"), dim=-1)

    def expand(self, image: torch.Tensor) -> torch.Tensor:
        """``S x``: ``(S, h, W)`` -> coil images ``(S, C, h, W)``."""
        return self.maps * image[:, None]

    def reduce(self, coil_images: torch.Tensor) -> torch.Tensor:
        """``S^H u``: ``(S, C, h, W)`` -> ``(S, h, W)``."""
        return (self.maps.conj() * coil_images).sum(1)

    def normal(self, image: torch.Tensor) -> torch.Tensor:
        """``A^H A x = S^H P_M S x`` for ``(S, h, W)`` images."""
        return self.reduce(self.measured_part(self.expand(image)))

    def coil_combined_rss(
        self, image: torch.Tensor, coil_images: torch.Tensor, data_consistency: bool
    ) -> torch.Tensor:
        """Output magnitude ``(S, h, W)`` float32.

        Args:
            image: the reconstructed ``(S, h, W)`` image ``x``.
            coil_images: zero-filled coil images of the measured data ``(S, C, h, W)``.
            data_consistency: replace the measured lines of ``S x`` by the data and return the RSS of the coil
                images (exactly the zero-filled RSS, i.e. the label, on fully sampled data); else ``|x|``.
        """
        if not data_consistency:
            return image.abs().to(torch.float32)
        estimate = self.expand(image)
        return rss_complex(estimate - self.measured_part(estimate) + coil_images, dim=1).to(torch.float32)


def _vdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-slice ``Re <a, b>`` of ``(S, ...)`` complex tensors -> ``(S, 1, 1)`` float."""
    return (a.conj() * b).real.flatten(1).sum(1)[:, None, None]


def conjugate_gradient(
    normal: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    x0: torch.Tensor,
    iterations: int,
    tolerance: float = 0.0,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Conjugate gradient for ``N x = rhs`` with Hermitian positive (semi-)definite ``N``, batched per slice.

    Args:
        normal: callable ``(S, h, W) -> (S, h, W)``.
        rhs, x0: ``(S, h, W)`` complex.
        iterations: maximal number of iterations.
        tolerance: stop when every slice's residual norm is below ``tolerance`` times its initial norm.
        callback: called as ``callback(i, x)`` after iteration ``i = 1, 2, ...`` (e.g. to score every iterate).
    """
    x = x0
    r = rhs - normal(x)
    p = r
    rs = _vdot(r, r)
    rs0 = rs
    for i in range(iterations):
        ap = normal(p)
        denom = _vdot(p, ap)
        alpha = torch.where(denom > 0, rs / denom.clamp_min(torch.finfo(rs.dtype).tiny), 0.0)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = _vdot(r, r)
        if callback is not None:
            callback(i + 1, x)
        if bool((rs_new <= (tolerance**2) * rs0).all()):
            break
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(torch.finfo(rs.dtype).tiny), 0.0)
        p = r + beta * p
        rs = rs_new
    return x


@dataclass
class PreparedSlices:
    """Readout-cropped, validated input of a SENSE-type reconstruction.

    Attributes:
        model: the SENSE model with ESPIRiT maps.
        coil_images: zero-filled coil images ``(S, C, h, W)`` complex64 of the masked, cropped k-space.
        crop: the requested output size ``(h, w)`` or ``None`` (full cropped size).
        single: the input was one slice ``(C, H, W)``.
        was_numpy: the input was a numpy array.
        noise_var: ``(S,)`` float64 noise variance of one complex k-space sample (mean over coils), estimated
            on the full readout before the crop (:func:`kspacelab.classical.noise.noise_variance`); the same per
            pixel of the coil images and of ``S^H z`` (orthonormal FFT, unit-norm maps).
    """

    model: SenseModel
    coil_images: torch.Tensor
    crop: tuple[int, int] | None
    single: bool
    was_numpy: bool
    noise_var: torch.Tensor

    def noise_to_signal(self) -> torch.Tensor:
        """``sigma^2 / P`` per slice ``(S,)`` float64: the noise variance over the mean image power ``P`` per
        pixel, ``P = mean_pixels sum_c |z_c|^2 - C f sigma^2`` (``z`` the zero-filled coil images, ``f`` the
        sampled fraction of the lines, so the measured noise's share is removed). For unit-norm maps ``P`` is
        the mean of ``|x|^2`` over the field of view: the ratio is the Wiener (MAP) Tikhonov weight of a white
        Gaussian image prior."""
        images = self.coil_images
        n_coils = images.shape[1]
        fraction = float(self.model.mask.to(torch.float64).mean())
        power = images.abs().square().sum(1).mean((-2, -1)).to(torch.float64)
        signal = (power - n_coils * fraction * self.noise_var).clamp_min(torch.finfo(torch.float64).tiny)
        return self.noise_var / signal

    def finish(self, magnitude: torch.Tensor) -> np.ndarray | torch.Tensor:
        """Crop ``(S, h, W)`` magnitudes to ``crop``, drop the slice axis for one slice, return the input type."""
        out = center_crop(magnitude, self.crop) if self.crop is not None else magnitude
        out = out[0] if self.single else out
        return out.detach().cpu().numpy() if self.was_numpy else out


def prepare(
    kspace: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor | Sequence[float],
    crop: tuple[int, int] | None,
    config: EspiritConfig,
    acs: tuple[int, int] | None = None,
) -> PreparedSlices:
    """Validate, mask and readout-crop k-space, estimate ESPIRiT maps and build the SENSE model.

    Args:
        kspace: ``(C, H, W)`` or ``(S, C, H, W)`` complex k-space (numpy or torch); unsampled columns are
            ignored (multiplied by the mask).
        mask: ``(W,)`` bool or 0/1 line mask.
        crop: output size ``(h, w)``; the readout is cropped to ``min(H, h)`` rows first. ``None``: no crop.
        config: ESPIRiT settings.
        acs: ACS column range; default :func:`kspacelab.classical.grappa.detect_acs`.

    Raises:
        ValueError: non-complex, mis-shaped or non-finite k-space, mask length != W, no ACS block.
    """
    k, was_numpy = as_complex_kspace(kspace)
    width = k.shape[-1]
    line = as_line_mask(mask, width)
    if not bool(torch.isfinite(torch.view_as_real(k)).all()):
        raise ValueError("kspace contains NaN or infinite values")
    if acs is None:
        acs = detect_acs(line)
    single = k.ndim == 3
    k4 = k.unsqueeze(0) if single else k
    mask_t = torch.from_numpy(line).to(k4.device)
    k4 = k4 * mask_t
    noise_var = noise_variance(k4, line)
    if crop is not None:
        k4 = crop_readout(k4, int(crop[0]))
    maps = espirit_maps(k4, acs, config)
    assert isinstance(maps, torch.Tensor)
    coil_images = ifft2c(k4)
    crop_t = (int(crop[0]), int(crop[1])) if crop is not None else None
    return PreparedSlices(SenseModel(maps, mask_t), coil_images, crop_t, single, was_numpy, noise_var)
