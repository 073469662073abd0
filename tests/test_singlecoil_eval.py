"""Single-coil evaluation: the hallucination index, reconstruction of NYU single-coil folders, fastMRI scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from kspacelab import metrics

# ------------------------------------------------------------------------------------- hallucination index

SIDE = 96


def _phantom(texture: float = 0.02, seed: int = 0) -> np.ndarray:
    """Soft-edged disks and a bar on a dark background, with a fine texture inside (a target with detail)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    image = 1.0 * ((yy - 48) ** 2 + (xx - 44) ** 2 < 26**2)
    image += 0.5 * ((yy - 52) ** 2 + (xx - 60) ** 2 < 10**2)
    image += 0.3 * ((abs(yy - 30) < 4) & (abs(xx - 40) < 12))
    image = ndimage.gaussian_filter(image, 0.7)
    return image + texture * ndimage.gaussian_filter(rng.standard_normal(image.shape), 0.8) * (image > 0.1)


def _high_pass(x: np.ndarray) -> np.ndarray:
    """The index's high-pass, written with scipy (an independent implementation of the same filter)."""
    return x - ndimage.gaussian_filter(x, metrics.HI_SIGMA, mode="mirror")


def test_identity_scores_zero() -> None:
    target = _phantom()
    assert metrics.hallucination_index(target, target) == 0.0
    volume = np.stack([target, _phantom(seed=1)])
    assert metrics.hallucination_index(volume, volume) == 0.0


@pytest.mark.parametrize("blur", [0.5, 1.0, 2.0, 4.0])
def test_blurred_output_scores_about_zero(blur: float) -> None:
    """A blurred output has less detail everywhere: the index stays below 1e-3 (tolerance of this test; a
    pointwise comparison of |HP| instead of local energies gave up to 0.016 here)."""
    target = _phantom()
    blurred = ndimage.gaussian_filter(target, blur)
    assert 0.0 <= metrics.hallucination_index(blurred, target) < 1e-3


def test_added_texture_in_flat_region_has_the_band_passed_patch_energy() -> None:
    """Target: one smooth disk (no texture) on a flat background; output: target + a noise patch far from the
    disk. Where the target is flat its local energy is exactly 0 (finite kernels), so the index is the patch's
    high-pass energy over the target's: sum(HP(patch)^2) / sum(HP(target)^2) (the window conserves sums)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    target = ndimage.gaussian_filter(1.0 * ((yy - 34) ** 2 + (xx - 34) ** 2 < 14**2), 1.0)
    target[np.abs(target) < 1e-12] = 0.0
    patch = np.zeros_like(target)
    patch[70:82, 70:82] = 0.05 * rng.standard_normal(
        (12, 12)
    )  # 16+ px from the disk's detail, 14 px from edges
    expected = np.sum(_high_pass(patch) ** 2) / np.sum(_high_pass(target) ** 2)
    value = metrics.hallucination_index(target + patch, target)
    assert expected > 0.01
    assert value == pytest.approx(expected, rel=1e-9)


def test_scale_invariance_torch_and_volume_pooling() -> None:
    target = _phantom()
    noisy = target + 0.03 * np.random.default_rng(5).standard_normal(target.shape)
    value = metrics.hallucination_index(noisy, target)
    assert value > 0.05
    for scale in (1e-4, 37.0):
        assert metrics.hallucination_index(noisy * scale, target * scale) == pytest.approx(value, rel=1e-9)
    as_torch = metrics.hallucination_index(torch.from_numpy(noisy).float(), torch.from_numpy(target).float())
    assert as_torch == pytest.approx(value, rel=1e-4)  # float32 input, float64 arithmetic
    # a volume pools its slices: invented detail in one of two equal slices counts half
    volume = metrics.hallucination_index(np.stack([noisy, target]), np.stack([target, target]))
    assert volume == pytest.approx(value / 2, rel=1e-9)


@pytest.mark.parametrize(
    ("recon", "target", "words"),
    [
        (np.zeros((32, 32)), np.zeros((32, 30)), "differ"),
        (np.zeros((2, 2, 32, 32)), np.zeros((2, 2, 32, 32)), "(S, H, W)"),
        (np.zeros(32), np.zeros(32), "(S, H, W)"),
        (np.zeros((32, 32), np.complex64), np.zeros((32, 32)), "complex"),
        (np.zeros((8, 8)), np.ones((8, 8)), "larger than"),
        (np.full((32, 32), np.nan), np.ones((32, 32)), "non-finite"),
        (np.zeros((32, 32)), np.ones((32, 32)), "no fine detail"),
    ],
)
def test_bad_inputs_raise(recon: np.ndarray, target: np.ndarray, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        metrics.hallucination_index(recon, target)
