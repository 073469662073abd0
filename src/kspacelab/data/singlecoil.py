"""The Lightning data module of the NYU fastMRI single-coil knee layout (extreme undersampling, x4 to x32).

A dataset root holds ``singlecoil_train/`` and ``singlecoil_val/`` (fastMRI's folder names), one file per volume:
``kspace`` complex ``(S, H, W)`` fully sampled, target ``reconstruction_esc`` float32 ``(S, h, w)``, attr ``max``
(``kspacelab simulate OUT --preset singlecoil`` writes this layout). Every slice is masked with fastMRI's random
mask of one acceleration and its centre fraction (:func:`kspacelab.masks.single_coil_mask_func`: 4/8/16/32 with
0.08/0.04/0.02/0.01):

* training: per slice and epoch an acceleration drawn from ``accelerations`` and a mask, both from a seed of
  ``(seed, epoch, file name, slice)``: a new mask every epoch, the same on a rerun or a resumed run, in any worker;
* validation: every slice once per acceleration, with the mask fastMRI gives the file (seeded with
  :func:`kspacelab.masks.fname_seed`).

Samples carry the exact acceleration of the mask function that drew the mask and its number of centre lines.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kspacelab import challenge, masks
from kspacelab.data.augment import stable_seed
from kspacelab.data.dataset import ShapeGroupedDataModule, SliceDataset, nyu_volumes
from kspacelab.data.transforms import SliceTransform
from kspacelab.errors import DataFormatError, KspacelabError
from kspacelab.formats import Volume
from kspacelab.models.base import InputSpec, ReconSample

__all__ = ["SingleCoilDataModule", "SingleCoilTransform", "single_coil_volumes"]

#: Accelerations of the single-coil masks, in order (the keys of :data:`kspacelab.masks.SINGLE_COIL_EXTREME`).
ACCELERATIONS: tuple[int, ...] = tuple(sorted(masks.SINGLE_COIL_EXTREME))


def _check_accelerations(accelerations: Sequence[int]) -> list[int]:
    accs = [int(a) for a in accelerations]
    if not accs or any(a not in masks.SINGLE_COIL_EXTREME for a in accs):
        raise KspacelabError(
            f"data.accelerations must be a non-empty list of {', '.join(map(str, ACCELERATIONS))}, "
            f"got {list(accelerations)}"
        )
    return accs


class SingleCoilTransform(SliceTransform):
    """:class:`SliceTransform` with single-coil masks of an exact acceleration.

    The acceleration of a slice is ``mask_acceleration`` when given (validation lists every slice once per
    acceleration), else drawn from ``accelerations`` with a seed of ``(mask_seed, epoch, file name, slice)``; the
    mask is :func:`kspacelab.masks.single_coil_mask_func` of that acceleration, seeded with the file name
    (``seed_from_fname``) or with ``(mask_seed, epoch, file name, slice)``. The sample's ``acceleration`` and
    ``num_low_frequencies`` are those of the mask function (not estimated from the mask).
    """

    def __init__(
        self,
        input_spec: InputSpec | None = None,
        accelerations: Sequence[int] = ACCELERATIONS,
        seed_from_fname: bool = False,
        mask_seed: int = 0,
    ) -> None:
        """Args:
        input_spec: the model's inputs (default: one slice, single-coil).
        accelerations: accelerations to draw from (4, 8, 16, 32).
        seed_from_fname: masks seeded with the file name (validation: fastMRI's masks).
        mask_seed: seed of the training draws.
        """
        super().__init__(
            input_spec if input_spec is not None else InputSpec(multicoil=False),
            seed_from_fname=seed_from_fname,
            mask_seed=int(mask_seed),
        )
        self.accelerations = _check_accelerations(accelerations)
        self._mask_funcs = {a: masks.single_coil_mask_func(a) for a in self.accelerations}

    def mask_for(
        self, width: int, fname: str, slice_num: int, mask_acceleration: int | None = None
    ) -> tuple[np.ndarray, int, int]:
        """The mask of one slice: ``(mask, acceleration, num_low_frequencies)``, bool ``(W,)`` and two ints."""
        acc = mask_acceleration
        if acc is None:
            rng = np.random.default_rng(
                stable_seed(self.mask_seed, self.epoch, fname, slice_num, "acceleration")
            )
            acc = self.accelerations[int(rng.integers(len(self.accelerations)))]
        func = self._mask_funcs.get(int(acc)) or masks.single_coil_mask_func(int(acc))
        line, num_low = func.sample_lines(width, seed=self.mask_draw_seed(fname, slice_num))
        return line, int(acc), int(num_low)

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
        """As :meth:`SliceTransform.__call__`, with the mask of :meth:`mask_for` (a file's own mask is not used:
        the files are fully sampled)."""
        del file_mask, acceleration
        line, acc, num_low = self.mask_for(np.shape(kspace)[-1], fname, slice_num, mask_acceleration)
        sample = super().__call__(
            kspace, line, target, attrs, fname, slice_num, anatomy, acc, extra_images=extra_images
        )
        return sample._replace(acceleration=acc, num_low_frequencies=num_low)


def single_coil_volumes(folder: str | Path) -> list[Volume]:
    """The fully sampled single-coil files of ``folder`` as volumes (anatomy from the name or ``acquisition``,
    else knee).

    Raises:
        DataFormatError: one line naming the folder (missing, no ``.h5`` files) or the file: multi-coil k-space,
            an undersampled test file (it has a ``mask``), no ``reconstruction_esc`` target.
    """
    volumes = []
    for volume, header in nyu_volumes(folder, split=Path(folder).name):
        path = volume.kspace_path
        if header.multicoil:
            raise DataFormatError(
                path, f"multi-coil k-space {header.kspace_shape}; a single-coil folder needs (S, H, W) files"
            )
        if header.has_mask:
            raise DataFormatError(
                path,
                "has a 'mask' (an undersampled test file); training and validation need fully sampled k-space",
            )
        if header.target_key is None:
            raise DataFormatError(path, "has no target 'reconstruction_esc'")
        volumes.append(volume if volume.anatomy else dataclasses.replace(volume, anatomy=challenge.KNEE))
    return volumes


class SingleCoilDataModule(ShapeGroupedDataModule):
    """Train/val loaders of an NYU single-coil knee dataset root (``ROOT/singlecoil_train``, ``ROOT/singlecoil_val``).

    Batches are collated :class:`~kspacelab.models.base.ReconSample` s of one shape: ``masked_kspace`` float32
    ``(B, 1, H, W, 2)``, ``mask`` bool ``(B, 1, 1, W, 1)``, ``target`` float32 ``(B, h, w)``, ``max_value`` ``(B,)``
    (the file attr ``max``), ``acceleration`` ``(B,)`` (exact), ``anatomy`` ``"knee"``. Masks: see
    :mod:`kspacelab.data.singlecoil`. Resuming mid-epoch works as for :class:`~kspacelab.data.dataset.SnuDataModule`
    (:attr:`resume_position`). Every argument is a plain type (YAML/LightningCLI friendly).
    """

    def __init__(
        self,
        root: str,
        batch_size: int = 1,
        num_workers: int = 0,
        accelerations: list[int] | None = None,
        train_split: str = "singlecoil_train",
        val_split: str = "singlecoil_val",
        sample_rate: float = 1.0,
        seed: int = 0,
    ) -> None:
        """Args:
        root: dataset root holding the split folders.
        batch_size: slices per batch (all of one shape).
        num_workers: DataLoader worker processes (persistent when > 0).
        accelerations: accelerations of the masks (default ``[4, 8, 16, 32]``): training draws one per slice and
            epoch, validation lists every slice once per acceleration.
        train_split, val_split: folder names under ``root``.
        sample_rate: fraction of volumes used (train and val; deterministic subset).
        seed: seed of the volume subsets, the training order and the training masks.
        """
        super().__init__()
        self.save_hyperparameters()
        self.root = root
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.accelerations = _check_accelerations(
            accelerations if accelerations is not None else ACCELERATIONS
        )
        self.train_split = train_split
        self.val_split = val_split
        self.sample_rate = sample_rate
        self.seed = seed
        self.input_spec = InputSpec(multicoil=False)
        self.train_dataset: SliceDataset | None = None
        self.val_dataset: SliceDataset | None = None
        self.resume_position: tuple[int, int] | None = None

    def set_input_spec(self, spec: InputSpec) -> None:
        """Prepare inputs for a single-coil model's ``spec``; a multi-coil spec is a one-line KspacelabError."""
        if spec.multicoil:
            raise KspacelabError(
                "the single-coil data (SingleCoilDataModule) needs a single-coil model; this model's input spec "
                "says multicoil=True"
            )
        super().set_input_spec(spec)

    def training_transform(self) -> SingleCoilTransform:
        """A fresh transform of the training split; :meth:`SliceTransform.set_epoch` selects the epoch."""
        return SingleCoilTransform(self.input_spec, self.accelerations, mask_seed=self.seed)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets: train and val for ``"fit"`` (or None), val for ``"validate"``."""
        if stage in (None, "fit", "validate"):
            self.val_dataset = SliceDataset(
                single_coil_volumes(Path(self.root) / self.val_split),
                SingleCoilTransform(self.input_spec, self.accelerations, seed_from_fname=True),
                self.sample_rate,
                self.seed,
                layout="nyu",
                mask_accelerations=self.accelerations,
            )
        if stage in (None, "fit"):
            self.train_dataset = SliceDataset(
                single_coil_volumes(Path(self.root) / self.train_split),
                self.training_transform(),
                self.sample_rate,
                self.seed,
                layout="nyu",
            )
