"""Anatomical phantoms and acquisition fields for the synthetic dataset (:mod:`kspacelab.data.synthetic`).

Everything here works on the *full* oversampled image grid ``(H, W)``: ``H`` the readout axis (2x oversampled,
so the anatomy of interest sits in the central ``H / 2`` rows), ``W`` the phase-encoding axis. Pixels are
square. All randomness comes from the ``numpy.random.Generator`` passed in, so a phantom is a pure function of
its generator state.

* :func:`brain_volume`: axial slices of the real MNI152 2009c template (T1 image plus GM/WM probability maps
  shipped inside the nilearn wheel) with a per-volume contrast (T1-, T2- or FLAIR-like), a synthetic scalp /
  skull around the skull-stripped template, rotation, elastic deformation and oblique slab tilt.
* :func:`knee_volume`: **a stand-in for knee data**, not knee anatomy. No real knee image is available offline,
  so the knee class is built from real musculoskeletal MR anatomy that is: regions of the clinical shoulder image
  ``MR2_UNCR.dcm`` (and, less often, the abdomen image ``MR-SIEMENS-DICOM-WithOverlays.dcm``) of the
  pydicom-data package, with random crops, flips, rotations, scaling, elastic deformation and contrast gamma,
  drifting smoothly from slice to slice. It has the knee files' geometry, coil count and intensity scale, and
  tissue-like texture, which is what the reconstruction and the leaderboard metric are sensitive to.
* :func:`smooth_field`, :class:`CoilArray`: smooth random fields (phase, bias) and loop-coil sensitivities.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "CoilArray",
    "ObjectVolume",
    "brain_volume",
    "coil_array",
    "knee_volume",
    "smooth_field",
]

MNI_BRAIN_Z_RANGE = (42.0, 146.0)
"""Voxel z range (1 mm voxels) of the MNI template used for axial slabs: temporal lobes to upper cerebrum."""

_SCALP_LAYERS_MM = (
    # (name, outer boundary in mm from the brain surface); the scalp ends at the last boundary
    ("csf", 2.0),
    ("bone", 3.5),
    ("marrow", 5.5),
    ("bone", 7.0),
    ("muscle", 8.5),
    ("fat", 12.5),
    ("skin", 14.0),
)

# relative tissue intensities per contrast; drawn around these values per volume
_BRAIN_CONTRASTS: dict[str, dict[str, float]] = {
    "t1": {
        "wm": 1.0,
        "gm": 0.62,
        "csf": 0.13,
        "bone": 0.04,
        "marrow": 0.65,
        "muscle": 0.45,
        "fat": 1.1,
        "skin": 0.5,
    },
    "t2": {
        "wm": 0.42,
        "gm": 0.62,
        "csf": 1.25,
        "bone": 0.03,
        "marrow": 0.7,
        "muscle": 0.3,
        "fat": 0.8,
        "skin": 0.5,
    },
    "flair": {
        "wm": 0.6,
        "gm": 0.85,
        "csf": 0.07,
        "bone": 0.03,
        "marrow": 0.5,
        "muscle": 0.32,
        "fat": 0.75,
        "skin": 0.45,
    },
}


@dataclass(frozen=True)
class ObjectVolume:
    """A simulated object (before coils): real, non-negative magnitude on the full grid.

    Attributes:
        magnitude: float32 ``(S, H, W)``, arbitrary units (the caller rescales).
        support: bool ``(S, H, W)``, where the anatomy is (used for the noise level and coil normalisation).
        center: ``(row, col)`` of the object's centre in pixels on the ``(H, W)`` grid.
        semi_axes: ``(rows, cols)`` half extents of the object in pixels (to place the coils around it).
        slice_step: distance between slices in pixels (for the coils' out-of-plane geometry).
    """

    magnitude: np.ndarray
    support: np.ndarray
    center: tuple[float, float]
    semi_axes: tuple[float, float]
    slice_step: float


# --------------------------------------------------------------------------------------------- smooth fields


def _rbf_basis(n_out: int, n_ctrl: int) -> np.ndarray:
    """``(n_out, n_ctrl)`` Gaussian radial-basis interpolation matrix, rows normalised to sum 1."""
    if n_ctrl == 1:
        return np.ones((n_out, 1))
    x = np.linspace(0.0, 1.0, n_out)[:, None]
    c = np.linspace(-0.15, 1.15, n_ctrl)[None, :]
    width = 1.3 / (n_ctrl - 1)
    basis = np.exp(-0.5 * ((x - c) / width) ** 2)
    return basis / basis.sum(axis=1, keepdims=True)


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], n_ctrl: tuple[int, ...]) -> np.ndarray:
    """Smooth random field of ``shape`` from ``n_ctrl`` Gaussian control values per axis (separable RBF).

    Args:
        rng: random generator.
        shape: output shape, 1 to 3 axes, e.g. ``(S, H, W)``.
        n_ctrl: control points per axis (same length as ``shape``); fewer points = smoother.

    Returns:
        float64 array of ``shape``, zero mean and unit standard deviation over the array (unless constant).
    """
    if len(shape) != len(n_ctrl) or not 1 <= len(shape) <= 3:
        raise ValueError(f"shape {shape} and n_ctrl {n_ctrl} must have the same length (1..3)")
    ctrl = rng.standard_normal(n_ctrl)
    letters = "abc"[: len(shape)]
    outs = "xyz"[: len(shape)]
    spec = ",".join(f"{o}{a}" for o, a in zip(outs, letters, strict=True))
    field = np.einsum(
        f"{letters},{spec}->{outs}", ctrl, *[_rbf_basis(n, k) for n, k in zip(shape, n_ctrl, strict=True)]
    )
    std = field.std()
    return (field - field.mean()) / std if std > 0 else field - field.mean()


def _soft_step(x: np.ndarray, edge: float, width: float = 0.35) -> np.ndarray:
    """Logistic step from 0 (``x << edge``) to 1 (``x >> edge``)."""
    return 0.5 * (1.0 + np.tanh((x - edge) / (2.0 * width)))


# --------------------------------------------------------------------------------------------- brain


@dataclass(frozen=True)
class _MniAtlas:
    """Cropped MNI152 2009c (sym, 1 mm) maps, cubic-spline prefiltered for ``map_coordinates(prefilter=False)``."""

    t1: np.ndarray  # T1 template / 255
    gm: np.ndarray  # GM probability
    wm: np.ndarray  # WM probability
    brain: np.ndarray  # brain mask (t1 > 0) as float, not prefiltered (linear sampling)
    dist: np.ndarray  # mm outside the brain mask (0 inside), not prefiltered
    origin: tuple[int, int, int]  # voxel index of element [0, 0, 0]
    center_xy: tuple[float, float]  # centre of the brain bounding box (x, y), full-volume voxel units
    extent_xy: tuple[float, float]  # bounding box size (x, y) in mm


def mni_paths() -> dict[str, Path]:
    """Paths of the MNI152 2009c T1 / GM / WM volumes shipped inside the nilearn wheel (no download)."""
    import nilearn

    folder = Path(nilearn.__file__).parent / "datasets" / "data"
    return {
        key: folder / f"mni_icbm152_{key}_tal_nlin_sym_09a_converted.nii.gz" for key in ("t1", "gm", "wm")
    }


def _nifti(path: Path) -> np.ndarray:
    """Voxel array of a NIfTI file (stored dtype, no scaling to float64)."""
    import nibabel as nib

    image: Any = nib.load(str(path))
    return np.asarray(image.dataobj)


@functools.lru_cache(maxsize=1)
def _mni_atlas() -> _MniAtlas:
    raw = {key: np.asarray(_nifti(path), dtype=np.float32) / 255.0 for key, path in mni_paths().items()}
    inside = raw["t1"] > 0
    idx = np.nonzero(inside)
    margin = 28
    lo = [max(int(a.min()) - margin, 0) for a in idx]
    hi = [min(int(a.max()) + margin + 1, n) for a, n in zip(idx, inside.shape, strict=True)]
    lo[2] = max(int(MNI_BRAIN_Z_RANGE[0]) - margin, 0)
    hi[2] = min(int(MNI_BRAIN_Z_RANGE[1]) + margin, inside.shape[2])
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    mask = inside[box]
    dist = ndimage.distance_transform_edt(~mask).astype(np.float32)

    def prefilter(a: np.ndarray) -> np.ndarray:
        return ndimage.spline_filter(a[box], order=3, output=np.float32, mode="nearest")

    return _MniAtlas(
        t1=prefilter(raw["t1"]),
        gm=prefilter(raw["gm"]),
        wm=prefilter(raw["wm"]),
        brain=mask.astype(np.float32),
        dist=dist,
        origin=(lo[0], lo[1], lo[2]),
        center_xy=(0.5 * (idx[0].min() + idx[0].max()), 0.5 * (idx[1].min() + idx[1].max())),
        extent_xy=(float(idx[0].max() - idx[0].min() + 1), float(idx[1].max() - idx[1].min() + 1)),
    )


def brain_volume(
    rng: np.random.Generator,
    height: int,
    width: int,
    n_slices: int,
    spacing_mm: tuple[float, float] = (4.0, 6.0),
    fill: tuple[float, float] = (0.8, 0.92),
) -> ObjectVolume:
    """Axial brain slab from the MNI152 template with a random contrast and a synthetic scalp.

    Consecutive slices are consecutive (``spacing_mm`` apart) planes of the same template, oriented with
    anterior at the top (row 0) and in radiological left-right convention. The head (brain plus 14 mm of
    CSF/skull/marrow/muscle/fat/skin) is scaled so that its anterior-posterior length is ``fill`` of the
    ``H / 2`` readout field of view and centred on the grid.

    Args:
        rng: random generator (all randomness of the volume).
        height: ``H``, readout rows of the oversampled grid; the head lies in the central ``H / 2`` rows.
        width: ``W``, phase-encoding columns.
        n_slices: ``S``.
        spacing_mm: range of the slice distance.
        fill: range of the head length as a fraction of ``H / 2``.

    Returns:
        :class:`ObjectVolume` with magnitude ``(S, H, W)`` float32, max about 1.
    """
    atlas = _mni_atlas()
    scalp = _SCALP_LAYERS_MM[-1][1]
    head_ap_mm = atlas.extent_xy[1] + 2 * scalp
    head_lr_mm = atlas.extent_xy[0] + 2 * scalp
    rows = height // 2
    pixel_mm = head_ap_mm / (rng.uniform(*fill) * rows)
    aspect = 1.0 + 0.04 * rng.standard_normal()  # head shape variation: LR stretch
    angle = math.radians(rng.uniform(-7.0, 7.0))
    shift = rng.uniform(-0.02, 0.02, size=2) * np.array([rows, width])
    tilt = rng.uniform(-0.08, 0.08, size=2)  # slab obliquity (z per in-plane mm)

    z_lo, z_hi = MNI_BRAIN_Z_RANGE
    spacing = rng.uniform(*spacing_mm)
    spacing = min(spacing, (z_hi - z_lo) / max(n_slices - 1, 1))
    start = rng.uniform(z_lo, z_hi - spacing * (n_slices - 1))
    z_slices = start + spacing * np.arange(n_slices)

    # in-plane coordinates of the central H/2 rows (pixels relative to the grid centre)
    r0 = (height - rows) // 2
    u = np.arange(r0, r0 + rows, dtype=np.float64) - height / 2 - shift[0]
    v = np.arange(width, dtype=np.float64) - width / 2 - shift[1]
    uu, vv = np.meshgrid(u, v, indexing="ij")
    cos, sin = math.cos(angle), math.sin(angle)
    ur, vr = cos * uu - sin * vv, sin * uu + cos * vv
    elastic_mm = rng.uniform(1.0, 3.0)
    ey = elastic_mm * smooth_field(rng, (rows, width), (5, 5))
    ex = elastic_mm * smooth_field(rng, (rows, width), (5, 5))
    y_mm = -ur * pixel_mm + ey  # anterior at the top
    x_mm = -vr * pixel_mm * aspect + ex  # radiological: patient's right on the image left
    cx, cy = atlas.center_xy
    ox, oy, oz = atlas.origin
    xi = (cx + rng.uniform(-2, 2) + x_mm - ox).astype(np.float32)
    yi = (cy + rng.uniform(-2, 2) + y_mm - oy).astype(np.float32)
    dz = (tilt[0] * y_mm + tilt[1] * x_mm).astype(np.float32)

    kind = ("t1", "t2", "flair")[int(rng.integers(3))]
    weights = {k: w * rng.uniform(0.9, 1.1) for k, w in _BRAIN_CONTRASTS[kind].items()}
    t1_detail = rng.uniform(0.3, 0.6) if kind == "t1" else 0.0
    thickness = rng.uniform(0.8, 1.25) * np.clip(
        1.0 + 0.15 * smooth_field(rng, (rows, width), (4, 4)), 0.6, 1.4
    )

    magnitude = np.zeros((n_slices, height, width), dtype=np.float32)
    support = np.zeros((n_slices, height, width), dtype=bool)
    for s, z in enumerate(z_slices):
        coords = np.stack([xi, yi, (z - oz + dz).astype(np.float32)])

        def cubic(a: np.ndarray, c: np.ndarray = coords) -> np.ndarray:
            return np.clip(ndimage.map_coordinates(a, c, order=3, prefilter=False, mode="nearest"), 0.0, 1.0)

        gm, wm, t1 = cubic(atlas.gm), cubic(atlas.wm), cubic(atlas.t1)
        brain = ndimage.map_coordinates(atlas.brain, coords, order=1, mode="constant", cval=0.0)
        dist = ndimage.map_coordinates(atlas.dist, coords, order=1, mode="constant", cval=1e3) / thickness
        gm, wm = gm * brain, wm * brain
        csf = np.clip(brain - gm - wm, 0.0, 1.0)
        image = weights["gm"] * gm + weights["wm"] * wm + weights["csf"] * csf
        if t1_detail:
            image = (1 - t1_detail) * image + t1_detail * weights["wm"] * t1 / 0.85 * brain
        outside = 1.0 - brain
        inner = 0.0
        for name, outer in _SCALP_LAYERS_MM:
            layer = _soft_step(dist, inner) - _soft_step(dist, outer)
            image += weights[name] * outside * np.clip(layer, 0.0, 1.0)
            inner = outer
        texture = 1.0 + 0.04 * ndimage.gaussian_filter(rng.standard_normal(image.shape), 0.8)
        magnitude[s, r0 : r0 + rows] = np.clip(image * texture, 0.0, None)
        support[s, r0 : r0 + rows] = (brain > 0.5) | (dist < scalp)
    semi = (0.5 * head_ap_mm / pixel_mm, 0.5 * head_lr_mm / pixel_mm)
    return ObjectVolume(
        magnitude=magnitude,
        support=support,
        center=(height / 2 + shift[0], width / 2 + shift[1]),
        semi_axes=semi,
        slice_step=spacing / pixel_mm,
    )


# --------------------------------------------------------------------------------------------- knee stand-in


@dataclass(frozen=True)
class _Source:
    image: np.ndarray  # float32 (h, w), cubic-spline prefiltered, intensity ~ 0..1
    box: tuple[int, int, int, int]  # rows r0, r1, cols c0, c1 of the anatomy (excluding blank bands)


def dicom_paths() -> dict[str, Path]:
    """Paths of the two clinical MR images of the pydicom-data package used by the knee-class stand-in."""
    import data_store

    folder = Path(data_store.__file__).parent / "data"
    return {"shoulder": folder / "MR2_UNCR.dcm", "abdomen": folder / "MR-SIEMENS-DICOM-WithOverlays.dcm"}


@functools.lru_cache(maxsize=2)
def _msk_source(name: str) -> _Source:
    import pydicom

    raw = pydicom.dcmread(str(dicom_paths()[name])).pixel_array.astype(np.float32)
    scale = float(np.percentile(raw, 99.7))
    image = np.clip(raw / scale, 0.0, 1.2)
    floor = 0.03  # the source's own background noise, removed so that the simulated noise is the noise
    image = np.clip(image - floor, 0.0, None) / (1.0 - floor)
    rows = np.nonzero(raw.max(axis=1) > 0.05 * scale)[0]
    cols = np.nonzero(raw.max(axis=0) > 0.05 * scale)[0]
    box = (int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1)
    return _Source(ndimage.spline_filter(image, order=3, output=np.float32), box)


def knee_volume(
    rng: np.random.Generator,
    height: int,
    width: int,
    n_slices: int,
    row_extent: tuple[float, float] = (1.0, 1.15),
) -> ObjectVolume:
    """Knee-class **stand-in**: real shoulder (or abdomen) MR anatomy filling the field of view.

    A random rectangle of the clinical shoulder image (probability 0.75) or abdomen image, rotated, flipped,
    scaled and elastically deformed, is mapped onto the grid; its position, scale, rotation and deformation drift
    smoothly over the slices of the volume, like neighbouring slices of one scan. Intensities get a random gamma
    (0.5..0.8). The body outline is a soft super-ellipse (a rounded
    rectangle) spanning 80..94 % of the ``W`` columns and ``row_extent`` times the central ``H / 2`` rows (anatomy
    reaching a little beyond the readout field of view, as in knee scans, but never the oversampling margin's
    edge), with air around it. This is not knee anatomy; see the module docstring.

    Args:
        rng: random generator.
        height: ``H`` (readout, 2x oversampled).
        width: ``W`` (phase encoding).
        n_slices: ``S``.
        row_extent: range of the object's height relative to ``H / 2``.

    Returns:
        :class:`ObjectVolume` with magnitude ``(S, H, W)`` float32, max about 1.
    """
    name = "shoulder" if rng.uniform() < 0.75 else "abdomen"
    src = _msk_source(name)
    r0, r1, c0, c1 = src.box
    rows = min(round(height / 2 * rng.uniform(*row_extent)), height - 8)
    top = (height - rows) // 2

    # patch of the source: output px -> source px scale, rotation, flips; the rotated patch stays inside the
    # source's anatomy box (no blank corners) with a margin for the drift and the deformation
    angle = math.radians(rng.uniform(-20.0, 20.0)) + (math.pi / 2 if rng.uniform() < 0.25 else 0.0)
    cos0, sin0 = abs(math.cos(angle)), abs(math.sin(angle))
    box_half = np.array([0.5 * (r1 - r0), 0.5 * (c1 - c0)]) * 0.88
    unit_half = np.array([cos0 * rows + sin0 * width, sin0 * rows + cos0 * width]) * 0.5  # per unit zoom
    zoom = min(
        rng.uniform(0.55, 0.9) * float(np.min(box_half / unit_half)) / 0.9,
        float(np.min(box_half / unit_half)),
    )
    slack = np.maximum(box_half - zoom * unit_half, 0.0)
    centre = np.array([0.5 * (r0 + r1), 0.5 * (c0 + c1)]) + rng.uniform(-1.0, 1.0, size=2) * slack
    flip = np.where(rng.uniform(size=2) < 0.5, -1.0, 1.0)
    gamma = rng.uniform(0.5, 0.8)
    drift = rng.uniform(-0.05, 0.05, size=2) * zoom * np.array([rows, width])
    d_zoom = rng.uniform(-0.08, 0.08)
    d_angle = math.radians(rng.uniform(-4.0, 4.0))
    elastic = rng.uniform(0.01, 0.025) * rows * zoom
    fields = [elastic * smooth_field(rng, (rows, width), (6, 6)) for _ in range(4)]  # (dr, dc) at both ends

    u = np.arange(top, top + rows, dtype=np.float64) - height / 2
    v = np.arange(width, dtype=np.float64) - width / 2
    uu, vv = np.meshgrid(u * flip[0], v * flip[1], indexing="ij")
    # body outline: a soft super-ellipse (a limb-like rounded rectangle) with air in the corners and at the sides
    semi_r, semi_c = rows / 2, width / 2 * rng.uniform(0.8, 0.94)
    power = rng.uniform(3.0, 6.0)
    rho = (np.abs(u[:, None] / semi_r) ** power + np.abs(v[None, :] / semi_c) ** power) ** (1.0 / power)
    outline = 0.5 * (1.0 - np.tanh((rho - 0.97) / 0.025))

    magnitude = np.zeros((n_slices, height, width), dtype=np.float32)
    support = np.zeros((n_slices, height, width), dtype=bool)
    for s in range(n_slices):
        t = (s - (n_slices - 1) / 2) / max(n_slices - 1, 1)  # -0.5 .. 0.5
        a = t + 0.5
        ang, zm = angle + t * d_angle, zoom * (1.0 + t * d_zoom)
        cos, sin = math.cos(ang), math.sin(ang)
        rs = centre[0] + t * drift[0] + zm * (cos * uu - sin * vv) + (1 - a) * fields[0] + a * fields[2]
        cs = centre[1] + t * drift[1] + zm * (sin * uu + cos * vv) + (1 - a) * fields[1] + a * fields[3]
        coords = np.stack([rs, cs]).astype(np.float32)
        image = ndimage.map_coordinates(
            src.image, coords, order=3, prefilter=False, mode="constant", cval=0.0
        )
        image = np.clip(image, 0.0, None) ** gamma * outline
        texture = 1.0 + 0.03 * ndimage.gaussian_filter(rng.standard_normal(image.shape), 0.8)
        magnitude[s, top : top + rows] = image * texture
        support[s, top : top + rows] = outline > 0.5
    return ObjectVolume(
        magnitude=magnitude,
        support=support,
        center=(height / 2, width / 2),
        semi_axes=(1.2 * semi_r, 1.2 * semi_c),  # an ellipse around the super-ellipse
        slice_step=rng.uniform(3.0, 4.5),
    )


# --------------------------------------------------------------------------------------------- coils


@dataclass(frozen=True)
class CoilArray:
    """Receive array of loop coils around the object, each a magnetic dipole (Biot-Savart far field of a loop).

    Coil ``c`` is a dipole at ``(row, col, z)`` with its axis ``m_c`` in the image plane pointing at the object,
    placed one loop radius behind the loop's surface position (the far-field approximation of a loop of that
    radius is then good over the whole object). The field at ``r`` (pixel minus dipole position, out-of-plane
    part ``(s - z_c) * slice_step``) is ``B = 3 (m.r) r / q^(5/2) - m / q^(3/2)`` with ``q = |r|^2 + eps_c^2``
    (``eps_c`` a small softening that only matters in the background next to the coil). The receive sensitivity is the circularly polarised
    component ``B_x - i B_y`` (``x`` = column, ``y`` = row, B0 perpendicular to the slice), times a random phase
    per coil; maps are smooth, complex and change smoothly across slices.

    Attributes:
        rows, cols, z: ``(C,)`` coil positions (pixels; ``z`` in slice-index units).
        axis: ``(C, 2)`` unit in-plane axis ``(row, col)``.
        radius: ``(C,)`` softening distances ``eps`` in pixels.
        slice_step: pixels per slice index.
        phase: ``(C,)`` coil phases (radians).
        flatten: exponent ``alpha``; the maps are multiplied by ``RSS^-alpha`` (partial intensity normalisation,
            like a prescan normalisation) so the brightening near the coils stays moderate.
        scale: global factor making the mean RSS of the maps over the object's support 1 (:func:`coil_array`).
    """

    rows: np.ndarray
    cols: np.ndarray
    z: np.ndarray
    axis: np.ndarray
    radius: np.ndarray
    slice_step: float
    phase: np.ndarray
    flatten: float = 0.0
    scale: float = 1.0

    @property
    def n_coils(self) -> int:
        return int(self.rows.shape[0])

    def maps(self, height: int, width: int, slice_index: int) -> np.ndarray:
        """Sensitivities of one slice: complex64 ``(C, H, W)``."""
        out = np.empty((self.n_coils, height, width), dtype=np.complex64)
        for c in range(self.n_coils):
            dy = np.arange(height, dtype=np.float32)[:, None] - np.float32(self.rows[c])
            dx = np.arange(width, dtype=np.float32)[None, :] - np.float32(self.cols[c])
            dz2 = np.float32(((slice_index - self.z[c]) * self.slice_step) ** 2 + self.radius[c] ** 2)
            my, mx = (np.float32(a) for a in self.axis[c])
            q = dx * dx + dy * dy + dz2
            q32 = q * np.sqrt(q)
            dot3 = 3.0 * (mx * dx + my * dy) / (q32 * q)
            bx = dot3 * dx - mx / q32
            by = dot3 * dy - my / q32
            out[c] = (bx - 1j * by) * np.exp(1j * self.phase[c])
        rss = np.sqrt((out.real**2 + out.imag**2).sum(axis=0))
        out *= (rss ** (-self.flatten) if self.flatten else 1.0) * self.scale
        return out


def coil_array(rng: np.random.Generator, n_coils: int, obj: ObjectVolume) -> CoilArray:
    """Place ``n_coils`` loops on one or two rings around ``obj`` (random rotation, jitter, radius, phase).

    Arrays of more than 8 coils use two rings, above and below the slab centre. The maps are scaled so that
    the root-sum-of-squares sensitivity averages 1 over the object's support (mid slice).

    Returns:
        :class:`CoilArray`.
    """
    n_slices, height, width = obj.magnitude.shape
    n_rings = 2 if n_coils > 8 else 1
    per_ring = [n_coils // n_rings + (1 if i < n_coils % n_rings else 0) for i in range(n_rings)]
    semi_r, semi_c = obj.semi_axes
    radius = rng.uniform(1.08, 1.2)
    ring_z = [0.0] if n_rings == 1 else [-1.0, 1.0]
    mean_semi = 0.5 * (semi_r + semi_c)
    # loop radius: neighbouring loops touch / overlap a little, at most 0.6 of the object's mean semi-axis
    loop = min(1.2 * np.pi / max(per_ring), 0.6) * mean_semi * rng.uniform(0.85, 1.1)
    rows, cols, zs, axes = [], [], [], []
    for ring, count in enumerate(per_ring):
        theta = (
            rng.uniform(0, 2 * np.pi) + 2 * np.pi * (np.arange(count) + rng.uniform(-0.1, 0.1, count)) / count
        )
        for th in theta:
            rad = radius * rng.uniform(0.97, 1.05)
            dr, dc = rad * semi_r * math.sin(th), rad * semi_c * math.cos(th)
            norm = math.hypot(dr, dc)
            rows.append(obj.center[0] + dr * (1 + loop / norm))
            cols.append(obj.center[1] + dc * (1 + loop / norm))
            axes.append((-dr / norm, -dc / norm))
            zs.append((n_slices - 1) / 2 + ring_z[ring] * 0.35 * max(n_slices, 4) + rng.uniform(-0.5, 0.5))
    coils = CoilArray(
        rows=np.array(rows),
        cols=np.array(cols),
        z=np.array(zs),
        axis=np.array(axes),
        radius=np.full(n_coils, 0.15 * loop),
        slice_step=obj.slice_step,
        phase=rng.uniform(-np.pi, np.pi, n_coils),
        flatten=float(rng.uniform(0.25, 0.5)),
    )
    mid = n_slices // 2
    rss = np.sqrt((np.abs(coils.maps(height, width, mid)) ** 2).sum(axis=0))
    support = obj.support[mid]
    mean = float(rss[support].mean()) if support.any() else float(rss.mean())
    return dataclasses.replace(coils, scale=1.0 / mean)
