"""``kspacelab robustness``: what an unknown mask or scanner costs a reconstruction, before submitting.

Fully sampled files (the SNU layout's train/val k-space: the stored ``kspace`` holds every phase-encoding line; its
``mask`` only says how the organiser would undersample it) are undersampled again under *conditions*:

* every mask family of :data:`FAMILIES` at every acceleration (all coils): the organiser rule, the seeds' robustness
  variants ``random_offset`` / ``random_spaced`` / ``random_lines`` (same 8% centre) and fastMRI's ``random`` and
  ``equispaced`` (centre fraction ``0.32 / acc``: fastMRI's 0.08 at 4x and 0.04 at 8x), one mask per volume drawn
  from ``(seed, acceleration, file name)`` (:func:`volume_mask`);
* fewer coils, with the organiser mask: a subset of the coils (evenly spaced over the array) or the volume
  compressed to fewer virtual coils (:func:`kspacelab.physics.compress_coils`, one matrix per volume from its
  scored slices), per coil count and acceleration. The target is then what such a scanner gives: the RSS of the
  reduced fully sampled k-space, on the challenge's scale (:func:`fewer_coils_target`), not the file's all-coil
  ``image_label``.

Each condition's files are written to a temporary folder in the SNU layout (k-space multiplied by the new mask, the
new ``mask``, the target ``image_label`` and its ``max``; no ``image_input``/``image_grappa``, so a model or a
router that needs a classical image computes it from the new k-space), reconstructed with the same functions as
``kspacelab reconstruct`` (a classical method, a checkpoint or a bundle) and scored with the leaderboard SSIM of
``kspacelab evaluate``. The result (:class:`RobustnessResult`) is a table with one row per condition, written as
``robustness.csv``, ``robustness.json`` and a figure ``robustness.png`` into the output folder.

Every input is validated before anything is written; the output folder is never an input folder, and only a
folder holding nothing of ours or an earlier robustness report is written to.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from kspacelab import formats, masks, metrics, physics
from kspacelab.challenge import ANATOMIES, acc_folder
from kspacelab.classical.zero_filled import zero_filled_image
from kspacelab.data.classical_cache import CACHE_ENV
from kspacelab.errors import DataFormatError, KspacelabError
from kspacelab.evaluation import evaluate_leaderboard
from kspacelab.inference import (
    CLASSICAL_METHODS,
    ReconOptions,
    check_output_folder,
    reconstruct_dataset,
    reconstruct_with_model,
    refuse_nyu_folder,
    validate_volume,
)

__all__ = [
    "COIL_MODES",
    "DEFAULT_ACCELERATIONS",
    "DEFAULT_COILS",
    "FAMILIES",
    "OUTPUT_FILES",
    "Condition",
    "RobustnessResult",
    "RobustnessRow",
    "conditions",
    "fewer_coils_target",
    "reduce_coils",
    "run_robustness",
    "select_volumes",
    "volume_mask",
]

#: Mask family -> kind of :func:`kspacelab.masks.create_mask_for_mask_type`.
FAMILIES: dict[str, str] = {
    "organiser": "snu",
    "random_offset": "random_offset",
    "random_spaced": "random_spaced",
    "random_lines": "random_lines",
    "fastmri_random": "random",
    "fastmri_equispaced": "equispaced",
}
#: How fewer coils are made: a subset of the receive coils, or virtual coils from a PCA of all of them.
COIL_MODES = ("subset", "compressed")
DEFAULT_ACCELERATIONS = (4, 8)
DEFAULT_COILS = (2, 4)
#: The report's files in the output folder.
OUTPUT_FILES = ("robustness.csv", "robustness.json", "robustness.png")
#: ``kind`` of the JSON report (how a later run recognises a report it may replace).
REPORT_KIND = "kspacelab robustness"
#: fastMRI pairs centre fraction 0.08 with 4x and 0.04 with 8x: ``FASTMRI_CENTER / acc``.
FASTMRI_CENTER = 0.32
#: Family of the coil conditions and of the reference row of the ``delta`` column.
REFERENCE_FAMILY = "organiser"


@dataclass(frozen=True)
class Condition:
    """One way of undersampling: a mask family at an acceleration, with all coils or fewer.

    Attributes:
        family: a key of :data:`FAMILIES`.
        acceleration: nominal acceleration (line spacing) of the mask.
        coils: number of (real or virtual) coils; None: every coil of the file.
        coil_mode: ``"all"``, or one of :data:`COIL_MODES` (then ``coils`` is set).
    """

    family: str
    acceleration: int
    coils: int | None = None
    coil_mode: str = "all"

    @property
    def label(self) -> str:
        """Row label without the acceleration, e.g. ``random_lines`` or ``4 coils (compressed)``."""
        if self.coils is None:
            return self.family
        return f"{self.coils} coils ({self.coil_mode})"


@dataclass
class RobustnessRow:
    """The score of one condition.

    Attributes:
        condition: the condition.
        slices: slices scored (every selected slice of every selected volume).
        effective_acceleration: mean over the volumes of ``W / sampled lines`` of the masks used.
        foreground: mean over the slices of the fraction of pixels in the metric's foreground mask of the target
            (smaller with fewer coils that see less of the anatomy; background windows score 1).
        ssim: leaderboard SSIM, the mean over all slices (brain and knee pooled).
        per_anatomy: anatomy -> mean leaderboard SSIM over its slices.
        delta: ``ssim`` minus the organiser row at the same acceleration with all coils (None without one).
        per_volume: per volume: ``name`` (the input file), ``coils`` (as reconstructed), ``ssim`` (mean over its
            slices), ``slice_ssim`` and ``lines`` (indices of the sampled phase-encoding lines).
    """

    condition: Condition
    slices: int
    effective_acceleration: float
    foreground: float
    ssim: float
    per_anatomy: dict[str, float]
    delta: float | None = None
    per_volume: list[dict[str, object]] = field(default_factory=list)

    def flat(self) -> dict[str, object]:
        """The row as one flat dict (a CSV row; the JSON row without ``per_volume``)."""
        c = self.condition
        return {
            "family": c.family,
            "acceleration": c.acceleration,
            "coils": "all" if c.coils is None else c.coils,
            "coil_mode": c.coil_mode,
            "effective_acceleration": round(self.effective_acceleration, 4),
            "foreground": round(self.foreground, 4),
            "slices": self.slices,
            "ssim": self.ssim,
            **{f"ssim_{a}": self.per_anatomy.get(a) for a in ANATOMIES},
            "delta": self.delta,
        }


@dataclass
class RobustnessResult:
    """The report: what was reconstructed, on which files, and one :class:`RobustnessRow` per condition."""

    what: str  # e.g. "method grappa", "checkpoint best.ckpt"
    data: str
    volumes: list[str]
    max_slices: int
    seed: int
    rows: list[RobustnessRow]

    def table(self, decimals: int = 4) -> str:
        """Markdown table: one line per condition."""
        header = ["mask", "acc", "coils", "W / lines", "foreground", "SSIM", *ANATOMIES, "vs organiser"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

        def cell(value: float | None, sign: bool = False) -> str:
            if value is None:
                return "–"
            return f"{value:+.{decimals}f}" if sign else f"{value:.{decimals}f}"

        for row in self.rows:
            c = row.condition
            coils = "all" if c.coils is None else f"{c.coils} {c.coil_mode}"
            cells = [
                c.family,
                acc_folder(c.acceleration),
                coils,
                f"{row.effective_acceleration:.2f}",
                f"{100 * row.foreground:.0f}%",
                cell(row.ssim),
                *(cell(row.per_anatomy.get(a)) for a in ANATOMIES),
                cell(row.delta, sign=True),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_json_dict(self) -> dict[str, object]:
        """JSON-ready dict: ``kind``, the run's settings and every row with its per-volume scores and masks."""
        return {
            "kind": REPORT_KIND,
            "what": self.what,
            "data": self.data,
            "volumes": self.volumes,
            "max_slices": self.max_slices,
            "seed": self.seed,
            "rows": [{**row.flat(), "per_volume": row.per_volume} for row in self.rows],
        }

    def csv_text(self) -> str:
        """CSV text: a header and one line per condition (:meth:`RobustnessRow.flat`)."""
        buffer = io.StringIO()
        flat = [row.flat() for row in self.rows]
        writer = csv.DictWriter(buffer, fieldnames=list(flat[0]) if flat else ["family"], lineterminator="\n")
        writer.writeheader()
        for entry in flat:
            writer.writerow({k: "" if v is None else v for k, v in entry.items()})
        return buffer.getvalue()


# ----------------------------------------------------------------------------------------------------
# Masks and coils
# ----------------------------------------------------------------------------------------------------


def volume_mask(family: str, width: int, acceleration: int, seed: int, name: str) -> np.ndarray:
    """The ``(W,)`` bool mask a family draws for one volume.

    The organiser rule is fixed; every other family draws from the seed ``(seed, acceleration, crc32(name))``, so
    a volume gets the same mask in every run with the same ``seed`` and a different one per file and acceleration.

    Args:
        family: a key of :data:`FAMILIES`.
        width: phase-encoding lines ``W`` of the volume.
        acceleration: nominal acceleration (>= 1).
        seed: the run's seed (>= 0).
        name: the volume's file name.
    """
    if family not in FAMILIES:
        raise KspacelabError(f"unknown mask family {family!r}; choose from {', '.join(FAMILIES)}")
    kind = FAMILIES[family]
    mask_func = masks.create_mask_for_mask_type(
        kind, [min(1.0, FASTMRI_CENTER / acceleration)], [acceleration]
    )
    lines, _ = mask_func.sample_lines(width, seed=(seed, acceleration, zlib.crc32(name.encode())))
    return lines


def subset_indices(coils: int, keep: int) -> np.ndarray:
    """``keep`` coil indices spread evenly over ``0..coils-1`` (``round(i * coils / keep)``), so that a subset
    still surrounds the object as the full array does."""
    if not 1 <= keep <= coils:
        raise ValueError(f"cannot keep {keep} of {coils} coils")
    return np.floor(np.arange(keep) * coils / keep + 0.5).astype(np.intp).clip(0, coils - 1)


def reduce_coils(kspace: np.ndarray, coils: int, mode: str) -> np.ndarray:
    """``kspace`` ``(S, C, H, W)`` complex with ``coils`` coils: a subset (:func:`subset_indices`) or compressed
    to virtual coils with one PCA matrix for the volume (:func:`kspacelab.physics.compress_coils`).

    Returns:
        complex64 ``(S, coils, H, W)``.
    """
    if mode == "subset":
        return np.ascontiguousarray(kspace[:, subset_indices(kspace.shape[1], coils)], dtype=np.complex64)
    if mode == "compressed":
        tensor = torch.from_numpy(np.ascontiguousarray(kspace, dtype=np.complex64))
        return physics.compress_coils(tensor, coils, coil_dim=1).numpy()
    raise KspacelabError(f"unknown coil mode {mode!r}; choose from {', '.join(COIL_MODES)}")


def conditions(
    families: Sequence[str],
    accelerations: Sequence[int],
    coils: Sequence[int] = (),
    coil_modes: Sequence[str] = COIL_MODES,
) -> list[Condition]:
    """Every condition of a run, in table order: each family at each acceleration (all coils), then each coil
    mode and count at each acceleration (organiser mask). Unknown names and bad numbers raise a one-line
    KspacelabError."""
    for family in families:
        if family not in FAMILIES:
            raise KspacelabError(f"unknown mask family {family!r}; choose from {', '.join(FAMILIES)}")
    for mode in coil_modes:
        if mode not in COIL_MODES:
            raise KspacelabError(f"unknown coil mode {mode!r}; choose from {', '.join(COIL_MODES)}")
    for acc in accelerations:
        if acc < 2:
            raise KspacelabError(f"accelerations must be >= 2, got {acc}")
    for n in coils:
        if n < 1:
            raise KspacelabError(f"coil counts must be >= 1, got {n}")
    if not families and not (coils and coil_modes):
        raise KspacelabError("nothing to do: no mask family and no coil count")
    if not accelerations:
        raise KspacelabError("nothing to do: no acceleration")
    accs = list(dict.fromkeys(int(a) for a in accelerations))
    out = [Condition(f, a) for f in dict.fromkeys(families) for a in accs]
    out += [
        Condition(REFERENCE_FAMILY, a, int(n), mode)
        for mode in dict.fromkeys(coil_modes)
        for n in sorted(set(coils))
        for a in accs
    ]
    return out


# ----------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------


def _split_volumes(data: Path, split: str) -> list[formats.Volume]:
    refuse_nyu_folder(data, "robustness")
    groups = formats.discover_snu(data)
    if split in groups:
        return groups[split]
    if "" in groups:  # a single folder with kspace/ and image/
        return groups[""]
    found = ", ".join(g or "." for g in groups) or "none"
    raise DataFormatError(
        data,
        f"no fully sampled '{split}' split (found: {found}); pass a dataset root with {split}/ or a folder with "
        "kspace/ and image/ holding fully sampled k-space (leaderboard k-space is already undersampled)",
    )


def _interleaved(volumes: Sequence[formats.Volume], limit: int) -> list[formats.Volume]:
    """At most ``limit`` volumes, taking the anatomies in turn (so a small run still has brain and knee)."""
    queues = [[v for v in volumes if v.anatomy == a] for a in ANATOMIES]
    queues.append([v for v in volumes if v.anatomy not in ANATOMIES])
    chosen: list[formats.Volume] = []
    while len(chosen) < limit and any(queues):
        for queue in queues:
            if queue and len(chosen) < limit:
                chosen.append(queue.pop(0))
    return sorted(chosen, key=lambda v: formats.natural_key(v.name))


def central_slices(n_slices: int, max_slices: int) -> list[int]:
    """The ``min(n_slices, max_slices)`` central slice indices (edge slices hold little anatomy)."""
    keep = min(n_slices, max_slices)
    start = (n_slices - keep) // 2
    return list(range(start, start + keep))


def _check_fully_sampled(vol: formats.Volume, slices: Sequence[int]) -> None:
    kspace = _read_slices(vol, slices[:1])  # one slice tells: undersampled files zero whole columns
    empty = int((np.abs(kspace).sum(axis=(0, 1, 2)) == 0).sum())
    if empty:
        raise DataFormatError(
            vol.kspace_path,
            f"k-space is not fully sampled ({empty} of {kspace.shape[-1]} phase-encoding lines are zero); "
            "robustness needs fully sampled files (the train/val split), not leaderboard files",
        )


def _read_slices(vol: formats.Volume, slices: Sequence[int]) -> np.ndarray:
    """complex64 ``(len(slices), C, H, W)`` fully sampled k-space of ``vol``."""
    return np.stack([formats.read_kspace_slice(vol.kspace_path, i)[0] for i in slices])


def select_volumes(
    data: str | Path,
    split: str = "val",
    max_volumes: int = 4,
    max_slices: int = 2,
    min_coils: int = 1,
) -> list[tuple[formats.Volume, list[int]]]:
    """The volumes (and their slices) a run uses, every one validated.

    Args:
        data: a dataset root (its ``split`` folder is used) or a folder with ``kspace/`` and ``image/``.
        split: ``val`` or ``train``.
        max_volumes: at most this many volumes, the anatomies taken in turn, in natural order.
        max_slices: at most this many central slices per volume.
        min_coils: every volume must have at least this many coils (the largest coil count asked for).

    Raises:
        DataFormatError: one line naming the file: no such split or no k-space file, a file that fails
            validation, no image partner (the target), k-space that is not fully sampled, too few coils.
    """
    if max_volumes < 1 or max_slices < 1:
        raise KspacelabError(f"--max-volumes and --max-slices must be >= 1, got {max_volumes}, {max_slices}")
    data = Path(data)
    chosen = []
    for vol in _interleaved(_split_volumes(data, split), max_volumes):
        if vol.image_path is None:
            raise DataFormatError(vol.kspace_path, "has no image/ partner (image_label is the target)")
        validate_volume(vol)
        n_slices, n_coils, _, _ = formats.kspace_shape(vol.kspace_path)
        if n_coils < min_coils:
            raise DataFormatError(
                vol.kspace_path, f"has {n_coils} coils, fewer than the {min_coils} coils asked for (--coils)"
            )
        slices = central_slices(n_slices, max_slices)
        _check_fully_sampled(vol, slices)
        chosen.append((vol, slices))
    return chosen


def _check_out_folder(out: Path, data: Path, volumes: Sequence[formats.Volume]) -> None:
    """Refuse an input folder (as ``reconstruct`` does) and a folder whose report files are not ours."""
    check_output_folder(out, [("", v) for v in volumes], data)
    report = out / OUTPUT_FILES[1]
    try:
        for name in OUTPUT_FILES:
            path = out / name
            if path.is_dir():
                raise KspacelabError(f"{path}: exists and is a folder, expected a report file")
        present = [name for name in OUTPUT_FILES if (out / name).exists()]
        if present:
            try:
                old = json.loads(report.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError):
                old = None
            if not (isinstance(old, dict) and old.get("kind") == REPORT_KIND):
                raise KspacelabError(
                    f"{out / present[0]}: exists and is not part of a kspacelab robustness report; refusing to "
                    "replace it"
                )
    except OSError as err:
        raise formats.write_error(out, err) from err


# ----------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------


Reconstructor = Callable[[Path, Path], None]


@contextlib.contextmanager
def _classical_cache_in(folder: Path) -> Iterator[None]:
    """Classical images of the temporary files are cached in ``folder`` (removed with it), not the user's cache."""
    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = previous


def _write_target(path: Path, label: np.ndarray, max_value: float) -> None:
    """An image file holding only the target: ``image_label`` float32 ``(S, h, w)`` and the volume's ``max``."""
    with formats.atomic_h5(path) as f:
        f.create_dataset("image_label", data=np.asarray(label, dtype=np.float32))
        f.attrs["max"] = float(max_value)
        f.attrs["norm"] = float(np.linalg.norm(label.astype(np.float64).ravel()))


def fewer_coils_target(kspace: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What a scanner with fewer coils gives: its fully sampled k-space and target on the challenge's scale.

    The target is the RSS of the reduced fully sampled ``kspace`` cropped to the ``label`` size (how
    ``image_label`` is made); both are scaled so that its maximum over the scored slices equals the file label's
    (as the challenge data and the simulator are scaled), so the file's ``max`` and the absolute foreground
    thresholds of the metric keep their meaning.

    Args:
        kspace: complex ``(S, C', H, W)`` fully sampled k-space with the reduced coils.
        label: float32 ``(S, h, w)`` the file's ``image_label`` of the same slices (all coils).

    Returns:
        ``(kspace, target)``: complex64 ``(S, C', H, W)`` and float32 ``(S, h, w)``, scaled alike.
    """
    target = np.asarray(zero_filled_image(kspace, None, crop=label.shape[-2:]), dtype=np.float32)
    scale = float(label.max()) / float(target.max())
    return (kspace * np.complex64(scale)).astype(np.complex64), target * np.float32(scale)


def _write_condition(
    folder: Path, condition: Condition, selection: Sequence[tuple[formats.Volume, list[int]]], seed: int
) -> list[tuple[str, dict[str, object], float, list[float]]]:
    """Write one condition's SNU folder (``kspace/``, ``image/``); returns per volume its file name there, its
    per-volume info, ``W / sampled lines`` and the foreground fraction of each slice's target."""
    written = []
    for index, (vol, slices) in enumerate(selection, start=1):
        kspace = _read_slices(vol, slices)
        assert vol.image_path is not None  # select_volumes requires it
        label = np.stack([formats.read_image_slice(vol.image_path, i) for i in slices])
        if condition.coils is not None:
            reduced = reduce_coils(kspace, condition.coils, condition.coil_mode)
            kspace, label = fewer_coils_target(reduced, label)
        width = kspace.shape[-1]
        mask = volume_mask(condition.family, width, condition.acceleration, seed, vol.name)
        name = f"{vol.anatomy}_{acc_folder(condition.acceleration)}_{index}.h5"
        formats.write_kspace_file(folder / "kspace" / name, kspace * mask.astype(np.complex64), mask)
        _write_target(folder / "image" / name, label, formats.read_image_attrs(vol.image_path)["max"])
        foreground = [float(metrics.foreground_mask(t, vol.anatomy).mean()) for t in label]
        info: dict[str, object] = {
            "name": vol.name,
            "coils": int(kspace.shape[1]),
            "foreground": foreground,
            "lines": [int(i) for i in np.flatnonzero(mask)],
            "width": int(width),
        }
        written.append((name, info, width / int(mask.sum()), foreground))
    return written


def _score_condition(
    condition: Condition,
    selection: Sequence[tuple[formats.Volume, list[int]]],
    seed: int,
    reconstruct: Reconstructor,
    work: Path,
) -> RobustnessRow:
    data, recon = work / "data", work / "recon"
    try:
        written = _write_condition(data, condition, selection, seed)
        try:
            reconstruct(data, recon)
        except KspacelabError as err:  # name the input file and the condition, not the temporary file
            message = str(err)
            for name, info, _, _ in written:
                for sub in ("kspace", "image"):
                    where = f"{info['name']} under {condition.label} {acc_folder(condition.acceleration)}"
                    message = message.replace(str(data / sub / name), where)
            raise KspacelabError(message) from err
        scores = {v.name: v for v in evaluate_leaderboard(data, recon, progress=False).per_volume}
    finally:
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(recon, ignore_errors=True)
    per_volume = []
    slice_scores: list[float] = []
    anatomy_scores: dict[str, list[float]] = {}
    widths = []
    foreground: list[float] = []
    for (name, info, effective, fractions), (vol, _) in zip(written, selection, strict=True):
        score = scores[name]
        per_volume.append({**info, "ssim": score.ssim, "slice_ssim": list(score.slice_ssim)})
        slice_scores.extend(score.slice_ssim)
        anatomy_scores.setdefault(vol.anatomy, []).extend(score.slice_ssim)
        widths.append(effective)
        foreground.extend(fractions)
    return RobustnessRow(
        condition=condition,
        slices=len(slice_scores),
        effective_acceleration=float(np.mean(widths)),
        foreground=float(np.mean(foreground)),
        ssim=float(np.mean(slice_scores)),
        per_anatomy={a: float(np.mean(s)) for a, s in sorted(anatomy_scores.items())},
        per_volume=per_volume,
    )


def _with_deltas(rows: list[RobustnessRow]) -> list[RobustnessRow]:
    reference = {
        r.condition.acceleration: r.ssim
        for r in rows
        if r.condition.family == REFERENCE_FAMILY and r.condition.coils is None
    }
    return [
        dataclasses.replace(
            r,
            delta=(r.ssim - reference[r.condition.acceleration])
            if r.condition.acceleration in reference
            else None,
        )
        for r in rows
    ]


def _reconstructor(
    method: str | None, checkpoint: Path | None, bundle: Path | None, options: ReconOptions
) -> tuple[str, Reconstructor]:
    """``(description, reconstruct(data folder, output folder))``; the model or bundle is loaded (and so
    checked) here, before anything is written."""
    if sum(x is not None for x in (method, checkpoint, bundle)) != 1:
        raise KspacelabError("robustness: give exactly one of --method, --checkpoint, --bundle")
    quiet = dataclasses.replace(options, progress=False, skip_bad=False)
    if method is not None:
        if method not in CLASSICAL_METHODS:
            raise KspacelabError(f"unknown method {method!r}; choose one of {', '.join(CLASSICAL_METHODS)}")
        if options.tta:
            raise KspacelabError("--tta applies to --checkpoint and --bundle only")
        name = method

        def classical(data: Path, out: Path) -> None:
            reconstruct_dataset(data, out, name, quiet)

        return f"method {method}", classical
    options.torch_device()
    tta = " + flip TTA" if options.tta else ""
    if checkpoint is not None:
        from kspacelab.training.checkpoint import load_model

        loaded = load_model(checkpoint, map_location=options.device)

        def model(data: Path, out: Path) -> None:
            reconstruct_with_model(data, out, loaded, quiet)

        return f"checkpoint {checkpoint.name}{tta}", model
    assert bundle is not None
    from kspacelab.experts.manifest import read_bundle
    from kspacelab.experts.reconstruct import reconstruct_with_bundle

    read_bundle(bundle)  # the manifest and its checkpoint paths, before the run
    manifest = bundle

    def experts(data: Path, out: Path) -> None:
        reconstruct_with_bundle(data, out, manifest, quiet)

    return f"bundle {bundle.name}{tta}", experts


def run_robustness(
    data: str | Path,
    out: str | Path,
    *,
    method: str | None = None,
    checkpoint: str | Path | None = None,
    bundle: str | Path | None = None,
    families: Sequence[str] = tuple(FAMILIES),
    accelerations: Sequence[int] = DEFAULT_ACCELERATIONS,
    coils: Sequence[int] = DEFAULT_COILS,
    coil_modes: Sequence[str] = COIL_MODES,
    split: str = "val",
    max_volumes: int = 4,
    max_slices: int = 2,
    seed: int = 0,
    options: ReconOptions | None = None,
) -> RobustnessResult:
    """Score one reconstruction (a classical ``method``, a ``checkpoint`` or a ``bundle``) under every condition
    and write ``OUT/robustness.{csv,json,png}``.

    Args:
        data: dataset root (its ``split``) or a folder with ``kspace/`` and ``image/`` of fully sampled files.
        out: output folder (created); never an input folder.
        method, checkpoint, bundle: exactly one: what reconstructs (as ``kspacelab reconstruct``).
        families: mask families (keys of :data:`FAMILIES`) scored with all coils.
        accelerations: nominal accelerations of every condition.
        coils: coil counts of the coil conditions (organiser mask); each at most every volume's coil count.
        coil_modes: how fewer coils are made (:data:`COIL_MODES`).
        split: the split of a dataset root (``val``: files not trained on).
        max_volumes, max_slices: the size of the run (:func:`select_volumes`).
        seed: seed of the random masks (>= 0).
        options: device, batch size, flip TTA (models), output size, progress bar over conditions.

    Returns:
        the :class:`RobustnessResult` (also written).

    Raises:
        KspacelabError / DataFormatError: one line, before anything is written, for any bad input.
    """
    options = options or ReconOptions()
    if seed < 0:
        raise KspacelabError(f"--seed must be >= 0, got {seed}")
    todo = conditions(families, accelerations, coils, coil_modes)
    wanted = max((c.coils for c in todo if c.coils is not None), default=1)
    selection = select_volumes(data, split, max_volumes, max_slices, min_coils=wanted)
    out = Path(out)
    _check_out_folder(out, Path(data), [v for v, _ in selection])
    what, reconstruct = _reconstructor(
        method, Path(checkpoint) if checkpoint else None, Path(bundle) if bundle else None, options
    )

    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="kspacelab-robustness-") as tmp,
        _classical_cache_in(Path(tmp) / "cache"),
        tqdm(total=len(todo), desc="robustness", unit="condition", disable=not options.progress) as bar,
    ):
        for condition in todo:
            bar.set_postfix_str(f"{condition.label} {acc_folder(condition.acceleration)}")
            rows.append(_score_condition(condition, selection, seed, reconstruct, Path(tmp)))
            bar.update(1)
    result = RobustnessResult(
        what=what,
        data=str(data),
        volumes=[v.name for v, _ in selection],
        max_slices=max_slices,
        seed=seed,
        rows=_with_deltas(rows),
    )
    write_report(result, out)
    return result


def write_report(result: RobustnessResult, out: str | Path) -> list[Path]:
    """Write ``robustness.csv``, ``robustness.json`` and ``robustness.png`` into ``out``, all or none."""
    from kspacelab.report import robustness_figure

    out = Path(out)
    csv_path, json_path, png_path = (out / name for name in OUTPUT_FILES)
    with formats.all_or_nothing() as written:
        for path in (csv_path, json_path, png_path):
            written.claim(path)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise formats.write_error(out, err) from err
        formats.atomic_text(csv_path, result.csv_text())
        formats.atomic_text(json_path, json.dumps(result.to_json_dict(), indent=2, allow_nan=False) + "\n")
        robustness_figure(
            [(r.condition.label, r.condition.acceleration, r.ssim) for r in result.rows],
            png_path,
            title=f"{result.what}: leaderboard SSIM on {len(result.volumes)} volumes",
        )
    return [csv_path, json_path, png_path]
