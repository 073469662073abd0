"""Masks: the SNU organiser rule (SPEC §3), fastMRI identity, robustness variants, detection, bad inputs."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch

from kspacelab import masks
from kspacelab.masks import (
    FASTMRI_KINDS,
    MASK_KINDS,
    SINGLE_COIL_EXTREME,
    as_line_mask,
    center_block,
    create_mask_for_mask_type,
    estimate_acceleration,
    follows_organiser_rule,
    random_lines_mask,
    random_offset_mask,
    random_spaced_mask,
    single_coil_extreme_mask_func,
    snu_mask,
)

WIDTHS = range(320, 481)
ACCS = (4, 8)
FILE_SEEDS = [tuple(map(ord, name)) for name in ("file1000001.h5", "file_brain_AXT2_200_2000019.h5")]
INT_SEEDS: list[Any] = [0, 1, 42, 2**31 - 1]
OUR_CLASSES: dict[str, type[masks.FastMRIMaskFunc]] = {
    "random": masks.RandomMaskFunc,
    "equispaced": masks.EquiSpacedMaskFunc,
    "equispaced_fraction": masks.EquispacedMaskFractionFunc,
    "magic": masks.MagicMaskFunc,
    "magic_fraction": masks.MagicMaskFractionFunc,
}


def _organiser_rule_by_sets(width: int, acc: int) -> np.ndarray:
    """SPEC §3 written a second way: exact rational rounding, a centred set, a residue class."""
    n = round(Fraction(8, 100) * width)  # no ties occur for integer widths, so half-even is irrelevant
    left = -((n - width) // 2)  # ceil((W - n) / 2): the extra line of an odd remainder goes to the left gap
    centre = set(range(left, left + n))
    grid = {line for line in range(width) if line % acc == (width // 2) % acc}
    mask = np.zeros(width, dtype=bool)
    mask[sorted(centre | grid)] = True
    return mask


# ---------------------------------------------------------------------------------------------------------
# SNU organiser rule
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "acc", "first", "last", "offset"), [(396, 4, 182, 213, 2), (396, 8, 182, 213, 6)]
)
def test_snu_mask_spec_example_396(width: int, acc: int, first: int, last: int, offset: int) -> None:
    mask = snu_mask(width, acc)
    assert mask.dtype == np.bool_ and mask.shape == (width,)
    assert mask[first : last + 1].all()
    outside = np.flatnonzero(mask & ~np.isin(np.arange(width), np.arange(first, last + 1)))
    assert outside[0] == offset
    assert set((outside - offset) % acc) == {0}
    assert np.array_equal(outside, [i for i in range(offset, width, acc) if not first <= i <= last])


def test_snu_mask_spec_example_320() -> None:
    for acc in ACCS:
        mask = snu_mask(320, acc)
        lines = set(np.flatnonzero(mask).tolist())
        assert lines == set(range(147, 173)) | set(range(0, 320, acc))
        assert not mask[146] or 146 % acc == 0


def test_snu_mask_includes_last_column_exactly_when_on_grid() -> None:
    seen_on_grid = seen_off_grid = False
    for width in WIDTHS:
        for acc in ACCS:
            on_grid = (width - 1) % acc == (width // 2) % acc
            assert snu_mask(width, acc)[-1] == on_grid, (width, acc)
            seen_on_grid |= on_grid
            seen_off_grid |= not on_grid
    assert seen_on_grid and seen_off_grid
    assert snu_mask(322, 4)[321]  # 161 % 4 == 321 % 4 == 1


def test_snu_mask_matches_independent_rule_for_all_widths() -> None:
    for width in WIDTHS:
        for acc in ACCS:
            assert np.array_equal(snu_mask(width, acc), _organiser_rule_by_sets(width, acc)), (width, acc)


def test_snu_mask_effective_acceleration_at_396() -> None:
    assert round(396 / snu_mask(396, 4).sum(), 1) == 3.2
    assert round(396 / snu_mask(396, 8).sum(), 1) == 5.1


def test_snu_mask_equals_fastmri_equispaced_with_organiser_offset() -> None:
    fs = pytest.importorskip("fastmri.data.subsample")
    for width in (320, 368, 392, 396, 441):
        for acc in ACCS:
            func = fs.EquiSpacedMaskFunc([0.08], [acc])
            mask, n_low = func((1, 640, width, 2), offset=(width // 2) % acc, seed=0)
            assert np.array_equal(mask.numpy().reshape(-1).astype(bool), snu_mask(width, acc))
            assert n_low == round(0.08 * width)


# ---------------------------------------------------------------------------------------------------------
# fastMRI identity
# ---------------------------------------------------------------------------------------------------------

PARAM_SETS = [
    ([0.08], [4]),
    ([0.04], [8]),
    ([0.08, 0.04], [4, 8]),
    ([0.08, 0.04, 0.02, 0.01], [4, 8, 16, 32]),
]
SHAPES = [(15, 640, 372, 2), (1, 320, 320, 2), (4, 100, 33, 2), (640, 369, 2), (2, 1, 3, 257, 2)]
OFFSETS: dict[str, list[int | None]] = {
    "random": [None, 2],  # offset is ignored by fastMRI's random masks
    "equispaced": [None, 0, 1, 3],
    "equispaced_fraction": [None, 0, 1, 3],
    "magic": [None, 0, 1, 2, 3],
    "magic_fraction": [None, 0, 1, 2, 3],
}


def _assert_same(ours: tuple[torch.Tensor, int], theirs: tuple[torch.Tensor, int], context: Any) -> None:
    mask, n_low = ours
    ref_mask, ref_n_low = theirs
    assert mask.dtype == ref_mask.dtype == torch.float32, context
    assert mask.shape == ref_mask.shape, context
    assert torch.equal(mask, ref_mask), context
    assert n_low == ref_n_low and isinstance(n_low, int), context


def _fastmri_or_none(func: Callable[..., Any], *args: Any) -> Any:
    """fastMRI's output, or None where fastMRI itself raises (centre alone reaches the target)."""
    try:
        return func(*args)
    except (ValueError, ZeroDivisionError):
        return None


@pytest.mark.parametrize("kind", FASTMRI_KINDS)
def test_fastmri_kinds_identical_for_seeds_shapes_and_offsets(kind: str) -> None:
    fs = pytest.importorskip("fastmri.data.subsample")
    compared = 0
    for center_fractions, accelerations in PARAM_SETS:
        ours = create_mask_for_mask_type(kind, center_fractions, accelerations)
        theirs = fs.create_mask_for_mask_type(kind, center_fractions, accelerations)
        for shape in SHAPES:
            for seed in [*INT_SEEDS, *FILE_SEEDS]:
                for offset in OFFSETS[kind]:
                    context = (kind, center_fractions, shape, seed, offset)
                    reference = _fastmri_or_none(theirs, shape, offset, seed)
                    if reference is None:  # only magic_fraction at W=33, acc 32
                        assert kind == "magic_fraction" and shape[-2] == 33, context
                        continue
                    _assert_same(ours(shape, offset, seed), reference, context)
                    compared += 1
    assert compared > 150


@pytest.mark.parametrize("kind", FASTMRI_KINDS)
def test_fastmri_kinds_internal_rng_sequence(kind: str) -> None:
    """seed=None calls advance the own RandomState as fastMRI's do; seeded calls leave it untouched."""
    fs = pytest.importorskip("fastmri.data.subsample")
    ours_class = OUR_CLASSES[kind]
    assert type(create_mask_for_mask_type(kind, [0.08], [4])) is ours_class
    theirs_class = type(fs.create_mask_for_mask_type(kind, [0.08], [4]))
    calls: list[Any] = [
        ((15, 640, 372, 2), None, None),
        ((15, 640, 372, 2), None, None),
        ((1, 320, 321, 2), None, 123),
        ((1, 320, 321, 2), None, None),
        ((1, 320, 320, 2), 1, None),
        ((1, 320, 320, 2), None, FILE_SEEDS[0]),
        ((1, 320, 396, 2), None, None),
    ] + [((1, 640, 368, 2), None, None)] * 5
    for center_fractions, accelerations in PARAM_SETS[2:]:
        ours = ours_class(center_fractions, accelerations, seed=7)
        theirs = theirs_class(center_fractions, accelerations, seed=7)
        for i, (shape, offset, seed) in enumerate(calls):
            _assert_same(ours(shape, offset, seed), theirs(shape, offset, seed), (kind, i))


@pytest.mark.parametrize("kind", FASTMRI_KINDS)
def test_factory_functions_follow_fastmri_from_the_same_rng_state(kind: str) -> None:
    """The factory seeds from OS entropy like fastMRI's; from a copied RNG state both give the same masks."""
    fs = pytest.importorskip("fastmri.data.subsample")
    ours = create_mask_for_mask_type(kind, [0.08, 0.04], [4, 8])
    theirs = fs.create_mask_for_mask_type(kind, [0.08, 0.04], [4, 8])
    assert isinstance(ours, masks.FastMRIMaskFunc)
    ours.rng.set_state(theirs.rng.get_state())
    for i in range(6):
        _assert_same(ours((15, 640, 372, 2)), theirs((15, 640, 372, 2)), (kind, i))


@pytest.mark.parametrize("kind", FASTMRI_KINDS)
def test_fastmri_allow_any_combination(kind: str) -> None:
    fs = pytest.importorskip("fastmri.data.subsample")
    ours_class = OUR_CLASSES[kind]
    theirs_class = type(fs.create_mask_for_mask_type(kind, [0.08], [4]))
    ours = ours_class([0.08, 0.04, 0.06], [4, 8], allow_any_combination=True, seed=3)
    theirs = theirs_class([0.08, 0.04, 0.06], [4, 8], allow_any_combination=True, seed=3)
    for i, seed in enumerate([None, None, 5, None, FILE_SEEDS[1], None, None]):
        shape = (1, 640, 368 + i, 2)
        _assert_same(ours(shape, None, seed), theirs(shape, None, seed), (kind, i))
    with pytest.raises(ValueError, match="allow_any_combination"):
        ours_class([0.08, 0.04, 0.06], [4, 8])


def test_single_coil_extreme_set() -> None:
    fs = pytest.importorskip("fastmri.data.subsample")
    assert SINGLE_COIL_EXTREME == {4: 0.08, 8: 0.04, 16: 0.02, 32: 0.01}
    func = single_coil_extreme_mask_func()
    assert isinstance(func, masks.RandomMaskFunc) and not func.allow_any_combination
    assert func.center_fractions == [0.08, 0.04, 0.02, 0.01] and func.accelerations == [4, 8, 16, 32]
    reference = fs.RandomMaskFunc([0.08, 0.04, 0.02, 0.01], [4, 8, 16, 32])
    n_lows = set()
    for seed in [*range(40), *FILE_SEEDS]:
        ours = func((640, 368, 2), seed=seed)
        _assert_same(ours, reference((640, 368, 2), seed=seed), seed)
        n_lows.add(ours[1])
    assert n_lows == {round(368 * f) for f in (0.08, 0.04, 0.02, 0.01)}  # only the paired fractions occur


def test_fraction_kinds_with_centre_reaching_the_target_sample_only_the_centre() -> None:
    # fastMRI raises here (division by zero / randint(0, 0)); we return the centre.
    for kind, shape in [("equispaced_fraction", (1, 8, 320, 2)), ("magic_fraction", (1, 8, 33, 2))]:
        fractions, accs = ([0.25], [4]) if kind == "equispaced_fraction" else ([0.01], [32])
        mask, n_low = create_mask_for_mask_type(kind, fractions, accs)(shape, seed=0)
        start = (shape[-2] - n_low + 1) // 2
        expected = np.zeros(shape[-2], dtype=bool)
        expected[start : start + n_low] = True
        assert n_low > 0 and np.array_equal(as_line_mask(mask), expected), kind


# ---------------------------------------------------------------------------------------------------------
# Project kinds behind fastMRI's signature
# ---------------------------------------------------------------------------------------------------------


def test_every_kind_reachable_by_name_with_fastmri_signature() -> None:
    for kind in MASK_KINDS:
        func = create_mask_for_mask_type(kind, [0.08, 0.04], [4, 8])
        mask, n_low = func((15, 640, 372, 2), seed=FILE_SEEDS[0])
        assert mask.shape == (1, 1, 372, 1) and mask.dtype == torch.float32, kind
        assert set(mask.unique().tolist()) == {0.0, 1.0}, kind
        again, n_low_again = func((15, 640, 372, 2), offset=None, seed=FILE_SEEDS[0])
        assert torch.equal(mask, again) and n_low == n_low_again, kind
        assert estimate_acceleration(mask) in ACCS, kind


def test_snu_kind_is_the_organiser_rule() -> None:
    func = create_mask_for_mask_type("snu", [0.5], [4, 8])
    accs_seen = set()
    for seed in range(20):
        mask, n_low = func((4, 768, 396, 2), seed=seed)
        acc = estimate_acceleration(mask)
        accs_seen.add(acc)
        assert np.array_equal(as_line_mask(mask), snu_mask(396, acc)) and n_low == 32
    assert accs_seen == {4, 8}
    single = create_mask_for_mask_type("snu", [], [8])
    assert np.array_equal(as_line_mask(single((1, 8, 441, 2))[0]), snu_mask(441, 8))


def test_variant_kinds_seeding_semantics() -> None:
    for kind in masks.VARIANT_KINDS:
        a = create_mask_for_mask_type(kind, [0.08], [4, 8], seed=11)
        b = create_mask_for_mask_type(kind, [0.08], [4, 8], seed=11)
        shape = (1, 640, 372, 2)
        first = a(shape)[0]
        assert torch.equal(b(shape, seed=99)[0], a(shape, seed=99)[0])  # seeded calls leave the RNG alone
        assert torch.equal(b(shape)[0], first)
        sequence_a = [a(shape)[0] for _ in range(8)]
        sequence_b = [b(shape)[0] for _ in range(8)]
        assert all(torch.equal(x, y) for x, y in zip(sequence_a, sequence_b, strict=True)), kind
        assert any(not torch.equal(sequence_a[0], x) for x in sequence_a[1:]), kind


def test_random_offset_kind_with_given_offset_is_equispaced() -> None:
    func = create_mask_for_mask_type("random_offset", [], [4])
    for offset in range(4):
        line = as_line_mask(func((1, 8, 396, 2), offset=offset)[0])
        expected = _snu_centre(396)
        expected[offset::4] = True
        assert np.array_equal(line, expected)
    assert np.array_equal(as_line_mask(func((1, 8, 396, 2), offset=2)[0]), snu_mask(396, 4))


# ---------------------------------------------------------------------------------------------------------
# Robustness variants
# ---------------------------------------------------------------------------------------------------------

VARIANTS = [random_offset_mask, random_spaced_mask, random_lines_mask]


def _snu_centre(width: int) -> np.ndarray:
    n = round(0.08 * width)
    centre = np.zeros(width, dtype=bool)
    centre[(width - n + 1) // 2 : (width - n + 1) // 2 + n] = True
    return centre


@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_have_the_snu_centre_and_are_deterministic(variant: Callable[..., np.ndarray]) -> None:
    for width in (320, 371, 396, 480):
        for acc in ACCS:
            mask = variant(width, acc, np.random.default_rng(5))
            assert mask.dtype == np.bool_ and mask.shape == (width,)
            assert mask[_snu_centre(width)].all()
            assert np.array_equal(mask, variant(width, acc, np.random.default_rng(5)))
    masks_from_one_rng = [variant(396, 4, np.random.default_rng(0)) for _ in range(2)]
    rng = np.random.default_rng(0)
    assert np.array_equal(variant(396, 4, rng), masks_from_one_rng[0])
    distinct = {variant(396, 4, rng).tobytes() for _ in range(10)}
    assert len(distinct) > 1


def test_random_offset_is_equispaced_with_every_offset_reachable() -> None:
    rng = np.random.default_rng(1)
    for acc in ACCS:
        offsets = set()
        for _ in range(100):
            mask = random_offset_mask(396, acc, rng)
            outer = np.flatnonzero(mask & ~_snu_centre(396))
            assert len(set(outer % acc)) == 1 and (np.diff(outer) % acc == 0).all()
            offset = int(outer[0] % acc)
            expected = _snu_centre(396)
            expected[offset::acc] = True
            assert np.array_equal(mask, expected)
            offsets.add(offset)
        assert offsets == set(range(acc))


def test_random_offset_excluding_the_organiser_offset_never_equals_the_organiser_mask() -> None:
    rng = np.random.default_rng(2)
    for width in WIDTHS:
        for acc in ACCS:
            organiser = snu_mask(width, acc)
            for _ in range(3):
                mask = random_offset_mask(width, acc, rng, exclude_organiser_offset=True)
                assert not np.array_equal(mask, organiser), (width, acc)
                assert not follows_organiser_rule(mask)
    offsets = {
        int(np.flatnonzero(random_offset_mask(396, 8, rng, exclude_organiser_offset=True))[0])
        for _ in range(200)
    }
    assert offsets == set(range(8)) - {(396 // 2) % 8}


def test_random_spaced_has_one_line_per_bin() -> None:
    rng = np.random.default_rng(3)
    for width in (320, 333, 396, 477):
        centre = _snu_centre(width)
        for acc in ACCS:
            mask = random_spaced_mask(width, acc, rng)
            for start in range(0, width, acc):
                in_bin = slice(start, start + acc)
                if not centre[in_bin].any():
                    assert mask[in_bin].sum() == 1, (width, acc, start)
    # with no centre effect at all, the spaced draws also hit every position of the bin
    positions = np.concatenate([np.flatnonzero(random_spaced_mask(400, 8, rng)[:120]) % 8 for _ in range(20)])
    assert set(positions.tolist()) == set(range(8))


def test_random_lines_rate_outside_centre() -> None:
    rng = np.random.default_rng(4)
    for acc in ACCS:
        outer = ~_snu_centre(400)
        rate = np.mean([random_lines_mask(400, acc, rng)[outer].mean() for _ in range(200)])
        assert rate == pytest.approx(1 / acc, abs=0.01)


# ---------------------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------------------


def test_center_block_of_organiser_masks() -> None:
    assert center_block(snu_mask(396, 4)) == (182, 215)  # grid line 214 touches the centre block
    assert center_block(snu_mask(396, 8)) == (182, 215)
    assert center_block(snu_mask(320, 4)) == (147, 173)  # 172 is the centre's own last line; 173 off-grid
    for width in WIDTHS:
        for acc in ACCS:
            start, stop = center_block(snu_mask(width, acc))
            n = round(0.08 * width)
            pad = (width - n + 1) // 2
            assert pad - 1 <= start <= pad and pad + n <= stop <= pad + n + 1


def test_center_block_nearest_run_and_errors() -> None:
    mask = np.zeros(20, dtype=bool)
    mask[[1, 2, 3, 13, 14, 18]] = True  # W//2 = 10 is not sampled; 13..14 is nearest
    assert center_block(mask) == (13, 15)
    mask[[7, 8]] = True  # 7..8 (distance 2) and 13..14 (distance 3)
    assert center_block(mask) == (7, 9)
    with pytest.raises(ValueError, match="no line"):
        center_block(np.zeros(20))


def test_estimate_acceleration_of_organiser_masks_all_widths() -> None:
    for width in WIDTHS:
        for acc in ACCS:
            assert estimate_acceleration(snu_mask(width, acc)) == acc, (width, acc)
            assert follows_organiser_rule(snu_mask(width, acc)), (width, acc)


@pytest.mark.parametrize("variant", VARIANTS)
def test_estimate_acceleration_of_variants(variant: Callable[..., np.ndarray]) -> None:
    rng = np.random.default_rng(6)
    for width in range(320, 481, 8):
        for acc in ACCS:
            assert estimate_acceleration(variant(width, acc, rng)) == acc, (variant.__name__, width, acc)


def test_estimate_acceleration_of_fastmri_masks_and_other_supported_sets() -> None:
    for kind in FASTMRI_KINDS:
        for acc, fraction in ((4, 0.08), (8, 0.04)):
            if (kind, acc) == ("magic_fraction", 4):
                continue  # counts the centre towards W/4: outer spacing round(368 / 63) = 6, the 4/8 midpoint
            mask, _ = create_mask_for_mask_type(kind, [fraction], [acc])((15, 640, 368, 2), seed=1)
            assert estimate_acceleration(mask) == acc, (kind, acc)
    extreme = single_coil_extreme_mask_func()
    supported = tuple(SINGLE_COIL_EXTREME)
    for seed in range(12):
        mask, n_low = extreme((640, 368, 2), seed=seed)
        acc = next(a for a, f in SINGLE_COIL_EXTREME.items() if round(368 * f) == n_low)
        estimate = estimate_acceleration(mask, supported)
        assert estimate in supported and abs(np.log2(estimate / acc)) <= 1, (seed, acc, estimate)
    assert estimate_acceleration(snu_mask(396, 4), supported=(2, 3, 4, 5)) == 4
    assert estimate_acceleration(snu_mask(396, 8), supported=(2, 3, 4, 5)) == 5


def test_follows_organiser_rule_accepts_any_dtype_and_fastmri_shape() -> None:
    line = snu_mask(396, 8)
    for candidate in (
        line,
        line.astype(np.float32),
        line.astype(np.int64),
        line.astype(np.uint8),
        line.astype(np.float64)[None, None, :, None],
        torch.from_numpy(line.astype(np.float32)).reshape(1, 1, -1, 1),
        torch.from_numpy(line),
        line.tolist(),
    ):
        assert follows_organiser_rule(candidate)


def test_follows_organiser_rule_rejects_other_masks() -> None:
    organiser = snu_mask(396, 4)
    for line in range(396):  # every single flipped line, inside and outside the centre
        flipped = organiser.copy()
        flipped[line] = ~flipped[line]
        assert not follows_organiser_rule(flipped), line
    assert not follows_organiser_rule(_snu_centre(396))  # nothing outside the centre
    assert not follows_organiser_rule(np.zeros(396))
    rng = np.random.default_rng(8)
    for width in (320, 396, 441):
        for acc in ACCS:
            other_offset = random_offset_mask(width, acc, rng, exclude_organiser_offset=True)
            assert not follows_organiser_rule(other_offset)
            assert not follows_organiser_rule(random_spaced_mask(width, acc, rng))
            assert not follows_organiser_rule(random_lines_mask(width, acc, rng))
            random_mask, _ = create_mask_for_mask_type("random", [0.08], [acc])((1, 8, width, 2), seed=width)
            assert not follows_organiser_rule(random_mask)


def test_as_line_mask_conversions() -> None:
    expected = np.array([True, False, True, True])
    for candidate in (
        np.array([1.0, 0.0, 0.5, 2.0], dtype=np.float32),
        np.array([[[1], [0], [1], [1]]], dtype=np.int16),
        torch.tensor([1.0, 0.0, 1.0, 1.0]).reshape(1, 1, 4, 1),
        torch.tensor([True, False, True, True]),
        torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.bfloat16),
        np.array([1 + 0j, 0j, 1j, 1]),
        [1, 0, 1, 1],
    ):
        line = as_line_mask(candidate)
        assert line.dtype == np.bool_ and line.shape == (4,)
        assert np.array_equal(line, expected)


# ---------------------------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("function", [snu_mask, *VARIANTS])
@pytest.mark.parametrize(("width", "acc"), [(0, 4), (396, 0), (-3, 4), (396, -1)])
def test_non_positive_width_or_acc(function: Callable[..., np.ndarray], width: int, acc: int) -> None:
    args = (width, acc) if function is snu_mask else (width, acc, np.random.default_rng(0))
    with pytest.raises(ValueError, match="positive"):
        function(*args)


def test_bad_mask_function_arguments() -> None:
    with pytest.raises(ValueError, match="unknown mask kind 'gaussian'") as info:
        create_mask_for_mask_type("gaussian", [0.08], [4])
    assert all(kind in str(info.value) for kind in MASK_KINDS)
    with pytest.raises(ValueError, match="must match"):
        create_mask_for_mask_type("random", [0.08, 0.04], [4])
    with pytest.raises(ValueError, match="accelerations"):
        create_mask_for_mask_type("equispaced", [0.08], [0])
    with pytest.raises(ValueError, match="accelerations"):
        create_mask_for_mask_type("random_lines", [0.08], [0])
    with pytest.raises(ValueError, match="center fractions"):
        create_mask_for_mask_type("magic", [1.5], [4])
    with pytest.raises(ValueError, match="3 or more"):
        create_mask_for_mask_type("random", [0.08], [4])((368, 2), seed=0)
    with pytest.raises(ValueError, match="offset"):
        create_mask_for_mask_type("equispaced", [0.08], [4])((1, 8, 368, 2), offset=-1)
    with pytest.raises(ValueError, match="acc >= 2"):
        random_offset_mask(396, 1, np.random.default_rng(0), exclude_organiser_offset=True)
    with pytest.raises(TypeError, match="Generator"):
        random_lines_mask(396, 4, np.random.RandomState(0))  # type: ignore[arg-type]


def test_bad_masks_for_detection() -> None:
    with pytest.raises(ValueError, match="1-D"):
        as_line_mask(np.ones((2, 396)))
    with pytest.raises(ValueError, match="1-D"):
        as_line_mask(torch.ones(1, 2, 396, 1))
    with pytest.raises(ValueError, match="1-D"):
        as_line_mask(np.ones(1))
    with pytest.raises(TypeError, match="dtype"):
        as_line_mask(np.array(["1", "0"]))
    with pytest.raises(ValueError, match="outside"):
        estimate_acceleration(_snu_centre(396))
    with pytest.raises(ValueError, match="empty"):
        estimate_acceleration(snu_mask(396, 4), supported=())
    with pytest.raises(ValueError, match="1-D"):
        follows_organiser_rule(np.ones((2, 396)))


@pytest.mark.parametrize("acceleration", [4, 8, 16, 32])
def test_single_coil_mask_of_one_acceleration_seeded_from_the_file_name_equals_fastmri(
    acceleration: int,
) -> None:
    fs = pytest.importorskip("fastmri.data.subsample")
    fraction = SINGLE_COIL_EXTREME[acceleration]
    reference = fs.create_mask_for_mask_type("random", [fraction], [acceleration])
    ours = masks.single_coil_mask_func(acceleration)
    for name in ("file1000001.h5", "file1001458.h5", "knee_singlecoil_3.h5"):
        seed = masks.fname_seed(name)
        assert seed == tuple(map(ord, name))
        for width in (368, 372, 96):
            mask, n_low = ours((640, width, 2), seed=seed)
            _assert_same((mask, n_low), reference((640, width, 2), seed=seed), (name, width))
            assert n_low == round(width * fraction)
    with pytest.raises(ValueError, match="4, 8, 16, 32"):
        masks.single_coil_mask_func(6)
