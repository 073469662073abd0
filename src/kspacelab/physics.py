"""MRI physics primitives: centred orthonormal FFTs, complex helpers, RSS, coil operators, crops.

This module is the only place in kspacelab where these operations are written.

Two complex representations are accepted everywhere:

* native complex tensors, e.g. ``(..., H, W)`` ``complex64``;
* real-view tensors with a trailing axis of size 2 holding (real, imag), e.g. ``(..., H, W, 2)`` ``float32``,
  as used by the fastMRI package and its published weights.

Functions return the representation they were given. ``H`` is the readout (frequency-encoding) axis and ``W``
the phase-encoding axis along which the undersampling mask runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "LowFreqs",
    "broadcast_line_mask",
    "center_crop",
    "coil_compression_matrix",
    "complex_abs",
    "complex_abs_sq",
    "complex_center_crop",
    "complex_conj",
    "complex_mul",
    "compress_coils",
    "crop_readout",
    "fft2c",
    "flip_width_kspace",
    "ifft2c",
    "is_real_view",
    "keep_columns",
    "low_frequency_window",
    "rss",
    "rss_complex",
    "sens_expand",
    "sens_reduce",
    "soft_data_consistency",
    "to_complex",
    "to_real_view",
]


def is_real_view(x: torch.Tensor) -> bool:
    """True when ``x`` is a real tensor whose last axis (size 2) holds real and imaginary parts."""
    return not x.is_complex() and x.ndim >= 1 and x.shape[-1] == 2


def to_complex(x: torch.Tensor) -> torch.Tensor:
    """Real-view ``(..., 2)`` -> native complex ``(...)``; complex input is returned unchanged."""
    if x.is_complex():
        return x
    if x.shape[-1] != 2:
        raise ValueError(
            f"expected a complex tensor or a real view with last axis 2, got shape {tuple(x.shape)}"
        )
    return torch.view_as_complex(x.contiguous())


def to_real_view(x: torch.Tensor) -> torch.Tensor:
    """Native complex ``(...)`` -> real-view ``(..., 2)``; real input is returned unchanged."""
    return torch.view_as_real(x) if x.is_complex() else x


def _fft_centered(x: torch.Tensor, inverse: bool) -> torch.Tensor:
    real_view = not x.is_complex()
    if x.dtype in (torch.float16, torch.bfloat16, torch.complex32):
        x = x.to(
            torch.complex64 if x.is_complex() else torch.float32
        )  # FFTs in float32 (reconstruct --precision)
    z = to_complex(x)
    if z.ndim < 2:
        raise ValueError(f"need at least 2 spatial dimensions, got shape {tuple(z.shape)}")
    z = torch.fft.ifftshift(z, dim=(-2, -1))
    z = (
        torch.fft.ifftn(z, dim=(-2, -1), norm="ortho")
        if inverse
        else torch.fft.fftn(z, dim=(-2, -1), norm="ortho")
    )
    z = torch.fft.fftshift(z, dim=(-2, -1))
    return torch.view_as_real(z) if real_view else z


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred, orthonormal 2-D FFT over the last two spatial axes.

    Args:
        x: image, ``(..., H, W)`` complex or ``(..., H, W, 2)`` real view.

    Returns:
        k-space in the same representation and shape; DC at index ``(H // 2, W // 2)``. Half-precision input
        (float16, bfloat16) is transformed in float32 and returned in float32.
    """
    return _fft_centered(x, inverse=False)


def ifft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred, orthonormal 2-D inverse FFT; the exact inverse (and adjoint) of :func:`fft2c`."""
    return _fft_centered(x, inverse=True)


def complex_mul(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Element-wise complex product with broadcasting; both inputs in the same representation."""
    if x.is_complex() or y.is_complex():
        return to_complex(x) * to_complex(y)
    re = x[..., 0] * y[..., 0] - x[..., 1] * y[..., 1]
    im = x[..., 0] * y[..., 1] + x[..., 1] * y[..., 0]
    return torch.stack((re, im), dim=-1)


def complex_conj(x: torch.Tensor) -> torch.Tensor:
    """Complex conjugate in either representation."""
    if x.is_complex():
        return x.conj()
    return torch.stack((x[..., 0], -x[..., 1]), dim=-1)


def complex_abs_sq(x: torch.Tensor) -> torch.Tensor:
    """Squared magnitude ``|x|^2`` (real tensor; the trailing axis of a real view is consumed)."""
    if x.is_complex():
        return x.real**2 + x.imag**2
    if x.shape[-1] != 2:
        raise ValueError(f"real-view tensor must have last axis 2, got shape {tuple(x.shape)}")
    return (x**2).sum(dim=-1)


def complex_abs(x: torch.Tensor) -> torch.Tensor:
    """Magnitude ``|x|`` (real tensor; the trailing axis of a real view is consumed)."""
    if x.is_complex():
        return x.abs()
    return complex_abs_sq(x).sqrt()


def rss(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Root sum of squares of a *real* tensor along ``dim`` (e.g. coil magnitudes)."""
    return torch.sqrt((x**2).sum(dim))


def rss_complex(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Root sum of squares of complex coil images along ``dim``.

    For a real view ``dim`` counts axes of the view *without* its trailing axis of size 2 being special:
    pass the coil axis as you would index the tensor (e.g. ``dim=1`` for ``(B, C, H, W, 2)``).

    Returns:
        real tensor, the coil axis (and the real-view axis) removed.
    """
    return torch.sqrt(complex_abs_sq(x).sum(dim))


def coil_compression_matrix(kspace: torch.Tensor, n_virtual: int, coil_dim: int = -3) -> torch.Tensor:
    """Unitary coil compression (PCA / SVD of the coil covariance): the ``n_virtual`` principal coil combinations.

    The coil covariance ``A = sum_samples x x^H`` (``C x C``, accumulated in complex128 over every other axis)
    is diagonalised; its eigenvectors of the ``n_virtual`` largest eigenvalues are the columns of the result, the
    largest first. Virtual coils ``y = V^H x`` (:func:`compress_coils`) keep the fraction
    ``sum(top n eigenvalues) / trace(A)`` of the signal energy, all of it when ``n_virtual == C`` (a rotation of
    the coils: the RSS image is unchanged).

    Args:
        kspace: native complex k-space (or coil images: the transform is linear and the FFT orthonormal), the
            coils along ``coil_dim``, e.g. ``(S, C, H, W)`` complex64 for a volume.
        n_virtual: number of virtual coils, ``1 <= n_virtual <= C``.
        coil_dim: the coil axis.

    Returns:
        ``(C, n_virtual)`` complex128 matrix with orthonormal columns.
    """
    if not kspace.is_complex():
        raise ValueError(f"coil compression needs native complex data, got {kspace.dtype}")
    coils = kspace.shape[coil_dim]
    if not 1 <= n_virtual <= coils:
        raise ValueError(f"cannot compress {coils} coils to {n_virtual} virtual coils (need 1..{coils})")
    x = kspace.movedim(coil_dim, 0).reshape(coils, -1)
    covariance = torch.zeros(coils, coils, dtype=torch.complex128, device=kspace.device)
    for chunk in x.split(1 << 20, dim=1):  # bounded memory in complex128
        c = chunk.to(torch.complex128)
        covariance += c @ c.conj().T
    _, vectors = torch.linalg.eigh(covariance)  # ascending eigenvalues
    return vectors.flip(-1)[:, :n_virtual]


def compress_coils(kspace: torch.Tensor, n_virtual: int, coil_dim: int = -3) -> torch.Tensor:
    """Compress the coils of ``kspace`` to ``n_virtual`` virtual coils with one matrix for all of it
    (:func:`coil_compression_matrix`; pass a whole volume so that every slice gets the same virtual coils).

    Args:
        kspace: native complex, coils along ``coil_dim``, e.g. ``(S, C, H, W)`` complex64.
        n_virtual: number of virtual coils, ``1 <= n_virtual <= C``.
        coil_dim: the coil axis.

    Returns:
        ``kspace`` with ``n_virtual`` coils along ``coil_dim`` (largest energy first), in its dtype.
    """
    matrix = coil_compression_matrix(kspace, n_virtual, coil_dim).conj().T.to(kspace.dtype)  # (n, C)
    moved = kspace.movedim(coil_dim, -1)  # (..., C)
    return (moved @ matrix.T).movedim(-1, coil_dim)


def sens_expand(x: torch.Tensor, sens_maps: torch.Tensor, coil_dim: int = 1) -> torch.Tensor:
    """Forward coil operator ``E x = F(S x)``: one image to per-coil k-space.

    Args:
        x: image ``(B, 1, H, W)`` complex or ``(B, 1, H, W, 2)``.
        sens_maps: coil sensitivities ``(B, C, H, W)`` complex or ``(B, C, H, W, 2)``.
        coil_dim: unused axis marker kept for symmetry with :func:`sens_reduce`.

    Returns:
        k-space ``(B, C, H, W)`` (or ``(..., 2)``).
    """
    del coil_dim
    return fft2c(complex_mul(x, sens_maps))


def sens_reduce(k: torch.Tensor, sens_maps: torch.Tensor, coil_dim: int = 1) -> torch.Tensor:
    """Adjoint coil operator ``E^H k = sum_c conj(S_c) F^-1 k_c``: per-coil k-space to one image.

    Args:
        k: k-space ``(B, C, H, W)`` complex or ``(B, C, H, W, 2)``.
        sens_maps: coil sensitivities, same shape as ``k``.
        coil_dim: the coil axis.

    Returns:
        image ``(B, 1, H, W)`` (or ``(B, 1, H, W, 2)``), coil axis kept with size 1.
    """
    return complex_mul(ifft2c(k), complex_conj(sens_maps)).sum(dim=coil_dim, keepdim=True)


def soft_data_consistency(
    k_current: torch.Tensor, k_measured: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | float
) -> torch.Tensor:
    """Soft data-consistency term of E2E-VarNet: ``where(mask, k - k0, 0) * weight``.

    Args:
        k_current: current k-space estimate, any representation.
        k_measured: measured (masked) k-space, same shape.
        mask: boolean sampling mask broadcastable to the k-space (for a real view include the trailing axis,
            e.g. ``(B, 1, 1, W, 1)``; for complex ``(B, 1, 1, W)``).
        weight: scalar or tensor weight.

    Returns:
        the correction to subtract from ``k_current``.
    """
    zero = torch.zeros((), dtype=k_current.dtype, device=k_current.device)
    return torch.where(mask.bool(), k_current - k_measured, zero) * weight


def _crop_or_pad_axis(x: torch.Tensor, axis: int, size: int) -> torch.Tensor:
    n = x.shape[axis]
    if n == size:
        return x
    if n > size:
        start = (n - size) // 2
        return x.narrow(axis, start, size)
    before = (size - n) // 2
    after = size - n - before
    pad = [0, 0] * (x.ndim - (axis % x.ndim) - 1) + [before, after]
    if x.is_complex():
        return torch.view_as_complex(F.pad(torch.view_as_real(x), [0, 0, *pad]))
    return F.pad(x, pad)


def center_crop(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Centre-crop the last two axes to ``shape = (h, w)``; zero-pad (centred) an axis that is smaller.

    Cropping takes ``start = (n - size) // 2`` (fastMRI's convention); padding places the input at offset
    ``(size - n) // 2`` so that cropping a padded image gives the input back exactly.

    Args:
        x: ``(..., H, W)`` real or complex.
        shape: target ``(h, w)``.
    """
    h, w = int(shape[0]), int(shape[1])
    return _crop_or_pad_axis(_crop_or_pad_axis(x, -2, h), -1, w)


def complex_center_crop(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """:func:`center_crop` for a real view ``(..., H, W, 2)`` (crops axes -3 and -2)."""
    h, w = int(shape[0]), int(shape[1])
    return _crop_or_pad_axis(_crop_or_pad_axis(x, -3, h), -2, w)


def crop_readout(kspace: torch.Tensor, height: int) -> torch.Tensor:
    """Crop k-space to ``height`` rows in the image domain (readout axis ``H`` only).

    The 2-D centred orthonormal FFT is separable, so ``fft2c(crop_rows(ifft2c(k)))`` equals the 1-D inverse
    FFT along ``H``, a centred crop of the rows (start ``(H - height) // 2``) and the 1-D FFT along ``H``:
    the columns (and therefore a column mask) are untouched and the image of the result is exactly the
    centre rows of the original image.

    Args:
        kspace: complex ``(..., H, W)``.
        height: number of image rows to keep; a no-op when ``H <= height``.

    Returns:
        complex ``(..., min(H, height), W)``.
    """
    rows, cols = kspace.shape[-2], kspace.shape[-1]
    if rows <= height:
        return kspace
    return fft2c(center_crop(ifft2c(kspace), (height, cols)))


#: A known width of the fully sampled centre block (an int or a ``(B,)`` tensor), or None to detect it.
LowFreqs = int | torch.Tensor | None


def broadcast_line_mask(mask: torch.Tensor, kspace: torch.Tensor) -> torch.Tensor:
    """Boolean mask broadcastable to complex k-space ``(B, C, H, W)``, from every mask shape fastMRI accepts.

    ``kspace`` is the model's input, real view ``(B, C, H, W, 2)`` or complex ``(B, C, H, W)``, and ``mask`` must
    broadcast against it as in fastMRI: for a real view its last axis has size 1 (``(B, 1, 1, W, 1)``,
    ``(1, 1, 1, W, 1)``, ``(1, 1, W, 1)``, ``(B, 1, H, W, 1)``, ...); for complex k-space ``(B, 1, 1, W)``,
    ``(1, W)``, ... or a real-view mask of rank 5. Every other axis is 1 or the k-space's, and the ``W`` axis is
    the k-space's ``W`` (a line mask); bool or 0/1.

    Returns:
        bool ``(B, C', H', W)``: the batch axis expanded to ``B`` (a view), ``C'`` and ``H'`` 1 or the k-space's.

    Raises:
        ValueError: one line with the mask's shape, the k-space's and the shape expected.
    """
    real_view = not kspace.is_complex()
    shape = tuple(kspace.shape[:-1]) if real_view else tuple(kspace.shape)
    if len(shape) != 4:
        raise ValueError(
            f"expected k-space (B, C, H, W) complex or (B, C, H, W, 2), got {tuple(kspace.shape)}"
        )
    batch, coils, height, width = shape
    expected = (
        f"(B, 1, 1, W, 1) or any shape broadcastable to {(batch, coils, height, width, 1)} with W={width}"
        if real_view
        else f"(B, 1, 1, W) or any shape broadcastable to {shape} with W={width}"
    )
    problem = (
        f"mask of shape {tuple(mask.shape)} does not fit k-space of shape {tuple(kspace.shape)}; expected"
    )
    m = mask
    if real_view or m.ndim == len(shape) + 1:
        # the real and imaginary parts share the mask: last axis 1, or 2 with equal halves (fastMRI takes both)
        if (
            m.ndim == 0
            or m.shape[-1] not in (1, 2)
            or (m.shape[-1] == 2 and not torch.equal(m[..., 0], m[..., 1]))
        ):
            raise ValueError(f"{problem} a last axis of size 1: {expected}")
        m = m[..., 0]
    if m.ndim > len(shape):
        raise ValueError(f"{problem} {expected}")
    m = m.reshape((1,) * (len(shape) - m.ndim) + tuple(m.shape))
    if m.shape[-1] != width or any(got not in (1, want) for got, want in zip(m.shape, shape, strict=True)):
        raise ValueError(f"{problem} {expected}")
    m = m.expand(batch, *m.shape[1:])
    return m if m.dtype == torch.bool else m.bool()


def low_frequency_window(
    mask: torch.Tensor, num_low_frequencies: LowFreqs = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and width of the fully sampled centre (ACS) block per batch item, as in fastMRI's VarNet.

    With ``num_low_frequencies`` None or 0 the width is detected from the mask: walking out from column
    ``W // 2`` to the first unsampled column on each side, the width is twice the shorter walk (at least 1).

    Args:
        mask: ``(B, 1, 1, W)`` (bool or 0/1), the line mask of complex k-space.
        num_low_frequencies: known width, an int or a ``(B,)`` tensor; None or 0 to detect.

    Returns:
        ``(start, width)``, two ``(B,)`` int64 tensors; the block is columns ``start <= j < start + width``
        with ``start = (W - width + 1) // 2``.
    """
    lines = mask[:, 0, 0, :]
    width = lines.shape[-1]
    if num_low_frequencies is None or (
        not isinstance(num_low_frequencies, torch.Tensor) and num_low_frequencies == 0
    ):
        lines = lines.to(torch.int8)
        centre = width // 2
        # argmin finds the first unsampled (0) column; it is 0 when a side has no unsampled column at all
        left = torch.argmin(lines[:, :centre].flip(1), dim=1)
        right = torch.argmin(lines[:, centre:], dim=1)
        num = torch.clamp(2 * torch.minimum(left, right), min=1)
    else:
        num = torch.as_tensor(num_low_frequencies, device=mask.device).to(torch.long)
        num = num.expand(lines.shape[0]) if num.ndim == 0 else num
    num = num.to(torch.long)
    return (width - num + 1) // 2, num


def keep_columns(kspace: torch.Tensor, start: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
    """Zero every column of complex ``(B, C, H, W)`` k-space outside ``[start_b, start_b + num_b)``."""
    cols = torch.arange(kspace.shape[-1], device=kspace.device)
    keep = (cols >= start[:, None]) & (cols < (start + num)[:, None])  # (B, W)
    zero = torch.zeros((), dtype=kspace.dtype, device=kspace.device)
    return torch.where(keep[:, None, None, :], kspace, zero)


def flip_width_kspace(kspace: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """k-space and mask of the image flipped along ``W`` (left-right), computed exactly in k-space.

    With the centred FFT, flipping the image ``y[n] = x[W - 1 - n]`` gives ``Y[i] = X[j(i)] * p(i)`` where
    ``j(i) = (W - i) mod W`` and ``p(i) = exp(2 pi i (i - W // 2) / W)`` for even ``W``, and ``j(i) = W - 1 - i``,
    ``p = 1`` for odd ``W``. The sampling pattern moves with ``j``.

    Args:
        kspace: ``(B, C, H, W, 2)`` real view or ``(B, C, H, W)`` complex.
        mask: broadcastable mask whose ``W`` axis is the k-space's (``(B, 1, 1, W, 1)`` or ``(B, 1, 1, W)``).

    Returns:
        the flipped k-space (same representation) and mask.
    """
    real_view = not kspace.is_complex()
    k = to_complex(kspace)
    width = k.shape[-1]
    idx = torch.arange(width, device=k.device)
    if width % 2 == 0:
        source = (width - idx) % width
        freq = (idx - width // 2).to(torch.float64)
        phase = torch.polar(torch.ones_like(freq), 2 * torch.pi * freq / width).to(k.dtype)
    else:
        source = width - 1 - idx
        phase = torch.ones(width, dtype=k.dtype, device=k.device)
    flipped = k.index_select(-1, source) * phase
    mask_axis = mask.ndim - 2 if real_view else mask.ndim - 1
    flipped_mask = mask.index_select(mask_axis, source.to(mask.device))
    return (torch.view_as_real(flipped) if real_view else flipped), flipped_mask
