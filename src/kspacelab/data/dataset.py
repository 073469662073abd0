"""Slice datasets, a shape-grouped batch sampler and the Lightning data module of the SNU layout.

* :class:`SliceDataset`: one item per slice of every volume (SNU pairs ``kspace/NAME.h5`` +
  ``image/NAME.h5``, or NYU fastMRI files), adjacent slices stacked along the coil axis, files opened
  lazily per item (no HDF5 handle is kept, so it works in forked DataLoader workers).
* :class:`ShapeGroupedBatchSampler`: batches of items with equal shapes (k-space sizes differ between
  volumes), deterministic per-epoch shuffling, split evenly across DDP ranks.
* :class:`ShapeGroupedDataModule`: the loaders (and mid-epoch resume) every data module shares;
  :class:`SnuDataModule`: train/val loaders of an SNU dataset root for Lightning (the single-coil one is
  :class:`kspacelab.data.singlecoil.SingleCoilDataModule`).

Note for the Trainer: Lightning cannot inject its own distributed sampler into a custom batch sampler,
so DDP runs need ``Trainer(use_distributed_sampler=False)``; :class:`ShapeGroupedBatchSampler` splits the
batches across ranks itself.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, get_worker_info

from kspacelab import challenge, formats, masks, metrics
from kspacelab.classical import METHODS
from kspacelab.data.augment import augment_from_config, mask_augment_from_config
from kspacelab.data.classical_cache import classical_slice
from kspacelab.data.transforms import DEFAULT_CROP_SIZE, SliceTransform
from kspacelab.errors import DataFormatError, KspacelabError
from kspacelab.models.base import MAX_BOXES, InputSpec, ReconSample, no_boxes

__all__ = [
    "ShapeGroupedBatchSampler",
    "ShapeGroupedDataModule",
    "SliceDataset",
    "SnuDataModule",
    "nyu_volumes",
    "seed_worker",
]

Layout = Literal["snu", "nyu"]


@dataclass(frozen=True)
class _VolumeInfo:
    """What the dataset needs to know about one volume, read once at construction (plain values only)."""

    volume: formats.Volume
    layout: Layout
    num_slices: int
    kspace_shape: tuple[int, int, int]  # (C, H, W) of one slice
    target_shape: tuple[int, int] | None
    attrs: dict[str, Any]  # "max" and optionally "recon_size"


def _nyu_anatomy(name: str, acquisition: str | None) -> str:
    """Anatomy of an NYU file: from its name (``file_brain_...``), else from the acquisition, else ``""``."""
    try:
        return formats.anatomy_from_name(name)
    except DataFormatError:
        pass
    acq = (acquisition or "").upper()
    if "FBK" in acq or acq.startswith("COR"):
        return challenge.KNEE
    if acq.startswith("AX"):
        return challenge.BRAIN
    return ""


def _snu_info(volume: formats.Volume, lesion_boxes: bool = False) -> _VolumeInfo:
    slices, coils, height, width = formats.kspace_shape(volume.kspace_path)
    target_shape: tuple[int, int] | None = None
    attrs: dict[str, Any] = {}
    if volume.image_path is not None:
        first = formats.read_image_slice(volume.image_path, 0)
        target_shape = (int(first.shape[0]), int(first.shape[1]))
        attrs["max"] = formats.read_image_attrs(volume.image_path)["max"]
        if lesion_boxes:
            attrs["boxes"] = _slice_boxes(volume.image_path)
    return _VolumeInfo(volume, "snu", slices, (coils, height, width), target_shape, attrs)


def _slice_boxes(image_path: Path) -> dict[int, torch.Tensor]:
    """The lesion boxes of an image file (:func:`kspacelab.formats.read_annotations`, validated) as slice ->
    ``ReconSample.boxes`` tensor; one-line DataFormatError for a slice with more than ``MAX_BOXES`` boxes."""
    boxes = {}
    for index, found in formats.read_annotations(image_path).items():
        if len(found) > MAX_BOXES:
            raise DataFormatError(
                image_path, f"slice {index}: {len(found)} lesion boxes, at most {MAX_BOXES} are supported"
            )
        rows = no_boxes()
        for row, box in enumerate(found):
            rows[row] = torch.tensor([box.x, box.y, box.width, box.height], dtype=torch.float32)
        boxes[index] = rows
    return boxes


def _nyu_info(volume: formats.Volume) -> _VolumeInfo:
    info = formats.read_nyu_header(volume.kspace_path)
    shape = info.kspace_shape
    coils, height, width = (shape[1], shape[2], shape[3]) if info.multicoil else (1, shape[1], shape[2])
    attrs: dict[str, Any] = {"recon_size": (info.recon_size[0], info.recon_size[1])}
    if info.max_value is not None:
        attrs["max"] = info.max_value
    target_shape: tuple[int, int] | None = None
    if info.target_key is not None:
        _, _, target = formats.read_nyu_slice(volume.kspace_path, 0)
        if target is not None:
            target_shape = (int(target.shape[-2]), int(target.shape[-1]))
    return _VolumeInfo(volume, "nyu", info.num_slices, (coils, height, width), target_shape, attrs)


def nyu_volumes(
    folder: str | os.PathLike[str], split: str = formats.NYU_SPLIT
) -> list[tuple[formats.Volume, formats.NyuInfo]]:
    """The files of an NYU fastMRI folder (:func:`kspacelab.formats.discover_nyu`, natural order) as volumes for
    ``SliceDataset(layout="nyu")``, each with its header; the anatomy comes from the file name or the
    ``acquisition`` attr (``""`` if neither tells)."""
    found = []
    for path in formats.discover_nyu(folder):
        header = formats.read_nyu_header(path)
        volume = formats.Volume(
            name=path.name,
            kspace_path=path,
            image_path=None,
            anatomy=_nyu_anatomy(path.name, header.acquisition),
            acceleration=None,
            split=split,
        )
        found.append((volume, header))
    return found


def _sample_volumes(volumes: Sequence[formats.Volume], sample_rate: float, seed: int) -> list[formats.Volume]:
    """A deterministic random subset of ``round(sample_rate * n)`` volumes (at least one), in input order."""
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"sample_rate must lie in (0, 1], got {sample_rate}")
    vols = list(volumes)
    if sample_rate >= 1.0 or not vols:
        return vols
    keep = max(1, round(sample_rate * len(vols)))
    chosen = np.random.default_rng(seed).choice(len(vols), size=keep, replace=False)
    return [vols[i] for i in sorted(int(i) for i in chosen)]


class SliceDataset(Dataset[ReconSample]):
    """One item per slice of every volume; item ``i`` is ``transform(...)`` of slice ``s`` of volume ``v``.

    Items are ordered volume by volume, slice by slice. With ``num_adj_slices = 2r + 1`` the k-space of
    slices ``s - r .. s + r`` (indices clamped to ``[0, S - 1]``: edge slices repeat) is concatenated along
    the coil axis; mask, target and slice number are those of slice ``s``.
    """

    def __init__(
        self,
        volumes: Sequence[formats.Volume],
        transform: SliceTransform,
        sample_rate: float = 1.0,
        seed: int = 0,
        layout: Layout = "snu",
        mask_accelerations: Sequence[int] | None = None,
        volume_max_area: bool = False,
        lesion_boxes: bool = False,
    ) -> None:
        """Args:
        volumes: SNU volumes (:func:`kspacelab.formats.discover_folder`), or NYU files wrapped as
            :class:`~kspacelab.formats.Volume` with ``layout="nyu"`` (see :meth:`from_nyu`).
        transform: turns a raw slice into a :class:`ReconSample`; its ``input_spec`` tells how many adjacent
            slices to stack along the coil axis and which extra images to read.
        sample_rate: fraction of volumes kept (a deterministic random subset drawn with ``seed``).
        seed: seed of the volume subset.
        layout: ``"snu"`` (k-space + image file pairs) or ``"nyu"`` (one fastMRI file per volume).
        volume_max_area: fill ``max_area`` with the volume's largest foreground area (targets read once per
            volume and worker, then cached), for the area-weighted loss.
        mask_accelerations: list every slice once per acceleration given (e.g. ``[4, 8]``: each slice is
            trained with an acc4 and an acc8 mask every epoch); None: once, with its own mask.
        lesion_boxes: fill ``boxes`` with the image files' lesion boxes (the 2026 annotations, read and
            validated here; training and validation); False: zeros (inference never reads annotations).

        Slice counts, shapes and ``max`` are read once here; no file stays open.
        """
        if layout not in ("snu", "nyu"):
            raise ValueError(f"layout must be 'snu' or 'nyu', got {layout!r}")
        self.transform = transform
        self.num_adj_slices = transform.input_spec.num_adj_slices
        self.extra_keys = transform.input_spec.extra_images
        self._keys: dict[Path, set[str]] = {}
        self.layout: Layout = layout
        self.volumes: list[_VolumeInfo] = [
            _snu_info(v, lesion_boxes) if layout == "snu" else _nyu_info(v)
            for v in _sample_volumes(volumes, sample_rate, seed)
        ]
        self.volume_max_area = volume_max_area
        self._max_area: dict[int, float] = {}
        self.mask_accelerations = [int(a) for a in mask_accelerations] if mask_accelerations else None
        self.items: list[tuple[int, int]] = [
            (vi, s) for vi, info in enumerate(self.volumes) for s in range(info.num_slices)
        ]
        if self.mask_accelerations:
            self._item_acc: list[int | None] = [a for _ in self.items for a in self.mask_accelerations]
            self.items = [item for item in self.items for _ in self.mask_accelerations]
        else:
            self._item_acc = [None] * len(self.items)

    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike[str],
        transform: SliceTransform,
        split: str = "",
        acceleration: int | None = None,
        sample_rate: float = 1.0,
        seed: int = 0,
    ) -> SliceDataset:
        """Dataset of an SNU folder holding ``kspace/`` (and optionally ``image/``).

        ``split`` and ``acceleration`` (of a leaderboard ``accN/`` folder) are passed to
        :func:`kspacelab.formats.discover_folder`.
        """
        volumes = formats.discover_folder(folder, split=split, acceleration=acceleration)
        return cls(volumes, transform, sample_rate, seed)

    @classmethod
    def from_nyu(
        cls,
        folder: str | os.PathLike[str],
        transform: SliceTransform,
        sample_rate: float = 1.0,
        seed: int = 0,
    ) -> SliceDataset:
        """Dataset of an NYU fastMRI folder (one ``.h5`` per volume; target ``reconstruction_rss``/``esc``).

        The anatomy comes from the file name or the ``acquisition`` attr (``""`` if neither tells); the
        crop size is the target's shape, or the header's recon size for files without a target.
        """
        volumes = [volume for volume, _ in nyu_volumes(folder)]
        return cls(volumes, transform, sample_rate, seed, layout="nyu")

    def __len__(self) -> int:
        return len(self.items)

    def shape_keys(self) -> list[tuple[int, ...]]:
        """Per item ``(C', H, W, h, w)``: the shape of ``masked_kspace`` (without the real axis, after the
        readout crop) and of ``target``; items with equal keys can share a batch."""
        keys: list[tuple[int, ...]] = []
        for vi, _ in self.items:
            info = self.volumes[vi]
            coils, height, width = info.kspace_shape
            h, w = info.target_shape or info.attrs.get("recon_size") or (0, 0)
            out_height = self.transform.output_height(height, info.volume.anatomy)
            keys.append((coils * self.num_adj_slices, out_height, width, int(h), int(w)))
        return keys

    def reseed(self, seed: int) -> None:
        """Reseed the transform's mask RNG (see :func:`seed_worker`)."""
        self.transform.reseed(seed)

    def _slice_indices(self, s: int, num_slices: int) -> list[int]:
        r = self.num_adj_slices // 2
        return [min(max(s + d, 0), num_slices - 1) for d in range(-r, r + 1)]

    def _read_kspace(self, info: _VolumeInfo, s: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Stacked k-space ``(adj * C, H, W)`` complex64 and the file mask ``(W,)`` (or None)."""
        path = info.volume.kspace_path
        stack: list[np.ndarray] = []
        file_mask: np.ndarray | None = None
        for j in self._slice_indices(s, info.num_slices):
            m: np.ndarray | None
            if info.layout == "snu":
                k, m = formats.read_kspace_slice(path, j)
            else:
                k, m, _ = formats.read_nyu_slice(path, j)
                if k.ndim == 2:
                    k = k[None]
            if j == s:
                file_mask = m
            stack.append(k)
        return np.concatenate(stack, axis=0), file_mask

    def __getitem__(self, key: int | tuple[int, int]) -> ReconSample:
        """Sample ``key``: an index, or ``(index, epoch)`` as :class:`ShapeGroupedBatchSampler` yields for
        training (the epoch selects the slice's mask draw and augmentation, in any worker)."""
        if isinstance(key, tuple):
            index, epoch = key
            set_epoch = getattr(self.transform, "set_epoch", None)
            if set_epoch is not None:
                set_epoch(epoch)
        else:
            index = key
        vi, s = self.items[index]
        info = self.volumes[vi]
        vol = info.volume
        kspace, file_mask = self._read_kspace(info, s)
        target: np.ndarray | None = None
        if info.layout == "snu" and vol.image_path is not None:
            target = formats.read_image_slice(vol.image_path, s, "image_label")
        elif info.layout == "nyu" and info.target_shape is not None:
            target = formats.read_nyu_slice(vol.kspace_path, s)[2]
        return self.transform(
            kspace,
            file_mask,
            target,
            info.attrs,
            fname=vol.name,
            slice_num=s,
            anatomy=vol.anatomy,
            acceleration=vol.acceleration,
            mask_acceleration=self._item_acc[index],
            extra_images=self._read_extra(info, s),
        )._replace(
            max_area=self._volume_max_area(vi) if self.volume_max_area else 0.0,
            boxes=info.attrs.get("boxes", {}).get(s, no_boxes()),
        )

    def _read_extra(self, info: _VolumeInfo, s: int) -> np.ndarray | None:
        """The transform's extra images ``(E, h, w)`` of slice ``s`` (None when none are wanted): each from the
        volume's image file when it has that dataset, else the spec's classical fallback computed from the
        k-space file and its mask (cached on disk, :mod:`kspacelab.data.classical_cache`)."""
        if not self.extra_keys:
            return None
        path = info.volume.image_path
        available = self._image_keys(path) if info.layout == "snu" and path is not None else set()
        size = info.target_shape or tuple(info.attrs.get("recon_size") or DEFAULT_CROP_SIZE)
        method = self.transform.input_spec.classical_fallback
        images = []
        for key in self.extra_keys:
            if key in METHODS:  # a classical method by name: always computed (and cached)
                images.append(self._classical(info, s, key, size))
            elif key in available:
                images.append(formats.read_image_slice(path, s, key))  # type: ignore[arg-type]
            else:
                images.append(self._classical(info, s, method, size))
        return np.stack(images)

    @staticmethod
    def _classical(info: _VolumeInfo, s: int, method: str, size: Sequence[int]) -> np.ndarray:
        """A classical image of slice ``s`` (cached); one-line error naming the file when the method fails."""
        try:
            return classical_slice(info.volume.kspace_path, s, method, (int(size[0]), int(size[1])))
        except ValueError as err:
            raise DataFormatError(
                info.volume.kspace_path, f"slice {s}: {method} image failed: {err}"
            ) from err

    def _image_keys(self, path: Path) -> set[str]:
        """Dataset names of an image file (remembered per file)."""
        if path not in self._keys:
            with h5py.File(path, "r") as f:
                self._keys[path] = set(f.keys())
        return self._keys[path]

    def _volume_max_area(self, vi: int) -> float:
        """Largest leaderboard-foreground area over the volume's targets (0.0 without targets or anatomy)."""
        if vi not in self._max_area:
            info = self.volumes[vi]
            vol = info.volume
            area = 0.0
            if info.layout == "snu" and vol.image_path is not None and vol.anatomy in challenge.ANATOMIES:
                labels = formats.read_image_volume(vol.image_path, "image_label")
                area = float(max(int(metrics.foreground_mask(label, vol.anatomy).sum()) for label in labels))
            self._max_area[vi] = area
        return self._max_area[vi]


class ShapeGroupedBatchSampler:
    """Batches of dataset indices whose shape keys are equal, shuffled deterministically per epoch.

    Per epoch: the indices of each shape group are shuffled (when ``shuffle``) and cut into batches of
    ``batch_size`` (the last batch of a group may be smaller unless ``drop_last``), then the list of all
    batches is shuffled. The permutation depends only on ``seed`` and the epoch (:meth:`set_epoch`).

    Under DDP rank ``r`` of ``R`` takes batches ``r, r + R, ...``; every rank gets the same number of
    batches: ``len // R`` with ``drop_last`` (extra batches dropped), else ``ceil(len / R)`` with the
    missing ones repeated from the start of the epoch's list (as torch's DistributedSampler does).
    Use it as ``DataLoader(dataset, batch_sampler=...)``; Lightning calls :meth:`set_epoch` through the
    ``sampler`` attribute.
    """

    def __init__(
        self,
        shapes: Sequence[Hashable],
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
        with_epoch: bool = False,
    ) -> None:
        """Args:
        shapes: one hashable shape key per dataset item (:meth:`SliceDataset.shape_keys`).
        batch_size: maximum items per batch.
        shuffle: shuffle within groups and the order of the batches.
        seed: base seed of the shuffling.
        drop_last: drop incomplete batches of each group and the batches left over by the rank split.
        with_epoch: yield ``(index, epoch)`` pairs instead of indices (training: the dataset then draws the
            slice's mask and augmentation for that epoch).
        num_replicas, rank: DDP world size and rank; default to torch.distributed's when it is
            initialised, else 1 and 0.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        distributed = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas}, {rank}"
            )
        groups: dict[Hashable, list[int]] = {}
        for index, key in enumerate(shapes):
            groups.setdefault(key, []).append(index)
        self.groups: list[list[int]] = list(groups.values())
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0
        self.with_epoch = with_epoch
        self._skip: tuple[int, int] | None = None

    @property
    def sampler(self) -> ShapeGroupedBatchSampler:
        """This sampler itself: Lightning calls ``dataloader.batch_sampler.sampler.set_epoch(epoch)``."""
        return self

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffling of ``epoch`` (call before iterating, as with DistributedSampler)."""
        self.epoch = int(epoch)

    def _all_batches(self) -> list[list[int]]:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        batches: list[list[int]] = []
        for group in self.groups:
            order = [group[i] for i in torch.randperm(len(group), generator=gen)] if self.shuffle else group
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=gen)]
        return batches

    def _per_rank(self, total: int) -> int:
        if self.drop_last:
            return total // self.num_replicas
        return math.ceil(total / self.num_replicas)

    def skip_once(self, epoch: int, batches: int) -> None:
        """Resume mid-epoch: the next iteration of ``epoch`` starts after its first ``batches`` batches."""
        self._skip = (int(epoch), int(batches))

    def __iter__(self) -> Iterator[list[Any]]:
        batches = self._all_batches()
        needed = self._per_rank(len(batches)) * self.num_replicas
        if needed > len(batches) and batches:
            repeats = math.ceil(needed / len(batches))
            batches = (batches * repeats)[:needed]
        else:
            batches = batches[:needed]
        mine = batches[self.rank :: self.num_replicas]
        if self._skip is not None and self._skip[0] == self.epoch:
            mine = mine[self._skip[1] :]
            self._skip = None
        if self.with_epoch:
            yield from ([(i, self.epoch) for i in batch] for batch in mine)
        else:
            yield from mine

    def __len__(self) -> int:
        return self._per_rank(len(self._all_batches()))


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed ``random``, numpy and the dataset's mask RNG from torch's seed.

    torch gives every worker the seed ``base_seed + worker_id`` (``base_seed`` drawn from the main
    process's torch RNG), so the seeds are distinct per worker and reproducible under a global seed.
    """
    del worker_id
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    info = get_worker_info()
    dataset = getattr(info, "dataset", None)
    reseed = getattr(dataset, "reseed", None)
    if callable(reseed):
        reseed(seed)


class ShapeGroupedDataModule(pl.LightningDataModule):
    """What the data modules share: the model's input spec, and train/val loaders of shape-grouped batches
    (:class:`ShapeGroupedBatchSampler`; training shuffled per ``seed`` and epoch, with ``(index, epoch)`` items) that
    resume mid-epoch at :attr:`resume_position` (set by :class:`~kspacelab.training.resume.ExactResume`).

    Subclasses set the attributes below in ``__init__`` and build :attr:`train_dataset` / :attr:`val_dataset` in
    ``setup``.
    """

    batch_size: int
    num_workers: int
    seed: int
    input_spec: InputSpec
    train_dataset: SliceDataset | None
    val_dataset: SliceDataset | None
    #: ``(epoch, batches)`` already trained when resuming mid-epoch (set by :class:`ExactResume`).
    resume_position: tuple[int, int] | None

    def set_input_spec(self, spec: InputSpec) -> None:
        """Prepare inputs as ``spec`` says (the model's :meth:`~kspacelab.models.base.ReconModel.input_spec` with
        the recipe's readout crop); call before :meth:`setup`."""
        self.input_spec = spec

    def _loader(self, dataset: SliceDataset | None, train: bool) -> DataLoader[ReconSample]:
        if dataset is None:
            raise RuntimeError("call setup('fit') (or setup('validate')) before asking for a dataloader")
        sampler = ShapeGroupedBatchSampler(
            dataset.shape_keys(),
            self.batch_size,
            shuffle=train,
            seed=self.seed,
            drop_last=False,
            with_epoch=train,
        )
        if train and self.resume_position is not None:
            sampler.skip_once(*self.resume_position)
            self.resume_position = None
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=seed_worker,
        )

    def train_dataloader(self) -> DataLoader[ReconSample]:
        """Shuffled shape-grouped batches of the training slices."""
        return self._loader(self.train_dataset, train=True)

    def val_dataloader(self) -> DataLoader[ReconSample]:
        """Shape-grouped batches of the validation slices in file order (not shuffled)."""
        return self._loader(self.val_dataset, train=False)


class SnuDataModule(ShapeGroupedDataModule):
    """Train/val loaders of an SNU dataset root (``ROOT/train``, ``ROOT/val``).

    Training masks: the file's (``use_file_mask``) or ``mask_type`` drawn with the mask function's RNG
    (seeded from ``seed``, reseeded per worker); validation masks: the file's or ``mask_type`` seeded from
    the file name. Batches hold slices of one shape (:class:`ShapeGroupedBatchSampler`); the training
    order depends on ``seed`` and the epoch. Every argument is a plain type (YAML/LightningCLI friendly,
    and the checkpoint's hyper-parameters load with ``weights_only=True``).
    For DDP pass ``Trainer(use_distributed_sampler=False)``.
    """

    def __init__(
        self,
        root: str,
        batch_size: int = 1,
        num_workers: int = 0,
        mask_type: str | None = None,
        center_fractions: list[float] | None = None,
        accelerations: list[int] | None = None,
        use_file_mask: bool = True,
        sample_rate: float = 1.0,
        train_split: str = "train",
        val_split: str = "val",
        merge_val_into_train: bool = False,
        only_anatomies: list[str] | None = None,
        only_accelerations: list[int] | None = None,
        augment: dict[str, Any] | None = None,
        mask_augment: dict[str, Any] | None = None,
        both_accelerations: bool = False,
        epoch_offset: int = 0,
        seed: int = 0,
    ) -> None:
        """Args:
        root: dataset root holding the split folders.
        batch_size: slices per batch (all of one shape).
        num_workers: DataLoader worker processes (persistent when > 0).
        mask_type: a kind of :func:`kspacelab.masks.create_mask_for_mask_type`; None: file masks only.
        center_fractions, accelerations: parameters of ``mask_type`` (default ``[0.08]`` and ``[4]``).
        use_file_mask: use the file's mask when it has one (False: always ``mask_type``).
        sample_rate: fraction of volumes used (train and val; deterministic subset).
        train_split, val_split: folder names under ``root``.
        merge_val_into_train: also train on the val volumes (final model); validation still runs on val.
        only_anatomies: keep only volumes of these anatomies (``["brain"]``, ...), in every split; for
            experts per anatomy.
        only_accelerations: keep only volumes whose file acceleration (``accN`` in the name) is listed,
            e.g. ``[8]``; for experts per acceleration. Not to be confused with ``accelerations``, the
            parameter of ``mask_type``.
        augment: MRAugment settings for the training split (:func:`kspacelab.data.augment.augment_from_config`:
            ``schedule``, ``params`` per anatomy, ``upsample``); None for none. The epoch reaches the
            workers with every index (``(index, epoch)`` pairs from the training sampler).
        mask_augment: mask augmentation for the training split
            (:func:`kspacelab.data.augment.mask_augment_from_config`: ``kinds`` with weights, ``schedule``,
            ``exclude_organiser_offset``, ``exclude_organiser_from``, ``center_fractions``, ``anatomies``); None for
            none.
        both_accelerations: train every slice with an acc4 and an acc8 mask each epoch.
        epoch_offset: epochs trained before this run: the augmentation schedules and the training mask draws
            see ``epoch + epoch_offset`` (a fine-tuning stage that goes on counting epochs, as sMaRtIfy's expert
            stage from epoch 30).
        seed: seed of the volume subsets, the training order and the training mask RNG.
        """
        super().__init__()
        self.save_hyperparameters()
        if not use_file_mask and mask_type is None:
            raise ValueError("use_file_mask=False needs a mask_type")
        if only_anatomies is not None and not set(only_anatomies) <= set(challenge.ANATOMIES):
            raise ValueError(
                f"only_anatomies must name {' / '.join(challenge.ANATOMIES)}, got {only_anatomies}"
            )
        self.root = root
        self.only_anatomies = list(only_anatomies) if only_anatomies is not None else None
        self.only_accelerations = list(only_accelerations) if only_accelerations is not None else None
        self.augment_config = dict(augment) if augment else None
        try:  # validate now: a bad key fails before any data is read
            augment_from_config(self.augment_config)
        except (TypeError, ValueError) as err:
            raise KspacelabError(f"data.augment: {err}") from None
        self.mask_augment_config = dict(mask_augment) if mask_augment else None
        try:
            mask_augment_from_config(self.mask_augment_config)
        except (TypeError, ValueError) as err:
            raise KspacelabError(f"data.mask_augment: {err}") from None
        self.both_accelerations = both_accelerations
        if epoch_offset < 0:
            raise KspacelabError(f"data.epoch_offset must be >= 0, got {epoch_offset}")
        self.epoch_offset = int(epoch_offset)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.mask_type = mask_type
        self.center_fractions = list(center_fractions) if center_fractions is not None else [0.08]
        self.accelerations = list(accelerations) if accelerations is not None else [4]
        if mask_type is not None:
            try:  # validate the mask settings now, as one line, before any data is read
                masks.create_mask_for_mask_type(mask_type, self.center_fractions, self.accelerations)
            except (TypeError, ValueError) as err:
                raise KspacelabError(f"data.mask_type {mask_type!r}: {err}") from None
        self.use_file_mask = use_file_mask
        #: The model's inputs (adjacent slices, readout crop, extra images); set by the trainer from the model
        #: (:meth:`set_input_spec`) before :meth:`setup`.
        self.input_spec = InputSpec()
        self.sample_rate = sample_rate
        self.train_split = train_split
        self.val_split = val_split
        self.merge_val_into_train = merge_val_into_train
        self.seed = seed
        self.train_dataset: SliceDataset | None = None
        self.val_dataset: SliceDataset | None = None
        #: ``(epoch, batches)`` already trained when resuming mid-epoch (set by :class:`ExactResume`).
        self.resume_position: tuple[int, int] | None = None

    def _volumes(self, split: str) -> list[formats.Volume]:
        volumes = [
            v
            for v in formats.discover_split(self.root, split)
            if (self.only_anatomies is None or v.anatomy in self.only_anatomies)
            and (self.only_accelerations is None or v.acceleration in self.only_accelerations)
        ]
        if not volumes:
            raise DataFormatError(
                Path(self.root) / split,
                f"no volumes left after only_anatomies={self.only_anatomies}, "
                f"only_accelerations={self.only_accelerations}",
            )
        return volumes

    def _transform(self, train: bool) -> SliceTransform:
        mask_func = None
        if self.mask_type is not None:
            mask_func = masks.create_mask_for_mask_type(
                self.mask_type, self.center_fractions, self.accelerations, seed=self.seed if train else None
            )
        return SliceTransform(
            self.input_spec,
            mask_func=mask_func,
            use_file_mask=self.use_file_mask,
            seed_from_fname=not train,
            augment=augment_from_config(self.augment_config, self.seed) if train else None,
            mask_seed=self.seed if train else None,
            mask_augment=mask_augment_from_config(self.mask_augment_config, self.seed) if train else None,
            epoch_offset=self.epoch_offset if train else 0,
        )

    def training_transform(self) -> SliceTransform:
        """A fresh transform of the training split (masks, MRAugment, mask augmentation, ``epoch_offset``): what
        every training sample goes through; :meth:`SliceTransform.set_epoch` selects the epoch."""
        return self._transform(train=True)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets: train and val for ``"fit"`` (or None), val for ``"validate"``."""
        if stage in (None, "fit", "validate"):
            val_volumes = self._volumes(self.val_split)
            self.val_dataset = SliceDataset(
                val_volumes, self._transform(train=False), self.sample_rate, self.seed, lesion_boxes=True
            )
        if stage in (None, "fit"):
            train_volumes = self._volumes(self.train_split)
            if self.merge_val_into_train:
                train_volumes += self._volumes(self.val_split)
            self.train_dataset = SliceDataset(
                train_volumes,
                self.training_transform(),
                self.sample_rate,
                self.seed,
                mask_accelerations=list(challenge.ACCELERATIONS) if self.both_accelerations else None,
                volume_max_area=True,
                lesion_boxes=True,
            )
