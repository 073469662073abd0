"""Reconstruct a data folder into SPEC §1.3 reconstruction files, with a classical method or a trained model.

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
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from kspacelab import formats, physics
from kspacelab.classical.grappa import grappa_image
from kspacelab.classical.zero_filled import zero_filled_image
from kspacelab.errors import DataFormatError, KspacelabError

if TYPE_CHECKING:
    from kspacelab.data.transforms import VarNetSample

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
    volumes = _validated_volumes(data)  # all inputs checked before anything is written

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
    k = physics.to_complex(kspace)
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


def _resolve_device(device: str) -> torch.device:
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise KspacelabError(f"unknown device {device!r}; use cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise KspacelabError("--device cuda was asked for but CUDA is not available on this machine")
    return torch.device(device)


def predict_batch(
    model: torch.nn.Module, batch: VarNetSample, size: tuple[int, int], tta: bool, device: torch.device
) -> torch.Tensor:
    """Model output for one collated batch, centre-cropped to ``size``; ``tta`` averages with the flipped input.

    Returns:
        ``(B, h, w)`` float32 on the CPU.
    """
    kspace = batch.masked_kspace.to(device)
    mask = batch.mask.to(device)
    low = torch.as_tensor(batch.num_low_frequencies).to(device)
    image = model(kspace, mask, low)
    if tta:
        flipped_k, flipped_m = flip_width_kspace(kspace, mask)
        image = 0.5 * (image + model(flipped_k, flipped_m, low).flip(-1))
    return physics.center_crop(image, size).float().cpu()


def reconstruct_with_checkpoint(
    data: str | Path,
    out: str | Path,
    checkpoint: str | Path,
    tta: bool = False,
    batch_size: int = 1,
    device: str = "cpu",
    crop: int | None = None,
    progress: bool = True,
) -> ReconstructionSummary:
    """Reconstruct every k-space file under ``data`` with a trained model into ``out``.

    Args:
        data: leaderboard root, dataset root or a folder with ``kspace/``.
        out: output root; ``OUT/acc4``, ``OUT/acc8`` (or flat).
        checkpoint: a Lightning checkpoint of ``kspacelab train`` or a fastMRI VarNet state dict (loaded with
            ``weights_only=True``).
        tta: horizontal-flip self-ensemble (two forward passes per slice).
        batch_size: slices per forward pass.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        crop: output side length; default from the partner image files, else 384.
        progress: progress bar over slices.
    """
    from kspacelab.training import load_model, model_data_settings

    if batch_size < 1:
        raise KspacelabError(f"--batch-size must be >= 1, got {batch_size}")
    torch_device = _resolve_device(device)
    volumes = _validated_volumes(data)  # before loading anything big or writing anything
    model, info = load_model(checkpoint, map_location=torch_device)
    num_adj_slices, crop_height = model_data_settings(info)
    return reconstruct_with_model(
        volumes, out, model, num_adj_slices, crop_height, tta, batch_size, torch_device, crop, progress
    )


def _validated_volumes(data: str | Path) -> list[tuple[str, formats.Volume]]:
    """``(group, volume)`` pairs under ``data``; every k-space file validated (one-line error otherwise)."""
    groups = formats.discover_snu(Path(data))
    volumes = [(group, vol) for group, vols in groups.items() for vol in vols]
    for _, vol in volumes:
        formats.validate_kspace_file(vol.kspace_path)
    return volumes


def reconstruct_with_model(
    data: str | Path | list[tuple[str, formats.Volume]],
    out: str | Path,
    model: torch.nn.Module,
    num_adj_slices: int = 1,
    crop_height: dict[str, int] | None = None,
    tta: bool = False,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    crop: int | None = None,
    progress: bool = True,
) -> ReconstructionSummary:
    """Reconstruct every k-space file under ``data`` with an in-memory ``model`` (VarNet call signature).

    Args:
        data: a folder as for :func:`reconstruct_with_checkpoint`, or its validated ``(group, volume)`` list.
        out: output root.
        model: maps ``(masked_kspace, mask, num_low_frequencies)`` to RSS images ``(B, H, W)``; put in eval mode.
        num_adj_slices, crop_height: input preparation the model was trained with
            (:func:`kspacelab.training.model_data_settings`).
        tta, batch_size, crop, progress: as for :func:`reconstruct_with_checkpoint`.
        device: where the model runs (it is moved there).
    """
    from kspacelab.data.dataset import SliceDataset
    from kspacelab.data.transforms import VarNetTransform

    volumes = data if isinstance(data, list) else _validated_volumes(data)
    torch_device = _resolve_device(device) if isinstance(device, str) else device
    model = model.to(torch_device).eval()
    transform = VarNetTransform(use_file_mask=True, crop_height=crop_height)
    out = Path(out)
    total_slices = sum(formats.kspace_shape(vol.kspace_path)[0] for _, vol in volumes)
    start = time.perf_counter()
    with (
        torch.inference_mode(),
        tqdm(total=total_slices, desc="reconstruct (model)", unit="slice", disable=not progress) as bar,
    ):
        for group, vol in volumes:
            dataset = SliceDataset([vol], transform, num_adj_slices=num_adj_slices)
            loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
            images = []
            for batch in loader:
                size = (
                    (crop, crop)
                    if crop is not None
                    else (int(batch.crop_size[0, 0]), int(batch.crop_size[0, 1]))
                )
                try:
                    images.append(predict_batch(model, batch, size, tta, torch_device))
                except ValueError as err:  # e.g. a GRAPPA-start model on a mask without calibration block
                    raise DataFormatError(vol.kspace_path, f"the model failed: {err}") from err
                bar.update(len(batch.fname))
            target_dir = out / group if group else out
            formats.write_reconstruction(target_dir / vol.name, torch.cat(images).numpy().astype(np.float32))
    seconds = time.perf_counter() - start
    return ReconstructionSummary(out_dir=out, volumes=len(volumes), slices=total_slices, seconds=seconds)
