"""Undersampling masks: the SNU organiser rule, the fastMRI family, robustness variants, detection.

All masks run along the phase-encoding axis ``W``. A *line mask* is a ``(W,)`` bool numpy array; a *fastMRI
mask* is a float32 torch tensor shaped like the k-space it applies to, with 1 everywhere except ``W``
(``shape[-2]``): k-space ``(C, H, W, 2)`` gets a mask ``(1, 1, W, 1)``.

Every mask function returned by :func:`create_mask_for_mask_type` has fastMRI's call signature
``mask_func(shape, offset=None, seed=None) -> (mask, num_low_frequencies)``. The fastMRI kinds reproduce
``fastmri.data.subsample`` (v0.3.0) bit for bit for the same seed, shape and parameters: a
``np.random.RandomState`` per mask function, a per-call ``seed`` (int or tuple of ints) that temporarily
reseeds it and restores its state afterwards, and a ``seed=None`` call that advances it.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from kspacelab import challenge

SNU_CENTER_FRACTION = 0.08
#: Accelerations :func:`estimate_acceleration` chooses from by default: the challenge's.
SUPPORTED_ACCELERATIONS = challenge.ACCELERATIONS

#: Single-coil extreme undersampling (fastMRI random masks, up to 32x): acceleration -> centre fraction.
SINGLE_COIL_EXTREME: dict[int, float] = {4: 0.08, 8: 0.04, 16: 0.02, 32: 0.01}

Seed = int | tuple[int, ...] | None

FASTMRI_KINDS = ("random", "equispaced", "equispaced_fraction", "magic", "magic_fraction")
VARIANT_KINDS = ("random_offset", "random_spaced", "random_lines")
MASK_KINDS = (*FASTMRI_KINDS, "snu", *VARIANT_KINDS)


# ----------------------------------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------------------------------


def _check_width_acc(width: int, acc: int) -> None:
    if width < 1 or acc < 1:
        raise ValueError(f"width and acc must be positive, got width={width}, acc={acc}")


def _center_lines(width: int, num_low_frequencies: int) -> np.ndarray:
    """``(W,)`` bool: ``n`` contiguous lines from ``(W - n + 1) // 2`` (fastMRI's and the SNU centre)."""
    mask = np.zeros(width, dtype=bool)
    start = (width - num_low_frequencies + 1) // 2
    mask[start : start + num_low_frequencies] = True
    return mask


def _snu_num_center(width: int) -> int:
    return round(SNU_CENTER_FRACTION * width)


def _organiser_offset(width: int, acc: int) -> int:
    return (width // 2) % acc


def _to_fastmri_mask(lines: np.ndarray, shape: Sequence[int]) -> torch.Tensor:
    """``(W,)`` lines -> fastMRI's mask for k-space ``shape``: float32, 1s except ``shape[-2]``."""
    mask_shape = [1] * len(shape)
    mask_shape[-2] = lines.shape[0]
    return torch.from_numpy(lines.reshape(mask_shape).astype(np.float32))


def _width_from_shape(shape: Sequence[int]) -> int:
    if len(shape) < 3:
        raise ValueError(f"k-space shape must have 3 or more dimensions (..., W, 2), got {tuple(shape)}")
    width = int(shape[-2])
    if width < 1:
        raise ValueError(f"k-space shape has no phase-encoding lines: {tuple(shape)}")
    return width


def _check_offset(offset: int | None) -> None:
    if offset is not None and offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")


# ----------------------------------------------------------------------------------------------------
# SNU organiser rule
# ----------------------------------------------------------------------------------------------------


def snu_mask(width: int, acc: int) -> np.ndarray:
    """The SNU FastMRI Challenge organiser mask.

    ``n = round(0.08 * W)`` centre lines starting at ``(W - n + 1) // 2``, plus every ``acc``-th line starting
    at ``(W // 2) % acc`` (the last column is included when it lies on that grid).

    Args:
        width: number of phase-encoding lines ``W``.
        acc: acceleration (4 or 8 in the challenge; any integer >= 1 is accepted).

    Returns:
        ``(W,)`` bool array.
    """
    _check_width_acc(width, acc)
    mask = _center_lines(width, _snu_num_center(width))
    mask[_organiser_offset(width, acc) :: acc] = True
    return mask


# ----------------------------------------------------------------------------------------------------
# Robustness variants (same 8% centre as the organiser rule)
# ----------------------------------------------------------------------------------------------------


def _check_generator(rng: object) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng), got {type(rng)}")


def random_offset_mask(
    width: int, acc: int, rng: np.random.Generator, *, exclude_organiser_offset: bool = False
) -> np.ndarray:
    """Equispaced lines every ``acc`` with a random offset, plus the SNU 8% centre.

    The offset is uniform in ``0..acc-1`` (one ``rng.integers`` draw). With ``exclude_organiser_offset`` it is
    uniform over the ``acc - 1`` offsets other than the organiser's ``(W // 2) % acc``, so the result never
    equals :func:`snu_mask` (requires ``acc >= 2``).

    Args:
        width: number of phase-encoding lines ``W``.
        acc: line spacing (acceleration), >= 1.
        rng: numpy Generator; the mask is a deterministic function of its state.
        exclude_organiser_offset: never draw the organiser rule's offset.

    Returns:
        ``(W,)`` bool array.
    """
    _check_width_acc(width, acc)
    _check_generator(rng)
    if exclude_organiser_offset:
        if acc < 2:
            raise ValueError("exclude_organiser_offset needs acc >= 2 (acc=1 has a single offset)")
        offset = int(rng.integers(acc - 1))
        if offset >= _organiser_offset(width, acc):
            offset += 1
    else:
        offset = int(rng.integers(acc))
    mask = _center_lines(width, _snu_num_center(width))
    mask[offset::acc] = True
    return mask


def random_spaced_mask(width: int, acc: int, rng: np.random.Generator) -> np.ndarray:
    """One uniformly random line in every consecutive bin ``[k*acc, (k+1)*acc)``, plus the SNU 8% centre.

    The last bin may be shorter than ``acc`` (when ``acc`` does not divide ``W``); it also gets one line.

    Args:
        width: number of phase-encoding lines ``W``.
        acc: bin width (acceleration), >= 1.
        rng: numpy Generator; the mask is a deterministic function of its state.

    Returns:
        ``(W,)`` bool array.
    """
    _check_width_acc(width, acc)
    _check_generator(rng)
    bin_starts = np.arange(0, width, acc)
    bin_sizes = np.minimum(acc, width - bin_starts)
    mask = _center_lines(width, _snu_num_center(width))
    mask[bin_starts + rng.integers(0, bin_sizes)] = True
    return mask


def random_lines_mask(width: int, acc: int, rng: np.random.Generator) -> np.ndarray:
    """Each line independently with probability ``1 / acc``, plus the SNU 8% centre.

    Args:
        width: number of phase-encoding lines ``W``.
        acc: inverse sampling probability (acceleration), >= 1.
        rng: numpy Generator; the mask is a deterministic function of its state.

    Returns:
        ``(W,)`` bool array.
    """
    _check_width_acc(width, acc)
    _check_generator(rng)
    mask = _center_lines(width, _snu_num_center(width))
    mask |= rng.random(width) < 1.0 / acc
    return mask


# ----------------------------------------------------------------------------------------------------
# Mask functions with fastMRI's call signature
# ----------------------------------------------------------------------------------------------------


class MaskFunc(ABC):
    """A callable ``(shape, offset=None, seed=None) -> (mask, num_low_frequencies)`` (fastMRI's signature).

    Subclasses implement :meth:`sample_lines`, which returns the ``(W,)`` line mask; ``__call__`` reshapes it
    to fastMRI's convention (float32 tensor, 1s everywhere except ``shape[-2]``).
    """

    def __call__(
        self, shape: Sequence[int], offset: int | None = None, seed: Seed = None
    ) -> tuple[torch.Tensor, int]:
        """Sample a mask for k-space of ``shape`` (at least 3-D, ``W = shape[-2]``).

        Args:
            shape: k-space shape, e.g. ``(C, H, W, 2)``.
            offset: first line of the equispaced grid (equispaced/magic kinds); ``None`` draws one.
            seed: ``None`` uses (and advances) the function's own RNG; an int or tuple of ints gives a
                reproducible mask and leaves the function's own RNG untouched.

        Returns:
            ``(mask, num_low_frequencies)``: float32 tensor of shape ``(1, ..., W, 1)`` with ``len(shape)``
            dims, and the number of fully sampled centre lines.
        """
        lines, num_low_frequencies = self.sample_lines(_width_from_shape(shape), offset, seed)
        return _to_fastmri_mask(lines, shape), num_low_frequencies

    @abstractmethod
    def sample_lines(
        self, width: int, offset: int | None = None, seed: Seed = None
    ) -> tuple[np.ndarray, int]:
        """Sample a ``(W,)`` bool line mask and its number of centre lines (semantics of ``__call__``)."""


@contextlib.contextmanager
def _reseeded(rng: np.random.RandomState, seed: Seed) -> Iterator[np.random.RandomState]:
    """Yield ``rng``; with a seed, reseed it for the block and restore its previous state afterwards."""
    if seed is None:
        yield rng
        return
    saved = rng.get_state()
    rng.seed(seed)
    try:
        yield rng
    finally:
        rng.set_state(saved)


class FastMRIMaskFunc(MaskFunc):
    """Base of the fastMRI family; reproduces ``fastmri.data.subsample.MaskFunc`` (v0.3.0) exactly.

    RNG call order per mask: choose (centre fraction, acceleration) -- one ``randint(len)`` when paired, or
    two ``choice`` draws (fraction, then acceleration) with ``allow_any_combination`` -- then the kind's own
    draws for the outer lines (a ``uniform(size=W)`` for random; one ``randint`` for the offset of the
    equispaced and magic kinds, skipped when ``offset`` is given).
    """

    def __init__(
        self,
        center_fractions: Sequence[float],
        accelerations: Sequence[int],
        allow_any_combination: bool = False,
        seed: Seed = None,
    ) -> None:
        """Args:
        center_fractions: fractions of ``W`` sampled in the centre, in ``[0, 1]``.
        accelerations: accelerations, >= 1; paired element-wise with ``center_fractions`` unless
            ``allow_any_combination``.
        allow_any_combination: draw the fraction and the acceleration independently.
        seed: seed of the function's own ``np.random.RandomState`` (``None``: fresh OS entropy).
        """
        if len(center_fractions) == 0 or len(accelerations) == 0:
            raise ValueError("center_fractions and accelerations must not be empty")
        if len(center_fractions) != len(accelerations) and not allow_any_combination:
            raise ValueError(
                f"got {len(center_fractions)} center fractions and {len(accelerations)} accelerations; they "
                "are paired, so their numbers must match (or pass allow_any_combination=True)"
            )
        if any(not 0.0 <= f <= 1.0 for f in center_fractions):
            raise ValueError(f"center fractions must lie in [0, 1], got {list(center_fractions)}")
        if any(a < 1 for a in accelerations):
            raise ValueError(f"accelerations must be >= 1, got {list(accelerations)}")
        self.center_fractions = list(center_fractions)
        self.accelerations = list(accelerations)
        self.allow_any_combination = allow_any_combination
        self.rng = np.random.RandomState(seed)

    def sample_lines(
        self, width: int, offset: int | None = None, seed: Seed = None
    ) -> tuple[np.ndarray, int]:
        """See :meth:`MaskFunc.__call__`; returns a ``(W,)`` bool array and the number of centre lines."""
        _check_offset(offset)
        with _reseeded(self.rng, seed):
            center_fraction, acceleration = self._choose_acceleration()
            num_low_frequencies, outer_acceleration = self._plan(width, center_fraction, acceleration)
            outer = self._outer_lines(width, outer_acceleration, offset, num_low_frequencies)
        return _center_lines(width, num_low_frequencies) | outer, num_low_frequencies

    def _choose_acceleration(self) -> tuple[float, int]:
        if self.allow_any_combination:
            fraction = self.center_fractions[self.rng.choice(len(self.center_fractions))]
            return fraction, self.accelerations[self.rng.choice(len(self.accelerations))]
        pair = self.rng.randint(len(self.center_fractions))
        return self.center_fractions[pair], self.accelerations[pair]

    def _plan(self, width: int, center_fraction: float, acceleration: int) -> tuple[int, Any]:
        """Number of centre lines and the acceleration handed to :meth:`_outer_lines`."""
        return round(width * center_fraction), acceleration

    @abstractmethod
    def _outer_lines(
        self, width: int, acceleration: Any, offset: int | None, num_low_frequencies: int
    ) -> np.ndarray:
        """``(W,)`` bool mask of the lines sampled besides the centre (may overlap it)."""


class RandomMaskFunc(FastMRIMaskFunc):
    """Centre lines plus every line with probability ``(W/acc - n) / (W - n)`` (expected ``W/acc`` lines).

    ``offset`` is ignored.
    """

    def _outer_lines(
        self, width: int, acceleration: Any, offset: int | None, num_low_frequencies: int
    ) -> np.ndarray:
        draws = self.rng.uniform(size=width)
        if num_low_frequencies >= width:
            return np.zeros(width, dtype=bool)
        probability = (width / acceleration - num_low_frequencies) / (width - num_low_frequencies)
        return draws < probability


def _equispaced(width: int, start: int, step: int) -> np.ndarray:
    mask = np.zeros(width, dtype=bool)
    mask[start::step] = True
    return mask


class EquiSpacedMaskFunc(FastMRIMaskFunc):
    """Centre lines plus every ``acc``-th line from ``offset`` (drawn uniformly in ``0..acc-1`` if ``None``).

    The real acceleration is lower than ``acc`` because of the centre.
    """

    def _outer_lines(
        self, width: int, acceleration: Any, offset: int | None, num_low_frequencies: int
    ) -> np.ndarray:
        if offset is None:
            offset = int(self.rng.randint(0, high=round(acceleration)))
        return _equispaced(width, offset, int(acceleration))


EquispacedMaskFunc = EquiSpacedMaskFunc


class EquispacedMaskFractionFunc(FastMRIMaskFunc):
    """Centre lines plus lines at a fractional spacing chosen so the total is about ``W / acc``.

    Spacing ``s = acc (W - n) / (W - n acc)``; lines at ``round(offset + k s)`` (half to even) for
    ``offset + k s < W - 1``, so the lines are not exactly equispaced (fastMRI issue #54). When the centre
    alone reaches the target (``n * acc >= W``) only the centre is sampled (fastMRI raises there).
    """

    def _outer_lines(
        self, width: int, acceleration: Any, offset: int | None, num_low_frequencies: int
    ) -> np.ndarray:
        mask = np.zeros(width, dtype=bool)
        if num_low_frequencies * acceleration >= width:
            return mask
        spacing = acceleration * (width - num_low_frequencies) / (width - num_low_frequencies * acceleration)
        if offset is None:
            offset = int(self.rng.randint(0, high=round(spacing)))
        positions = np.round(np.arange(offset, width - 1, spacing)).astype(np.intp)
        mask[positions] = True
        return mask


def _magic_lines(width: int, acceleration: int, offset: int) -> np.ndarray:
    """Defazio's offset sampling: two interleaved equispaced grids on the two halves of k-space.

    Built in unshifted (FFT) order -- the first ``(W + 1) // 2`` entries are the non-negative frequencies, the
    rest the negative ones counted from the end -- then rolled by ``W // 2`` to centred order.
    """
    if offset % 2 == 0:
        first_pos, first_neg = offset + 1, offset + 2
    else:
        first_pos, first_neg = offset + 2, offset - 1
    n_pos = (width + 1) // 2
    unshifted = np.zeros(width, dtype=bool)
    unshifted[np.arange(first_pos, n_pos, acceleration)] = True
    unshifted[width - 1 - np.arange(first_neg, width - n_pos, acceleration)] = True
    return np.roll(unshifted, width // 2)


class MagicMaskFunc(FastMRIMaskFunc):
    """Offset sampling exploiting conjugate symmetry (Defazio 2019): equispaced grids, shifted per half.

    The offset is drawn uniformly in ``0..acc-1`` when ``None``.
    """

    def _outer_lines(
        self, width: int, acceleration: Any, offset: int | None, num_low_frequencies: int
    ) -> np.ndarray:
        if acceleration < 1:  # magic_fraction with a centre that already reaches the target
            return np.zeros(width, dtype=bool)
        if offset is None:
            offset = int(self.rng.randint(0, high=acceleration))
        return _magic_lines(width, int(acceleration), offset)


class MagicMaskFractionFunc(MagicMaskFunc):
    """Magic mask whose spacing is adjusted so the total number of lines is about ``round(W / acc)``.

    ``n`` is clipped to ``[1, round(W / acc)]``; the outer spacing is ``round(W / (round(W / acc) - n))``.
    When the centre alone reaches the target only the centre is sampled (fastMRI raises there).
    """

    def _plan(self, width: int, center_fraction: float, acceleration: int) -> tuple[int, Any]:
        target = round(width / acceleration)
        num_low_frequencies = max(min(round(width * center_fraction), target), 1)
        remaining = target - num_low_frequencies
        return num_low_frequencies, round(width / remaining) if remaining > 0 else 0


class _GeneratorMaskFunc(MaskFunc):
    """Base of the project's own kinds: a ``np.random.Generator``; a per-call seed uses a fresh generator."""

    def __init__(self, accelerations: Sequence[int], seed: Seed = None) -> None:
        if len(accelerations) == 0:
            raise ValueError("accelerations must not be empty")
        if any(a < 1 for a in accelerations):
            raise ValueError(f"accelerations must be >= 1, got {list(accelerations)}")
        self.accelerations = [int(a) for a in accelerations]
        self.rng = np.random.default_rng(seed)

    def sample_lines(
        self, width: int, offset: int | None = None, seed: Seed = None
    ) -> tuple[np.ndarray, int]:
        """See :meth:`MaskFunc.__call__`; returns a ``(W,)`` bool array and ``round(0.08 W)``."""
        _check_offset(offset)
        rng = self.rng if seed is None else np.random.default_rng(seed)
        acceleration = self.accelerations[int(rng.integers(len(self.accelerations)))]
        return self._lines(width, acceleration, offset, rng), _snu_num_center(width)

    @abstractmethod
    def _lines(
        self, width: int, acceleration: int, offset: int | None, rng: np.random.Generator
    ) -> np.ndarray:
        """The ``(W,)`` bool line mask for one acceleration."""


class SNUMaskFunc(_GeneratorMaskFunc):
    """The organiser rule :func:`snu_mask` behind fastMRI's signature; the acceleration is drawn per call.

    ``offset`` is ignored (the rule fixes it).
    """

    def _lines(
        self, width: int, acceleration: int, offset: int | None, rng: np.random.Generator
    ) -> np.ndarray:
        return snu_mask(width, acceleration)


class VariantMaskFunc(_GeneratorMaskFunc):
    """``random_offset`` / ``random_spaced`` / ``random_lines`` behind fastMRI's signature.

    A given ``offset`` fixes the grid offset of ``random_offset`` (ignored by the other two kinds).
    """

    def __init__(
        self,
        kind: str,
        accelerations: Sequence[int],
        seed: Seed = None,
        *,
        exclude_organiser_offset: bool = False,
    ) -> None:
        if kind not in VARIANT_KINDS:
            raise ValueError(f"unknown variant kind {kind!r}; valid kinds: {', '.join(VARIANT_KINDS)}")
        super().__init__(accelerations, seed)
        self.kind = kind
        self.exclude_organiser_offset = exclude_organiser_offset

    def _lines(
        self, width: int, acceleration: int, offset: int | None, rng: np.random.Generator
    ) -> np.ndarray:
        if self.kind == "random_offset":
            if offset is None:
                return random_offset_mask(
                    width, acceleration, rng, exclude_organiser_offset=self.exclude_organiser_offset
                )
            mask = _center_lines(width, _snu_num_center(width))
            mask[offset::acceleration] = True
            return mask
        if self.kind == "random_spaced":
            return random_spaced_mask(width, acceleration, rng)
        return random_lines_mask(width, acceleration, rng)


_FASTMRI_CLASSES: dict[str, type[FastMRIMaskFunc]] = {
    "random": RandomMaskFunc,
    "equispaced": EquiSpacedMaskFunc,
    "equispaced_fraction": EquispacedMaskFractionFunc,
    "magic": MagicMaskFunc,
    "magic_fraction": MagicMaskFractionFunc,
}


def create_mask_for_mask_type(
    kind: str, center_fractions: Sequence[float], accelerations: Sequence[int], *, seed: Seed = None
) -> MaskFunc:
    """Mask function of a named kind, with fastMRI's call signature ``(shape, offset=None, seed=None)``.

    Args:
        kind: one of ``random``, ``equispaced``, ``equispaced_fraction``, ``magic``, ``magic_fraction``
            (fastMRI: identical outputs to ``fastmri.data.subsample.create_mask_for_mask_type``), ``snu``
            (organiser rule), ``random_offset``, ``random_spaced``, ``random_lines`` (robustness variants).
            The last four use the SNU 8% centre and ignore ``center_fractions``.
        center_fractions: centre fractions, paired with ``accelerations`` (fastMRI kinds).
        accelerations: accelerations; one pair (or one acceleration) is drawn per call.
        seed: seed of the function's own RNG, used by calls with ``seed=None`` (fastMRI's factory has no such
            argument and seeds from OS entropy, which is the default here too).

    Returns:
        A :class:`MaskFunc`.
    """
    if kind in _FASTMRI_CLASSES:
        return _FASTMRI_CLASSES[kind](center_fractions, accelerations, seed=seed)
    if kind == "snu":
        return SNUMaskFunc(accelerations, seed=seed)
    if kind in VARIANT_KINDS:
        return VariantMaskFunc(kind, accelerations, seed=seed)
    raise ValueError(f"unknown mask kind {kind!r}; valid kinds: {', '.join(MASK_KINDS)}")


def fname_seed(fname: str) -> tuple[int, ...]:
    """fastMRI's mask seed of a file: ``tuple(map(ord, fname))`` (its validation masks), so that a mask function
    called with ``seed=fname_seed(name)`` gives the mask fastMRI gives that file."""
    return tuple(map(ord, fname))


def single_coil_mask_func(acceleration: int, seed: Seed = None) -> RandomMaskFunc:
    """fastMRI random mask of one single-coil acceleration (4, 8, 16 or 32) with its centre fraction
    (0.08, 0.04, 0.02, 0.01): ``create_mask_for_mask_type("random", [cf], [acceleration])``.

    Raises:
        ValueError: an acceleration outside 4/8/16/32.
    """
    if acceleration not in SINGLE_COIL_EXTREME:
        raise ValueError(
            f"single-coil acceleration must be one of {sorted(SINGLE_COIL_EXTREME)}, got {acceleration!r}"
        )
    return RandomMaskFunc([SINGLE_COIL_EXTREME[acceleration]], [acceleration], seed=seed)


def single_coil_extreme_mask_func(seed: Seed = None) -> RandomMaskFunc:
    """fastMRI random masks for extreme single-coil undersampling: centre fractions 0.08/0.04/0.02/0.01
    paired with accelerations 4/8/16/32.

    Args:
        seed: seed of the function's own RNG (used by calls with ``seed=None``).
    """
    accelerations = sorted(SINGLE_COIL_EXTREME)
    return RandomMaskFunc([SINGLE_COIL_EXTREME[a] for a in accelerations], accelerations, seed=seed)


# ----------------------------------------------------------------------------------------------------
# Detection
# ----------------------------------------------------------------------------------------------------


def as_line_mask(mask: Any) -> np.ndarray:
    """Convert a mask of any bool/numeric dtype and any shape that squeezes to 1-D to a ``(W,)`` bool array.

    Accepts numpy arrays, torch tensors (any device), h5py datasets and sequences; e.g. fastMRI's
    ``(1, 1, W, 1)`` float32 tensor or the SNU file's ``(W,)`` float32 ``mask``. Non-zero means sampled.

    Raises:
        ValueError: if the squeezed mask is not 1-D (or is empty).
        TypeError: for a non-numeric dtype.
    """
    if isinstance(mask, torch.Tensor):
        array = (mask.detach() != 0).cpu().numpy()
    else:
        array = np.asarray(mask)
        if array.dtype.kind not in "biufc":
            raise TypeError(f"mask must have a bool or numeric dtype, got {array.dtype}")
        array = array != 0
    array = np.squeeze(array)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"mask must squeeze to a non-empty 1-D line mask, got shape {np.shape(mask)}")
    return np.ascontiguousarray(array, dtype=bool)


def center_block(mask: Any) -> tuple[int, int]:
    """The ACS region: ``(start, stop)`` (stop exclusive) of the run of sampled lines at the centre.

    The run containing line ``W // 2``; if none does, the run nearest to it (ties: the longer, then the left
    one).
    A grid line adjacent to the centre block is part of the run (e.g. 182..214 for ``snu_mask(396, 4)``).

    Args:
        mask: any mask accepted by :func:`as_line_mask`.

    Raises:
        ValueError: if no line is sampled.
    """
    line = as_line_mask(mask)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], line.astype(np.int8), [0]))))
    if edges.size == 0:
        raise ValueError("mask samples no line")
    starts, stops = edges[0::2], edges[1::2]
    middle = line.shape[0] // 2
    distance = np.maximum(0, np.maximum(starts - middle, middle - (stops - 1)))
    best = np.lexsort((starts, starts - stops, distance))[0]
    return int(starts[best]), int(stops[best])


def estimate_acceleration(mask: Any, supported: Sequence[int] = SUPPORTED_ACCELERATIONS) -> int:
    """Acceleration of a mask: ``(W - n_c) / (sum(mask) - n_c)`` rounded to the nearest supported value.

    ``n_c`` is the length of :func:`center_block`. Ties go to the smaller supported value.

    Args:
        mask: any mask accepted by :func:`as_line_mask`.
        supported: accelerations to choose from.

    Raises:
        ValueError: if nothing is sampled outside the centre block, or ``supported`` is empty.
    """
    if len(supported) == 0:
        raise ValueError("supported accelerations must not be empty")
    line = as_line_mask(mask)
    start, stop = center_block(line)
    n_center = stop - start
    n_outer = int(line.sum()) - n_center
    if n_outer <= 0:
        raise ValueError("mask samples nothing outside its centre block; its acceleration is undefined")
    ratio = (line.shape[0] - n_center) / n_outer
    return int(min(supported, key=lambda a: (abs(a - ratio), a)))


def follows_organiser_rule(mask: Any, supported: Sequence[int] = SUPPORTED_ACCELERATIONS) -> bool:
    """True iff ``mask`` equals ``snu_mask(W, acc)`` for its width and :func:`estimate_acceleration`.

    Args:
        mask: any mask accepted by :func:`as_line_mask` (bool/numeric, ``(W,)`` or fastMRI ``(1, 1, W, 1)``).
        supported: accelerations the estimate chooses from.
    """
    line = as_line_mask(mask)
    try:
        acc = estimate_acceleration(line, supported)
    except ValueError:
        return False
    return bool(np.array_equal(line, snu_mask(line.shape[0], acc)))
