"""Per-slice transforms: raw k-space slice (numpy) -> the tensors a multi-coil model is trained on.

:class:`SliceTransform` turns one slice (or a stack of adjacent slices) of complex k-space, the file's
sampling mask, the target image and a few attributes into a :class:`ReconSample` (fastMRI's real-view
convention). The mask comes from the file or from a mask function with fastMRI's signature
(:func:`kspacelab.masks.create_mask_for_mask_type`); an optional per-anatomy crop of the readout axis in the
image domain saves memory (Team EJ's trick in the 2025 challenge: brain 384, knee 416 rows).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from kspacelab import challenge, masks, physics
from kspacelab.data.augment import MaskAugment, MRAugment, stable_seed
from kspacelab.models.base import InputSpec, ReconSample, no_boxes

__all__ = ["DEFAULT_CROP_SIZE", "SliceTransform"]

#: Crop size of the SNU reconstructions (384 x 384), used when neither a target nor a recon size is known.
DEFAULT_CROP_SIZE: tuple[int, int] = challenge.TARGET_SHAPE


def _crop_keeps_target(height: int, cropped: int, target_height: int) -> bool:
    """True when the centre ``target_height`` rows of the cropped image are those of the full image."""
    return (height - target_height) // 2 - (height - cropped) // 2 == (cropped - target_height) // 2


class SliceTransform:
    """Slice -> :class:`ReconSample` for multi-coil models (E2E-VarNet, PromptMR+, ...).

    Mask choice: the file's mask when ``use_file_mask`` and the file has one, else ``mask_func`` called
    with the real-view k-space shape ``(C', H, W, 2)`` and ``seed = tuple(map(ord, fname))`` when
    ``seed_from_fname`` (the same mask for every slice and every epoch: validation) or ``seed=None`` (the
    function's own RNG advances: a new mask per call, training).
    """

    def __init__(
        self,
        input_spec: InputSpec | None = None,
        mask_func: masks.MaskFunc | None = None,
        use_file_mask: bool = True,
        seed_from_fname: bool = False,
        augment: MRAugment | None = None,
        mask_seed: int | None = None,
        mask_augment: MaskAugment | None = None,
        inference: bool = False,
        epoch_offset: int = 0,
    ) -> None:
        """Args:
        input_spec: the model's inputs (:class:`~kspacelab.models.base.InputSpec`): adjacent slices stacked
            along the coil axis (locates the centre slice's coils), readout crop per anatomy, extra images;
            default one slice, no crop.
        mask_func: callable ``(shape, offset=None, seed=None) -> (mask, num_low_frequencies)``; needed
            unless every file carries a mask and ``use_file_mask`` is True.
        use_file_mask: use the file's mask when there is one.
        seed_from_fname: seed ``mask_func`` from the file name (deterministic validation masks).
        augment: MRAugment applied to the fully sampled k-space before the readout crop and the mask (training);
            the target is then recomputed as the RSS of the augmented k-space (centre slice), centre-cropped.
        mask_seed: draw ``mask_func`` masks from a seed derived from ``(mask_seed, epoch, file name, slice)``
            (training: a new mask every epoch, independent of workers and of where a run was resumed); None
            uses the mask function's own RNG state.
        mask_augment: replaces the slice's mask (the file's or ``mask_func``'s) by a drawn one with the
            schedule's probability (training).
        inference: a readout crop that would cut into the target is widened to hold it
            (:meth:`output_height`) instead of raising: the crop only saves memory in training, and a model
            must reconstruct any geometry.
        epoch_offset: epochs trained before this run (a fine-tuning stage that goes on counting): the mask
            draws and the augmentation schedules see ``epoch + epoch_offset``.
        """
        if epoch_offset < 0:
            raise ValueError(f"epoch_offset must be >= 0, got {epoch_offset}")
        if not use_file_mask and mask_func is None:
            raise ValueError("use_file_mask=False needs a mask_func")
        self.input_spec = input_spec if input_spec is not None else InputSpec()
        if augment is not None and self.input_spec.extra_images:
            raise ValueError(
                "MRAugment cannot be combined with extra input images (they would not follow the augmented k-space)"
            )
        self.mask_func = mask_func
        self.use_file_mask = use_file_mask
        self.seed_from_fname = seed_from_fname
        self.augment = augment
        self.num_adj_slices = self.input_spec.num_adj_slices
        self.mask_seed = mask_seed
        self.mask_augment = mask_augment
        self.inference = inference
        self.epoch_offset = int(epoch_offset)
        self.epoch = self.epoch_offset

    def set_epoch(self, epoch: int) -> None:
        """The training epoch of this run the next samples belong to (mask draws with ``mask_seed``, MRAugment,
        mask augmentation), which all see ``epoch + epoch_offset``."""
        self.epoch = int(epoch) + self.epoch_offset
        if self.augment is not None:
            self.augment.set_epoch(self.epoch)
        if self.mask_augment is not None:
            self.mask_augment.set_epoch(self.epoch)

    def output_height(self, height: int, anatomy: str, target_height: int | None = None) -> int:
        """Readout height ``H`` of ``masked_kspace`` for an input of ``height`` rows and ``anatomy``.

        With ``inference`` and a ``target_height``, a crop smaller than the target is widened to the target
        height, and by one more row when the centred target would otherwise shift by one row (never beyond
        ``height``); in training such a crop is an error (:meth:`__call__`).
        """
        cropped = self.input_spec.readout_height(height, anatomy)
        if not self.inference or target_height is None or cropped >= height:
            return cropped
        cropped = min(height, max(cropped, target_height))
        if cropped < height and not _crop_keeps_target(height, cropped, target_height):
            cropped += 1
        return cropped

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
        drawn, _ = self.mask_func(shape, seed=self.mask_draw_seed(fname, slice_num))
        return masks.as_line_mask(drawn)

    def mask_draw_seed(self, fname: str, slice_num: int) -> masks.Seed:
        """The seed of a drawn mask: the file name's (``seed_from_fname``), else one of ``(mask_seed, epoch, file
        name, slice)``, else None (the mask function's own RNG state)."""
        if self.seed_from_fname:
            return masks.fname_seed(fname)
        if self.mask_seed is not None:
            return stable_seed(self.mask_seed, self.epoch, fname, slice_num)
        return None

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
        extra_images: np.ndarray | None = None,
    ) -> ReconSample:
        """Build the sample of one slice.

        Args:
            kspace: complex ``(C', H, W)`` (``C' = adj * C`` for adjacent slices stacked along coils).
            file_mask: the file's mask ``(W,)`` (any 0/1 dtype), or None when the file has none.
            target: float ``(h, w)`` target image, or None.
            attrs: ``"max"`` (data range; optional) and ``"recon_size"`` (``(h, w)``, the output crop when
                there is no target; optional, default :data:`DEFAULT_CROP_SIZE`).
            fname: the volume's file name (seeds the mask with ``seed_from_fname``).
            slice_num: (centre) slice index.
            anatomy: ``"brain"``/``"knee"`` (selects the spec's readout crop) or ``""``.
            acceleration: the volume's nominal acceleration, used when the mask's cannot be estimated.
            mask_acceleration: train this slice with a mask of this acceleration (``both_accelerations``): a
                drawn mask with ``mask_augment``, else the organiser mask of that acceleration.
            extra_images: float ``(E, h, w)``, the slice's :attr:`InputSpec.extra_images` in order; needed when
                the spec names any.

        Raises:
            ValueError: bad shapes, no mask available, missing extra images, or a crop height that would cut
                into the target.
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
        out_height = self.output_height(height, anatomy, crop_size[0])
        if out_height < height:
            if out_height < crop_size[0]:
                raise ValueError(
                    f"{fname}: readout crop {out_height} for {anatomy!r} is smaller than the target height "
                    f"{crop_size[0]}"
                )
            if not _crop_keeps_target(height, out_height, crop_size[0]):
                raise ValueError(
                    f"{fname}: readout crop {out_height} would shift the centred {crop_size[0]}-row target by "
                    f"one row (H={height}); use a height of the same parity as H"
                )
            kspace_t = physics.crop_readout(kspace_t, out_height)

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
        return ReconSample(
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
            extra_images=self._extra_images(extra_images, crop_size, fname),
            boxes=no_boxes(),
        )

    def _extra_images(self, images: np.ndarray | None, size: tuple[int, int], fname: str) -> torch.Tensor:
        """``(E, h, w)`` float32 extra images of the spec (``E = 0`` when it names none)."""
        wanted = len(self.input_spec.extra_images)
        if wanted == 0:
            return torch.zeros((0, *size), dtype=torch.float32)
        if images is None:
            raise ValueError(f"{fname}: the model needs the images {list(self.input_spec.extra_images)}")
        extra = torch.as_tensor(np.asarray(images, dtype=np.float32))
        if extra.shape != (wanted, *size):
            raise ValueError(
                f"{fname}: extra images must have shape {(wanted, *size)}, got {tuple(extra.shape)}"
            )
        return extra
