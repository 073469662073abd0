"""Reconstruct a data folder into SPEC §1.3 reconstruction files: a classical method, a trained model, or a
bundle of experts routed per volume (:func:`reconstruct_with_bundle`).

Input: a leaderboard root (``acc4/kspace``, ``acc8/kspace``), a dataset root, or a single folder with
``kspace/``. Output: one HDF5 per k-space file, same name, dataset ``reconstruction`` float32 ``(S, h, w)``,
under ``OUT/<group>/`` (``OUT/acc4``, ``OUT/acc8``; flat for a single folder). The output size ``(h, w)`` is the
partner ``image_label`` size when an ``image/`` partner exists, else ``--crop`` (default 384, the SNU size).

Every input file is validated before anything is written; each output is written atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from kspacelab import formats, masks, physics
from kspacelab.classical.cs import cs_image
from kspacelab.classical.grappa import detect_acs, grappa_image
from kspacelab.classical.sense import sense_image
from kspacelab.classical.zero_filled import zero_filled_image
from kspacelab.errors import DataFormatError, KspacelabError

if TYPE_CHECKING:
    from kspacelab.data.transforms import VarNetSample
    from kspacelab.models.moe import LoadedBundle

DEFAULT_CROP = 384

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
    crop: int | None = None,
    progress: bool = True,
    workers: int = 1,
    threads: int | None = 1,
) -> ReconstructionSummary:
    """Reconstruct every k-space file under ``data`` with a classical ``method`` into ``out``.

    Args:
        data: leaderboard root, dataset root or a folder with ``kspace/``.
        out: output root; created if needed.
        method: a key of :data:`CLASSICAL_METHODS`.
        crop: output side length; default from the partner image files, else 384.
        progress: show a progress bar over slices.
        workers: ``> 1``: reconstruct slices in that many worker processes (spawned); results and errors are
            as with ``1``.
        threads: torch intra-op threads of each process while reconstructing (restored afterwards; ``None``:
            leave as is). Default 1: a slice is too small a problem to gain from threads, and on a busy 2-core
            machine two threads were measured 7-10x slower than one (GRAPPA 0.33-0.52 vs 0.05 s per demo slice,
            SENSE 2.2 vs 0.32).
    """
    if method not in CLASSICAL_METHODS:
        raise KspacelabError(f"unknown method {method!r}; choose one of {', '.join(CLASSICAL_METHODS)}")
    if workers < 1 or (threads is not None and threads < 1):
        raise KspacelabError(f"--workers and threads must be >= 1, got {workers} and {threads}")
    volumes = _validated_volumes(data)  # all inputs checked before anything is written
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


# ----------------------------------------------------------------------------------------------------
# Mixtures of experts
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RoutingDecision:
    """Where one volume went (one entry of ``OUT/routing.json``)."""

    file: str  # e.g. "acc4/brain_test1.h5"
    anatomy: str
    anatomy_probability: float | None  # the classifier's probability; None when taken from the file name
    acc: int
    mask_rule: str  # "organiser" | "other"
    expert: str


def _volume_images_for_classifier(vol: formats.Volume, image_key: str, crop: int | None) -> torch.Tensor:
    """``(S, h, w)`` images the anatomy classifier reads: the image file's ``image_key`` when present, else
    GRAPPA (or zero-filled for ``image_input``) reconstructed from the volume's k-space."""
    if vol.image_path is not None:
        try:
            return torch.from_numpy(formats.read_image_volume(vol.image_path, image_key))
        except KspacelabError:
            pass  # no such dataset in this file: compute it
    recon_fn = _zero_filled if image_key == "image_input" else _grappa
    size = output_size(vol, crop)
    slices = []
    for index in range(formats.kspace_shape(vol.kspace_path)[0]):
        kspace, mask = formats.read_kspace_slice(vol.kspace_path, index)
        try:
            slices.append(recon_fn(kspace * mask[None, None, :], mask, size))
        except ValueError as err:
            raise DataFormatError(
                vol.kspace_path, f"slice {index}: image for the classifier failed: {err}"
            ) from err
    return torch.from_numpy(np.stack(slices))


def route_volumes(
    volumes: list[tuple[str, formats.Volume]], loaded: LoadedBundle, crop: int | None = None
) -> list[RoutingDecision]:
    """Route every volume: anatomy (classifier or file name), acceleration and organiser rule from the mask."""
    from kspacelab.models.classifier import classify_volume

    bundle = loaded.bundle
    image_key = "image_grappa"
    if loaded.classifier is not None and bundle.classifier is not None:
        from kspacelab.training import load_model

        _, info = load_model(bundle.classifier)
        image_key = str((info.get("data_hyper_parameters") or {}).get("image_key") or image_key)
    decisions = []
    for group, vol in volumes:
        mask = formats.read_mask(vol.kspace_path)
        try:
            acc = masks.estimate_acceleration(mask)
        except ValueError:
            if vol.acceleration is None:
                raise DataFormatError(vol.kspace_path, "cannot tell the acceleration from the mask") from None
            acc = vol.acceleration
        rule = "organiser" if masks.follows_organiser_rule(mask) else "other"
        probability: float | None = None
        if not bundle.needs_anatomy:
            anatomy = vol.anatomy
        elif bundle.anatomy_source == "filename" or loaded.classifier is None:
            anatomy = formats.anatomy_from_name(vol.name)
        else:
            images = _volume_images_for_classifier(vol, image_key, crop)
            anatomy, probability = classify_volume(loaded.classifier, images)
        expert = bundle.route(anatomy, acc, rule)
        name = expert.name if expert is not None else "fallback"
        file = f"{group}/{vol.name}" if group else vol.name
        decisions.append(RoutingDecision(file, anatomy, probability, acc, rule, name))
    return decisions


def reconstruct_with_bundle(
    data: str | Path,
    out: str | Path,
    bundle: str | Path,
    tta: bool = False,
    batch_size: int = 1,
    device: str = "cpu",
    crop: int | None = None,
    progress: bool = True,
    time_budget: float | None = None,
    strict: bool = False,
) -> tuple[ReconstructionSummary, list[RoutingDecision]]:
    """Route every volume under ``data`` to an expert of ``bundle`` and reconstruct it; write ``OUT/routing.json``.

    Args:
        data, out, tta, batch_size, device, crop, progress: as for :func:`reconstruct_with_checkpoint`.
        bundle: manifest file (:mod:`kspacelab.models.moe`).
        time_budget: seconds allowed for the whole run (routing included). After every volume the total is
            projected from the time per slice so far; a projection over the budget prints a warning.
        strict: with ``time_budget``, stop with an error instead of warning (files written so far are complete).

    Returns:
        the summary (all volumes) and the routing decisions, in volume order.
    """
    from kspacelab.models.moe import load_bundle
    from kspacelab.training import model_data_settings

    if batch_size < 1:
        raise KspacelabError(f"--batch-size must be >= 1, got {batch_size}")
    if time_budget is not None and time_budget <= 0:
        raise KspacelabError(f"--time-budget must be > 0 seconds, got {time_budget}")
    torch_device = _resolve_device(device)
    volumes = _validated_volumes(data)
    start = time.perf_counter()
    loaded = load_bundle(bundle, map_location=torch_device)
    decisions = route_volumes(volumes, loaded, crop)
    out = Path(out)
    total_slices = sum(formats.kspace_shape(vol.kspace_path)[0] for _, vol in volumes)
    done = 0
    warned = False
    bar = tqdm(total=total_slices, desc="reconstruct (bundle)", unit="slice", disable=not progress)
    for (group, vol), decision in zip(volumes, decisions, strict=True):
        expert = loaded.bundle.route(decision.anatomy, decision.acc, decision.mask_rule)
        _, model, info = loaded.model_for(expert)
        num_adj, crop_height = model_data_settings(info)
        part = reconstruct_with_model(
            [(group, vol)],
            out,
            model,
            num_adj,
            crop_height,
            tta,
            batch_size,
            torch_device,
            crop,
            progress=False,
        )
        done += part.slices
        bar.update(part.slices)
        elapsed = time.perf_counter() - start
        projected = elapsed / max(done, 1) * total_slices
        if progress:
            bar.write(
                f"{decision.file}: {decision.anatomy} acc{decision.acc} {decision.mask_rule} -> {decision.expert}"
            )
        if time_budget is not None and projected > time_budget:
            message = (
                f"time budget: projected {projected:.0f} s for {total_slices} slices exceeds --time-budget "
                f"{time_budget:.0f} s ({done}/{total_slices} slices done in {elapsed:.0f} s)"
            )
            if strict:
                bar.close()
                raise KspacelabError(message + "; stopped (--strict)")
            if not warned:
                bar.write(f"warning: {message}")
                warned = True
    bar.close()
    seconds = time.perf_counter() - start
    _write_routing(out / "routing.json", decisions)
    return ReconstructionSummary(
        out_dir=out, volumes=len(volumes), slices=total_slices, seconds=seconds
    ), decisions


def _write_routing(path: Path, decisions: list[RoutingDecision]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps([dataclasses.asdict(d) for d in decisions], indent=2) + "\n")
    tmp.replace(path)
