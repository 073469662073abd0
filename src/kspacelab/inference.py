"""Reconstruct a data folder into reconstruction files with a classical method or a trained model.

Mixtures of experts build on this module (:func:`kspacelab.experts.reconstruct.reconstruct_with_bundle`).

Input: a leaderboard root (``acc4/kspace``, ``acc8/kspace``), a dataset root, or a single folder with
``kspace/``. Output: one HDF5 per k-space file, same name, dataset ``reconstruction`` float32 ``(S, h, w)``,
under ``OUT/<group>/`` (``OUT/acc4``, ``OUT/acc8``; flat for a single folder). The output size ``(h, w)`` is the
partner ``image_label`` size when an ``image/`` partner exists, else ``--crop`` (default 384, the SNU size).

Single-coil NYU fastMRI folders (``.h5`` files directly in the folder: ``kspace`` ``(S, H, W)``, a target
``reconstruction_esc``/``_rss`` or, in test files, a ``mask``) are reconstructed by the zero-filled method and by
models (:attr:`ReconOptions.acceleration`): fully sampled files are undersampled with
:func:`kspacelab.masks.single_coil_mask_func` seeded with the file name (:func:`kspacelab.masks.fname_seed`, the
fastMRI validation mask), files with a ``mask`` use theirs; outputs flat ``OUT/NAME.h5`` at the target's size
(the header's recon size for files without a target). Every other path takes multi-coil SNU folders only.

Guarantees of every ``reconstruct_*`` function: every input file (k-space and image partner) is validated
completely before anything is written; the output folder is checked first (:func:`check_output_folder`: never an
input folder, never a foreign file replaced); each output is written atomically, and a run that fails (or is
interrupted) removes the new files it wrote, so it writes all of its outputs or none of the new ones; worker
processes end with their parent. The ``reconstruct_*`` functions share one :class:`ReconOptions` (device, batch
size, flip self-ensemble, output size, progress bar, skipping bad files).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from kspacelab import challenge, formats, masks, physics
from kspacelab.classical import METHODS, METHODS_NEEDING_ACS, ClassicalMethod
from kspacelab.classical.grappa import detect_acs
from kspacelab.data import classical_cache
from kspacelab.data.transforms import SliceTransform
from kspacelab.errors import DataFormatError, KspacelabError
from kspacelab.models.base import ReconSample
from kspacelab.timing import RunClock, check_timing_path, write_timing

if TYPE_CHECKING:
    from kspacelab.data.dataset import SliceDataset
    from kspacelab.training.checkpoint import LoadedModel

# The Lightning-based modules (data.dataset, training.checkpoint: ~5 s to import) are imported where they are
# used, so that a worker process of reconstruct_dataset (spawned: it imports this module) starts in ~2 s.

DEFAULT_CROP = challenge.TARGET_SIZE

#: Classical method name -> ``f(masked_kspace, mask, (h, w)) -> float32 image`` (:mod:`kspacelab.classical`).
CLASSICAL_METHODS: dict[str, ClassicalMethod] = METHODS
#: methods that calibrate on the fully sampled centre block (checked for every file before anything is written)
CLASSICAL_METHODS_NEEDING_ACS = METHODS_NEEDING_ACS
#: classical methods that also reconstruct single-coil NYU folders (the others need several coils)
SINGLE_COIL_METHODS = frozenset({"zero-filled"})


#: ``--precision`` -> the autocast dtype of the network layers (None: float32, no autocast)
PRECISIONS: dict[str, torch.dtype | None] = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


@dataclass(frozen=True)
class ReconOptions:
    """How to reconstruct, shared by every ``reconstruct_*`` function.

    Attributes:
        device: ``cpu``, ``cuda`` or ``cuda:N`` (learned models).
        batch_size: slices per forward pass (learned models; slices of one volume share a shape).
        tta: self-ensemble over a horizontal flip (learned models: two forward passes per slice).
        crop: output side length; default the partner ``image_label`` size, else 384.
        progress: progress bar over slices.
        skip_bad: leave out input files that fail validation (listed in the summary) instead of stopping.
        precision: ``"32"`` (float32), ``"bf16"`` or ``"16"``: the model's network layers run under
            ``torch.autocast`` in that dtype (learned models); FFTs, coil combination and data consistency stay in
            float32 (:func:`kspacelab.physics.fft2c` computes half-precision input in float32, and the k-space
            they meet is float32), and the output is float32.
        compile: ``torch.compile`` the model's forward (learned models; the first batch of each shape compiles).
        loader_workers: worker processes that read and prepare slices while the model runs (learned models;
            ``0``: in the main process); pinned memory when the device is a GPU.
        started: ``time.perf_counter()`` when the run started, the start of the clock of ``OUT/timing.json``
            (:mod:`kspacelab.timing`; the CLI passes the start of the command, so model loading and validation
            count); default: when the ``reconstruct_*`` function is called.
        acceleration: single-coil NYU folders: undersample the fully sampled files with
            :func:`kspacelab.masks.single_coil_mask_func` of this acceleration (4, 8, 16 or 32) seeded with the
            file name; None for folders of files that carry a ``mask`` (fastMRI test files). Files with a mask
            and this option, files without one and without it, and SNU data with it are refused.
    """

    device: str = "cpu"
    batch_size: int = 1
    tta: bool = False
    crop: int | None = None
    progress: bool = True
    skip_bad: bool = False
    precision: str = "32"
    compile: bool = False
    loader_workers: int = 0
    started: float | None = None
    acceleration: int | None = None

    def clock(self) -> RunClock:
        """A new run clock started at :attr:`started` (default: now)."""
        return RunClock() if self.started is None else RunClock(start=self.started)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise KspacelabError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.precision not in PRECISIONS:
            raise KspacelabError(
                f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.loader_workers < 0:
            raise KspacelabError(f"--loader-workers must be >= 0, got {self.loader_workers}")
        if self.crop is not None and self.crop < 1:
            raise KspacelabError(f"--crop must be >= 1, got {self.crop}")
        if self.acceleration is not None and self.acceleration not in masks.SINGLE_COIL_EXTREME:
            raise KspacelabError(
                f"--acceleration must be one of {', '.join(map(str, sorted(masks.SINGLE_COIL_EXTREME)))}, "
                f"got {self.acceleration}"
            )
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise KspacelabError(f"unknown device {self.device!r}; use cpu, cuda or cuda:N")

    def torch_device(self) -> torch.device:
        """The device, checked to exist on this machine."""
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise KspacelabError("--device cuda was asked for but CUDA is not available on this machine")
        return torch.device(self.device)


@dataclass(frozen=True)
class ReconstructionSummary:
    """What :func:`reconstruct_dataset` did; ``skipped``: one line per input file left out (``skip_bad``);
    ``timing``: the content of the ``OUT/timing.json`` the run wrote (:mod:`kspacelab.timing`), when it wrote one."""

    out_dir: Path
    volumes: int
    slices: int
    seconds: float
    skipped: tuple[str, ...] = ()
    timing: dict[str, Any] | None = None

    @property
    def slices_per_second(self) -> float:
        return self.slices / self.seconds if self.seconds > 0 else float("inf")


def output_size(volume: formats.Volume, crop: int | None) -> tuple[int, int]:
    """``(h, w)`` of the reconstruction: ``crop`` if given, else the partner label's (an NYU file's target, else
    its header's recon size), else 384 x 384."""
    if crop is not None:
        return (crop, crop)
    if volume.split == formats.NYU_SPLIT:
        target = formats.read_nyu_slice(volume.kspace_path, 0)[2]
        if target is not None:
            return (int(target.shape[-2]), int(target.shape[-1]))
        recon_size = formats.read_nyu_header(volume.kspace_path).recon_size
        return (recon_size[0], recon_size[1])
    if volume.image_path is not None and volume.image_path.is_file():
        shape = formats.read_image_slice(volume.image_path, 0, "image_label").shape
        return (int(shape[-2]), int(shape[-1]))
    return (DEFAULT_CROP, DEFAULT_CROP)


#: slow classical methods whose slices ``reconstruct`` keeps in the classical cache
#: (:mod:`kspacelab.data.classical_cache`), shared with the second images of two-stage models
CACHED_METHODS = ("sense", "cs")


def _classical_slice(
    method: str,
    path: str,
    index: int,
    size: tuple[int, int],
    nyu: bool = False,
    acceleration: int | None = None,
) -> np.ndarray:
    """One slice with a classical method (also the job of a worker process); SENSE and CS go through the cache.
    ``nyu``: a single-coil NYU file, masked as :func:`nyu_masked_slice` does with ``acceleration``."""
    if nyu:
        kspace, mask = nyu_masked_slice(path, index, acceleration)
        return CLASSICAL_METHODS[method](kspace, mask, size)
    if method in CACHED_METHODS:
        return classical_cache.classical_slice(path, index, method, size)
    kspace, mask = formats.read_kspace_slice(path, index)
    return CLASSICAL_METHODS[method](kspace * mask[None, None, :], mask, size)


def single_coil_mask(name: str, width: int, acceleration: int) -> np.ndarray:
    """The mask of a fully sampled single-coil file ``name`` at ``acceleration``: bool ``(W,)`` of
    :func:`kspacelab.masks.single_coil_mask_func` seeded with :func:`kspacelab.masks.fname_seed` (fastMRI's
    validation mask of that file; the same for every slice)."""
    drawn, _ = masks.single_coil_mask_func(acceleration)((1, width, 2), seed=masks.fname_seed(name))
    return masks.as_line_mask(drawn)


def nyu_masked_slice(path: str | Path, index: int, acceleration: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Slice ``index`` of a single-coil NYU file, undersampled: the file's ``mask`` when it has one, else
    :func:`single_coil_mask` at ``acceleration``.

    Returns:
        ``(kspace, mask)``: masked complex64 ``(1, H, W)`` and bool ``(W,)``.
    """
    kspace, mask, _ = formats.read_nyu_slice(path, index)
    if mask is None:
        if acceleration is None:
            raise DataFormatError(
                path, "fully sampled (no 'mask'): an acceleration is needed to undersample it"
            )
        mask = single_coil_mask(Path(path).name, kspace.shape[-1], acceleration)
    return (kspace * mask)[None], mask


def _init_worker(threads: int, parent: int) -> None:
    """Set up a worker process: its torch threads; Ctrl-C is left to the parent (which ends the workers); and a
    watcher thread that ends the worker as soon as its parent is gone (killed, even with SIGKILL)."""
    torch.set_num_threads(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    end_with_parent(parent)


def end_with_parent(parent: int, cleanup: Callable[[], None] | None = None) -> None:
    """Start a watcher thread that ends this process as soon as its parent ``parent`` is gone (killed, even with
    SIGKILL), after ``cleanup()`` (e.g. removing the files it wrote): worker and device processes never outlive
    the command."""
    threading.Thread(
        target=_exit_with_parent, args=(parent, cleanup), daemon=True, name="parent-watch"
    ).start()


def _exit_with_parent(parent: int, cleanup: Callable[[], None] | None, interval: float = 0.2) -> None:
    while os.getppid() == parent:
        time.sleep(interval)
    with formats.writes_paused():  # the main thread writes nothing more: no file appears after the cleanup
        if cleanup is not None:
            cleanup()
        os._exit(1)


def calibration_check(method: str) -> Callable[[formats.Volume], None] | None:
    """The input check of a classical ``method`` that calibrates on the fully sampled centre block (one-line
    DataFormatError for a file whose mask has none), or None for the others."""
    if method not in CLASSICAL_METHODS_NEEDING_ACS:
        return None

    def check(vol: formats.Volume) -> None:
        try:
            detect_acs(formats.read_mask(vol.kspace_path))
        except ValueError as err:
            raise DataFormatError(vol.kspace_path, f"{method} needs a calibration block: {err}") from err

    return check


def _close_pool(pool: ProcessPoolExecutor) -> Callable[..., bool]:
    """Exit callback for an ExitStack: a normal end waits for the pool; an error or Ctrl-C cancels the pending
    slices and ends the workers at once."""

    def close(exc_type: type[BaseException] | None, *_: object) -> bool:
        if exc_type is None:
            pool.shutdown(wait=True)
            return False
        processes = list((getattr(pool, "_processes", None) or {}).values())
        for process in processes:
            with contextlib.suppress(Exception):
                process.terminate()
        for process in processes:
            with contextlib.suppress(Exception):
                process.join(timeout=5.0)
                if process.is_alive():
                    process.kill()
                    process.join(timeout=5.0)
        # A worker ended while it was sending a result leaves half a message in the result pipe, and the pool's
        # manager thread waits for the rest forever (CPython's ProcessPoolExecutor, seen on 3.11 under load).
        # With the workers gone, closing the parent's copy of the pipe's write end turns that wait into an
        # end-of-file, which the manager thread handles as a broken pool, so the shutdown below returns.
        writer = getattr(getattr(pool, "_result_queue", None), "_writer", None)
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
        pool.shutdown(wait=True, cancel_futures=True)
        return False

    return close


def reconstruct_dataset(
    data: str | Path | list[tuple[str, formats.Volume]],
    out: str | Path,
    method: str,
    options: ReconOptions | None = None,
    workers: int = 1,
    threads: int | None = 1,
    outputs: formats.OutputSet | None = None,
    clock: RunClock | None = None,
) -> ReconstructionSummary:
    """Reconstruct every k-space file under ``data`` with a classical ``method`` into ``out``.

    Args:
        data: leaderboard root, dataset root or a folder with ``kspace/``; or its validated ``(group, volume)``
            list (:func:`validated_volumes`, the method's calibration check included).
        out: output root; created if needed.
        method: a key of :data:`CLASSICAL_METHODS`.
        options: output size and progress bar (:class:`ReconOptions`; device, batch size and TTA do not apply).
        workers: ``> 1``: reconstruct slices in that many worker processes (spawned); results and errors are
            as with ``1``.
        threads: torch intra-op threads of each process while reconstructing (restored afterwards; ``None``:
            leave as is). Default 1: a slice is too small a problem to gain from threads, and on a busy 2-core
            machine two threads were measured 7-10x slower than one (GRAPPA 0.33-0.52 vs 0.05 s per demo slice,
            SENSE 2.2 vs 0.32).
        outputs, clock: as for :func:`reconstruct_with_model` (``OUT/timing.json`` only when ``outputs`` is None).
    """
    options = options or ReconOptions()
    clock = clock or options.clock()
    crop, progress = options.crop, options.progress
    if method not in CLASSICAL_METHODS:
        raise KspacelabError(f"unknown method {method!r}; choose one of {', '.join(CLASSICAL_METHODS)}")
    if workers < 1 or (threads is not None and threads < 1):
        raise KspacelabError(f"--workers and threads must be >= 1, got {workers} and {threads}")

    skipped: list[str] = []
    # all inputs checked, and the output folder, before anything is written
    volumes, files = run_volumes(
        data, out, options, skipped, calibration_check(method), single_coil=method in SINGLE_COIL_METHODS
    )
    timing_path = check_timing_path(out) if outputs is None else None

    out = Path(out)
    plan = [
        (
            group,
            vol,
            path,
            [(method, str(vol.kspace_path), index, size, nyu, options.acceleration) for index in range(n)],
        )
        for (group, vol), path in zip(volumes, files, strict=True)
        for n, size, nyu in [
            (formats.kspace_shape(vol.kspace_path)[0], output_size(vol, crop), vol.split == formats.NYU_SPLIT)
        ]
    ]
    total_slices = sum(len(jobs) for _, _, _, jobs in plan)
    start = time.perf_counter()
    with formats.all_or_nothing(outputs) as run, contextlib.ExitStack() as stack:
        if threads is not None:
            stack.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(threads)
        pending: list[list[Future[np.ndarray]]] | None = None
        if workers > 1:
            pool = ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(threads or max(1, torch.get_num_threads() // workers), os.getpid()),
            )
            stack.push(_close_pool(pool))  # on an error or Ctrl-C: end the workers, do not finish the rest
            with formats.sigint_ignored():  # the workers start on the first submits; they inherit it
                pending = [[pool.submit(_classical_slice, *job) for job in jobs] for _, _, _, jobs in plan]
        bar = stack.enter_context(
            tqdm(total=total_slices, desc=f"reconstruct ({method})", unit="slice", disable=not progress)
        )
        for v, (group, vol, path, jobs) in enumerate(plan):
            images = []
            for index, job in enumerate(jobs):
                try:
                    images.append(
                        pending[v][index].result() if pending is not None else _classical_slice(*job)
                    )
                except ValueError as err:  # e.g. a mask without a calibration block for GRAPPA
                    raise DataFormatError(vol.kspace_path, f"slice {index}: {method} failed: {err}") from err
                bar.update(1)
            formats.write_reconstruction(run.claim(path), np.stack(images).astype(np.float32))
            clock.lap(group, len(jobs))
        report = None
        if timing_path is not None:
            report = clock.report(method, "cpu", 1, False)
            write_timing(run.claim(timing_path), report)
    seconds = time.perf_counter() - start
    return ReconstructionSummary(
        out_dir=out,
        volumes=len(volumes),
        slices=total_slices,
        seconds=seconds,
        skipped=tuple(skipped),
        timing=report,
    )


def predict_batch(
    model: torch.nn.Module, batch: ReconSample, size: tuple[int, int], tta: bool, precision: str = "32"
) -> torch.Tensor:
    """Model output for one collated batch (on the model's device) at ``size``; ``tta``: the model's self-ensemble
    (:meth:`~kspacelab.models.base.ReconModel.reconstruct_ensemble`); ``precision``: a key of
    :data:`PRECISIONS` (the network layers under ``torch.autocast``).

    Returns:
        ``(B, h, w)`` float32 on the CPU.
    """
    dtype = PRECISIONS[precision]
    device_type = batch.masked_kspace.device.type
    with torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
        image = model.reconstruct_ensemble(batch, size) if tta else model.reconstruct(batch, size)  # type: ignore[operator]
    return physics.center_crop(image, size).float().cpu()


def validate_volume(volume: formats.Volume) -> None:
    """Check one input volume completely (one-line DataFormatError otherwise): the k-space file
    (:func:`kspacelab.formats.validate_kspace_file`: readable, shapes, dtypes, at least one coil, a mask of
    length ``W`` with at least one line, finite values) and its image partner when there is one
    (:func:`kspacelab.formats.validate_image_file`, with the slice count of the k-space file)."""
    formats.validate_kspace_file(volume.kspace_path)
    if volume.image_path is not None:
        slices = formats.kspace_shape(volume.kspace_path)[0]
        formats.validate_image_file(volume.image_path, expected_slices=slices)


def validated_volumes(
    data: str | Path,
    skipped: list[str] | None = None,
    check: Callable[[formats.Volume], None] | None = None,
    single_coil: bool = False,
    acceleration: int | None = None,
) -> list[tuple[str, formats.Volume]]:
    """``(group, volume)`` pairs under ``data``, every volume validated (:func:`validate_volume`, then ``check``).

    A bad volume raises its one-line DataFormatError; when ``skipped`` is a list (``--skip-bad``) it is left out
    instead and its error message appended to ``skipped`` (an error when no volume is left).

    ``single_coil``: the run also takes a folder of single-coil NYU files (:func:`is_nyu_folder`; one group
    ``""``, each file checked by :func:`validate_nyu_volume` with ``acceleration``); without it such a folder is
    a one-line error naming its first file. ``acceleration`` with SNU data is an error (SNU files carry masks).
    """
    if is_nyu_folder(data):
        if not single_coil:
            refuse_nyu_folder(data, "this reconstruction")
        from kspacelab.data.dataset import nyu_volumes

        groups = {"": [volume for volume, _ in nyu_volumes(data)]}
        validate: Callable[[formats.Volume], None] = functools.partial(
            validate_nyu_volume, acceleration=acceleration
        )
    else:
        if acceleration is not None:
            raise KspacelabError(
                f"{data}: --acceleration applies to folders of fully sampled single-coil NYU files; SNU k-space "
                "files carry their masks"
            )
        groups = formats.discover_snu(Path(data))
        validate = validate_volume
    volumes = []
    for group, vols in groups.items():
        for vol in vols:
            try:
                validate(vol)
                if check is not None:
                    check(vol)
            except DataFormatError as err:
                if skipped is None:
                    raise
                skipped.append(str(err))
                continue
            volumes.append((group, vol))
    if not volumes:
        raise DataFormatError(data, f"no valid k-space file ({len(skipped or [])} skipped as bad)")
    return volumes


def is_nyu_folder(data: str | Path) -> bool:
    """True for a folder with ``.h5`` files directly in it: the NYU fastMRI layout (SNU folders keep their files
    under ``kspace/`` and ``image/``)."""
    base = Path(data)
    return base.is_dir() and any(not p.name.startswith(".") for p in base.glob("*.h5"))


def nyu_acceleration(volume: formats.Volume, acceleration: int | None) -> int | None:
    """The exact acceleration of an NYU file's undersampling in a run with ``acceleration``
    (:attr:`ReconOptions.acceleration`): that acceleration for a fully sampled file, a test file's ``acceleration``
    attr (fastMRI's test files carry it), else None (unknown: the models get an estimate from the mask). None for
    SNU volumes."""
    if volume.split != formats.NYU_SPLIT:
        return None
    header = formats.read_nyu_header(volume.kspace_path)
    if not header.has_mask:
        return acceleration
    value = header.attrs.get("acceleration")
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        raise DataFormatError(
            volume.kspace_path, f"attribute 'acceleration' is not a number: {value!r}"
        ) from None


def refuse_nyu_folder(data: str | Path, what: str) -> None:
    """For the paths that take multi-coil SNU data only: a one-line DataFormatError naming the first file of an NYU
    folder (:func:`is_nyu_folder`), saying that ``what`` (e.g. ``"this reconstruction"``) does not take it."""
    if is_nyu_folder(data):
        raise DataFormatError(
            formats.discover_nyu(data)[0],
            f"an NYU fastMRI file; {what} takes multi-coil SNU folders (kspace/, acc4/, acc8/, a dataset root); "
            "single-coil NYU folders are reconstructed with --method zero-filled or --checkpoint",
        )


def validate_nyu_volume(volume: formats.Volume, acceleration: int | None) -> None:
    """Check a single-coil NYU file completely (one-line DataFormatError otherwise): header
    (:func:`kspacelab.formats.read_nyu_header`), single-coil ``kspace`` ``(S, H, W)`` with ``S, H, W >= 1``, finite
    k-space and target, a ``mask`` (the file's or the drawn one) that samples a line; and the mask source: a file
    with a ``mask`` (a test file) is refused with ``acceleration`` (it would not be used), a fully sampled file
    without it."""
    path = volume.kspace_path
    header = formats.read_nyu_header(path)
    if header.multicoil:
        raise DataFormatError(
            path,
            f"multi-coil k-space {header.kspace_shape} in a single-coil run: an NYU folder is reconstructed as "
            "single-coil data (S, H, W)",
        )
    if 0 in header.kspace_shape:
        raise DataFormatError(path, f"'kspace' is empty (shape {header.kspace_shape})")
    if header.has_mask and acceleration is not None:
        raise DataFormatError(
            path,
            "has its own 'mask' (a test file), which is used: leave out --acceleration (it applies to fully "
            "sampled files only)",
        )
    if not header.has_mask and acceleration is None:
        raise DataFormatError(
            path,
            "fully sampled (no 'mask'): give --acceleration "
            f"({', '.join(map(str, sorted(masks.SINGLE_COIL_EXTREME)))}) to undersample it",
        )
    width = header.kspace_shape[-1]
    if acceleration is not None and not single_coil_mask(path.name, width, acceleration).any():
        raise DataFormatError(
            path, f"the x{acceleration} mask of this file (W={width}) samples no k-space line"
        )
    for index in range(header.num_slices):
        kspace, mask, target = formats.read_nyu_slice(path, index)
        if not np.isfinite(kspace).all():
            raise DataFormatError(path, f"'kspace' slice {index} has non-finite values")
        if target is not None and not np.isfinite(target).all():
            raise DataFormatError(path, f"'{header.target_key}' slice {index} has non-finite values")
        if mask is not None and not mask.any():
            raise DataFormatError(path, "'mask' samples no k-space line (all zeros)")


def run_volumes(
    data: str | Path | list[tuple[str, formats.Volume]],
    out: str | Path,
    options: ReconOptions,
    skipped: list[str],
    check: Callable[[formats.Volume], None] | None = None,
    single_coil: bool = False,
) -> tuple[list[tuple[str, formats.Volume]], list[Path]]:
    """The ``(group, volume)`` pairs of a run and their output files, the output folder checked
    (:func:`check_output_folder`). ``data``: a folder, whose volumes are validated here (:func:`validated_volumes`
    with ``check``, ``single_coil`` and ``options.acceleration``; with ``options.skip_bad`` the bad ones are
    appended to ``skipped``), or a list validated before (part of a larger run)."""
    if isinstance(data, list):
        return data, check_output_folder(out, data)
    volumes = validated_volumes(
        data, skipped if options.skip_bad else None, check, single_coil, options.acceleration
    )
    return volumes, check_output_folder(out, volumes, data)


def output_file(out: str | Path, group: str, volume: formats.Volume) -> Path:
    """The reconstruction file of ``volume``: ``OUT/<group>/NAME.h5`` (``OUT/NAME.h5`` for a single folder)."""
    return (Path(out) / group if group else Path(out)) / volume.name


def check_output_folder(
    out: str | Path, volumes: Sequence[tuple[str, formats.Volume]], data: str | Path | None = None
) -> list[Path]:
    """Refuse an output folder that would overwrite an input or a foreign file; return every volume's output file.

    A one-line KspacelabError, before anything is written, when: ``out`` is, contains or lies inside an input
    folder (``data`` and the folders of every k-space and image file, symbolic links resolved); ``out`` or a
    folder on the way to an output file is a file; an output file exists and is not a kspacelab reconstruction
    (an ``.h5`` with a ``reconstruction`` dataset, which a new run may replace).
    """
    out = Path(out)
    files = [output_file(out, group, vol) for group, vol in volumes]
    inputs = {Path(data)} if data is not None else set()
    for _, vol in volumes:
        inputs.update(p.parent for p in (vol.kspace_path, vol.image_path) if p is not None)
        inputs.update(p.resolve().parent for p in (vol.kspace_path, vol.image_path) if p is not None)
    try:
        _refuse_input_folders(out, inputs)
        for path in files:
            _refuse_foreign_file(path)
    except OSError as err:
        raise formats.write_error(out, err) from err
    return files


def _refuse_input_folders(out: Path, inputs: set[Path]) -> None:
    target = out.resolve()
    for folder in sorted(
        {f.resolve() for f in inputs}, key=lambda f: (-len(f.parts), f)
    ):  # most specific first
        if target == folder or folder in target.parents or target in folder.parents:
            where = "is" if target == folder else "lies inside" if folder in target.parents else "contains"
            raise KspacelabError(
                f"{out}: the output folder {where} the input folder {folder}; choose an output folder outside the "
                "input data (inputs are never overwritten)"
            )


def _refuse_foreign_file(path: Path) -> None:
    for place in reversed(path.parents):
        if place.exists() and not place.is_dir():
            raise KspacelabError(f"{place}: exists and is a file, expected a folder for the outputs")
    if path.is_dir():
        raise KspacelabError(f"{path}: exists and is a folder, expected a reconstruction file")
    if path.exists() and not formats.is_reconstruction_file(path):
        raise KspacelabError(
            f"{path}: exists and is not a kspacelab reconstruction (no 'reconstruction' dataset); refusing to "
            "replace it"
        )


def reconstruct_with_checkpoint(
    data: str | Path,
    out: str | Path,
    checkpoint: str | Path,
    options: ReconOptions | None = None,
    model_config: str | Path | None = None,
) -> ReconstructionSummary:
    """Reconstruct every k-space file under ``data`` with a trained model into ``out``.

    Args:
        data: leaderboard root, dataset root or a folder with ``kspace/``.
        out: output root; ``OUT/acc4``, ``OUT/acc8`` (or flat).
        checkpoint: a Lightning checkpoint of ``kspacelab train``, or fastMRI VarNet or PromptMR+ weights (loaded
            with ``weights_only=True``; see :func:`kspacelab.training.checkpoint.load_model`).
        options: device, batch size, TTA, output size, progress bar.
        model_config: YAML configuration of PromptMR+ weights from elsewhere (default: read off the tensors).
    """
    options = options or ReconOptions()
    clock = options.clock()
    device = options.torch_device()
    skipped: list[str] = []
    # inputs and output folder checked before loading anything big or writing anything
    volumes = validated_volumes(
        data, skipped if options.skip_bad else None, single_coil=True, acceleration=options.acceleration
    )
    check_output_folder(out, volumes, data)
    check_timing_path(out)
    from kspacelab.training.checkpoint import load_model

    loaded = load_model(checkpoint, map_location=device, model_config=model_config)
    summary = reconstruct_with_model(
        volumes, out, loaded, options, clock=clock, what=f"checkpoint {Path(checkpoint).name}"
    )
    return dataclasses.replace(summary, skipped=tuple(skipped))


def check_model_data(loaded: LoadedModel, volumes: Sequence[tuple[str, formats.Volume]]) -> None:
    """Refuse multi-coil (SNU) data for a single-coil model (input spec ``multicoil=False``): a one-line
    DataFormatError naming the first such file. Multi-coil models run on single-coil files (one coil)."""
    if loaded.input_spec.multicoil:
        return
    for _, vol in volumes:
        if vol.split != formats.NYU_SPLIT:
            raise DataFormatError(
                vol.kspace_path,
                f"multi-coil k-space, but the model {loaded.name!r} is single-coil: give it a folder of "
                "single-coil NYU files",
            )


def volume_batches(dataset: SliceDataset, batch_size: int) -> list[list[int]]:
    """Batches of consecutive dataset items, never across volumes (slices of a volume share a shape), in order:
    every volume's slices are contiguous and end a batch."""
    batches: list[list[int]] = []
    for index, (_, s) in enumerate(dataset.items):
        if s == 0 or len(batches[-1]) == batch_size:
            batches.append([index])
        else:
            batches[-1].append(index)
    return batches


def note_widened_crops(transform: SliceTransform, volumes: Sequence[tuple[str, formats.Volume]]) -> None:
    """Print one note when the model's training readout crop is smaller than a volume's target height (the
    transform then reconstructs with the target height: :meth:`SliceTransform.output_height`)."""
    spec = transform.input_spec
    for _, vol in volumes:
        _, _, height, _ = formats.kspace_shape(vol.kspace_path)
        target = output_size(vol, None)[0]
        trained = spec.readout_height(height, vol.anatomy)
        used = transform.output_height(height, vol.anatomy, target)
        if used != trained:
            print(
                f"note: the model was trained with a readout crop of {trained} rows for {vol.anatomy}, which does "
                f"not hold the target height {target} of {vol.name} (H={height}); reconstructing with {used} "
                "rows (a readout crop only saves memory in training)",
                file=sys.stderr,
            )
            return


def reconstruct_with_model(
    data: str | Path | list[tuple[str, formats.Volume]],
    out: str | Path,
    loaded: LoadedModel,
    options: ReconOptions | None = None,
    outputs: formats.OutputSet | None = None,
    clock: RunClock | None = None,
    what: str | None = None,
) -> ReconstructionSummary:
    """Reconstruct every k-space file under ``data`` with an in-memory model into ``out``.

    A readout crop of the model's input spec that is smaller than a volume's target height is widened to the
    target height (a printed note says so): the crop saves memory in training, the model runs on any geometry.

    Args:
        data: a folder as for :func:`reconstruct_with_checkpoint`, or its validated ``(group, volume)`` list.
        out: output root (checked with :func:`check_output_folder`).
        loaded: the model and its input spec (:func:`kspacelab.training.checkpoint.load_model`); the model is
            moved to ``options.device`` and put in eval mode.
        options: device, batch size, TTA, output size, progress bar, skipping bad files.
        outputs: the run's output set when this call is part of a larger run (a bundle); by default its own.
            On a failure every new file of the set is removed.
        clock: the run's clock (default: ``options.clock()``); a volume's lap is charged when it is written.
        what: the model's description in ``OUT/timing.json``, which is written only when ``outputs`` is None
            (this call is the whole run; a larger run writes its own).
    """
    from kspacelab.data.dataset import SliceDataset

    options = options or ReconOptions()
    clock = clock or options.clock()
    skipped: list[str] = []
    volumes, files = run_volumes(data, out, options, skipped, single_coil=True)
    check_model_data(loaded, volumes)
    timing_path = check_timing_path(out) if outputs is None else None
    device = options.torch_device()
    model = loaded.model.to(device).eval()
    if options.compile and getattr(model, "_compiled_call_impl", None) is None:
        model.compile()  # in place (once): the forward that reconstruct() calls is compiled
    # a part torch.compile cannot compile (e.g. the numpy GRAPPA start of a VarNet) runs eagerly, with a warning
    compiled_calls: contextlib.AbstractContextManager[object] = (
        torch._dynamo.config.patch(suppress_errors=True) if options.compile else contextlib.nullcontext()
    )
    mask_func = None if options.acceleration is None else masks.single_coil_mask_func(options.acceleration)
    transform = SliceTransform(
        loaded.input_spec, mask_func=mask_func, use_file_mask=True, seed_from_fname=True, inference=True
    )
    note_widened_crops(transform, volumes)
    out = Path(out)
    nyu = any(vol.split == formats.NYU_SPLIT for _, vol in volumes)
    dataset = SliceDataset([vol for _, vol in volumes], transform, layout="nyu" if nyu else "snu")
    exact = [nyu_acceleration(vol, options.acceleration) for _, vol in volumes]
    batches = volume_batches(dataset, options.batch_size)
    # one loader for the whole run: with workers, the next slices are read and prepared while the model runs
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=options.loader_workers,
        pin_memory=device.type == "cuda",
    )
    total_slices = len(dataset)
    start = time.perf_counter()
    with (
        formats.all_or_nothing(outputs) as run,
        torch.inference_mode(),
        tqdm(
            total=total_slices, desc="reconstruct (model)", unit="slice", disable=not options.progress
        ) as bar,
    ):
        images: list[torch.Tensor] = []
        for indices, batch in zip(batches, loader, strict=True):
            v = dataset.items[indices[0]][0]
            (group, vol), path = volumes[v], files[v]
            known = exact[v]
            if known is not None:  # the drawn mask's acceleration, not an estimate from its lines
                batch = batch._replace(acceleration=torch.full((len(indices),), known))
            size = (options.crop, options.crop) if options.crop is not None else batch.output_size()
            try:
                with compiled_calls:
                    images.append(
                        predict_batch(model, batch.to(device), size, options.tta, options.precision)
                    )
            except ValueError as err:  # e.g. a GRAPPA-start model on a mask without calibration block
                raise DataFormatError(vol.kspace_path, f"the model failed: {err}") from err
            bar.update(len(indices))
            if dataset.items[indices[-1]][1] == dataset.volumes[v].num_slices - 1:  # the volume's last slice
                formats.write_reconstruction(run.claim(path), torch.cat(images).numpy().astype(np.float32))
                clock.lap(group, dataset.volumes[v].num_slices)
                images = []
        report = None
        if timing_path is not None:
            name = what or f"model {type(loaded.model).__name__}"
            report = clock.report(name, str(device), options.batch_size, options.tta, options.precision)
            write_timing(run.claim(timing_path), report)
    seconds = time.perf_counter() - start
    return ReconstructionSummary(
        out_dir=out,
        volumes=len(volumes),
        slices=total_slices,
        seconds=seconds,
        skipped=tuple(skipped),
        timing=report,
    )
