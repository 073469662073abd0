"""Reconstruct a data folder into reconstruction files with a classical method or a trained model.

Mixtures of experts build on this module (:func:`kspacelab.experts.reconstruct.reconstruct_with_bundle`).

Input: a leaderboard root (``acc4/kspace``, ``acc8/kspace``), a dataset root, or a single folder with
``kspace/``. Output: one HDF5 per k-space file, same name, dataset ``reconstruction`` float32 ``(S, h, w)``,
under ``OUT/<group>/`` (``OUT/acc4``, ``OUT/acc8``; flat for a single folder). The output size ``(h, w)`` is the
partner ``image_label`` size when an ``image/`` partner exists, else ``--crop`` (default 384, the SNU size).

Every input file is validated before anything is written; each output is written atomically. The
``reconstruct_*`` functions share one :class:`ReconOptions` (device, batch size, flip self-ensemble, output
size, progress bar).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from kspacelab import challenge, formats, physics
from kspacelab.classical.cs import cs_image
from kspacelab.classical.grappa import detect_acs, grappa_image
from kspacelab.classical.sense import sense_image
from kspacelab.classical.zero_filled import zero_filled_image
from kspacelab.data.dataset import SliceDataset
from kspacelab.data.transforms import SliceTransform
from kspacelab.errors import DataFormatError, KspacelabError
from kspacelab.models.base import ReconSample
from kspacelab.training.checkpoint import LoadedModel, load_model

DEFAULT_CROP = challenge.TARGET_SIZE

ClassicalMethod = Callable[[np.ndarray, np.ndarray, tuple[int, int]], np.ndarray]


def _zero_filled(kspace: np.ndarray, mask: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    return np.asarray(zero_filled_image(kspace, mask, crop=crop), dtype=np.float32)


def _grappa(kspace: np.ndarray, mask: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    return np.asarray(grappa_image(kspace, mask, crop=crop), dtype=np.float32)


def _sense(kspace: np.ndarray, mask: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    return np.asarray(sense_image(kspace, mask, crop=crop), dtype=np.float32)


def _cs(kspace: np.ndarray, mask: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    return np.asarray(cs_image(kspace, mask, crop=crop), dtype=np.float32)


CLASSICAL_METHODS: dict[str, ClassicalMethod] = {
    "zero-filled": _zero_filled,
    "grappa": _grappa,
    "sense": _sense,
    "cs": _cs,
}
#: methods that calibrate on the fully sampled centre block (checked for every file before anything is written)
CLASSICAL_METHODS_NEEDING_ACS = frozenset({"grappa", "sense", "cs"})


@dataclass(frozen=True)
class ReconOptions:
    """How to reconstruct, shared by every ``reconstruct_*`` function.

    Attributes:
        device: ``cpu``, ``cuda`` or ``cuda:N`` (learned models).
        batch_size: slices per forward pass (learned models; slices of one volume share a shape).
        tta: self-ensemble over a horizontal flip (learned models: two forward passes per slice).
        crop: output side length; default the partner ``image_label`` size, else 384.
        progress: progress bar over slices.
    """

    device: str = "cpu"
    batch_size: int = 1
    tta: bool = False
    crop: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise KspacelabError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.crop is not None and self.crop < 1:
            raise KspacelabError(f"--crop must be >= 1, got {self.crop}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise KspacelabError(f"unknown device {self.device!r}; use cpu, cuda or cuda:N")

    def torch_device(self) -> torch.device:
        """The device, checked to exist on this machine."""
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise KspacelabError("--device cuda was asked for but CUDA is not available on this machine")
        return torch.device(self.device)


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


def _classical_slice(method: str, path: str, index: int, size: tuple[int, int]) -> np.ndarray:
    """One slice with a classical method (also the job of a worker process)."""
    kspace, mask = formats.read_kspace_slice(path, index)
    return CLASSICAL_METHODS[method](kspace * mask[None, None, :], mask, size)


def _set_worker_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def reconstruct_dataset(
    data: str | Path,
    out: str | Path,
    method: str,
    options: ReconOptions | None = None,
    workers: int = 1,
    threads: int | None = 1,
) -> ReconstructionSummary:
    """Reconstruct every k-space file under ``data`` with a classical ``method`` into ``out``.

    Args:
        data: leaderboard root, dataset root or a folder with ``kspace/``.
        out: output root; created if needed.
        method: a key of :data:`CLASSICAL_METHODS`.
        options: output size and progress bar (:class:`ReconOptions`; device, batch size and TTA do not apply).
        workers: ``> 1``: reconstruct slices in that many worker processes (spawned); results and errors are
            as with ``1``.
        threads: torch intra-op threads of each process while reconstructing (restored afterwards; ``None``:
            leave as is). Default 1: a slice is too small a problem to gain from threads, and on a busy 2-core
            machine two threads were measured 7-10x slower than one (GRAPPA 0.33-0.52 vs 0.05 s per demo slice,
            SENSE 2.2 vs 0.32).
    """
    options = options or ReconOptions()
    crop, progress = options.crop, options.progress
    if method not in CLASSICAL_METHODS:
        raise KspacelabError(f"unknown method {method!r}; choose one of {', '.join(CLASSICAL_METHODS)}")
    if workers < 1 or (threads is not None and threads < 1):
        raise KspacelabError(f"--workers and threads must be >= 1, got {workers} and {threads}")
    volumes = validated_volumes(data)  # all inputs checked before anything is written
    if method in CLASSICAL_METHODS_NEEDING_ACS:
        for _, vol in volumes:
            try:
                detect_acs(formats.read_mask(vol.kspace_path))
            except ValueError as err:
                raise DataFormatError(vol.kspace_path, f"{method} needs a calibration block: {err}") from err

    out = Path(out)
    plan = [
        (group, vol, [(method, str(vol.kspace_path), index, output_size(vol, crop)) for index in range(n)])
        for group, vol in volumes
        for n in [formats.kspace_shape(vol.kspace_path)[0]]
    ]
    total_slices = sum(len(jobs) for _, _, jobs in plan)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if threads is not None:
            stack.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(threads)
        pending: list[list[Future[np.ndarray]]] | None = None
        if workers > 1:
            pool = stack.enter_context(
                ProcessPoolExecutor(
                    workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_set_worker_threads,
                    initargs=(threads or max(1, torch.get_num_threads() // workers),),
                )
            )
            stack.callback(
                pool.shutdown, wait=True, cancel_futures=True
            )  # on an error: do not finish the rest
            pending = [[pool.submit(_classical_slice, *job) for job in jobs] for _, _, jobs in plan]
        bar = stack.enter_context(
            tqdm(total=total_slices, desc=f"reconstruct ({method})", unit="slice", disable=not progress)
        )
        for v, (group, vol, jobs) in enumerate(plan):
            images = []
            for index, job in enumerate(jobs):
                try:
                    images.append(
                        pending[v][index].result() if pending is not None else _classical_slice(*job)
                    )
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


def flip_sample(sample: ReconSample) -> ReconSample:
    """The sample of the left-right flipped slice: k-space and mask flipped exactly (:func:`flip_width_kspace`),
    target and extra images flipped along ``W``."""
    kspace, mask = flip_width_kspace(sample.masked_kspace, sample.mask)
    extra = sample.extra_images.flip(-1) if sample.extra_images is not None else None
    return sample._replace(masked_kspace=kspace, mask=mask, target=sample.target.flip(-1), extra_images=extra)


def predict_batch(
    model: torch.nn.Module, batch: ReconSample, size: tuple[int, int], tta: bool
) -> torch.Tensor:
    """Model output for one collated batch (on the model's device) at ``size``; ``tta`` averages with the output
    of the flipped input, flipped back.

    Returns:
        ``(B, h, w)`` float32 on the CPU.
    """
    image = model.reconstruct(batch, size)  # type: ignore[operator]
    if tta:
        image = 0.5 * (image + model.reconstruct(flip_sample(batch), size).flip(-1))  # type: ignore[operator]
    return physics.center_crop(image, size).float().cpu()


def validated_volumes(data: str | Path) -> list[tuple[str, formats.Volume]]:
    """``(group, volume)`` pairs under ``data``; every k-space file validated (one-line error otherwise)."""
    groups = formats.discover_snu(Path(data))
    volumes = [(group, vol) for group, vols in groups.items() for vol in vols]
    for _, vol in volumes:
        formats.validate_kspace_file(vol.kspace_path)
    return volumes


def reconstruct_with_checkpoint(
    data: str | Path, out: str | Path, checkpoint: str | Path, options: ReconOptions | None = None
) -> ReconstructionSummary:
    """Reconstruct every k-space file under ``data`` with a trained model into ``out``.

    Args:
        data: leaderboard root, dataset root or a folder with ``kspace/``.
        out: output root; ``OUT/acc4``, ``OUT/acc8`` (or flat).
        checkpoint: a Lightning checkpoint of ``kspacelab train`` or a fastMRI VarNet state dict (loaded with
            ``weights_only=True``).
        options: device, batch size, TTA, output size, progress bar.
    """
    options = options or ReconOptions()
    device = options.torch_device()
    volumes = validated_volumes(data)  # before loading anything big or writing anything
    loaded = load_model(checkpoint, map_location=device)
    return reconstruct_with_model(volumes, out, loaded, options)


def reconstruct_with_model(
    data: str | Path | list[tuple[str, formats.Volume]],
    out: str | Path,
    loaded: LoadedModel,
    options: ReconOptions | None = None,
) -> ReconstructionSummary:
    """Reconstruct every k-space file under ``data`` with an in-memory model into ``out``.

    Args:
        data: a folder as for :func:`reconstruct_with_checkpoint`, or its validated ``(group, volume)`` list.
        out: output root.
        loaded: the model and its input spec (:func:`kspacelab.training.checkpoint.load_model`); the model is
            moved to ``options.device`` and put in eval mode.
        options: device, batch size, TTA, output size, progress bar.
    """
    options = options or ReconOptions()
    volumes = data if isinstance(data, list) else validated_volumes(data)
    device = options.torch_device()
    model = loaded.model.to(device).eval()
    transform = SliceTransform(loaded.input_spec, use_file_mask=True)
    out = Path(out)
    total_slices = sum(formats.kspace_shape(vol.kspace_path)[0] for _, vol in volumes)
    start = time.perf_counter()
    with (
        torch.inference_mode(),
        tqdm(
            total=total_slices, desc="reconstruct (model)", unit="slice", disable=not options.progress
        ) as bar,
    ):
        for group, vol in volumes:
            dataset = SliceDataset([vol], transform)
            loader = torch.utils.data.DataLoader(dataset, batch_size=options.batch_size, shuffle=False)
            images = []
            for batch in loader:
                size = (options.crop, options.crop) if options.crop is not None else batch.output_size()
                try:
                    images.append(predict_batch(model, batch.to(device), size, options.tta))
                except ValueError as err:  # e.g. a GRAPPA-start model on a mask without calibration block
                    raise DataFormatError(vol.kspace_path, f"the model failed: {err}") from err
                bar.update(len(batch.fname))
            target_dir = out / group if group else out
            formats.write_reconstruction(target_dir / vol.name, torch.cat(images).numpy().astype(np.float32))
    seconds = time.perf_counter() - start
    return ReconstructionSummary(out_dir=out, volumes=len(volumes), slices=total_slices, seconds=seconds)
