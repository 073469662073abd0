"""Noise level of measured multi-coil k-space, for the regularisation of the classical methods.

Model: complex Gaussian noise, the same variance ``sigma_c^2 = E |n|^2`` for every sample of coil ``c`` (white in
k-space, and so in the image domain too for the orthonormal FFT; coils may be correlated). The estimate reads two
places where the data are (nearly) noise only, each with the median of ``|z|^2`` (``|z|^2`` of complex Gaussian
noise is exponential, median ``sigma^2 ln 2``; the median ignores a minority of samples with signal):

* **image edge rows**: after the inverse FFT along the fully sampled readout, the rows at both ends of the
  field of view (``EDGE_FRACTION`` of H each) at the measured columns. MR readouts are oversampled, so these rows
  lie in air; undersampling along W aliases along W only, within a row, so they stay free of aliased signal;
* **k-space periphery**: the readout frequencies at both ends (``EDGE_FRACTION`` of H each) of the measured
  columns farthest from the centre (the outer half of them), where the object's spectrum has decayed.

Signal only ever adds energy, so each region over-estimates; per coil the smaller of the two is kept, and
``sigma^2`` is the mean over coils (``trace(Psi) / C`` for a noise covariance ``Psi``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["EDGE_FRACTION", "noise_variance"]

#: Fraction of the readout rows read at each end (image rows and k-space rows).
EDGE_FRACTION = 0.125


def _median_power(z: torch.Tensor) -> torch.Tensor:
    """``median(|z|^2) / ln 2`` over all but the first two axes of ``(S, C, ...)`` -> ``(S, C)`` float64."""
    power = (z.real.double() ** 2 + z.imag.double() ** 2).flatten(2)
    return power.median(dim=-1).values / math.log(2.0)


def noise_variance(kspace: torch.Tensor, mask: np.ndarray) -> torch.Tensor:
    """Per-slice noise variance ``sigma^2`` (per complex sample, mean over coils) of masked k-space.

    Args:
        kspace: ``(S, C, H, W)`` complex k-space (centred, orthonormal FFT convention), H the fully sampled
            readout; unsampled columns are ignored.
        mask: ``(W,)`` bool sampled columns (at least one).

    Returns:
        ``(S,)`` float64 tensor on the k-space's device, ``E |noise|^2`` of one sample, averaged over coils.
    """
    height = kspace.shape[-2]
    columns = np.flatnonzero(mask)
    edge = max(1, round(EDGE_FRACTION * height))
    rows = torch.cat([torch.arange(edge), torch.arange(height - edge, height)]).to(kspace.device)
    measured = kspace[..., torch.from_numpy(columns).to(kspace.device)]
    hybrid = torch.fft.fftshift(
        torch.fft.ifft(torch.fft.ifftshift(measured, dim=-2), dim=-2, norm="ortho"), dim=-2
    )
    image_rows = _median_power(hybrid[..., rows, :])
    distance = np.abs(columns - kspace.shape[-1] // 2)
    outer = columns[distance >= np.median(distance)]
    periphery = kspace[..., torch.from_numpy(outer).to(kspace.device)][..., rows, :]
    per_coil = torch.minimum(image_rows, _median_power(periphery))
    return per_coil.mean(dim=1)
