"""Undersampling masks: the SNU organiser rule, the fastMRI family, robustness variants, detection.

All masks run along the phase-encoding axis ``W`` (the last k-space axis).
"""

from __future__ import annotations

import numpy as np

SNU_CENTER_FRACTION = 0.08
SUPPORTED_ACCELERATIONS = (4, 8)


def snu_mask(width: int, acc: int) -> np.ndarray:
    """The SNU FastMRI Challenge organiser mask (SPEC §3).

    ``n = round(0.08 * W)`` centre lines starting at ``(W - n + 1) // 2``, plus every ``acc``-th line starting at
    ``(W // 2) % acc`` (the last column is included when it lies on that grid).

    Args:
        width: number of phase-encoding lines ``W``.
        acc: acceleration (4 or 8 in the challenge; any integer >= 1 is accepted).

    Returns:
        ``(W,)`` bool array.
    """
    if width < 1 or acc < 1:
        raise ValueError(f"width and acc must be positive, got width={width}, acc={acc}")
    mask = np.zeros(width, dtype=bool)
    n_center = round(SNU_CENTER_FRACTION * width)
    pad = (width - n_center + 1) // 2
    mask[pad : pad + n_center] = True
    mask[(width // 2) % acc :: acc] = True
    return mask
