"""Score a folder of reconstructions exactly as the SNU leaderboard does.

The leaderboard score of a folder is the mean SSIM over every slice of every volume in it
(:func:`kspacelab.metrics.leaderboard_ssim_volume`); the total is the mean of the acceleration folders' scores.
Reconstructions are files ``NAME.h5`` with dataset ``reconstruction`` float32 ``(S, h, w)``, the shape of the
target ``image_label``.

This module joins :mod:`kspacelab.formats` (files) and :mod:`kspacelab.metrics` (numbers); it keeps
``metrics.py`` free of file handling.

Layouts accepted for the ground truth (``leaderboard``):

* a leaderboard root with ``acc4/image/*.h5`` and/or ``acc8/image/*.h5`` -> reconstructions are read from
  ``recon/acc4/NAME.h5`` and ``recon/acc8/NAME.h5``;
* a single folder with ``image/*.h5`` -> reconstructions are read from ``recon/NAME.h5`` (flat).

:func:`evaluate_fastmri` scores a folder of NYU fastMRI files (targets ``reconstruction_esc`` /
``reconstruction_rss``) with fastMRI's metrics and the hallucination index; reconstructions ``recon/NAME.h5``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from kspacelab import formats, metrics
from kspacelab.challenge import ACCELERATIONS, acc_folder
from kspacelab.errors import DataFormatError
from kspacelab.timing import read_timing

#: The leaderboard's acceleration folders: ``("acc4", "acc8")``.
ACCELERATION_FOLDERS = tuple(acc_folder(acc) for acc in ACCELERATIONS)


@dataclass(frozen=True)
class VolumeScore:
    """Leaderboard SSIM of one volume."""

    group: str  # "acc4", "acc8" or "" for a flat folder
    name: str
    anatomy: str
    slices: int
    ssim: float  # mean over the volume's slices
    slice_ssim: tuple[float, ...]


@dataclass
class LeaderboardResult:
    """Scores of a whole leaderboard: per acceleration folder, total, per anatomy, per volume."""

    groups: dict[str, float] = field(default_factory=dict)  # slice-pooled mean SSIM per folder
    per_anatomy: dict[str, dict[str, float]] = field(default_factory=dict)  # group -> anatomy -> mean
    per_volume: list[VolumeScore] = field(default_factory=list)
    #: the reconstruction folder's ``timing.json`` (:mod:`kspacelab.timing`), when ``reconstruct`` wrote one
    timing: dict[str, Any] | None = None
    #: a one-line warning when that file exists but is unusable
    timing_note: str | None = None

    @property
    def total(self) -> float | None:
        """(SSIM_acc4 + SSIM_acc8) / 2 when both folders were scored, else the single folder's score."""
        if all(g in self.groups for g in ACCELERATION_FOLDERS):
            return sum(self.groups[g] for g in ACCELERATION_FOLDERS) / len(ACCELERATION_FOLDERS)
        if len(self.groups) == 1:
            return next(iter(self.groups.values()))
        return None

    def to_json_dict(self) -> dict[str, object]:
        """JSON-ready dict with at least ``acc4``, ``acc8``, ``total`` and ``per_volume``."""
        out: dict[str, object] = {
            **{g: self.groups.get(g) for g in ACCELERATION_FOLDERS},
            "total": self.total,
            "groups": dict(self.groups),
            "per_anatomy": self.per_anatomy,
            "per_volume": [asdict(v) for v in self.per_volume],
            "timing": self.timing,
        }
        return out

    def table(self, decimals: int = 4) -> str:
        """A Markdown table: one row per anatomy and folder, then the pooled rows and the total."""
        groups = [g for g in (*ACCELERATION_FOLDERS, "") if g in self.groups]
        labels = [g or "all" for g in groups]
        lines = ["| | " + " | ".join(labels) + " |", "|---|" + "---|" * len(groups)]
        anatomies = sorted({a for g in groups for a in self.per_anatomy.get(g, {})})
        for anatomy in anatomies:
            cells = [_fmt(self.per_anatomy.get(g, {}).get(anatomy), decimals) for g in groups]
            lines.append(f"| {anatomy} | " + " | ".join(cells) + " |")
        lines.append("| **all** | " + " | ".join(_fmt(self.groups[g], decimals) for g in groups) + " |")
        if self.timing is not None:
            lines.append(_timing_row(self.timing, labels))
        if self.total is not None:
            lines.append(f"\n**total SSIM = {self.total:.{decimals}f}**")
        return "\n".join(lines)


def _fmt(value: float | None, decimals: int) -> str:
    return "–" if value is None else f"{value:.{decimals}f}"


def _timing_row(report: dict[str, Any], labels: list[str], overall: bool = False) -> str:
    """Table row of reconstruction milliseconds per slice per folder (``overall``: one more cell, the whole
    run's, loading included)."""
    groups = report["groups"]
    cells = [f"{groups[label]['ms_per_slice']:.1f}" if label in groups else "–" for label in labels]
    if overall:
        cells.append(f"{report['ms_per_slice']:.1f}")
    return "| ms/slice | " + " | ".join(cells) + " |"


def _target_groups(leaderboard: Path) -> list[tuple[str, Path]]:
    """(group, image folder) pairs of a leaderboard root or a single folder."""
    if not leaderboard.is_dir():
        raise DataFormatError(leaderboard, "leaderboard folder does not exist")
    groups = [
        (g, leaderboard / g / "image") for g in ACCELERATION_FOLDERS if (leaderboard / g / "image").is_dir()
    ]
    if groups:
        return groups
    if (leaderboard / "image").is_dir():
        return [("", leaderboard / "image")]
    folders = ", ".join(f"{g}/image" for g in ACCELERATION_FOLDERS)
    raise DataFormatError(leaderboard, f"no {folders} or image/ folder with target files")


def _image_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.h5"), key=lambda p: formats.natural_key(p.name))
    if not files:
        raise DataFormatError(folder, "no .h5 target files")
    return files


def score_volume(recon: np.ndarray, target: np.ndarray, max_value: float, anatomy: str) -> np.ndarray:
    """Per-slice leaderboard SSIM of one volume.

    Args:
        recon: ``(S, h, w)`` float reconstruction.
        target: ``(S, h, w)`` float ``image_label``.
        max_value: the target file's ``max`` attribute (SSIM data range).
        anatomy: ``"brain"`` or ``"knee"`` (foreground threshold).

    Returns:
        ``(S,)`` float64 SSIM per slice.
    """
    return metrics.leaderboard_ssim_volume(recon, target, max_value, anatomy)


def _jobs(leaderboard: str | Path, recon: str | Path) -> list[tuple[str, Path, Path]]:
    """``(group, target file, reconstruction file)`` of every target volume under ``leaderboard``.

    Raises:
        DataFormatError: the reconstruction folder or a reconstruction file is missing.
    """
    leaderboard, recon = Path(leaderboard), Path(recon)
    if not recon.is_dir():
        raise DataFormatError(recon, "reconstruction folder does not exist")
    jobs = [
        (group, target, (recon / group if group else recon) / target.name)
        for group, image_dir in _target_groups(leaderboard)
        for target in _image_files(image_dir)
    ]
    for _, _, path in jobs:
        if not path.is_file():
            raise DataFormatError(path, "reconstruction file is missing")
    return jobs


def evaluate_leaderboard(
    leaderboard: str | Path, recon: str | Path, progress: bool = True
) -> LeaderboardResult:
    """Score every target volume under ``leaderboard`` against its reconstruction under ``recon``.

    Every target must have a reconstruction of the same name and the same ``(S, h, w)`` shape; a missing,
    misshaped, non-finite or unreadable reconstruction raises :class:`DataFormatError` naming the file.
    """
    result = LeaderboardResult()
    jobs = _jobs(leaderboard, recon)

    slice_scores: dict[str, list[float]] = {}
    anatomy_scores: dict[str, dict[str, list[float]]] = {}
    for group, target_path, recon_path in tqdm(jobs, desc="evaluate", unit="vol", disable=not progress):
        formats.validate_image_file(target_path)
        target = formats.read_image_volume(target_path, "image_label")
        max_value = float(formats.read_image_attrs(target_path)["max"])
        anatomy = formats.anatomy_from_name(target_path.name)
        reconstruction = formats.read_reconstruction(recon_path, expected_shape=tuple(target.shape))
        scores = score_volume(reconstruction, target, max_value, anatomy)
        result.per_volume.append(
            VolumeScore(
                group=group,
                name=target_path.name,
                anatomy=anatomy,
                slices=len(scores),
                ssim=float(scores.mean()),
                slice_ssim=tuple(float(s) for s in scores),
            )
        )
        slice_scores.setdefault(group, []).extend(scores.tolist())
        anatomy_scores.setdefault(group, {}).setdefault(anatomy, []).extend(scores.tolist())

    result.groups = {g: float(np.mean(v)) for g, v in slice_scores.items()}
    result.per_anatomy = {
        g: {a: float(np.mean(v)) for a, v in sorted(per.items())} for g, per in anatomy_scores.items()
    }
    result.timing, result.timing_note = read_timing(recon)
    return result


def check_json_path(path: str | Path) -> None:
    """Refuse a scores file that would replace something else: ``path`` is a folder, lies under a file, or exists
    and is not a scores file written by :func:`write_json` (an input ``.h5``, any other file). One-line
    KspacelabError; called before evaluating, so a long evaluation never ends in a refusal."""
    formats.check_replaceable_json(
        path, "scores file", lambda old: isinstance(old, dict) and "total" in old and "per_volume" in old
    )


def write_json(result: LeaderboardResult | Snu2026Result | FastmriResult, path: str | Path) -> None:
    """Write the result as JSON, atomically (:func:`kspacelab.formats.atomic_text`: a temporary name, renamed;
    the temporary is removed on any failure). Refuses what :func:`check_json_path` refuses; an OS error (read-only
    folder, disk full) is a one-line KspacelabError."""
    check_json_path(path)
    formats.atomic_text(path, json.dumps(result.to_json_dict(), indent=2, allow_nan=False) + "\n")


# ----------------------------------------------------------------------------------------------------
# The 2026 challenge's two SSIMs
# ----------------------------------------------------------------------------------------------------
@dataclass
class Snu2026Result:
    """Scores of the 2026 challenge: per acceleration folder the mean SSIM_full over slices (slices with an empty
    foreground mask skipped) and the mean SSIM_bbox over lesion boxes (boxes under 7 pixels skipped)."""

    full: dict[str, float] = field(default_factory=dict)  # group -> mean SSIM_full
    bbox: dict[str, float] = field(default_factory=dict)  # group -> mean SSIM_bbox (groups with boxes only)
    slices: dict[str, int] = field(default_factory=dict)  # group -> slices scored
    boxes: dict[str, int] = field(default_factory=dict)  # group -> boxes scored
    #: the reconstruction folder's ``timing.json`` (:mod:`kspacelab.timing`), when ``reconstruct`` wrote one
    timing: dict[str, Any] | None = None
    #: a one-line warning when that file exists but is unusable
    timing_note: str | None = None

    @staticmethod
    def _leaderboard(values: dict[str, float]) -> float | None:
        groups = [g for g in ACCELERATION_FOLDERS if g in values]
        if len(groups) == len(ACCELERATION_FOLDERS):
            return sum(values[g] for g in groups) / len(groups)
        return next(iter(values.values())) if len(values) == 1 else None

    @property
    def ssim_full(self) -> float | None:
        """Mean of acc4 and acc8 (or the single folder's value)."""
        return self._leaderboard(self.full)

    @property
    def ssim_bbox(self) -> float | None:
        """Mean of acc4 and acc8 (or the single folder's value); None without scored boxes."""
        return self._leaderboard(self.bbox)

    @property
    def quality(self) -> float | None:
        """``(SSIM_full + SSIM_bbox) / 2``; None when either is missing."""
        full, bbox = self.ssim_full, self.ssim_bbox
        return None if full is None or bbox is None else (full + bbox) / 2

    def to_json_dict(self) -> dict[str, object]:
        """JSON-ready dict (``metric``, ``ssim_full``, ``ssim_bbox``, ``quality``, per folder, counts; ``total`` is
        the quality, so the file is recognised as a scores file)."""
        return {
            "metric": "snu2026",
            "ssim_full": self.ssim_full,
            "ssim_bbox": self.ssim_bbox,
            "quality": self.quality,
            "total": self.quality,
            "full": dict(self.full),
            "bbox": dict(self.bbox),
            "slices": dict(self.slices),
            "boxes": dict(self.boxes),
            "per_volume": [],
            "timing": self.timing,
            "ms_per_slice": None if self.timing is None else self.timing["ms_per_slice"],
        }

    def table(self, decimals: int = 4) -> str:
        """A Markdown table: SSIM_full and SSIM_bbox per folder and their leaderboard means, then the quality."""
        groups = [g for g in (*ACCELERATION_FOLDERS, "") if g in self.full]
        labels = [g or "all" for g in groups]
        lines = ["| | " + " | ".join(labels) + " | leaderboard |", "|---|" + "---|" * (len(groups) + 1)]
        for name, values, overall in (
            ("SSIM_full", self.full, self.ssim_full),
            ("SSIM_bbox", self.bbox, self.ssim_bbox),
        ):
            cells = [_fmt(values.get(g), decimals) for g in groups]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {_fmt(overall, decimals)} |")
        if self.timing is not None:
            lines.append(_timing_row(self.timing, labels, overall=True))
        counts = ", ".join(
            f"{g or 'all'}: {self.slices.get(g, 0)} slices, {self.boxes.get(g, 0)} boxes" for g in groups
        )
        lines.append(f"\nscored: {counts}")
        if self.quality is not None:
            lines.append(f"\n**quality = (SSIM_full + SSIM_bbox) / 2 = {self.quality:.{decimals}f}**")
        return "\n".join(lines)


def evaluate_snu2026(leaderboard: str | Path, recon: str | Path, progress: bool = True) -> Snu2026Result:
    """Score every target volume under ``leaderboard`` with the 2026 challenge's SSIM_full and SSIM_bbox
    (:func:`kspacelab.metrics.snu2026_full_ssim`, :func:`kspacelab.metrics.snu2026_box_ssim`), boxes from the
    image files' ``attrs['annotations']`` (:func:`kspacelab.formats.read_annotations`). Same layouts and file
    checks as :func:`evaluate_leaderboard`; a bad annotation is a one-line DataFormatError naming the file."""
    jobs = _jobs(leaderboard, recon)
    annotations = {}
    for _, target_path, _ in jobs:  # every target and its annotations checked before the first score
        formats.validate_image_file(target_path)
        annotations[target_path] = formats.read_annotations(target_path)
    full: dict[str, list[float]] = {}
    bbox: dict[str, list[float]] = {}
    for group, target_path, recon_path in tqdm(jobs, desc="evaluate", unit="vol", disable=not progress):
        target = formats.read_image_volume(target_path, "image_label")
        max_value = float(formats.read_image_attrs(target_path)["max"])
        anatomy = formats.anatomy_from_name(target_path.name)
        boxes = annotations[target_path]
        reconstruction = formats.read_reconstruction(recon_path, expected_shape=tuple(target.shape))
        full.setdefault(group, [])
        for index in range(target.shape[0]):
            score = metrics.snu2026_full_ssim(reconstruction[index], target[index], max_value, anatomy)
            if score is not None:
                full[group].append(score)
            for box in boxes.get(index, []):
                value = metrics.snu2026_box_ssim(
                    reconstruction[index], target[index], max_value, (box.x, box.y, box.width, box.height)
                )
                if value is not None:
                    bbox.setdefault(group, []).append(value)
    report, note = read_timing(recon)
    return Snu2026Result(
        full={g: float(np.mean(v)) for g, v in full.items() if v},
        bbox={g: float(np.mean(v)) for g, v in bbox.items() if v},
        slices={g: len(v) for g, v in full.items()},
        boxes={g: len(bbox.get(g, [])) for g in full},
        timing=report,
        timing_note=note,
    )


# ----------------------------------------------------------------------------------------------------
# fastMRI metrics of NYU files (single-coil extreme acceleration)
# ----------------------------------------------------------------------------------------------------
#: The scores of :class:`FastmriVolumeScore`, in table order, with their table headings.
FASTMRI_SCORES = {"nmse": "NMSE", "psnr": "PSNR (dB)", "ssim": "SSIM", "hallucination": "HI"}


@dataclass(frozen=True)
class FastmriVolumeScore:
    """fastMRI scores of one volume (fastMRI's evaluate semantics: the whole volume at once, data range the
    target's volume maximum) and its hallucination index (:func:`kspacelab.metrics.hallucination_index`)."""

    name: str
    slices: int
    nmse: float
    psnr: float  # dB
    ssim: float  # mean over the volume's slices
    hallucination: float


@dataclass
class FastmriResult:
    """Scores of a folder of NYU volumes: per volume, and their means over volumes (as fastMRI's evaluate
    script averages)."""

    per_volume: list[FastmriVolumeScore] = field(default_factory=list)
    #: the reconstruction folder's ``timing.json`` (:mod:`kspacelab.timing`), when ``reconstruct`` wrote one
    timing: dict[str, Any] | None = None
    #: a one-line warning when that file exists but is unusable
    timing_note: str | None = None

    @property
    def means(self) -> dict[str, float]:
        """Mean of each score (:data:`FASTMRI_SCORES`) over the volumes."""
        return {key: float(np.mean([getattr(v, key) for v in self.per_volume])) for key in FASTMRI_SCORES}

    def to_json_dict(self) -> dict[str, object]:
        """JSON-ready dict: ``metric`` ``"fastmri"``, the means (``nmse``, ``psnr``, ``ssim``, ``hallucination``),
        ``volumes``, ``per_volume``, ``timing``; ``total`` is the mean SSIM (so the file is recognised as a scores
        file). An infinite PSNR (a perfect volume) is written as null."""
        means = self.means

        def finite(values: dict[str, Any]) -> dict[str, Any]:
            return {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in values.items()}

        return {
            "metric": "fastmri",
            **finite(means),
            "total": means["ssim"],
            "volumes": len(self.per_volume),
            "per_volume": [finite(asdict(v)) for v in self.per_volume],
            "timing": self.timing,
        }

    def table(self, decimals: int = 4) -> str:
        """A Markdown table: one row per volume, then the means (and the reconstruction's ms/slice when timed)."""
        heading = "| volume | slices | " + " | ".join(FASTMRI_SCORES.values()) + " |"
        lines = [heading, "|---|---|" + "---|" * len(FASTMRI_SCORES)]
        for v in self.per_volume:
            cells = [f"{getattr(v, key):.{decimals}f}" for key in FASTMRI_SCORES]
            lines.append(f"| {v.name} | {v.slices} | " + " | ".join(cells) + " |")
        means = self.means
        cells = [f"**{means[key]:.{decimals}f}**" for key in FASTMRI_SCORES]
        slices = sum(v.slices for v in self.per_volume)
        lines.append(f"| **mean of {len(self.per_volume)}** | {slices} | " + " | ".join(cells) + " |")
        if self.timing is not None:
            lines.append(f"\nreconstruction: {self.timing['ms_per_slice']:.1f} ms/slice (loading included)")
        return "\n".join(lines)


def read_nyu_target(path: str | Path) -> np.ndarray:
    """The target volume of an NYU file (``reconstruction_esc`` for single-coil, ``reconstruction_rss`` for
    multi-coil files, else the other): float32 ``(S, h, w)``, checked finite. One-line DataFormatError for a file
    without a target (a test file) or with non-finite values."""
    header = formats.read_nyu_header(path)
    if header.target_key is None:
        keys = " or ".join(formats.NYU_TARGET_KEYS[::-1])
        raise DataFormatError(path, f"no target ({keys}) to score against (a test file?)")
    images = []
    for index in range(header.num_slices):
        image = formats.read_nyu_slice(path, index)[2]
        if image is None:  # the header found the target: only a file changed under us gets here
            raise DataFormatError(path, f"slice {index} has no target")
        images.append(image)
    target = np.stack(images)
    if not np.isfinite(target).all():
        raise DataFormatError(path, f"'{header.target_key}' has non-finite values")
    return target


def score_fastmri_volume(name: str, recon: np.ndarray, target: np.ndarray) -> FastmriVolumeScore:
    """fastMRI scores of one volume: :func:`kspacelab.metrics.nmse`, :func:`~kspacelab.metrics.psnr` and
    :func:`~kspacelab.metrics.ssim` (data range ``target.max()``) and the hallucination index, of float
    ``(S, h, w)`` arrays of one shape."""
    return FastmriVolumeScore(
        name=name, slices=int(target.shape[0]), **metrics.fastmri_volume_scores(target, recon)
    )


def evaluate_fastmri(targets: str | Path, recon: str | Path, progress: bool = True) -> FastmriResult:
    """Score every NYU file of the folder ``targets`` against ``recon/NAME.h5`` with fastMRI's metrics.

    Every reconstruction is checked to exist before the first score; a missing reconstruction folder or file, a
    target file without a target, a reconstruction of another shape than its target (``(S, h, w)``, e.g.
    ``320 x 320``), non-finite values or a target without fine detail (no hallucination index) is a one-line
    DataFormatError naming the file.
    """
    recon = Path(recon)
    files = formats.discover_nyu(targets)
    if not recon.is_dir():
        raise DataFormatError(recon, "reconstruction folder does not exist")
    for target_path in files:
        if not (recon / target_path.name).is_file():
            raise DataFormatError(recon / target_path.name, "reconstruction file is missing")
    result = FastmriResult()
    for target_path in tqdm(files, desc="evaluate", unit="vol", disable=not progress):
        target = read_nyu_target(target_path)
        reconstruction = formats.read_reconstruction(recon / target_path.name, expected_shape=target.shape)
        try:
            score = score_fastmri_volume(target_path.name, reconstruction, target)
        except ValueError as err:
            raise DataFormatError(target_path, f"cannot be scored: {err}") from err
        result.per_volume.append(score)
    result.timing, result.timing_note = read_timing(recon)
    return result
