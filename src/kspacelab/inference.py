"""Reconstruct a data folder into SPEC §1.3 reconstruction files.

Input: a leaderboard root (``acc4/kspace``, ``acc8/kspace``), a dataset root, or a single folder with
``kspace/``. Output: one HDF5 per k-space file, same name, dataset ``reconstruction`` float32 ``(S, h, w)``,
under ``OUT/<group>/`` (``OUT/acc4``, ``OUT/acc8``; flat for a single folder). The output size ``(h, w)`` is the
partner ``image_label`` size when an ``image/`` partner exists, else ``--crop`` (default 384, the SNU size).

Every input file is validated before anything is written; each output is written atomically.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from kspacelab import formats
from kspacelab.classical.grappa import grappa_image
from kspacelab.classical.zero_filled import zero_filled_image
from kspacelab.errors import DataFormatError, KspacelabError

DEFAULT_CROP = 384

ClassicalMethod = Callable[[np.ndarray, np.ndarray, tuple[int, int]], np.ndarray]


def _zero_filled(kspace: np.ndarray, mask: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    return np.asarray(zero_filled_image(kspace, mask, crop=crop), dtype=np.float32)


def _grappa(kspace: np.ndarray, mask: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    return np.asarray(grappa_image(kspace, mask, crop=crop), dtype=np.float32)


CLASSICAL_METHODS: dict[str, ClassicalMethod] = {
    "zero-filled": _zero_filled,
    "grappa": _grappa,
}


@dataclass(frozen=True)
class ReconstructionSummary:
    """What :func:`reconstruct_dataset` did."""

    out_dir: Path
    volumes: int
    slices: int
    seconds: float

    @property
    def slices_per_second(self) -> float:
        return self.slices / self.seconds if self.seconds > 0 else float("inf")


def output_size(volume: formats.Volume, crop: int | None) -> tuple[int, int]:
    """``(h, w)`` of the reconstruction: ``crop`` if given, else the partner label's, else 384 x 384."""
    if crop is not None:
        return (crop, crop)
    if volume.image_path is not None and volume.image_path.is_file():
        shape = formats.read_image_volume(volume.image_path, "image_label").shape
        return (int(shape[-2]), int(shape[-1]))
    return (DEFAULT_CROP, DEFAULT_CROP)


def reconstruct_dataset(
    data: str | Path,
    out: str | Path,
    method: str,
    crop: int | None = None,
    progress: bool = True,
) -> ReconstructionSummary:
    """Reconstruct every k-space file under ``data`` with a classical ``method`` into ``out``.

    Args:
        data: leaderboard root, dataset root or a folder with ``kspace/``.
        out: output root; created if needed.
        method: a key of :data:`CLASSICAL_METHODS`.
        crop: output side length; default from the partner image files, else 384.
        progress: show a progress bar over slices.
    """
    if method not in CLASSICAL_METHODS:
        raise KspacelabError(f"unknown method {method!r}; choose one of {', '.join(CLASSICAL_METHODS)}")
    recon_fn = CLASSICAL_METHODS[method]
    groups = formats.discover_snu(Path(data))
    volumes = [(group, vol) for group, vols in groups.items() for vol in vols]
    for _, vol in volumes:  # validate all inputs before writing anything
        formats.validate_kspace_file(vol.kspace_path)

    out = Path(out)
    total_slices = sum(formats.kspace_shape(vol.kspace_path)[0] for _, vol in volumes)
    start = time.perf_counter()
    with tqdm(total=total_slices, desc=f"reconstruct ({method})", unit="slice", disable=not progress) as bar:
        for group, vol in volumes:
            size = output_size(vol, crop)
            n_slices = formats.kspace_shape(vol.kspace_path)[0]
            images = []
            for index in range(n_slices):
                kspace, mask = formats.read_kspace_slice(vol.kspace_path, index)
                try:
                    images.append(recon_fn(kspace * mask[None, None, :], mask, size))
                except ValueError as err:  # e.g. a mask without a calibration block for GRAPPA
                    raise DataFormatError(vol.kspace_path, f"slice {index}: {method} failed: {err}") from err
                bar.update(1)
            target_dir = out / group if group else out
            formats.write_reconstruction(target_dir / vol.name, np.stack(images).astype(np.float32))
    seconds = time.perf_counter() - start
    return ReconstructionSummary(out_dir=out, volumes=len(volumes), slices=total_slices, seconds=seconds)
