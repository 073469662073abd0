"""The SNU FastMRI Challenge's vocabulary: anatomies, accelerations, folder names, file names, target size.

Every other module uses these names instead of writing ``"brain"``, ``4`` or ``"acc4"`` itself.

* Anatomies: ``brain`` and ``knee`` (the file name's prefix tells which).
* Accelerations: 4 and 8; the leaderboard keeps each in a folder ``acc4/`` / ``acc8/``.
* Training and validation files are named ``{anatomy}_acc{acc}_{i}.h5`` (``brain_acc4_12.h5``); leaderboard files
  ``{anatomy}_test{i}.h5`` (``knee_test3.h5``, no underscore before the index; the folder gives the acceleration).
* Reconstructions and targets are ``TARGET_SIZE`` x ``TARGET_SIZE`` = 384 x 384 images.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ACCELERATIONS",
    "ANATOMIES",
    "BRAIN",
    "KNEE",
    "TARGET_SHAPE",
    "TARGET_SIZE",
    "Anatomy",
    "VolumeName",
    "acc_folder",
    "acceleration_in_name",
    "acceleration_of_folder",
    "parse_volume_name",
]

Anatomy = Literal["brain", "knee"]

#: The two anatomies by name.
BRAIN: Anatomy = "brain"
KNEE: Anatomy = "knee"
#: The challenge's anatomies, in the order the anatomy classifier numbers them.
ANATOMIES: tuple[Anatomy, ...] = (BRAIN, KNEE)
#: The challenge's nominal accelerations (the mask rule's line spacing).
ACCELERATIONS: tuple[int, ...] = (4, 8)
#: Side length of the challenge's target and reconstruction images (pixels).
TARGET_SIZE = 384
#: ``(height, width)`` of the challenge's target and reconstruction images.
TARGET_SHAPE: tuple[int, int] = (TARGET_SIZE, TARGET_SIZE)

_ACC_FOLDER = re.compile(r"acc(\d+)")
_ACC_IN_NAME = re.compile(_ACC_FOLDER.pattern, re.IGNORECASE)
_ANATOMY_GROUP = "(" + "|".join(ANATOMIES) + ")"
_TRAIN_NAME = re.compile(rf"^{_ANATOMY_GROUP}_acc(\d+)_(\d+)\.h5$", re.IGNORECASE)
_TEST_NAME = re.compile(rf"^{_ANATOMY_GROUP}_test(\d+)\.h5$", re.IGNORECASE)


def acc_folder(acceleration: int) -> str:
    """Folder name of an acceleration on the leaderboard: ``4`` -> ``"acc4"``."""
    return f"acc{int(acceleration)}"


def acceleration_of_folder(name: str) -> int | None:
    """Acceleration of a folder name ``accN`` (``"acc8"`` -> 8); None for any other name."""
    match = _ACC_FOLDER.fullmatch(name)
    return int(match.group(1)) if match else None


def acceleration_in_name(name: str) -> int | None:
    """Acceleration of the first ``accN`` anywhere in a name, case-insensitive (``"brain_acc8_3.h5"`` -> 8,
    ``"scan_ACC4.h5"`` -> 4); None when there is none. More lenient than :func:`parse_volume_name`."""
    match = _ACC_IN_NAME.search(name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class VolumeName:
    """What a challenge file name says: its anatomy, its acceleration (None on the leaderboard, where the folder
    says it) and its index."""

    anatomy: Anatomy
    acceleration: int | None
    index: int

    @property
    def stem(self) -> str:
        """The file name without ``.h5``: ``brain_acc4_12``, or ``knee_test3`` without an acceleration."""
        if self.acceleration is None:
            return f"{self.anatomy}_test{self.index}"
        return f"{self.anatomy}_{acc_folder(self.acceleration)}_{self.index}"

    @property
    def filename(self) -> str:
        """The file name: :attr:`stem` plus ``.h5`` (:func:`parse_volume_name` reads it back)."""
        return f"{self.stem}.h5"


def parse_volume_name(name: str) -> VolumeName | None:
    """Parse a challenge file name (``brain_acc4_12.h5``, ``knee_test3.h5``; case-insensitive); None for any
    other name."""
    match = _TRAIN_NAME.fullmatch(name)
    if match:
        anatomy, acc, index = match.groups()
        return VolumeName(anatomy.lower(), int(acc), int(index))  # type: ignore[arg-type]
    match = _TEST_NAME.fullmatch(name)
    if match:
        anatomy, index = match.groups()
        return VolumeName(anatomy.lower(), None, int(index))  # type: ignore[arg-type]
    return None
