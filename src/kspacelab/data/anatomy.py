"""Image slices labelled with their anatomy, for training the routing classifier (:mod:`kspacelab.models.classifier`).

Items are ``(image, label, fname, slice_num)``: a float32 ``(image_size, image_size)`` magnitude image from the
volume's image file (``image_grappa`` by default, the image a router also has at test time), resized and scaled
to a maximum of 1 with :func:`kspacelab.models.classifier.normalise_images`, and the index of the file name's
anatomy in :data:`~kspacelab.models.classifier.ANATOMY_CLASSES`. Training items are randomly flipped and
rotated by multiples of 90 degrees, drawn from torch's RNG (seeded by ``--seed``; per worker by torch).
"""

from __future__ import annotations

from typing import NamedTuple

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from kspacelab import formats
from kspacelab.models.classifier import ANATOMY_CLASSES, normalise_images

__all__ = ["AnatomyDataModule", "AnatomyItem", "AnatomySliceDataset"]


class AnatomyItem(NamedTuple):
    """One labelled slice (collates to a batch with a leading ``B`` axis)."""

    image: torch.Tensor  # float32 (image_size, image_size), maximum 1
    label: int  # index into ANATOMY_CLASSES
    fname: str
    slice_num: int


class AnatomySliceDataset(Dataset[AnatomyItem]):
    """Every slice of every volume that has an image file.

    Files are opened per item (no handles kept), so the dataset works in DataLoader worker processes.
    """

    def __init__(
        self,
        volumes: list[formats.Volume],
        image_key: str = "image_grappa",
        image_size: int = 128,
        augment: bool = False,
    ) -> None:
        """Args:
        volumes: SNU volumes with image files (:func:`kspacelab.formats.discover_folder`).
        image_key: image dataset to read (``image_grappa``, ``image_input`` or ``image_label``).
        image_size: side length of the returned images.
        augment: random flips and 90-degree rotations (training).
        """
        self.volumes = [v for v in volumes if v.image_path is not None]
        if not self.volumes:
            raise ValueError("no volume with an image file to classify")
        self.image_key = image_key
        self.image_size = image_size
        self.augment = augment
        self.items = [
            (vi, s)
            for vi, v in enumerate(self.volumes)
            for s in range(formats.kspace_shape(v.kspace_path)[0])
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> AnatomyItem:
        vi, slice_num = self.items[index]
        volume = self.volumes[vi]
        assert volume.image_path is not None
        raw = torch.from_numpy(formats.read_image_slice(volume.image_path, slice_num, self.image_key))
        image = normalise_images(raw[None], self.image_size)[0, 0]
        if self.augment:
            turns, flip = torch.randint(4, (1,)).item(), torch.randint(2, (1,)).item()
            image = torch.rot90(image, int(turns), dims=(0, 1))
            if flip:
                image = image.flip(-1)
        label = ANATOMY_CLASSES.index(volume.anatomy)
        return AnatomyItem(image.contiguous(), label, volume.name, slice_num)


class AnatomyDataModule(pl.LightningDataModule):
    """Train/val loaders of labelled image slices from an SNU dataset root (``ROOT/train``, ``ROOT/val``)."""

    def __init__(
        self,
        root: str,
        image_key: str = "image_grappa",
        image_size: int = 128,
        batch_size: int = 16,
        num_workers: int = 0,
        train_split: str = "train",
        val_split: str = "val",
        merge_val_into_train: bool = False,
        seed: int = 0,
    ) -> None:
        """Args:
        root: dataset root holding the split folders.
        image_key: image dataset the classifier reads (the router uses the same).
        image_size: side length the images are resized to (the model's ``image_size``).
        batch_size: slices per batch.
        num_workers: DataLoader worker processes.
        train_split, val_split: folder names under ``root``.
        merge_val_into_train: also train on the validation volumes (final model).
        seed: seed of the shuffling order.
        """
        super().__init__()
        self.save_hyperparameters()
        self.root = root
        self.image_key = image_key
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_split = train_split
        self.val_split = val_split
        self.merge_val_into_train = merge_val_into_train
        self.seed = seed
        self.train_dataset: AnatomySliceDataset | None = None
        self.val_dataset: AnatomySliceDataset | None = None

    def _volumes(self, split: str) -> list[formats.Volume]:
        return formats.discover_split(self.root, split, require_images=True)

    def setup(self, stage: str | None = None) -> None:
        """Build the val dataset (and the train dataset for ``"fit"``)."""
        val = self._volumes(self.val_split)
        self.val_dataset = AnatomySliceDataset(val, self.image_key, self.image_size)
        if stage in (None, "fit"):
            train = self._volumes(self.train_split) + (val if self.merge_val_into_train else [])
            self.train_dataset = AnatomySliceDataset(train, self.image_key, self.image_size, augment=True)

    def train_dataloader(self) -> DataLoader[AnatomyItem]:
        """Shuffled batches of training slices."""
        if self.train_dataset is None:
            raise RuntimeError("call setup('fit') first")
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.train_dataset,
            batch_size=self.batch_size,
            shuffle=True,
            generator=generator,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader[AnatomyItem]:
        """Validation slices in file order."""
        if self.val_dataset is None:
            raise RuntimeError("call setup() first")
        return DataLoader(self.val_dataset, batch_size=self.batch_size, num_workers=self.num_workers)
