"""A second acquisition model, independent of the simulator's, to check the classical methods on.

:mod:`kspacelab.data.synthetic` uses loop coils (magnetic dipoles) and white noise. Here:

* coils are straight conductors parallel to B0 (the rungs of a birdcage-like array, one per coil) on an ellipse
  around the object; the Biot-Savart field of an infinite wire at in-plane distance ``r`` is tangential with
  magnitude ``1 / r``, and the receive sensitivity is its circularly polarised component ``B_x - i B_y`` times a
  random phase per coil (complex, smooth, strongest next to the rung);
* the noise is complex Gaussian, correlated across coils with a random covariance ``Psi = L L^H`` (``L`` lower
  triangular, random complex off-diagonal entries, diagonal spread 0.6..1.4), the same for every k-space sample;
* the object is real anatomy (:func:`kspacelab.data.phantoms.brain_volume` / ``knee_volume``) times a smooth phase,
  in the central ``H / 2`` rows of a 2x oversampled readout, like the challenge files.

The image SNR is ``mean(RSS of the noise-free coil images over the object) / sqrt(trace Psi)``: the object's
mean intensity over the noise level of the coil-combined image. The result is scaled so that the label's 99.5th
percentile is 0.8 times the real data's typical maximum (brain 5e-4, knee 1.15e-4), so the leaderboard foreground
thresholds behave as on real files (a percentile, not the maximum: a few bright pixels would darken the rest).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from kspacelab import metrics
from kspacelab.challenge import BRAIN, Anatomy
from kspacelab.data.phantoms import brain_volume, knee_volume, smooth_field
from kspacelab.masks import snu_mask
from kspacelab.physics import center_crop, fft2c, rss_complex

__all__ = ["NoisySlice", "noise_covariance", "score_methods", "simulate_slice", "wire_maps"]

_MAX_VALUE = {"brain": 5.0e-4, "knee": 1.15e-4}
_BRIGHT = (
    0.8  # the label's 99.5th percentile, relative to the typical maximum (robust to a few bright pixels)
)


@dataclass(frozen=True)
class NoisySlice:
    """One simulated slice.

    Attributes:
        kspace: ``(C, H, W)`` complex64 fully sampled noisy k-space.
        mask: ``(W,)`` bool organiser mask of ``acc``.
        label: ``(h, w)`` float32 RSS of the noisy coil images, centre crop.
        max_value: the label's maximum (the file attr ``max``).
        anatomy: ``"brain"`` or ``"knee"``.
        noise_std: ``sqrt(trace(Psi) / C)``, the noise standard deviation of one complex k-space sample
            (averaged over coils), in the units of ``kspace``.
    """

    kspace: np.ndarray
    mask: np.ndarray
    label: np.ndarray
    max_value: float
    anatomy: Anatomy
    noise_std: float


def wire_maps(rng: np.random.Generator, n_coils: int, height: int, width: int) -> np.ndarray:
    """Sensitivities ``(C, H, W)`` complex64 of ``n_coils`` straight wires on an ellipse around the object.

    The object fills about the central ``H / 2`` rows and ``0.9 W`` columns; the wires sit 1.15..1.3 times its
    semi-axes from the centre. Maps are scaled so that their RSS averages 1 over the object's ellipse.
    """
    semi_r, semi_c = height / 4, 0.45 * width
    spread = rng.uniform(1.15, 1.3)
    theta = (
        rng.uniform(0, 2 * np.pi)
        + 2 * np.pi * (np.arange(n_coils) + rng.uniform(-0.15, 0.15, n_coils)) / n_coils
    )
    rows = height / 2 + spread * semi_r * np.sin(theta)
    cols = width / 2 + spread * semi_c * np.cos(theta)
    y = np.arange(height, dtype=np.float64)[:, None]
    x = np.arange(width, dtype=np.float64)[None, :]
    maps = np.empty((n_coils, height, width), dtype=np.complex128)
    for c in range(n_coils):
        dy, dx = y - rows[c], x - cols[c]
        r2 = dx * dx + dy * dy + 1.0
        # B of a wire along z: (-dy, dx) / r^2 (x = column, y = row)
        bx, by = -dy / r2, dx / r2
        maps[c] = (bx - 1j * by) * np.exp(1j * rng.uniform(-np.pi, np.pi))
    inside = ((y - height / 2) / semi_r) ** 2 + ((x - width / 2) / semi_c) ** 2 <= 1.0
    rss = np.sqrt((np.abs(maps) ** 2).sum(0))
    return (maps / rss[inside].mean()).astype(np.complex64)


def noise_covariance(rng: np.random.Generator, n_coils: int) -> np.ndarray:
    """Random Hermitian positive definite coil noise covariance ``(C, C)`` complex128 with ``trace = C``."""
    lower = np.tril(
        rng.normal(0, 0.25, (n_coils, n_coils)) + 1j * rng.normal(0, 0.25, (n_coils, n_coils)), -1
    )
    lower += np.diag(rng.uniform(0.6, 1.4, n_coils))
    psi = lower @ lower.conj().T
    return psi * (n_coils / np.trace(psi).real)


def simulate_slice(
    anatomy: Anatomy,
    n_coils: int,
    snr: float,
    acc: int,
    seed: int,
    shape: tuple[int, int] = (256, 160),
    crop: tuple[int, int] = (128, 128),
) -> NoisySlice:
    """One noisy multi-coil slice of real anatomy with wire coils and correlated noise (module docstring).

    Args:
        anatomy: ``"brain"`` (MNI152 template) or ``"knee"`` (the simulator's knee-class stand-in).
        n_coils: number of coils.
        snr: image SNR (> 0).
        acc: acceleration of the organiser mask.
        seed: random seed (object, coils, covariance and noise).
        shape: ``(H, W)`` of the k-space; the object lies in the central ``H / 2`` rows.
        crop: label size ``(h, w)``.
    """
    if snr <= 0 or n_coils < 1:
        raise ValueError(f"snr must be > 0 and n_coils >= 1, got {snr} and {n_coils}")
    rng = np.random.default_rng([seed, n_coils, round(snr * 100), acc, int(anatomy == BRAIN)])
    height, width = shape
    volume = brain_volume if anatomy == BRAIN else knee_volume
    obj = volume(rng, height, width, 1)
    phase = rng.uniform(0.5, 1.5) * smooth_field(rng, (height, width), (3, 3))
    image = obj.magnitude[0] * np.exp(1j * phase)
    coil_images = wire_maps(rng, n_coils, height, width) * image[None]
    signal = float(np.sqrt((np.abs(coil_images) ** 2).sum(0))[obj.support[0]].mean())
    psi = noise_covariance(rng, n_coils) * (signal / snr) ** 2 / n_coils
    white = rng.standard_normal((n_coils, height * width)) + 1j * rng.standard_normal(
        (n_coils, height * width)
    )
    noise = (np.linalg.cholesky(psi) @ white / np.sqrt(2.0)).reshape(n_coils, height, width)
    noisy = torch.from_numpy((coil_images + noise).astype(np.complex64))
    label = center_crop(rss_complex(noisy, dim=0), crop).numpy()
    factor = _BRIGHT * _MAX_VALUE[anatomy] / float(np.quantile(label, 0.995))
    kspace = fft2c(noisy).numpy() * np.complex64(factor)
    noise_std = float(np.sqrt(np.trace(psi).real / n_coils)) * factor
    return NoisySlice(
        kspace,
        snu_mask(width, acc),
        label * np.float32(factor),
        float(label.max()) * factor,
        anatomy,
        noise_std,
    )


def score_methods(
    noisy: NoisySlice, methods: dict[str, Callable[..., np.ndarray]]
) -> dict[str, tuple[float, float]]:
    """Leaderboard SSIM and seconds of every method on the undersampled slice.

    Args:
        noisy: the slice (its k-space is masked with its own mask first).
        methods: name -> ``f(masked_kspace, mask, (h, w))`` returning ``(h, w)`` (:data:`kspacelab.classical.METHODS`).

    Returns:
        name -> ``(ssim, seconds)``.
    """
    masked = noisy.kspace * noisy.mask.astype(np.complex64)
    out = {}
    for name, method in methods.items():
        start = time.perf_counter()
        recon = np.asarray(method(masked, noisy.mask, noisy.label.shape), dtype=np.float32)
        seconds = time.perf_counter() - start
        ssim = metrics.leaderboard_ssim_volume(recon[None], noisy.label[None], noisy.max_value, noisy.anatomy)
        out[name] = (float(ssim[0]), seconds)
    return out
