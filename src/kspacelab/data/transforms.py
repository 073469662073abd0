"""Per-slice transforms: raw k-space slice (numpy) -> the tensors a multi-coil model is trained on.

:class:`VarNetTransform` turns one slice (or a stack of adjacent slices) of complex k-space, the file's
sampling mask, the target image and a few attributes into a :class:`VarNetSample` (fastMRI's real-view
convention). The mask comes from the file or from a mask function with fastMRI's signature
(:func:`kspacelab.masks.create_mask_for_mask_type`); an optional per-anatomy crop of the readout axis in the
image domain saves memory (seed 000's trick, SPEC §4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from kspacelab import masks, physics
from kspacelab.data.augment import MaskAugment, MRAugment, stable_seed

__all__ = ["DEFAULT_CROP_SIZE", "VarNetSample", "VarNetTransform", "crop_readout"]

#: Crop size of the SNU reconstructions (SPEC §1.3), used when neither a target nor a recon size is known.
DEFAULT_CROP_SIZE: tuple[int, int] = (384, 384)


class VarNetSample(NamedTuple):
    """One training/inference item for a multi-coil model.

    A NamedTuple, so :func:`torch.utils.data.default_collate` batches it field by field: tensors are
    stacked (a leading batch axis ``B`` appears), ints become int64 tensors ``(B,)``, floats float64
    tensors ``(B,)``, strings tuples of ``B`` strings.

    Attributes:
        masked_kspace: float32 ``(C', H, W, 2)`` real view of the undersampled k-space; ``C' = adj * C``
            for ``adj`` adjacent slices stacked along the coil axis in slice order ``s - adj // 2 .. s +
            adj // 2``, so the centre slice's coils are the middle block ``[adj // 2 * C, (adj // 2 + 1) * C)``.
            ``H`` is the readout height after the optional crop.
        mask: bool ``(1, 1, W, 1)`` sampling mask (broadcasts against ``masked_kspace``).
        num_low_frequencies: length of the fully sampled centre block (:func:`kspacelab.masks.center_block`).
        target: float32 ``(h, w)`` target image (``image_label`` / ``reconstruction_rss``); zeros of the
            crop size when there is no target.
        max_value: the volume's data range (file attr ``max``); 0.0 when unknown.
        crop_size: int64 tensor ``(2,)`` = ``(h, w)``, the size of the model's output crop. A tensor (not
            a tuple) so that a batch collates to an int64 ``(B, 2)`` tensor.
        anatomy: ``"brain"``, ``"knee"`` or ``""`` when unknown.
        acceleration: acceleration of the mask (:func:`kspacelab.masks.estimate_acceleration`), falling
            back to the volume's nominal acceleration; 0 when neither is known.
        fname: the volume's file name, e.g. ``"brain_acc4_1.h5"``.
        slice_num: index of the (centre) slice in the volume.
        max_area: largest leaderboard-foreground area (pixels) over the slices of the volume, for the
            ``sqrt(area / max_area)`` loss weight; 0.0 when not computed (the loss then uses the batch maximum).
    """

    masked_kspace: torch.Tensor
    mask: torch.Tensor
    num_low_frequencies: int
    target: torch.Tensor
    max_value: float
    crop_size: torch.Tensor
    anatomy: str
    acceleration: int
    fname: str
    slice_num: int
    max_area: float = 0.0


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
    image = physics.center_crop(physics.ifft2c(kspace), (height, cols))
    return physics.fft2c(image)


def _crop_keeps_target(height: int, cropped: int, target_height: int) -> bool:
    """True when the centre ``target_height`` rows of the cropped image are those of the full image."""
    return (height - target_height) // 2 - (height - cropped) // 2 == (cropped - target_height) // 2


class VarNetTransform:
    """Slice -> :class:`VarNetSample` for multi-coil models (E2E-VarNet, PromptMR+, ...).

    Mask choice: the file's mask when ``use_file_mask`` and the file has one, else ``mask_func`` called
    with the real-view k-space shape ``(C', H, W, 2)`` and ``seed = tuple(map(ord, fname))`` when
    ``seed_from_fname`` (the same mask for every slice and every epoch: validation) or ``seed=None`` (the
    function's own RNG advances: a new mask per call, training).
    """

    def __init__(
        self,
        mask_func: masks.MaskFunc | None = None,
        use_file_mask: bool = True,
        crop_height: Mapping[str, int] | None = None,
        seed_from_fname: bool = False,
        augment: MRAugment | None = None,
        num_adj_slices: int = 1,
        mask_seed: int | None = None,
        mask_augment: MaskAugment | None = None,
    ) -> None:
        """Args:
        mask_func: callable ``(shape, offset=None, seed=None) -> (mask, num_low_frequencies)``; needed
            unless every file carries a mask and ``use_file_mask`` is True.
        use_file_mask: use the file's mask when there is one.
        crop_height: optional image-domain height per anatomy, e.g. ``{"brain": 384, "knee": 416}``;
            anatomies not listed are not cropped.
        seed_from_fname: seed ``mask_func`` from the file name (deterministic validation masks).
        augment: MRAugment applied to the fully sampled k-space before the readout crop and the mask (training);
            the target is then recomputed as the RSS of the augmented k-space (centre slice), centre-cropped.
        num_adj_slices: adjacent slices stacked along the coil axis (locates the centre slice's coils).
        mask_seed: draw ``mask_func`` masks from a seed derived from ``(mask_seed, epoch, file name, slice)``
            (training: a new mask every epoch, independent of workers and of where a run was resumed); None
            uses the mask function's own RNG state.
        mask_augment: replaces the slice's mask (the file's or ``mask_func``'s) by a drawn one with the
            schedule's probability (training).
        """
        if not use_file_mask and mask_func is None:
            raise ValueError("use_file_mask=False needs a mask_func")
        heights = dict(crop_height or {})
        for anatomy, height in heights.items():
            if int(height) < 1:
                raise ValueError(f"crop_height[{anatomy!r}] must be a positive integer, got {height}")
        self.mask_func = mask_func
        self.use_file_mask = use_file_mask
        self.crop_height: dict[str, int] = {str(k): int(v) for k, v in heights.items()}
        self.seed_from_fname = seed_from_fname
        self.augment = augment
        self.num_adj_slices = int(num_adj_slices)
        self.mask_seed = mask_seed
        self.mask_augment = mask_augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The training epoch the next samples belong to (mask draws with ``mask_seed``, MRAugment)."""
        self.epoch = int(epoch)
        if self.augment is not None:
            self.augment.set_epoch(epoch)
        if self.mask_augment is not None:
            self.mask_augment.set_epoch(epoch)

    def output_height(self, height: int, anatomy: str) -> int:
        """Readout height ``H`` of ``masked_kspace`` for an input of ``height`` rows and ``anatomy``."""
        crop = self.crop_height.get(anatomy)
        return height if crop is None else min(height, crop)

    def reseed(self, seed: int) -> None:
        """Reseed the mask function's own RNG (called per DataLoader worker so workers draw different masks).

        Works with the mask functions of :mod:`kspacelab.masks` (a ``RandomState`` or ``Generator`` in
        ``.rng``); other callables are left alone.
        """
        rng = getattr(self.mask_func, "rng", None)
        if isinstance(rng, np.random.RandomState):
            rng.seed(seed % 2**32)
        elif isinstance(rng, np.random.Generator):
            self.mask_func.rng = np.random.default_rng(seed)  # type: ignore[union-attr]

    def _supported_accelerations(self) -> list[int]:
        extra = getattr(self.mask_func, "accelerations", None) or []
        return sorted({*masks.SUPPORTED_ACCELERATIONS, *(int(a) for a in extra)})

    def _line_mask(
        self,
        shape: Sequence[int],
        file_mask: np.ndarray | None,
        fname: str,
        slice_num: int,
        anatomy: str,
        mask_acceleration: int | None = None,
    ) -> np.ndarray:
        line = self._base_line_mask(shape, file_mask, fname, slice_num)
        width = int(shape[-2])
        if mask_acceleration is None and self.mask_augment is None:
            return line
        try:
            own_acc = masks.estimate_acceleration(line, self._supported_accelerations())
        except ValueError:
            own_acc = None
        acc = mask_acceleration or own_acc
        if acc is None:
            return line
        if self.mask_augment is not None:
            drawn = self.mask_augment.draw(width, int(acc), anatomy, fname, slice_num)
            if drawn is not None:
                return np.asarray(drawn, dtype=bool)
        if mask_acceleration is not None and own_acc != mask_acceleration:
            return masks.snu_mask(width, int(mask_acceleration))  # the other acceleration's organiser mask
        return line

    def _base_line_mask(
        self, shape: Sequence[int], file_mask: np.ndarray | None, fname: str, slice_num: int
    ) -> np.ndarray:
        if self.use_file_mask and file_mask is not None:
            return masks.as_line_mask(file_mask)
        if self.mask_func is None:
            raise ValueError(f"{fname}: the file has no mask and no mask_func was given")
        seed: Any = None
        if self.seed_from_fname:
            seed = tuple(map(ord, fname))
        elif self.mask_seed is not None:
            seed = stable_seed(self.mask_seed, self.epoch, fname, slice_num)
        drawn, _ = self.mask_func(shape, seed=seed)
        return masks.as_line_mask(drawn)

    def __call__(
        self,
        kspace: np.ndarray,
        file_mask: np.ndarray | None,
        target: np.ndarray | None,
        attrs: Mapping[str, Any],
        fname: str,
        slice_num: int,
        anatomy: str = "",
        acceleration: int | None = None,
        mask_acceleration: int | None = None,
    ) -> VarNetSample:
        """Build the sample of one slice.

        Args:
            kspace: complex ``(C', H, W)`` (``C' = adj * C`` for adjacent slices stacked along coils).
            file_mask: the file's mask ``(W,)`` (any 0/1 dtype), or None when the file has none.
            target: float ``(h, w)`` target image, or None.
            attrs: ``"max"`` (data range; optional) and ``"recon_size"`` (``(h, w)``, the output crop when
                there is no target; optional, default :data:`DEFAULT_CROP_SIZE`).
            fname: the volume's file name (seeds the mask with ``seed_from_fname``).
            slice_num: (centre) slice index.
            anatomy: ``"brain"``/``"knee"`` (selects ``crop_height``) or ``""``.
            acceleration: the volume's nominal acceleration, used when the mask's cannot be estimated.
            mask_acceleration: train this slice with a mask of this acceleration (``both_accelerations``): a
                drawn mask with ``mask_augment``, else the organiser mask of that acceleration.

        Raises:
            ValueError: bad shapes, no mask available, or a crop height that would cut into the target.
        """
        k = np.asarray(kspace)
        if k.ndim != 3 or not np.iscomplexobj(k):
            raise ValueError(f"{fname}: kspace must be complex (C, H, W), got {k.dtype} {k.shape}")
        coils, height, width = k.shape
        if target is not None:
            target_t = torch.as_tensor(np.asarray(target, dtype=np.float32))
            if target_t.ndim != 2:
                raise ValueError(f"{fname}: target must be (h, w), got shape {tuple(target_t.shape)}")
            crop_size = (int(target_t.shape[0]), int(target_t.shape[1]))
        else:
            recon = attrs.get("recon_size")
            crop_size = DEFAULT_CROP_SIZE if recon is None else (int(recon[0]), int(recon[1]))
            target_t = torch.zeros(crop_size, dtype=torch.float32)

        kspace_t = torch.from_numpy(np.ascontiguousarray(k, dtype=np.complex64))
        augmented = False
        if self.augment is not None and target is not None:
            before = kspace_t
            kspace_t = self.augment(kspace_t, anatomy, fname, int(slice_num))
            augmented = kspace_t is not before
        out_height = self.output_height(height, anatomy)
        if out_height < height:
            if out_height < crop_size[0]:
                raise ValueError(
                    f"{fname}: crop_height {out_height} for {anatomy!r} is smaller than the target height "
                    f"{crop_size[0]}"
                )
            if not _crop_keeps_target(height, out_height, crop_size[0]):
                raise ValueError(
                    f"{fname}: crop_height {out_height} would shift the centred {crop_size[0]}-row target by "
                    f"one row (H={height}); use a height of the same parity as H"
                )
            kspace_t = crop_readout(kspace_t, out_height)

        if augmented:  # the target of the augmented pair: RSS of the centre slice's augmented coil images
            per_slice = coils // self.num_adj_slices
            centre = kspace_t[
                self.num_adj_slices // 2 * per_slice : (self.num_adj_slices // 2 + 1) * per_slice
            ]
            target_t = physics.center_crop(
                physics.rss_complex(physics.ifft2c(centre), dim=0), crop_size
            ).float()

        line = self._line_mask(
            (coils, out_height, width, 2), file_mask, fname, int(slice_num), anatomy, mask_acceleration
        )
        if line.shape[0] != width:
            raise ValueError(f"{fname}: mask has {line.shape[0]} lines but kspace has W={width}")
        start, stop = masks.center_block(line)
        try:
            acc = masks.estimate_acceleration(line, self._supported_accelerations())
        except ValueError:
            acc = int(acceleration or 0)

        mask_t = torch.from_numpy(line).reshape(1, 1, width, 1)
        masked = physics.to_real_view(kspace_t) * mask_t
        max_value = attrs.get("max")
        return VarNetSample(
            masked_kspace=masked.to(torch.float32).contiguous(),
            mask=mask_t,
            num_low_frequencies=stop - start,
            target=target_t,
            max_value=0.0 if max_value is None else float(max_value),
            crop_size=torch.tensor(crop_size, dtype=torch.int64),
            anatomy=anatomy,
            acceleration=acc,
            fname=fname,
            slice_num=int(slice_num),
        )
