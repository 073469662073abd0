"""L1-wavelet compressed sensing with ESPIRiT maps, solved by FISTA, in torch.

Method
------
``x = argmin 0.5 ||M F (S x) - y||^2 + lamda * s * ||W x||_1`` on the readout-cropped problem
(:mod:`kspacelab.classical.espirit` for the maps, the hybrid-space operator and the crop), with

* ``W`` an orthogonal periodic Daubechies wavelet transform (``vanishing_moments`` moments, filters computed
  here by spectral factorisation; ``levels`` levels, the coarsest approximation band is not penalised);
  complex coefficients are soft-thresholded on their magnitude. The image is zero-padded to a multiple of
  ``2 ** levels`` and circularly shifted by a random offset in every iteration (deterministic ``seed``), the
  usual remedy for the blocking of a non-translation-invariant wavelet.
* ``s`` the 99th percentile of ``|S^H z|`` per slice (``z`` the zero-filled coil images), so that ``lamda`` is
  relative to the image intensity and one value serves brain and knee scales; the threshold is at least
  ``noise_threshold`` times the measured noise level (below).
* FISTA with step 1 (``||A|| <= 1`` for unit-norm maps), ``iterations`` steps, started from ``warm_start``
  iterations of CG-SENSE (:func:`kspacelab.classical.sense.solve_sense`; 0: from ``S^H z``).
* Output as for SENSE: RSS of the coil images ``S x`` with the measured lines restored (``data_consistency``),
  or ``|x|``.

Defaults, chosen by leaderboard SSIM on the validation split of ``kspacelab simulate --preset demo --seed 0``
(35 slices; total = mean of acc4 and acc8; ``python benchmarks/tune_classical.py --data DIR --stage cs``,
ESPIRiT defaults; SENSE's default scores 0.9610 there, GRAPPA's 0.9151):

* lamda 1e-4 / 3e-4 / 1e-3 / 3e-3 (Daubechies 2 moments, 80 iterations from ``S^H z``): 0.9679 / 0.9699 /
  0.9650 / 0.9511; 4 instead of 2 vanishing moments at 3e-4: 0.9692 (and slower);
* warm start of 20 CG-SENSE iterations vs none (lamda 3e-4) after 20 / 40 / 60 / 80 FISTA iterations:
  0.9582 / 0.9639 / 0.9682 / 0.9706 vs 0.9408 / 0.9602 / 0.9670 / 0.9699;
* lamda 2e-4 / 3e-4 / 5e-4 with the warm start, 80 iterations: 0.9704 / 0.9706 / 0.9695.

These used ESPIRiT threshold 0.05; with the final 0.02 and the warm start, lamda 2e-4 / 3e-4 / 5e-4 after
40 / 60 / 80 iterations: 0.9610 / 0.9662 / 0.9699, 0.9613 / 0.9666 / 0.9700, 0.9611 / 0.9662 / 0.9689.

Chosen: lamda 3e-4, 2 vanishing moments, 4 levels, warm start 20, 80 iterations. The score still rises slowly
after 80 iterations (brain acc8); 80 keeps CS at about 1 s per demo slice on one core.

Noise-following threshold
-------------------------
The soft threshold is ``max(lamda * s, noise_threshold * sigma)`` per slice, ``sigma`` the noise standard
deviation estimated from the data (:mod:`kspacelab.classical.noise`; with unit-norm maps it is also the noise
level of a pixel of ``S^H z``). Noise-like aliasing grows with the noise, so the threshold must too; the label
keeps its noise, so only a fraction of ``sigma`` pays. ``noise_threshold`` 0 / 0.1 / 0.3 / 1 on the wire coils
with correlated noise of :mod:`kspacelab.data.wire_coils` (not the demo simulator), leaderboard SSIM: knee 4
coils SNR 20 acc4 0.926 / 0.951 / 0.943 / 0.920, brain 4 coils SNR 20 acc4 0.982 / 0.988 / 0.980 / 0.951, brain
6 coils SNR 20 acc8 0.895 / 0.910 / 0.891 / 0.859, knee 4 coils SNR 20 acc8 0.884 / 0.898 / 0.892 / 0.877, brain
16 coils SNR 100 acc8 0.948 / 0.948 / 0.946 / 0.930 -> 0.1. On the demo validation split ``lamda * s`` is 0.06 to
0.12 ``sigma``, so 0.1 changes only the noisiest slices (first two slices of four demo volumes: brain acc4
0.9950 -> 0.9964, the other three unchanged).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from kspacelab.classical.espirit import DEFAULT_ESPIRIT, EspiritConfig, PreparedSlices, prepare
from kspacelab.classical.sense import solve_sense

__all__ = ["cs_image", "daubechies_filter", "solve_cs", "wavelet_forward", "wavelet_inverse"]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

DEFAULT_LAMDA = 3e-4
DEFAULT_NOISE_THRESHOLD = 0.1
DEFAULT_ITERATIONS = 80
DEFAULT_LEVELS = 4
DEFAULT_VANISHING_MOMENTS = 2
DEFAULT_DATA_CONSISTENCY = True
DEFAULT_WARM_START = 20
WARM_START_LAMDA = 1e-3  # Tikhonov weight of the CG-SENSE warm start
SCALE_QUANTILE = 0.99


@functools.cache
def daubechies_filter(vanishing_moments: int) -> np.ndarray:
    """Orthonormal Daubechies low-pass filter with ``vanishing_moments`` vanishing moments (``2 N`` taps).

    Spectral factorisation: ``|H(w)|^2 = cos^{2N}(w/2) P(sin^2(w/2))`` with
    ``P(y) = sum_{k<N} binom(N-1+k, k) y^k``; the roots of ``P`` (as a polynomial in ``z = exp(iw)``) inside the
    unit circle give the minimum-phase factor. ``N = 1`` is Haar.

    Returns:
        float64 ``(2 N,)``, ``sum = sqrt(2)``, orthonormal to its even shifts.
    """
    n = int(vanishing_moments)
    if not 1 <= n <= 10:
        raise ValueError(f"vanishing_moments must lie in 1..10, got {vanishing_moments}")
    poly = np.polynomial.polynomial
    y_times_z = np.array([-0.25, 0.5, -0.25])  # z * sin^2(w/2) = (-1 + 2 z - z^2) / 4
    q = np.zeros(1)
    for k in range(n):
        term = math.comb(n - 1 + k, k) * poly.polypow(y_times_z, k)
        q = poly.polyadd(q, np.pad(term, (n - 1 - k, 0)))  # z^(n-1) y^k = z^(n-1-k) (z y)^k
    roots = poly.polyroots(q) if q.size > 1 else np.zeros(0)
    inside = roots[np.abs(roots) < 1]
    h = poly.polypow(np.array([1.0, 1.0]), n)
    for r in inside:
        h = poly.polymul(h, np.array([-r, 1.0]))
    h = np.real(h)
    return h * (math.sqrt(2.0) / h.sum())


def _filter_bank(
    vanishing_moments: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Analysis and synthesis weights for :func:`torch.nn.functional.conv1d`.

    Analysis: ``(2, 1, L)`` low-pass ``h`` and high-pass ``g[j] = (-1)^j h[L-1-j]``; band ``o`` of a periodic
    signal is ``y_o[k] = sum_j f_o[j] x[(2k + j) mod n]``. Synthesis (the adjoint, i.e. the inverse) in polyphase
    form: ``x[2m + e] = sum_o sum_q f_o[2q + e] y_o[(m - q) mod n/2]``, a stride-1 convolution of the bands with
    weights ``(2 phases, 2 bands, L/2)``.
    """
    h = daubechies_filter(vanishing_moments)
    g = ((-1.0) ** np.arange(h.size)) * h[::-1]
    bank = np.stack([h, g])  # (band, tap)
    synthesis = np.stack([bank[:, e::2][:, ::-1] for e in (0, 1)])  # [e, o, t] = f_o[2 (L/2 - 1 - t) + e]
    return (
        torch.tensor(bank[:, None, :], dtype=dtype, device=device),
        torch.tensor(np.ascontiguousarray(synthesis), dtype=dtype, device=device),
    )


def _analysis(x: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """One periodic analysis step along the last axis: ``(N, R, L)`` -> ``(N, R, 2, L/2)``."""
    n, r, length = x.shape
    taps = bank.shape[-1]
    padded = F.pad(x.reshape(n * r, 1, length), (0, taps - 1), mode="circular")
    return F.conv1d(padded, bank, stride=2).reshape(n, r, 2, length // 2)


def _synthesis(y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_analysis`: ``(N, R, 2, L/2)`` -> ``(N, R, L)`` (polyphase, see :func:`_filter_bank`)."""
    n, r, _, half = y.shape
    taps_half = weights.shape[-1]
    padded = F.pad(y.reshape(n * r, 2, half), (taps_half - 1, 0), mode="circular")
    phases = F.conv1d(padded, weights)  # (N*R, 2, L/2): even and odd samples
    return phases.transpose(1, 2).reshape(n, r, 2 * half)


def _dwt2(x: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """One 2-D level: ``(N, H, W)`` -> ``(N, 2, 2, H/2, W/2)`` bands indexed ``[row band, column band]``."""
    n, height, width = x.shape
    y = _analysis(x, bank)  # (N, H, 2, W/2)
    y = y.permute(0, 2, 3, 1).reshape(n * 2, width // 2, height)
    y = _analysis(y, bank)  # (N*2, W/2, 2, H/2)
    return y.reshape(n, 2, width // 2, 2, height // 2).permute(0, 3, 1, 4, 2)


def _idwt2(bands: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_dwt2`."""
    n, _, _, half_h, half_w = bands.shape
    y = bands.permute(0, 2, 4, 1, 3).reshape(n * 2, half_w, 2, half_h)
    y = _synthesis(y, weights)  # (N*2, W/2, H)
    y = y.reshape(n, 2, half_w, 2 * half_h).permute(0, 3, 1, 2)  # (N, H, 2, W/2)
    return _synthesis(y.reshape(n, 2 * half_h, 2, half_w), weights)


def usable_levels(height: int, width: int, levels: int, taps: int) -> int:
    """Largest ``l <= levels`` such that the coarsest level still has at least ``taps`` samples per axis."""
    n = 0
    while n < levels and min(height, width) >= taps * 2**n:
        n += 1
    return n


def wavelet_forward(
    x: torch.Tensor, levels: int, vanishing_moments: int = DEFAULT_VANISHING_MOMENTS
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Orthogonal periodic 2-D wavelet transform of a real ``(N, H, W)`` tensor (H, W divisible by ``2**levels``).

    Returns:
        the approximation band ``(N, H / 2**levels, W / 2**levels)`` and the bands of every level, finest first,
        each ``(N, 2, 2, h_l, w_l)`` indexed ``[row band, column band]``; band ``[0, 0]`` (the level's
        approximation, transformed further) is ignored by :func:`wavelet_inverse`.
    """
    bank, _ = _filter_bank(vanishing_moments, x.dtype, x.device)
    details = []
    approx = x
    for _ in range(levels):
        bands = _dwt2(approx, bank)
        approx = bands[:, 0, 0]
        details.append(bands)
    return approx, details


def _inverse_in_place(
    approx: torch.Tensor, details: list[torch.Tensor], vanishing_moments: int
) -> torch.Tensor:
    """:func:`wavelet_inverse` writing each level's approximation into band ``[0, 0]`` of ``details``."""
    _, weights = _filter_bank(vanishing_moments, approx.dtype, approx.device)
    x = approx
    for bands in reversed(details):
        bands[:, 0, 0] = x
        x = _idwt2(bands, weights)
    return x


def wavelet_inverse(
    approx: torch.Tensor, details: list[torch.Tensor], vanishing_moments: int = DEFAULT_VANISHING_MOMENTS
) -> torch.Tensor:
    """Inverse of :func:`wavelet_forward` (the inputs are not modified)."""
    return _inverse_in_place(approx, [d.clone() for d in details], vanishing_moments)


def _soft_threshold_complex(real: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Complex soft threshold of coefficients stored as ``(S, 2, ...)`` (real, imaginary); ``threshold`` ``(S,)``."""
    magnitude = torch.sqrt(real[:, 0] ** 2 + real[:, 1] ** 2)
    shape = (-1,) + (1,) * (magnitude.ndim - 1)
    scale = torch.clamp(1 - threshold.view(shape) / magnitude.clamp_min(torch.finfo(real.dtype).tiny), min=0)
    return real * scale[:, None]


def wavelet_shrink(
    image: torch.Tensor,
    threshold: torch.Tensor,
    levels: int,
    vanishing_moments: int,
    shift: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """``W^H soft(W x, threshold)`` for complex images ``(S, h, W)`` with a circular shift (module docstring).

    Args:
        image: ``(S, h, W)`` complex.
        threshold: ``(S,)`` absolute thresholds.
        levels: wavelet levels (already limited by :func:`usable_levels`).
        vanishing_moments: Daubechies order.
        shift: circular shift ``(rows, columns)`` of the padded image.
    """
    n, height, width = image.shape
    block = 2**levels
    pad_h, pad_w = (-height) % block, (-width) % block
    real = torch.view_as_real(image).permute(0, 3, 1, 2)  # (S, 2, h, W)
    real = F.pad(real, (0, pad_w, 0, pad_h))
    real = torch.roll(real, shifts=shift, dims=(-2, -1))
    approx, details = wavelet_forward(
        real.reshape(n * 2, height + pad_h, width + pad_w), levels, vanishing_moments
    )
    shrunk = [
        _soft_threshold_complex(d.reshape(n, 2, *d.shape[1:]), threshold).reshape(d.shape) for d in details
    ]
    out = _inverse_in_place(approx.clone(), shrunk, vanishing_moments)
    out = out.reshape(n, 2, height + pad_h, width + pad_w)
    out = torch.roll(out, shifts=(-shift[0], -shift[1]), dims=(-2, -1))[:, :, :height, :width]
    return torch.view_as_complex(out.permute(0, 2, 3, 1).contiguous())


def cs_image(
    kspace: ArrayT,
    mask: np.ndarray | torch.Tensor | Sequence[float],
    crop: tuple[int, int] | None = None,
    *,
    lamda: float = DEFAULT_LAMDA,
    noise_threshold: float = DEFAULT_NOISE_THRESHOLD,
    iterations: int = DEFAULT_ITERATIONS,
    levels: int = DEFAULT_LEVELS,
    vanishing_moments: int = DEFAULT_VANISHING_MOMENTS,
    data_consistency: bool = DEFAULT_DATA_CONSISTENCY,
    espirit: EspiritConfig = DEFAULT_ESPIRIT,
    acs: tuple[int, int] | None = None,
    seed: int = 0,
    warm_start: int = DEFAULT_WARM_START,
) -> ArrayT:
    """L1-wavelet compressed-sensing magnitude image with ESPIRiT maps (see the module docstring).

    Args:
        kspace: ``(C, H, W)`` or ``(S, C, H, W)`` complex k-space (numpy or torch), H the fully sampled readout,
            W the phase-encoding axis; unsampled columns are ignored. Any scale.
        mask: ``(W,)`` bool or 0/1 line mask with a fully sampled centre block of at least 3 lines.
        crop: output ``(h, w)``; the readout is cropped to ``min(H, h)`` rows first. ``None``: full ``(H, W)``.
        lamda: smallest L1 weight, relative to the 99th percentile of the zero-filled image magnitude (>= 0).
        noise_threshold: the weight is ``max(lamda * s, noise_threshold * sigma)`` per slice (module docstring;
            >= 0, 0: ``lamda * s`` only).
        iterations: FISTA iterations (>= 1).
        levels: wavelet levels (fewer where the image is too small).
        vanishing_moments: Daubechies order (1 = Haar, 4 = 8 taps).
        data_consistency: RSS of the coil images with the measured lines restored (default) or ``|x|``.
        espirit: ESPIRiT calibration settings.
        acs: ACS column range; default :func:`kspacelab.classical.grappa.detect_acs`.
        seed: seed of the random wavelet shifts (the result is deterministic for a seed).
        warm_start: CG-SENSE iterations for FISTA's starting image (0: start from ``S^H z``).

    Returns:
        float32 ``(h, w)`` or ``(S, h, w)``; numpy for numpy input, torch (same device) otherwise.

    Raises:
        ValueError: non-complex, mis-shaped or non-finite k-space, mask length != W, no ACS block, bad
            parameters.
    """
    if not lamda >= 0:
        raise ValueError(f"lamda must be >= 0, got {lamda}")
    if not noise_threshold >= 0:
        raise ValueError(f"noise_threshold must be >= 0, got {noise_threshold}")
    if iterations < 1 or levels < 0 or warm_start < 0:
        raise ValueError(
            f"iterations must be >= 1, levels and warm_start >= 0, got {iterations}, {levels}, {warm_start}"
        )
    daubechies_filter(vanishing_moments)  # validates the order
    prepared = prepare(kspace, mask, crop, espirit, acs)
    image = solve_cs(
        prepared,
        lamda,
        iterations,
        levels,
        vanishing_moments,
        seed,
        warm_start,
        noise_threshold=noise_threshold,
    )
    magnitude = prepared.model.coil_combined_rss(image, prepared.coil_images, data_consistency)
    return prepared.finish(magnitude)  # type: ignore[return-value]


def solve_cs(
    prepared: PreparedSlices,
    lamda: float,
    iterations: int,
    levels: int = DEFAULT_LEVELS,
    vanishing_moments: int = DEFAULT_VANISHING_MOMENTS,
    seed: int = 0,
    warm_start: int = 0,
    callback: Callable[[int, torch.Tensor], None] | None = None,
    noise_threshold: float = 0.0,
) -> torch.Tensor:
    """The complex CS image ``x`` ``(S, h, W)`` of prepared slices by FISTA (module docstring), started from
    ``S^H z`` or, with ``warm_start > 0``, from that many CG-SENSE iterations (Tikhonov weight
    :data:`WARM_START_LAMDA`); the soft threshold is ``max(lamda * s, noise_threshold * sigma)`` per slice;
    ``callback(i, x)`` sees every FISTA iterate."""
    model = prepared.model
    rhs = model.reduce(prepared.coil_images)
    start = solve_sense(prepared, WARM_START_LAMDA, warm_start) if warm_start > 0 else rhs
    _, height, width = rhs.shape
    n_levels = usable_levels(height, width, levels, 2 * vanishing_moments)
    scale = torch.quantile(rhs.abs().flatten(1).to(torch.float32), SCALE_QUANTILE, dim=1)
    sigma = prepared.noise_var.sqrt().to(device=scale.device, dtype=scale.dtype)
    threshold = torch.maximum(lamda * scale, noise_threshold * sigma)
    generator = torch.Generator().manual_seed(seed)
    block = 2**n_levels
    x = start
    v = start
    t = 1.0
    for i in range(iterations):
        step = v - (model.normal(v) - rhs)
        shift = torch.randint(0, block, (2,), generator=generator).tolist()
        x_new = wavelet_shrink(step, threshold, n_levels, vanishing_moments, (shift[0], shift[1]))
        t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        v = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, t = x_new, t_new
        if callback is not None:
            callback(i + 1, x)
    return x
