"""Synthetic multi-coil k-space datasets in the exact SNU challenge layout (:mod:`kspacelab.formats`).

Each volume is simulated from real anatomy (:mod:`kspacelab.data.phantoms`): the MNI152 brain template for
``brain`` files and a **stand-in** for ``knee`` files (real shoulder/abdomen MR anatomy from pydicom-data; no knee
image is available offline). The acquisition model:

1. object magnitude on the full ``(H, W)`` grid, anatomy in the central ``H / 2`` rows (2x oversampled readout),
   times a smooth bias field and a smooth random phase;
2. multiplied by simulated coil sensitivities (:class:`kspacelab.data.phantoms.CoilArray`) and transformed with
   :func:`kspacelab.physics.fft2c` (centred, orthonormal) into fully sampled k-space ``(S, C, H, W)``;
3. scaled so that the volume maximum of the fully sampled RSS image (centre crop) is a random target inside the
   real range of the anatomy (brain 4e-4..6e-4, knee 1.0e-4..1.3e-4: the leaderboard's absolute foreground
   thresholds 5e-5 / 2e-5 then behave as on real data);
4. independent complex Gaussian noise per coil and k-space sample, standard deviation a random fraction
   (``noise_level``) of the mean coil-image magnitude over the anatomy; a last exact rescale puts the noisy
   label's maximum on the target.

The image files hold the zero-filled RSS of the undersampled k-space (``image_input``), a real GRAPPA
reconstruction of it (``image_grappa``, :func:`kspacelab.classical.grappa.grappa_image`) and the RSS of the fully
sampled k-space (``image_label``), all centre-cropped (zero-padded where ``W`` is smaller) to ``crop x crop``.
The mask is the organiser rule :func:`kspacelab.masks.snu_mask`. Every volume has its own random generator,
seeded from ``(seed, split, file name)``, so a dataset is reproducible and independent of generation order.

Single-coil presets (``singlecoil``: k-space ``(S, 640, 368)``, 320 x 320 targets; ``singlecoil-demo``: ``(S, 128,
80..84)``, 64 x 64) write the NYU fastMRI single-coil knee layout instead. The single coil is emulated: the
multi-coil knee volume of steps 1-4 (noise included) is combined before any undersampling with the known coil
sensitivities, ``x = sum_c conj(S_c) x_c / sqrt(sum_c |S_c|^2)`` (:func:`emulate_single_coil`), and transformed
back into one k-space; the target ``reconstruction_esc`` is ``|ifft2c(k)|`` centre-cropped, its volume maximum
drawn in ``knee_max`` (2e-4..5e-4 for these presets, the order of the NYU single-coil knee targets).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from kspacelab import formats, metrics
from kspacelab.challenge import (
    ACCELERATIONS,
    ANATOMIES,
    BRAIN,
    KNEE,
    TARGET_SIZE,
    Anatomy,
    VolumeName,
    acc_folder,
)
from kspacelab.classical.grappa import grappa_image
from kspacelab.classical.zero_filled import zero_filled_image
from kspacelab.data.phantoms import (
    CoilArray,
    ObjectVolume,
    brain_volume,
    coil_array,
    knee_volume,
    smooth_field,
)
from kspacelab.errors import KspacelabError
from kspacelab.masks import fname_seed, single_coil_mask_func, snu_mask
from kspacelab.physics import center_crop, fft2c, ifft2c, rss_complex, sens_reduce

#: Layouts a preset can write: the SNU challenge's or the NYU fastMRI single-coil knee layout.
Layout = Literal["snu", "singlecoil"]

__all__ = [
    "PRESETS",
    "SINGLE_COIL_SPLITS",
    "Anatomy",
    "SimulatedVolume",
    "SimulationPreset",
    "SimulationSummary",
    "SingleCoilVolume",
    "emulate_single_coil",
    "simulate_dataset",
    "simulate_single_coil_volume",
    "simulate_volume",
    "volume_rng",
]


@dataclass(frozen=True)
class SimulationPreset:
    """Geometry, sizes and signal levels of a simulated dataset.

    Ranges ``(lo, hi)`` are inclusive; ``*_coils`` and ``brain_widths`` are sets of choices.

    Attributes:
        name: preset name.
        brain_height: readout size ``H`` of brain k-space (2x oversampled; the head lies in ``H / 2`` rows).
        brain_widths: phase-encoding sizes ``W`` to draw from for brain volumes.
        knee_height: readout size ``H`` of knee k-space.
        knee_widths: range of knee ``W`` (even numbers only).
        crop: side of the square image files (``image_*`` are ``(S, crop, crop)``).
        brain_coils, knee_coils: coil counts to draw from.
        brain_slices, knee_slices: range of slices per volume.
        train_volumes: training volumes per group (``{brain, knee} x {acc4, acc8}``).
        val_volumes: validation volumes per group.
        leaderboard_volumes: leaderboard volumes per anatomy per acceleration.
        noise_level: range of the noise standard deviation (complex, per coil and sample) relative to the mean
            coil-image magnitude over the anatomy.
        brain_max, knee_max: range of the volume maximum of ``image_label`` (the file attr ``max``).
        brain_spacing_mm: range of the brain slice distance in mm (template voxels are 1 mm).
        layout: ``"snu"`` (the SNU challenge layout, both anatomies) or ``"singlecoil"`` (the NYU fastMRI
            single-coil knee layout, :func:`simulate_single_coil_volume`: only the ``knee_*`` fields and ``crop``
            are used; ``train_volumes`` and ``val_volumes`` count the volumes of those splits, and the test split
            has ``leaderboard_volumes`` files per test acceleration 4 and 8).
    """

    name: str
    brain_height: int
    brain_widths: tuple[int, ...]
    knee_height: int
    knee_widths: tuple[int, int]
    crop: int
    brain_coils: tuple[int, ...]
    knee_coils: tuple[int, ...]
    brain_slices: tuple[int, int]
    knee_slices: tuple[int, int]
    train_volumes: int
    val_volumes: int
    leaderboard_volumes: int
    noise_level: tuple[float, float] = (0.01, 0.03)
    brain_max: tuple[float, float] = (4.0e-4, 6.0e-4)
    knee_max: tuple[float, float] = (1.0e-4, 1.3e-4)
    brain_spacing_mm: tuple[float, float] = (4.0, 6.0)
    layout: Layout = "snu"

    def max_range(self, anatomy: Anatomy) -> tuple[float, float]:
        """Range of the ``max`` attr for ``anatomy``."""
        return self.brain_max if anatomy == BRAIN else self.knee_max


PRESETS: dict[str, SimulationPreset] = {
    "snu": SimulationPreset(
        name="snu",
        brain_height=768,
        brain_widths=(392, 396),
        knee_height=640,
        knee_widths=(320, 480),
        crop=TARGET_SIZE,
        brain_coils=(4, 8, 12, 16, 20),
        knee_coils=(15,),
        brain_slices=(12, 16),
        knee_slices=(10, 20),
        train_volumes=2,
        val_volumes=1,
        leaderboard_volumes=1,
    ),
    "demo": SimulationPreset(
        name="demo",
        brain_height=384,
        brain_widths=(196, 198),
        knee_height=320,
        knee_widths=(160, 240),
        crop=192,
        brain_coils=(4, 6, 8),
        knee_coils=(8,),
        brain_slices=(4, 6),
        knee_slices=(4, 6),
        train_volumes=5,
        val_volumes=2,
        leaderboard_volumes=2,
    ),
}
# NYU fastMRI single-coil knee layout: k-space (S, 640, 368), 320 x 320 targets (the brain fields are unused)
PRESETS["singlecoil"] = dataclasses.replace(
    PRESETS["snu"],
    name="singlecoil",
    layout="singlecoil",
    knee_height=640,
    knee_widths=(368, 368),
    crop=320,
    knee_coils=(15,),
    knee_slices=(12, 16),
    train_volumes=5,
    val_volumes=2,
    leaderboard_volumes=1,
    knee_max=(2.0e-4, 5.0e-4),
)
# the same layout at a geometry a U-Net trains on in seconds per epoch on 2 CPU cores; 60 training volumes (about
# 300 slices): with 10, fastMRI's U-Net gained almost nothing over zero-filling
PRESETS["singlecoil-demo"] = dataclasses.replace(
    PRESETS["singlecoil"],
    name="singlecoil-demo",
    knee_height=128,
    knee_widths=(80, 84),
    crop=64,
    knee_coils=(8,),
    knee_slices=(4, 6),
    train_volumes=60,
    val_volumes=4,
    leaderboard_volumes=1,
)


@dataclass(frozen=True)
class SimulatedVolume:
    """One simulated volume, as written to its k-space and image files.

    Attributes:
        kspace: complex64 ``(S, C, H, W)``, fully sampled.
        mask: bool ``(W,)``, :func:`kspacelab.masks.snu_mask` for ``acc``.
        image_input: float32 ``(S, crop, crop)``, zero-filled RSS of ``kspace * mask``.
        image_grappa: float32 ``(S, crop, crop)``, GRAPPA RSS of ``kspace * mask``.
        image_label: float32 ``(S, crop, crop)``, RSS of ``kspace``.
        anatomy: ``"brain"`` or ``"knee"``.
        acc: acceleration of the mask.
    """

    kspace: np.ndarray
    mask: np.ndarray
    image_input: np.ndarray
    image_grappa: np.ndarray
    image_label: np.ndarray
    anatomy: Anatomy
    acc: int

    @property
    def undersampled_kspace(self) -> np.ndarray:
        """complex64 ``(S, C, H, W)``: ``kspace`` times the mask (what leaderboard files store)."""
        return self.kspace * self.mask.astype(np.complex64)


@dataclass
class SimulationSummary:
    """What :func:`simulate_dataset` wrote.

    Attributes:
        out_dir: dataset root.
        files: number of HDF5 files per split (``train``, ``val``, ``leaderboard``), k-space and image files.
        volumes: number of volumes per split.
        seconds: wall-clock time of the simulation.
    """

    out_dir: Path
    files: dict[str, int] = field(default_factory=dict)
    volumes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def volume_rng(seed: int, split: str, name: str) -> np.random.Generator:
    """Random generator of one volume, a function of ``(seed, split, name)`` only.

    Args:
        seed: dataset seed (>= 0).
        split: ``"train"``, ``"val"``, ``"leaderboard/acc4"`` or ``"leaderboard/acc8"``.
        name: file name without extension, e.g. ``"brain_acc4_1"``.
    """
    digest = hashlib.sha256(f"{split}/{name}".encode()).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.default_rng(np.random.SeedSequence([seed, *words]))


def _draw_geometry(
    anatomy: Anatomy, preset: SimulationPreset, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """``(H, W, coils, slices)`` of a new volume."""
    if anatomy == BRAIN:
        height = preset.brain_height
        width = int(rng.choice(preset.brain_widths))
        coils = int(rng.choice(preset.brain_coils))
        slices = int(rng.integers(preset.brain_slices[0], preset.brain_slices[1] + 1))
    else:
        height = preset.knee_height
        lo, hi = preset.knee_widths
        width = 2 * int(rng.integers((lo + 1) // 2, hi // 2 + 1))
        coils = int(rng.choice(preset.knee_coils))
        slices = int(rng.integers(preset.knee_slices[0], preset.knee_slices[1] + 1))
    return height, width, coils, slices


def _object(anatomy: Anatomy, preset: SimulationPreset, rng: np.random.Generator) -> tuple[ObjectVolume, int]:
    height, width, coils, slices = _draw_geometry(anatomy, preset, rng)
    if anatomy == BRAIN:
        return brain_volume(rng, height, width, slices, spacing_mm=preset.brain_spacing_mm), coils
    return knee_volume(rng, height, width, slices), coils


def _coil_scan(
    anatomy: Anatomy, preset: SimulationPreset, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, CoilArray]:
    """Steps 1-4 of the module docstring: the fully sampled multi-coil k-space of one new volume.

    Returns:
        ``(kspace, label, coils)``: complex64 ``(S, C, H, W)``; float32 ``(S, crop, crop)`` RSS of ``kspace``
        (centre crop), whose maximum is the drawn target in ``preset.max_range(anatomy)``; the coil array whose
        :meth:`~kspacelab.data.phantoms.CoilArray.maps` the coil images were multiplied by.
    """
    obj, n_coils = _object(anatomy, preset, rng)
    coils = coil_array(rng, n_coils, obj)
    n_slices, height, width = obj.magnitude.shape
    crop = (preset.crop, preset.crop)

    shape = (n_slices, height, width)
    phase = rng.uniform(-np.pi, np.pi) + rng.uniform(0.5, 2.0) * smooth_field(rng, shape, (3, 4, 4))
    bias = np.exp(rng.uniform(0.05, 0.15) * smooth_field(rng, shape, (2, 3, 3)))
    image = (obj.magnitude * bias * np.exp(1j * phase)).astype(np.complex64)
    del phase, bias

    # pass 1: noise-free coil images (kept in the k-space buffer), the label maximum and the mean coil
    # magnitude over the anatomy
    kspace = np.empty((n_slices, n_coils, height, width), dtype=np.complex64)
    label_max, fg_sum, fg_count = 0.0, 0.0, 0
    for s in range(n_slices):
        kspace[s] = coils.maps(height, width, s) * image[s]
        coil_images = torch.from_numpy(kspace[s])
        label_max = max(label_max, float(center_crop(rss_complex(coil_images, dim=0), crop).max()))
        support = torch.from_numpy(obj.support[s])
        fg_sum += float(coil_images.abs()[:, support].sum())
        fg_count += int(support.sum()) * n_coils
    del image

    # pass 2: scale to the target maximum, add noise (white complex Gaussian, the same in image and k-space
    # for an orthonormal FFT), RSS label, k-space
    target = float(rng.uniform(*preset.max_range(anatomy)))
    scale = target / label_max
    sigma = float(rng.uniform(*preset.noise_level)) * fg_sum / max(fg_count, 1) * scale
    label = np.empty((n_slices, *crop), dtype=np.float32)
    for s in range(n_slices):  # real and imaginary parts each sigma / sqrt(2)
        noise = rng.standard_normal((2, n_coils, height, width), dtype=np.float32)
        noisy = kspace[s] * np.float32(scale) + np.float32(sigma / np.sqrt(2.0)) * (noise[0] + 1j * noise[1])
        coil_images = torch.from_numpy(noisy.astype(np.complex64))
        label[s] = center_crop(rss_complex(coil_images, dim=0), crop).numpy()
        kspace[s] = fft2c(coil_images).numpy()
    factor = target / float(label.max())  # exact maximum after the noise (RSS and GRAPPA are homogeneous)
    kspace *= np.complex64(factor)
    label *= np.float32(factor)
    return kspace, label, coils


def simulate_volume(
    anatomy: Anatomy, acc: int, rng: np.random.Generator, preset: SimulationPreset | str = "demo"
) -> SimulatedVolume:
    """Simulate one volume (see the module docstring for the model).

    Args:
        anatomy: ``"brain"`` or ``"knee"`` (the knee class is a stand-in, see :mod:`kspacelab.data.phantoms`).
        acc: acceleration of the organiser mask (4 or 8).
        rng: the volume's random generator (e.g. :func:`volume_rng`).
        preset: a :class:`SimulationPreset` or the name of one in :data:`PRESETS`.

    Returns:
        :class:`SimulatedVolume`; ``image_label.max()`` lies in ``preset.max_range(anatomy)``.
    """
    preset = _preset(preset)
    kspace, label, _ = _coil_scan(anatomy, preset, rng)
    crop = (preset.crop, preset.crop)
    mask = snu_mask(kspace.shape[-1], acc)
    undersampled = kspace * mask.astype(np.complex64)
    return SimulatedVolume(
        kspace=kspace,
        mask=mask,
        image_input=np.asarray(zero_filled_image(undersampled, mask, crop), dtype=np.float32),
        image_grappa=np.asarray(grappa_image(undersampled, mask, crop=crop), dtype=np.float32),
        image_label=label,
        anatomy=anatomy,
        acc=acc,
    )


#: Split folders of the single-coil layout (fastMRI's folder names).
SINGLE_COIL_SPLITS = ("singlecoil_train", "singlecoil_val", "singlecoil_test")
#: Accelerations of the single-coil test files, alternating file by file as in fastMRI's test set.
SINGLE_COIL_TEST_ACCELERATIONS = (4, 8)


@dataclass(frozen=True)
class SingleCoilVolume:
    """One simulated single-coil knee volume (an emulated single coil, :func:`emulate_single_coil`).

    Attributes:
        kspace: complex64 ``(S, H, W)``, fully sampled.
        target: float32 ``(S, crop, crop)``: ``|ifft2c(kspace)|`` centre-cropped (fastMRI's
            ``reconstruction_esc``); its maximum lies in ``preset.knee_max``.
    """

    kspace: np.ndarray
    target: np.ndarray


def emulate_single_coil(kspace: np.ndarray, coils: CoilArray, crop: tuple[int, int]) -> SingleCoilVolume:
    """Combine fully sampled multi-coil k-space into one emulated coil.

    Per slice, the coil images ``x_c = ifft2c(k_c)`` are combined with the known sensitivities ``S_c``
    (sensitivity-weighted, Roemer combination): ``x = sum_c conj(S_c) x_c / sqrt(sum_c |S_c|^2)``. Noise-free,
    ``|x|`` equals the root-sum-of-squares image; the weights have unit norm per pixel, so each coil's white noise
    of standard deviation ``sigma`` passes through as white noise of the same ``sigma``. The single-coil k-space
    is ``fft2c(x)`` and the target ``|ifft2c(fft2c(x))|`` centre-cropped to ``crop``.

    Args:
        kspace: complex64 ``(S, C, H, W)``, fully sampled.
        coils: the coil array the k-space was simulated with (its :meth:`~CoilArray.maps` give ``S_c``).
        crop: ``(h, w)`` of the target.

    Returns:
        :class:`SingleCoilVolume` at the multi-coil data's scale (unscaled).
    """
    n_slices, _, height, width = kspace.shape
    single = np.empty((n_slices, height, width), dtype=np.complex64)
    target = np.empty((n_slices, *crop), dtype=np.float32)
    for s in range(n_slices):
        maps = torch.from_numpy(coils.maps(height, width, s))[None]
        combined = sens_reduce(torch.from_numpy(kspace[s])[None], maps)[0, 0]
        combined = combined / rss_complex(maps[0], dim=0).clamp_min(torch.finfo(torch.float32).tiny)
        k = fft2c(combined)
        single[s] = k.numpy()
        target[s] = center_crop(ifft2c(k).abs(), crop).numpy()
    return SingleCoilVolume(kspace=single, target=target)


def simulate_single_coil_volume(
    rng: np.random.Generator, preset: SimulationPreset | str = "singlecoil-demo"
) -> SingleCoilVolume:
    """Simulate one single-coil knee volume: the multi-coil knee volume of ``preset`` (module docstring, steps
    1-4, noise included), combined into an emulated single coil (:func:`emulate_single_coil`) and rescaled so the
    target's volume maximum is the drawn target in ``preset.knee_max``.

    Args:
        rng: the volume's random generator (e.g. :func:`volume_rng`).
        preset: a :class:`SimulationPreset` or the name of one in :data:`PRESETS` (its knee geometry).

    Returns:
        :class:`SingleCoilVolume`: ``kspace`` complex64 ``(S, knee_height, W)``, ``target`` float32
        ``(S, crop, crop)``.
    """
    spec = _preset(preset)
    kspace, label, coils = _coil_scan(KNEE, spec, rng)
    volume = emulate_single_coil(kspace, coils, (spec.crop, spec.crop))
    factor = float(label.max()) / float(
        volume.target.max()
    )  # the drawn maximum (RSS and |x| differ by noise)
    return SingleCoilVolume(
        kspace=volume.kspace * np.complex64(factor), target=volume.target * np.float32(factor)
    )


def _preset(preset: SimulationPreset | str) -> SimulationPreset:
    if isinstance(preset, SimulationPreset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise KspacelabError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}") from None


@dataclass(frozen=True)
class _Job:
    split: str  # train | val | leaderboard/acc4 | leaderboard/acc8 | singlecoil_{train,val,test}
    name: str
    anatomy: Anatomy
    acc: int  # 0: fully sampled single-coil file

    @property
    def undersampled(self) -> bool:
        return self.split.startswith("leaderboard") or self.split == SINGLE_COIL_SPLITS[2]


def _jobs(preset: SimulationPreset, n_train: int) -> list[_Job]:
    jobs = []
    ranges = {"train": range(1, n_train + 1), "val": range(n_train + 1, n_train + preset.val_volumes + 1)}
    for split, indices in ranges.items():
        for anatomy in ANATOMIES:
            for acc in ACCELERATIONS:
                jobs += [_Job(split, VolumeName(anatomy, acc, i).stem, anatomy, acc) for i in indices]
    for acc in ACCELERATIONS:
        for anatomy in ANATOMIES:
            jobs += [
                _Job(f"leaderboard/{acc_folder(acc)}", VolumeName(anatomy, None, i).stem, anatomy, acc)
                for i in range(1, preset.leaderboard_volumes + 1)
            ]
    return jobs


def _single_coil_jobs(preset: SimulationPreset, n_train: int) -> list[_Job]:
    """Volumes of the single-coil layout, named as fastMRI's files (``file1000001``, ...) and numbered on across
    the splits; the test files alternate between the accelerations 4 and 8."""
    train, val, test = SINGLE_COIL_SPLITS
    n_test = preset.leaderboard_volumes * len(SINGLE_COIL_TEST_ACCELERATIONS)
    splits = [train] * n_train + [val] * preset.val_volumes + [test] * n_test
    jobs, tests = [], 0
    for number, split in enumerate(splits, start=1000001):
        acc = 0
        if split == test:
            acc = SINGLE_COIL_TEST_ACCELERATIONS[tests % len(SINGLE_COIL_TEST_ACCELERATIONS)]
            tests += 1
        jobs.append(_Job(split, f"file{number}", KNEE, acc))
    return jobs


def _write_single_coil(path: Path, job: _Job, volume: SingleCoilVolume, seed: int) -> None:
    """One NYU single-coil knee file (:func:`kspacelab.formats.write_nyu_file`): fully sampled k-space and the
    ``reconstruction_esc`` target, or for a test file the k-space under fastMRI's random mask of the job's
    acceleration seeded with the file name (:func:`kspacelab.masks.single_coil_mask_func`), its ``mask``, attrs
    ``acceleration`` and ``num_low_frequency``, and no target."""
    _, height, width = volume.kspace.shape
    crop = volume.target.shape[-2:]
    attrs: dict[str, str | int | float] = {
        "acquisition": "CORPD_FBK",
        "max": float(volume.target.max()),
        "norm": float(np.linalg.norm(volume.target.astype(np.float64).ravel())),
        "patient_id": hashlib.sha256(f"{seed}/{job.name}".encode()).hexdigest(),
    }
    header = formats.ismrmrd_header((height, width, 1), (crop[0], crop[1], 1))
    if not job.undersampled:
        formats.write_nyu_file(path, volume.kspace, volume.target, attrs=attrs, header=header)
        return
    mask, num_low = single_coil_mask_func(job.acc).sample_lines(width, seed=fname_seed(path.name))
    attrs.update(acceleration=job.acc, num_low_frequency=num_low)
    kspace = volume.kspace * mask.astype(np.complex64)
    formats.write_nyu_file(path, kspace, mask=mask, attrs=attrs, header=header)


def _simulate_single_coil_dataset(
    summary: SimulationSummary, preset: SimulationPreset, n_train: int, seed: int, progress: bool
) -> None:
    """Write the single-coil layout into ``summary.out_dir`` (all files or none) and count them in ``summary``."""
    with formats.all_or_nothing() as outputs:
        jobs = _single_coil_jobs(preset, n_train)
        for job in tqdm(jobs, desc=f"simulate {preset.name}", unit="volume", disable=not progress):
            volume = simulate_single_coil_volume(volume_rng(seed, job.split, job.name), preset)
            _write_single_coil(
                outputs.claim(summary.out_dir / job.split / f"{job.name}.h5"), job, volume, seed
            )
            summary.files[job.split] = summary.files.get(job.split, 0) + 1
            summary.volumes[job.split] = summary.volumes.get(job.split, 0) + 1


#: Lesion-box rules of the 2026 challenge's annotations: sides over 16 pixels, a few boxes per slice.
MIN_BOX_SIDE = 17
MAX_BOXES_PER_SLICE = 3


def structure_boxes(label: np.ndarray, anatomy: str = KNEE) -> list[formats.Box]:
    """Boxes over the brightest structures of one ``(h, w)`` label slice, in the 2026 annotation format.

    The structures are the connected components of the pixels above the 90th intensity percentile of the
    leaderboard foreground; the largest :data:`MAX_BOXES_PER_SLICE` components of at least 20 pixels get their
    bounding box, grown symmetrically to :data:`MIN_BOX_SIDE` pixels where smaller and kept inside the image.
    Deterministic; ``[]`` for a slice without foreground or structures.
    """
    from scipy import ndimage

    height, width = label.shape
    foreground = metrics.foreground_mask(label, anatomy)
    if not foreground.any():
        return []
    bright = foreground & (label > np.quantile(label[foreground], 0.9))
    components, count = ndimage.label(bright)
    if count == 0:
        return []
    sizes = np.bincount(components.ravel())[1:]
    order = [int(i) for i in np.argsort(-sizes, kind="stable") if sizes[i] >= 20][:MAX_BOXES_PER_SLICE]
    objects = ndimage.find_objects(components)
    boxes = []
    for index in order:
        rows, cols = objects[index]
        spans = []
        for sl, size in ((rows, height), (cols, width)):
            start, stop = sl.start, sl.stop
            grow = max(0, MIN_BOX_SIDE - (stop - start))
            start = max(0, start - grow // 2)
            stop = min(size, max(stop, start + MIN_BOX_SIDE))
            start = max(0, min(start, stop - MIN_BOX_SIDE))
            spans.append((start, stop))
        (top, bottom), (left, right) = spans
        boxes.append(
            formats.Box(float(left), float(top), float(right - left), float(bottom - top), "structure")
        )
    return boxes


def simulate_dataset(
    out_dir: str | Path,
    preset: SimulationPreset | str = "demo",
    volumes_per_group: int | None = None,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    annotations: bool = False,
) -> SimulationSummary:
    """Write a synthetic dataset in the SNU layout::

        OUT/train/{image,kspace}/{brain|knee}_acc{4|8}_{i}.h5        i = 1..N_train
        OUT/val/{image,kspace}/{brain|knee}_acc{4|8}_{i}.h5          i = N_train+1..N_train+N_val
        OUT/leaderboard/acc{4|8}/{image,kspace}/{brain|knee}_test{i}.h5

    or, for a preset of ``layout="singlecoil"``, in the NYU fastMRI single-coil knee layout::

        OUT/singlecoil_train/file{n}.h5     N_train files, fully sampled, target reconstruction_esc
        OUT/singlecoil_val/file{n}.h5       N_val files, as train
        OUT/singlecoil_test/file{n}.h5      2 x leaderboard_volumes files, undersampled, acceleration 4, 8, 4, ...

    (:func:`simulate_single_coil_volume`, :func:`_write_single_coil`; ``n`` counts on from 1000001 over the
    splits). Train/val k-space is fully sampled; leaderboard k-space is already multiplied by the mask (and a given
    name is a different scan in ``acc4`` and ``acc8``). Files are written atomically, volume by volume; a run that
    fails or is interrupted removes the files (and folders) it created, and an OS error while writing (read-only
    folder, disk full, a file in place of a folder) is a one-line :class:`KspacelabError`.

    Args:
        out_dir: dataset root; must be absent or empty unless ``overwrite`` (files of the same name are then
            replaced, other files are left alone).
        preset: :class:`SimulationPreset` or a name in :data:`PRESETS` (``"demo"``, ``"snu"``, ``"singlecoil"``,
            ``"singlecoil-demo"``).
        volumes_per_group: training volumes per ``{brain,knee} x {acc4,acc8}`` group, or of the single-coil
            training split (default: the preset's).
        seed: dataset seed (>= 0); the same seed gives byte-identical arrays.
        progress: show a tqdm progress bar over volumes.
        overwrite: allow a non-empty ``out_dir``.
        annotations: give the knee-class image files the 2026 challenge's ``attrs['annotations']``: boxes over
            bright structures (:func:`structure_boxes`), so that ``evaluate --metric snu2026`` runs end to end
            (SNU layout only).

    Returns:
        :class:`SimulationSummary`.

    Raises:
        KspacelabError: non-empty ``out_dir`` without ``overwrite``, ``out_dir`` is a file, bad arguments, an OS
            error while writing.
    """
    start = time.perf_counter()
    spec = _preset(preset)
    out = Path(out_dir)
    try:
        if out.exists() and not out.is_dir():
            raise KspacelabError(f"{out}: exists and is not a directory")
        for parent in out.parents:
            if parent.exists() and not parent.is_dir():
                raise KspacelabError(f"{out}: cannot write, {parent} is a file, not a folder")
        if out.is_dir() and any(out.iterdir()) and not overwrite:
            raise KspacelabError(
                f"{out}: directory is not empty; choose another folder or pass --overwrite (overwrite=True)"
            )
    except OSError as err:
        raise formats.write_error(out, err) from err
    if seed < 0:
        raise KspacelabError(f"seed must be >= 0, got {seed}")
    n_train = spec.train_volumes if volumes_per_group is None else int(volumes_per_group)
    if n_train < 1:
        raise KspacelabError(f"volumes_per_group must be >= 1, got {volumes_per_group}")
    if spec.layout not in ("snu", "singlecoil"):
        raise KspacelabError(
            f"preset {spec.name!r}: unknown layout {spec.layout!r}; choose 'snu' or 'singlecoil'"
        )
    if spec.layout == "singlecoil" and annotations:
        raise KspacelabError(f"preset {spec.name!r}: annotations belong to the SNU layout's image files")

    summary = SimulationSummary(out_dir=out)
    if spec.layout == "singlecoil":
        _simulate_single_coil_dataset(summary, spec, n_train, seed, progress)
        summary.seconds = time.perf_counter() - start
        return summary

    jobs = _jobs(spec, n_train)
    with formats.all_or_nothing() as outputs:
        for job in tqdm(jobs, desc=f"simulate {spec.name}", unit="volume", disable=not progress):
            volume = simulate_volume(job.anatomy, job.acc, volume_rng(seed, job.split, job.name), spec)
            folder = out / job.split
            kspace = volume.undersampled_kspace if job.undersampled else volume.kspace
            formats.write_kspace_file(
                outputs.claim(folder / "kspace" / f"{job.name}.h5"), kspace, volume.mask
            )
            image_path = outputs.claim(folder / "image" / f"{job.name}.h5")
            formats.write_image_file(image_path, volume.image_input, volume.image_grappa, volume.image_label)
            if annotations and job.anatomy == KNEE:
                boxes = {i: structure_boxes(s, KNEE) for i, s in enumerate(volume.image_label)}
                formats.write_annotations(image_path, {i: b for i, b in boxes.items() if b})
            split = job.split.split("/")[0]
            summary.files[split] = summary.files.get(split, 0) + 2
            summary.volumes[split] = summary.volumes.get(split, 0) + 1
    summary.seconds = time.perf_counter() - start
    return summary


def with_overrides(preset: SimulationPreset | str, **changes: object) -> SimulationPreset:
    """A copy of a preset with some fields changed (e.g. a tiny geometry for tests)."""
    return dataclasses.replace(_preset(preset), **changes)  # type: ignore[arg-type]
