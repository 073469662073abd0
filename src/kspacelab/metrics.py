"""Image-quality metrics: the SNU leaderboard SSIM, its training loss, and fastMRI metrics.

One SSIM implementation, :func:`ssim_per_slice`, serves evaluation and training:

* :func:`leaderboard_ssim` / :func:`leaderboard_ssim_volume` compute the SNU challenge metric in
  ``float64``: foreground mask from the target (:func:`foreground_mask`), then SSIM of ``recon * M`` against
  ``target * M`` with a 7x7 uniform window, unbiased (co)variances, ``valid`` filtering and a plain mean of
  the SSIM map;
* :func:`masked_ssim_loss` is ``1 - SSIM`` of the same definition, differentiable, in the input dtype,
  optionally weighted by ``sqrt(area / max_area)`` of the foreground mask;
* :func:`ssim` (fastMRI evaluate semantics) is the same unmasked SSIM, equal to scikit-image's
  ``structural_similarity`` defaults (7x7 uniform, sample covariance, border of 3 cropped).

:func:`hallucination_index` measures invented fine detail: the local high-frequency energy of the output beyond
the target's, relative to the target's.

Images are magnitude images in arbitrary intensity units; ``max_value`` (the SSIM data range) is in the same
units (for SNU files the ``max`` attribute of the image file, i.e. the volume maximum of the target).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import overload

import numpy as np
import torch
import torch.nn.functional as F

from kspacelab.challenge import BRAIN, KNEE

__all__ = [
    "FOREGROUND_THRESHOLDS",
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_WIN_SIZE",
    "area_weight",
    "foreground_mask",
    "foreground_weights",
    "hallucination_index",
    "leaderboard_ssim",
    "leaderboard_ssim_volume",
    "masked_ssim_loss",
    "nmse",
    "psnr",
    "snu2026_box_ssim",
    "snu2026_full_ssim",
    "ssim",
    "ssim_per_slice",
]

#: Absolute intensity thresholds of the leaderboard foreground mask, per anatomy (SNU image scale).
FOREGROUND_THRESHOLDS: dict[str, float] = {BRAIN: 5e-5, KNEE: 2e-5}

#: SSIM window side (uniform window of ``SSIM_WIN_SIZE**2`` pixels) and stabilising constants.
SSIM_WIN_SIZE = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03

# Morphology of the leaderboard mask: 3x3 square element, erode 1x, dilate 15x, erode 14x.
_ERODE_FIRST = 1
_DILATE = 15
_ERODE_SECOND = 14


# ----------------------------------------------------------------------------------------------------
# Foreground mask
# ----------------------------------------------------------------------------------------------------
def _threshold(anatomy: str) -> float:
    try:
        return FOREGROUND_THRESHOLDS[anatomy]
    except (KeyError, TypeError):
        valid = ", ".join(repr(k) for k in FOREGROUND_THRESHOLDS)
        raise ValueError(f"unknown anatomy {anatomy!r}; valid values: {valid}") from None


def _dilate(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of ``x`` (N, 1, H, W) float 0/1 by a square of side ``2*radius+1``.

    Pixels outside the image are ignored (never dilate into the image), as OpenCV's default border.
    Iterating a 3x3 dilation ``radius`` times equals one dilation by the ``(2*radius+1)`` square, because
    the window clipped to the image is a rectangle; the square is applied separably (rows, then columns).
    """
    if radius == 0:
        return x
    k = 2 * radius + 1
    x = F.max_pool2d(x, kernel_size=(1, k), stride=1, padding=(0, radius))
    return F.max_pool2d(x, kernel_size=(k, 1), stride=1, padding=(radius, 0))


def _erode(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary erosion of ``x`` (N, 1, H, W) float 0/1; pixels outside the image count as 1 (never erode)."""
    return 1.0 - _dilate(1.0 - x, radius)


@overload
def foreground_mask(target: np.ndarray, anatomy: str) -> np.ndarray: ...
@overload
def foreground_mask(target: torch.Tensor, anatomy: str) -> torch.Tensor: ...
def foreground_mask(target: np.ndarray | torch.Tensor, anatomy: str) -> np.ndarray | torch.Tensor:
    """Leaderboard foreground mask of a target image (the first step of the leaderboard SSIM).

    ``M = target > thr`` (``thr = FOREGROUND_THRESHOLDS[anatomy]``, compared in the target's dtype), then
    with a 3x3 square structuring element: erode 1 time, dilate 15 times, erode 14 times, with OpenCV's
    default border behaviour (outside pixels never erode the mask and are never dilated into).

    Args:
        target: real image, ``(H, W)`` or ``(..., H, W)``, numpy array or torch tensor (any device), in the
            intensity units of the SNU files (the thresholds are absolute).
        anatomy: ``"brain"`` or ``"knee"``.

    Returns:
        bool mask of the same kind (numpy or torch, same device) and shape as ``target``.
    """
    thr = _threshold(anatomy)
    is_numpy = isinstance(target, np.ndarray)
    if isinstance(target, np.ndarray):
        is_complex = np.iscomplexobj(target)
    elif isinstance(target, torch.Tensor):
        is_complex = target.is_complex()
    else:
        raise TypeError(f"target must be a numpy array or a torch tensor, got {type(target).__name__}")
    if target.ndim < 2:
        raise ValueError(f"target must have shape (..., H, W), got shape {tuple(target.shape)}")
    if is_complex:
        raise ValueError("target must be a real (magnitude) image, got a complex one")
    shape = tuple(target.shape)
    if isinstance(target, np.ndarray):
        # Threshold with numpy's comparison semantics (as the leaderboard script does); morphology in torch.
        above = torch.from_numpy(np.ascontiguousarray(target > thr))
    else:
        above = target.detach() > thr
    if above.numel() == 0:
        return np.zeros(shape, dtype=bool) if is_numpy else above
    x = above.reshape(-1, 1, shape[-2], shape[-1]).to(torch.float32)
    x = _erode(x, _ERODE_FIRST)
    x = _dilate(x, _DILATE)
    x = _erode(x, _ERODE_SECOND)
    mask = (x > 0.5).reshape(shape)
    return mask.numpy() if is_numpy else mask


# ----------------------------------------------------------------------------------------------------
# SSIM (torch, batched, differentiable)
# ----------------------------------------------------------------------------------------------------
def _check_pair(recon_shape: tuple[int, ...], target_shape: tuple[int, ...]) -> None:
    if recon_shape != target_shape:
        raise ValueError(f"recon and target shapes differ: recon {recon_shape} vs target {target_shape}")
    if len(recon_shape) < 2:
        raise ValueError(f"images must have shape (..., H, W), got shape {recon_shape}")
    h, w = recon_shape[-2:]
    if h < SSIM_WIN_SIZE or w < SSIM_WIN_SIZE:
        raise ValueError(
            f"images must be at least {SSIM_WIN_SIZE}x{SSIM_WIN_SIZE} for SSIM, "
            f"got {h}x{w} (shape {recon_shape})"
        )


def ssim_per_slice(
    recon: torch.Tensor,
    target: torch.Tensor,
    max_value: float | torch.Tensor,
    mask: torch.Tensor | None = None,
    return_map: bool = False,
) -> torch.Tensor:
    """Masked SSIM per slice, as defined by the SNU leaderboard (and fastMRI's ``SSIMLoss``).

    ``x = recon * mask`` and ``y = target * mask`` (when a mask is given); local means, variances and
    covariance over a 7x7 uniform window with the unbiased factor 49/48; ``C1 = (0.01 m)^2``,
    ``C2 = (0.03 m)^2``; the SSIM map is computed on the ``valid`` region only (``(H-6, W-6)``, no padding)
    and averaged with a plain mean.
    Windows that are entirely zero in both images score exactly 1.

    Args:
        recon: reconstruction, ``(B, H, W)``, ``(H, W)`` or any ``(..., H, W)``, real floating tensor; the
            result is differentiable with respect to it.
        target: reference image, same shape as ``recon``.
        max_value: data range ``m`` (same intensity units as the images), a Python scalar or a tensor
            broadcastable to the leading shape ``(...)`` (e.g. ``(B,)``, one value per slice); positive.
        mask: optional foreground mask, same shape as the images, bool (or 0/1 real).
        return_map: return the SSIM map of the valid region, ``(..., H - 6, W - 6)``, instead of its mean.

    Returns:
        SSIM per slice, shape ``(...)`` (``(B,)`` for ``(B, H, W)`` input, 0-d for ``(H, W)``), in the dtype
        of the inputs (float32 and float64 are kept; float16/bfloat16 are computed in float32, because
        ``C1 * C2`` would underflow in half precision), on the device of the inputs.
    """
    if not isinstance(recon, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError("recon and target must be torch tensors (use leaderboard_ssim for numpy arrays)")
    _check_pair(tuple(recon.shape), tuple(target.shape))
    if mask is not None and tuple(mask.shape) != tuple(recon.shape):
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from image shape {tuple(recon.shape)}")
    if recon.is_complex() or target.is_complex():
        raise ValueError("SSIM needs real (magnitude) images, got complex input")
    dtype = torch.promote_types(recon.dtype, target.dtype)
    if not dtype.is_floating_point:
        raise ValueError(f"SSIM needs floating-point images, got {recon.dtype} and {target.dtype}")
    if dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32
    if isinstance(max_value, (int, float)) and not max_value > 0:
        raise ValueError(f"max_value (SSIM data range) must be positive, got {max_value}")

    lead = tuple(recon.shape[:-2])
    h, w = recon.shape[-2:]
    x = recon.to(dtype).reshape(-1, h, w)
    y = target.to(dtype).reshape(-1, h, w)
    if mask is not None:
        m = mask.to(device=x.device).reshape(-1, h, w)
        x = x * m
        y = y * m

    # One pooling call for the five local moments: (N, 5, H, W) -> (N, 5, H-6, W-6) window means.
    moments = torch.stack((x, y, x * x, y * y, x * y), dim=1)
    ux, uy, uxx, uyy, uxy = F.avg_pool2d(moments, kernel_size=SSIM_WIN_SIZE, stride=1).unbind(dim=1)
    n_pix = SSIM_WIN_SIZE * SSIM_WIN_SIZE
    cov_norm = n_pix / (n_pix - 1)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)

    data_range = torch.as_tensor(max_value, dtype=dtype, device=x.device)
    data_range = torch.broadcast_to(data_range, lead).reshape(-1, 1, 1)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    numerator = (2 * ux * uy + c1) * (2 * vxy + c2)
    denominator = (ux * ux + uy * uy + c1) * (vx + vy + c2)
    ssim_map = numerator / denominator
    if return_map:
        return ssim_map.reshape(*lead, h - SSIM_WIN_SIZE + 1, w - SSIM_WIN_SIZE + 1)
    return ssim_map.mean(dim=(-2, -1)).reshape(lead)


def foreground_weights(mask: torch.Tensor, background_weight: float = 0.0) -> torch.Tensor:
    """Pixel weights of a loss: 1 on the foreground ``mask`` (bool, any shape), ``background_weight`` elsewhere.

    Returns a real tensor of the mask's shape (float32 for a bool mask, else the mask's dtype); with
    ``background_weight = 0`` it is the mask itself as 0/1.
    """
    dtype = mask.dtype if mask.dtype.is_floating_point else torch.float32
    weights = mask.to(dtype)
    if background_weight:
        weights = weights + (1.0 - weights) * background_weight
    return weights


def area_weight(mask: torch.Tensor, max_area: torch.Tensor | float | None = None) -> torch.Tensor:
    """``sqrt(area / max_area)`` per slice of a foreground ``mask`` ``(B, H, W)`` (area = foreground pixels).

    ``max_area``: ``(B,)`` or scalar, the foreground maximum over each slice's volume; None: the batch maximum.
    Returns ``(B,)`` float32 (the mask's dtype when it is floating).
    """
    dtype = mask.dtype if mask.dtype.is_floating_point else torch.float32
    h, w = mask.shape[-2:]
    area = mask.to(dtype).reshape(-1, h, w).sum(dim=(-2, -1))
    if max_area is None:
        reference = area.amax() if area.numel() > 0 else area.new_ones(())
    else:
        reference = torch.as_tensor(max_area, dtype=dtype, device=area.device)
        if reference.ndim > 0 and tuple(reference.shape) != tuple(area.shape):
            raise ValueError(
                f"max_area shape {tuple(reference.shape)} does not match the batch shape {tuple(area.shape)}"
            )
    return torch.sqrt(area / reference.clamp_min(1))


def masked_ssim_loss(
    recon: torch.Tensor,
    target: torch.Tensor,
    max_value: float | torch.Tensor,
    anatomy_or_mask: str | torch.Tensor,
    area_weighted: bool = False,
    max_area: torch.Tensor | None = None,
    background_weight: float = 0.0,
) -> torch.Tensor:
    """Training loss ``1 - SSIM`` with the leaderboard foreground mask, averaged over the batch.

    With ``area_weighted`` each slice's ``1 - SSIM`` is multiplied by ``sqrt(area(M_slice) / max_area)``,
    where ``area`` counts foreground pixels (:func:`area_weight`). ``max_area`` should be the maximum
    foreground area over the slices of the *volume* the slice comes from (as the 2025 entries' recipes do),
    computed once per volume by the data pipeline and passed per slice; when it is not given, the maximum over
    the batch is used, which equals the volume rule only when the batch holds a whole volume. Slices with an
    empty mask contribute 0 when area-weighted.

    Args:
        recon: reconstruction ``(B, H, W)`` (or ``(H, W)``), real floating tensor (float32 in training).
        target: reference ``(B, H, W)``, same shape.
        max_value: SSIM data range, scalar or ``(B,)`` tensor (volume maximum of the target).
        anatomy_or_mask: ``"brain"`` / ``"knee"`` (the mask is computed from ``target``) or a precomputed bool
            mask with the shape of the images.
        area_weighted: apply the ``sqrt(area / max_area)`` weight.
        max_area: optional ``(B,)`` (or scalar) tensor, foreground area maximum over each slice's volume, in
            pixels.
        background_weight: the images are multiplied by 1 on the mask and by this weight outside it before
            the SSIM (0: the leaderboard's masked SSIM; 1: unmasked); the area still counts the mask.

    Returns:
        0-d tensor, differentiable with respect to ``recon``; 0 for a perfect reconstruction.
    """
    if isinstance(anatomy_or_mask, str):
        with torch.no_grad():
            mask = foreground_mask(target.detach(), anatomy_or_mask)
    else:
        mask = anatomy_or_mask
    weights = foreground_weights(mask, background_weight) if background_weight else mask
    scores = ssim_per_slice(recon, target, max_value, mask=weights)
    loss = 1 - scores
    if area_weighted:
        weight = area_weight(mask.to(device=loss.device, dtype=loss.dtype), max_area)
        loss = loss * weight.reshape(loss.shape)
    return loss.mean()


def _box_window_bounds(box: Sequence[float], height: int, width: int) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` of a box ``(x, y, width, height)`` clipped to an ``height x width`` image,
    or None when a side of the clipped box is under the SSIM window (the 2026 challenge skips such boxes)."""
    x, y, w, h = (float(v) for v in box)
    left, top = max(0, math.floor(x)), max(0, math.floor(y))
    right, bottom = min(width, math.floor(x + w)), min(height, math.floor(y + h))
    if right - left < SSIM_WIN_SIZE or bottom - top < SSIM_WIN_SIZE:
        return None
    return top, bottom, left, right


def snu2026_loss(
    recon: torch.Tensor,
    target: torch.Tensor,
    max_value: float | torch.Tensor,
    mask: torch.Tensor,
    boxes: torch.Tensor | None,
) -> torch.Tensor:
    """Training loss ``1 - quality`` of the 2026 challenge over a batch, differentiable with respect to ``recon``.

    ``quality = (SSIM_full + SSIM_bbox) / 2`` as :func:`snu2026_full_ssim` and :func:`snu2026_box_ssim` define
    them, pooled over the batch as the challenge pools a leaderboard: SSIM_full is the mean over the slices with a
    non-empty valid-region mask, SSIM_bbox the mean over every box of every slice (boxes under 7 pixels after
    clipping skipped). A batch without boxes gives ``1 - SSIM_full``; one without any foreground ``1 - SSIM_bbox``
    (0 when it has neither).

    Args:
        recon: ``(B, H, W)`` real reconstruction.
        target: ``(B, H, W)`` reference.
        max_value: data range, scalar or ``(B,)``.
        mask: ``(B, H, W)`` foreground mask (bool or 0/1) of each target.
        boxes: ``(B, K, 4)`` rows ``(x, y, width, height)`` in pixels, zero-width rows unused; None: no boxes.

    Returns:
        0-d tensor in the dtype of the SSIM (float32 for float32 input).
    """
    full_map = ssim_per_slice(recon, target, max_value, mask=mask, return_map=True)
    weights = mask.to(full_map)[..., _HALF_WIN:-_HALF_WIN, _HALF_WIN:-_HALF_WIN]
    weight_sums = weights.sum(dim=(-2, -1))
    has_mask = weight_sums > 0
    full = (full_map * weights).sum(dim=(-2, -1)) / weight_sums.clamp_min(1)
    box_scores: list[torch.Tensor] = []
    if boxes is not None:
        height, width = recon.shape[-2:]
        plain_map: torch.Tensor | None = None
        for b, rows in enumerate(boxes.detach().cpu().tolist()):
            for row in rows:
                if row[2] <= 0 or row[3] <= 0:
                    continue
                bounds = _box_window_bounds(row, int(height), int(width))
                if bounds is None:
                    continue
                if plain_map is None:
                    plain_map = ssim_per_slice(recon, target, max_value, return_map=True)
                top, bottom, left, right = bounds
                window = plain_map[b, top : bottom - SSIM_WIN_SIZE + 1, left : right - SSIM_WIN_SIZE + 1]
                box_scores.append(window.mean())
    terms = []
    if bool(has_mask.any()):
        terms.append(full[has_mask].mean())
    if box_scores:
        terms.append(torch.stack(box_scores).mean())
    if not terms:
        return full.sum() * 0.0
    return 1 - torch.stack(terms).mean()


# ----------------------------------------------------------------------------------------------------
# Leaderboard SSIM (evaluation, float64)
# ----------------------------------------------------------------------------------------------------
def _as_float64_tensor(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64)
    if isinstance(x, np.ndarray):
        if np.iscomplexobj(x):
            raise ValueError(f"{name} must be a real (magnitude) image, got a complex array")
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def _as_data_range(max_value: float | np.ndarray | torch.Tensor) -> float:
    if isinstance(max_value, torch.Tensor):
        max_value = max_value.detach().cpu().numpy()
    value = np.asarray(max_value, dtype=np.float64)
    if value.size != 1:
        raise ValueError(
            f"max_value must be a scalar (the volume maximum of the target), got shape {value.shape}"
        )
    scalar = float(value.reshape(()))
    if not (np.isfinite(scalar) and scalar > 0):
        raise ValueError(f"max_value (SSIM data range) must be positive and finite, got {scalar}")
    return scalar


def _leaderboard_scores(
    recon: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    max_value: float | np.ndarray | torch.Tensor,
    anatomy: str,
    ndim: int,
) -> torch.Tensor:
    _threshold(anatomy)
    if tuple(recon.shape) != tuple(target.shape):
        raise ValueError(
            f"recon and target shapes differ: recon {tuple(recon.shape)} vs target {tuple(target.shape)}"
        )
    if recon.ndim != ndim:
        expected = "(H, W)" if ndim == 2 else "(S, H, W)"
        raise ValueError(f"expected images of shape {expected}, got shape {tuple(recon.shape)}")
    data_range = _as_data_range(max_value)
    # The mask is thresholded on the target as given (its own dtype), exactly as the leaderboard script does.
    mask = foreground_mask(target, anatomy)
    mask_t = torch.from_numpy(mask) if isinstance(mask, np.ndarray) else mask
    r = _as_float64_tensor(recon, "recon")
    t = _as_float64_tensor(target, "target").to(r.device)
    return ssim_per_slice(r, t, data_range, mask=mask_t.to(r.device))


def leaderboard_ssim(
    recon: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    max_value: float | np.ndarray | torch.Tensor,
    anatomy: str,
) -> float:
    """SNU leaderboard SSIM of one slice, computed in float64.

    Args:
        recon: reconstruction ``(H, W)`` (384x384 on the leaderboard), numpy or torch.
        target: ``image_label[s]``, ``(H, W)``, numpy or torch; the foreground mask comes from it only.
        max_value: the file's ``max`` attribute (volume maximum of the target), positive scalar.
        anatomy: ``"brain"`` or ``"knee"`` (from the file name).

    Returns:
        the slice's SSIM as a Python float (1.0 when every window lies in the background).

    The foreground mask is identical to the challenge script's (OpenCV morphology). The challenge script
    evaluates the SSIM in float32 (window weights ``float32(1/49)``); this float64 value is the exact
    arithmetic of the same definition and differs from it by about 1e-7 per slice, far below the four
    reported decimals.
    """
    return float(_leaderboard_scores(recon, target, max_value, anatomy, ndim=2).item())


def leaderboard_ssim_volume(
    recon: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    max_value: float | np.ndarray | torch.Tensor,
    anatomy: str,
) -> np.ndarray:
    """Per-slice SNU leaderboard SSIM of a volume ``(S, H, W)``; same code path as :func:`leaderboard_ssim`.

    Returns:
        ``(S,)`` float64 numpy array; the leaderboard averages these over every slice of every volume.
    """
    scores = _leaderboard_scores(recon, target, max_value, anatomy, ndim=3)
    return scores.cpu().numpy().astype(np.float64, copy=False)


# ----------------------------------------------------------------------------------------------------
# SNU 2026 (knee only): SSIM over the foreground mask's pixels and SSIM in lesion boxes
# ----------------------------------------------------------------------------------------------------
_HALF_WIN = SSIM_WIN_SIZE // 2


def snu2026_full_ssim(
    recon: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    max_value: float | np.ndarray | torch.Tensor,
    anatomy: str = "knee",
) -> float | None:
    """SSIM_full of one slice as the 2026 challenge scores it, in float64.

    The SSIM map of ``(recon * M, target * M)`` (7 x 7 uniform window, unbiased covariance, valid region, K1 0.01,
    K2 0.03, data range ``max_value``), ``M`` the leaderboard foreground mask of ``target``, averaged over the
    mask's pixels in the valid region: ``sum(map * M_v) / sum(M_v)`` with ``M_v = M[3:-3, 3:-3]``.

    Returns:
        the score, or None for a slice whose valid-region mask is empty (the challenge skips it).
    """
    _threshold(anatomy)
    if tuple(recon.shape) != tuple(target.shape) or recon.ndim != 2:
        raise ValueError(
            f"expected two (H, W) images of one shape, got {tuple(recon.shape)} and {tuple(target.shape)}"
        )
    data_range = _as_data_range(max_value)
    mask = foreground_mask(target, anatomy)
    mask_t = (torch.from_numpy(mask) if isinstance(mask, np.ndarray) else mask).to(torch.float64)
    r = _as_float64_tensor(recon, "recon")
    t = _as_float64_tensor(target, "target").to(r.device)
    mask_t = mask_t.to(r.device)
    ssim_map = ssim_per_slice(r, t, data_range, mask=mask_t, return_map=True)
    weights = mask_t[_HALF_WIN:-_HALF_WIN, _HALF_WIN:-_HALF_WIN]
    total = float(weights.sum())
    if total == 0:
        return None
    return float((ssim_map * weights).sum()) / total


def snu2026_box_ssim(
    recon: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    max_value: float | np.ndarray | torch.Tensor,
    box: tuple[float, float, float, float],
) -> float | None:
    """SSIM_bbox of one lesion box as the 2026 challenge scores it, in float64.

    ``box = (x, y, width, height)`` in pixels (x along columns, y along rows) is clipped to the image; the plain
    mean of the SSIM map (same SSIM as :func:`snu2026_full_ssim`, no mask) of ``recon`` against ``target`` cropped
    to the box.

    Returns:
        the score, or None when a side of the clipped box is under 7 pixels (the challenge skips the box).
    """
    if tuple(recon.shape) != tuple(target.shape) or recon.ndim != 2:
        raise ValueError(
            f"expected two (H, W) images of one shape, got {tuple(recon.shape)} and {tuple(target.shape)}"
        )
    height, width = recon.shape
    bounds = _box_window_bounds(box, int(height), int(width))
    if bounds is None:
        return None
    top, bottom, left, right = bounds
    r = _as_float64_tensor(recon, "recon")[top:bottom, left:right]
    t = _as_float64_tensor(target, "target").to(r.device)[top:bottom, left:right]
    return float(ssim_per_slice(r, t, _as_data_range(max_value)))


# ----------------------------------------------------------------------------------------------------
# fastMRI metrics (semantics of fastmri/evaluate.py; numpy volumes, ground truth first)
# ----------------------------------------------------------------------------------------------------
def _check_volumes(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gt_arr = np.asarray(gt)
    pred_arr = np.asarray(pred)
    if gt_arr.shape != pred_arr.shape:
        raise ValueError(f"gt and pred shapes differ: gt {gt_arr.shape} vs pred {pred_arr.shape}")
    return gt_arr.astype(np.float64, copy=False), pred_arr.astype(np.float64, copy=False)


def nmse(gt: np.ndarray, pred: np.ndarray) -> float:
    """Normalised mean squared error ``||gt - pred||^2 / ||gt||^2`` over the whole volume (float64)."""
    g, p = _check_volumes(gt, pred)
    return float(np.sum((g - p) ** 2) / np.sum(g**2))


def psnr(gt: np.ndarray, pred: np.ndarray, maxval: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB over the whole volume, ``10 log10(maxval^2 / MSE)``.

    ``maxval`` (data range) defaults to ``gt.max()``, as in fastMRI's evaluate script; computed in float64.
    A perfect prediction (MSE 0) gives ``inf``, as fastMRI's (scikit-image's) PSNR does.
    """
    g, p = _check_volumes(gt, pred)
    data_range = float(g.max()) if maxval is None else float(maxval)
    mse = float(np.mean((g - p) ** 2))
    if mse == 0:
        return math.inf
    return float(10.0 * np.log10(data_range**2 / mse))


def ssim(gt: np.ndarray, pred: np.ndarray, maxval: float | None = None) -> float:
    """Mean over slices of the unmasked SSIM of each slice, fastMRI evaluate semantics.

    Equal to scikit-image's ``structural_similarity(gt[s], pred[s], data_range=maxval)`` with its defaults
    (7x7 uniform window, sample covariance, border of 3 pixels excluded) averaged over slices; computed here
    with :func:`ssim_per_slice` in float64 (the SSIM the project trains and evaluates with).

    Args:
        gt: ground truth volume ``(S, H, W)``.
        pred: prediction ``(S, H, W)``.
        maxval: data range; defaults to ``gt.max()`` (volume maximum).
    """
    g, p = _check_volumes(gt, pred)
    if g.ndim != 3:
        raise ValueError(f"expected volumes of shape (S, H, W), got shape {g.shape}")
    data_range = float(g.max()) if maxval is None else float(maxval)
    scores = ssim_per_slice(torch.from_numpy(p), torch.from_numpy(g), data_range)
    return float(scores.mean().item())


# ----------------------------------------------------------------------------------------------------
# Hallucination index (invented fine detail)
# ----------------------------------------------------------------------------------------------------
#: Gaussian sigma (pixels) of the high-pass of :func:`hallucination_index`: detail finer than ~2 pixels.
HI_SIGMA = 1.0
#: Gaussian sigma (pixels) of the window over which :func:`hallucination_index` compares detail energy.
HI_WINDOW = 2.0


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, H, W)`` images: kernel radius ``round(4 sigma)`` (``scipy.ndimage``'s
    default truncation), normalised to sum 1, mirrored borders (``scipy.ndimage`` mode ``"mirror"``); needs
    ``H, W > radius``."""
    radius = int(4.0 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    y = F.pad(x[:, None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel.reshape(1, 1, -1, 1))
    return F.conv2d(y, kernel.reshape(1, 1, 1, -1))[:, 0]


def _as_image_stack(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    t = _as_float64_tensor(x, name)
    if t.is_complex():
        raise ValueError(f"{name} must be a real (magnitude) image, got a complex tensor")
    if t.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (H, W) or (S, H, W), got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} has non-finite values")
    return t.reshape(-1, *t.shape[-2:])


def hallucination_index(
    recon: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    sigma: float = HI_SIGMA,
    window: float = HI_WINDOW,
) -> float:
    """Hallucination index: fine detail the reconstruction has beyond the target's, relative to the target's.

    ``HP(x) = x - G_sigma * x`` keeps the detail finer than about ``2 sigma`` pixels; ``E(x) = G_window *
    HP(x)^2`` is its local energy (Gaussian-weighted over a ``window`` sigma). Then::

        HI = sum(relu(E(recon) - E(target))) / sum(E(target))

    the sums over every pixel of every slice (2-D filters per slice; a volume's index pools its slices). HI is 0
    for a perfect output and for a blurred or denoised one (less detail everywhere), and grows with invented
    texture: HI = 0.1 means fine-detail energy equal to 10% of the target's, where the target has less.
    Invariant to a common intensity scale. Computed in float64; Gaussian kernels of radius ``round(4 sigma)``,
    mirrored borders.

    Args:
        recon: reconstruction ``(H, W)`` or ``(S, H, W)``, real, numpy or torch, any intensity unit.
        target: reference of the same shape and unit.
        sigma: high-pass Gaussian sigma in pixels (default :data:`HI_SIGMA`).
        window: energy window Gaussian sigma in pixels (default :data:`HI_WINDOW`).

    Raises:
        ValueError: shapes differ or are not (H, W)/(S, H, W); complex or non-finite values; an image side not
            above the larger kernel radius; a target without fine detail (zero energy: no reference scale).
    """
    r = _as_image_stack(recon, "recon")
    t = _as_image_stack(target, "target").to(r.device)
    if tuple(recon.shape) != tuple(target.shape):
        raise ValueError(
            f"recon and target shapes differ: recon {tuple(recon.shape)} vs target {tuple(target.shape)}"
        )
    if not (sigma > 0 and window > 0):
        raise ValueError(f"sigma and window must be positive, got {sigma} and {window}")
    radius = int(4.0 * max(sigma, window) + 0.5)
    if min(r.shape[-2:]) <= radius:
        raise ValueError(
            f"images must be larger than {radius} x {radius} pixels, got shape {tuple(recon.shape)}"
        )

    def energy(x: torch.Tensor) -> torch.Tensor:
        return _gaussian_blur((x - _gaussian_blur(x, sigma)) ** 2, window)

    e_target = energy(t)
    reference = float(e_target.sum())
    if not reference > 1e-20 * float((t**2).sum()):  # rounding level of float64 (a constant image)
        raise ValueError("target has no fine detail (zero high-frequency energy): no reference for the index")
    return float(torch.relu(energy(r) - e_target).sum()) / reference


def fastmri_volume_scores(target: np.ndarray, recon: np.ndarray) -> dict[str, float]:
    """fastMRI's scores of one volume and its hallucination index: ``{"nmse", "psnr", "ssim", "hallucination"}``
    (:func:`nmse`, :func:`psnr`, :func:`ssim` with the data range ``target.max()``, as fastMRI's evaluate script;
    :func:`hallucination_index`), of float ``(S, h, w)`` arrays of one shape. The function `evaluate --metric
    fastmri` and the single-coil validation both score with.

    Raises:
        ValueError: shapes differ, or the target has no fine detail (:func:`hallucination_index`).
    """
    return {
        "nmse": nmse(target, recon),
        "psnr": psnr(target, recon),
        "ssim": ssim(target, recon),
        "hallucination": hallucination_index(recon, target),
    }
