"""Zero-filled reconstruction: RSS of the inverse FFT of (masked) multi-coil k-space.

Also holds the small input helpers shared by the classical methods (complex k-space and 1-D mask checks,
numpy <-> torch round trips).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch

from kspacelab import masks
from kspacelab.physics import center_crop, ifft2c, rss_complex

__all__ = ["zero_filled_image"]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def as_complex_kspace(kspace: np.ndarray | torch.Tensor, name: str = "kspace") -> tuple[torch.Tensor, bool]:
    """Validate multi-coil k-space and return it as a complex64 torch tensor.

    Args:
        kspace: ``(C, H, W)`` or ``(S, C, H, W)`` complex numpy array or torch tensor.
        name: argument name used in error messages.

    Returns:
        ``(tensor, was_numpy)``; the tensor is complex64 on the input's device (numpy input: CPU, no copy for
        complex64 input).

    Raises:
        ValueError: not complex, or not 3-D/4-D.
    """
    was_numpy = isinstance(kspace, np.ndarray)
    if was_numpy:
        if not np.iscomplexobj(kspace):
            raise ValueError(f"{name} must be complex (C, H, W) or (S, C, H, W), got dtype {kspace.dtype}")
        k = torch.from_numpy(np.ascontiguousarray(kspace, dtype=np.complex64))
    elif isinstance(kspace, torch.Tensor):
        if not kspace.is_complex():
            raise ValueError(
                f"{name} must be a complex tensor (C, H, W) or (S, C, H, W), got dtype {kspace.dtype}"
                " (convert a real view with torch.view_as_complex)"
            )
        k = kspace.to(torch.complex64)
    else:
        raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(kspace).__name__}")
    if k.ndim not in (3, 4):
        raise ValueError(f"{name} must have shape (C, H, W) or (S, C, H, W), got shape {tuple(k.shape)}")
    return k, was_numpy


def as_line_mask(mask: np.ndarray | torch.Tensor | Sequence[float], width: int) -> np.ndarray:
    """:func:`kspacelab.masks.as_line_mask` plus a check that the mask has ``width`` lines.

    Raises:
        ValueError: the mask does not squeeze to 1-D or has a length other than ``W``.
    """
    line = masks.as_line_mask(mask)
    if line.size != width:
        raise ValueError(f"mask has {line.size} entries but k-space has W={width} phase-encoding lines")
    return line


def to_input_type(x: torch.Tensor, like_numpy: bool) -> np.ndarray | torch.Tensor:
    """Return ``x`` as numpy when the caller gave numpy, else as the torch tensor itself."""
    return x.detach().cpu().numpy() if like_numpy else x


def zero_filled_image(
    kspace: ArrayT,
    mask: np.ndarray | torch.Tensor | None = None,
    crop: tuple[int, int] | None = None,
) -> ArrayT:
    """Zero-filled RSS image ``sqrt(sum_c |ifft2c(mask * k_c)|^2)``, optionally centre-cropped.

    Args:
        kspace: ``(C, H, W)`` or ``(S, C, H, W)`` complex k-space (numpy or torch), H readout, W phase encoding.
        mask: optional ``(W,)`` bool/0-1 mask applied along W before the inverse FFT (``None``: use as is).
        crop: optional ``(h, w)`` centre crop (zero-pads an axis that is smaller, see
            :func:`kspacelab.physics.center_crop`).

    Returns:
        float32 image ``(H, W)`` / ``(S, H, W)`` (or the crop size), numpy for numpy input, torch otherwise.
    """
    k, was_numpy = as_complex_kspace(kspace)
    if mask is not None:
        m = torch.from_numpy(as_line_mask(mask, k.shape[-1])).to(k.device)
        k = k * m
    image = rss_complex(ifft2c(k), dim=-3).to(torch.float32)
    if crop is not None:
        image = center_crop(image, crop)
    return to_input_type(image, was_numpy)  # type: ignore[return-value]
