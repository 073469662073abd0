"""Tests for kspacelab.classical: pattern-wise torch GRAPPA and the zero-filled baseline.

The phantom is a smooth-edged piece-wise constant ellipse phantom with smooth phase, multiplied by sigpy
birdcage coil maps, on a 2x oversampled readout (object in the central half of H), plus small complex noise.
"""

from __future__ import annotations

import time
from functools import cache

import numpy as np
import pytest
import torch

from kspacelab.classical import detect_acs, grappa_image, grappa_kspace, plan_patterns, zero_filled_image
from kspacelab.masks import snu_mask
from kspacelab.physics import fft2c

# (centre y, centre x, semi-axis y, semi-axis x, angle deg, value) in units of the object half-size
_ELLIPSES = (
    (0.0, 0.0, 0.92, 0.72, 0.0, 1.0),
    (0.0, 0.0, 0.86, 0.66, 0.0, -0.6),
    (-0.3, 0.22, 0.30, 0.13, -18.0, 0.5),
    (-0.3, -0.22, 0.38, 0.16, 18.0, 0.3),
    (0.35, 0.0, 0.21, 0.25, 0.0, 0.25),
    (0.1, 0.0, 0.05, 0.05, 0.0, 0.4),
    (-0.6, -0.08, 0.04, 0.05, 0.0, 0.35),
    (-0.6, 0.1, 0.03, 0.03, 0.0, 0.35),
    (0.55, 0.3, 0.08, 0.12, 30.0, -0.15),
)

# The phantom has 0.5 % noise, less than the simulated datasets (1-3 %), and so wants less regularisation than
# the library default (chosen on the demo validation split); quality tests use the phantom's best value.
PHANTOM_LAMDA = 1e-4


def ellipse_phantom(height: int, width: int, edge: float = 1.5) -> np.ndarray:
    """Complex ``(H, W)`` phantom: object in the central half of H, smooth edges (``edge`` pixels), smooth phase."""
    y = (np.arange(height) - height / 2) / (height / 4)
    x = (np.arange(width) - width / 2) / (width / 2)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    image = np.zeros((height, width))
    pixel = 1.0 / (height / 4)
    for cy, cx, ay, ax, angle, value in _ELLIPSES:
        th = np.deg2rad(angle)
        dy, dx = yy - cy, xx - cx
        u = dy * np.cos(th) + dx * np.sin(th)
        v = -dy * np.sin(th) + dx * np.cos(th)
        r = np.sqrt((u / ay) ** 2 + (v / ax) ** 2)
        image += value / (1.0 + np.exp((r - 1.0) * min(ay, ax) / (edge * pixel)))
    phase = 0.8 * xx + 0.5 * yy**2 - 0.4 * xx * yy
    return image * np.exp(1j * phase)


@cache
def simulate(n_coils: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Fully sampled multi-coil k-space ``(C, H, W)`` complex64 with 0.5 % complex noise (relative RMS)."""
    import sigpy.mri

    # coil ring around the object (central half of H), not around the oversampled field of view
    obj = height // 2
    coil = sigpy.mri.birdcage_maps((n_coils, obj, width), r=1.2)
    coil = np.pad(
        coil, ((0, 0), ((height - obj) // 2, height - obj - (height - obj) // 2), (0, 0)), mode="edge"
    )
    coil_images = torch.from_numpy((coil * ellipse_phantom(height, width)[None]).astype(np.complex64))
    k = fft2c(coil_images).numpy()
    rng = np.random.default_rng(seed)
    sigma = 0.005 * np.sqrt(np.mean(np.abs(k) ** 2))
    noise = sigma / np.sqrt(2) * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape))
    return (k + noise).astype(np.complex64)


def nrmse(recon: np.ndarray, target: np.ndarray) -> float:
    return float(np.linalg.norm(recon - target) / np.linalg.norm(target))


def crop_of(k: np.ndarray) -> tuple[int, int]:
    return (k.shape[-2] // 2, k.shape[-1])


def errors(k: np.ndarray, mask: np.ndarray, **kwargs: object) -> tuple[float, float]:
    """(GRAPPA NRMSE, zero-filled NRMSE) of the RSS image in the object region."""
    crop = crop_of(k)
    target = zero_filled_image(k, crop=crop)
    ours = grappa_image(k * mask, mask, crop=crop, **{"lamda": PHANTOM_LAMDA, **kwargs})
    zf = zero_filled_image(k, mask, crop=crop)
    return nrmse(ours, target), nrmse(zf, target)


def random_lines_mask(width: int, acc: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = rng.random(width) < 1.0 / acc
    return mask | snu_mask(width, 10**6)  # the 8 % centre block (plus column W//2)


def random_offset_mask(width: int, acc: int, seed: int) -> np.ndarray:
    offset = int(np.random.default_rng(seed).integers(acc))
    mask = np.zeros(width, dtype=bool)
    mask[offset::acc] = True
    return mask | snu_mask(width, 10**6)


def test_fully_sampled_returns_input() -> None:
    k = simulate(8, 96, 64)
    out = grappa_kspace(k, np.ones(64))
    assert isinstance(out, np.ndarray) and out.dtype == np.complex64
    np.testing.assert_array_equal(out, k)
    kt = torch.from_numpy(k)
    assert torch.equal(grappa_kspace(kt, torch.ones(64, dtype=torch.bool)), kt)


# measured (8 coils, H = 2W, default parameters): ratio GRAPPA / zero-filled NRMSE
#   acc4: W=198 0.12, W=199 0.12, W=397 0.11;  acc8: W=198 0.60, W=199 0.60, W=397 0.42
@pytest.mark.parametrize("width", [198, 199, 397])
@pytest.mark.parametrize(("acc", "max_ratio"), [(4, 0.2), (8, 0.7)])
def test_organiser_masks_beat_zero_filled(width: int, acc: int, max_ratio: float) -> None:
    height = 2 * width
    k = simulate(8, height, width)
    mask = snu_mask(width, acc)
    filled = grappa_kspace(k * mask, mask, lamda=PHANTOM_LAMDA)
    np.testing.assert_array_equal(filled[..., mask], k[..., mask])
    assert np.abs(filled[..., ~mask]).min(axis=(0, 1)).min() > 0  # every missing line was filled
    ours, zf = errors(k, mask)
    assert ours <= max_ratio * zf, (ours, zf)


# measured ratios (8 coils, 396x198, seeds 0/1): random lines acc4 0.26/0.17, acc8 0.26/0.35; random offset
# acc4 0.12/0.09, acc8 0.95/0.60. Equispaced acc8 with some offsets (e.g. 0) leaves the columns next to the ACS
# 3-4 lines from any sample and GRAPPA barely beats zero-filling there (open problem, also at 12 coils).
@pytest.mark.parametrize(
    ("maker", "acc", "max_ratio"),
    [
        (random_lines_mask, 4, 0.4),
        (random_lines_mask, 8, 0.5),
        (random_offset_mask, 4, 0.25),
        (random_offset_mask, 8, 0.99),
    ],
)
def test_irregular_masks_beat_zero_filled(maker, acc: int, max_ratio: float) -> None:
    width = 198
    k = simulate(8, 2 * width, width)
    for seed in range(2):
        mask = maker(width, acc, seed)
        filled = grappa_kspace(k * mask, mask, lamda=PHANTOM_LAMDA)
        np.testing.assert_array_equal(filled[..., mask], k[..., mask])
        ours, zf = errors(k, mask)
        assert ours <= max_ratio * zf, (maker.__name__, seed, ours, zf)


@pytest.mark.filterwarnings("ignore::RuntimeWarning:pygrappa")
def test_comparable_to_pygrappa_mdgrappa(capsys: pytest.CaptureFixture[str]) -> None:
    pygrappa = pytest.importorskip("pygrappa")
    # at 396x198 ours 0.015 vs mdgrappa 0.020; with a narrower ACS (W=132: 11 lines, 192 rows) mdgrappa wins
    # (0.0126 vs 0.0195) -- see the module docstring of grappa.py
    width, height = 198, 396
    k = simulate(8, height, width)
    mask = snu_mask(width, 4)
    start, stop = detect_acs(mask)
    crop = crop_of(k)
    target = zero_filled_image(k, crop=crop)

    t0 = time.perf_counter()
    ours_k = grappa_kspace(k * mask, mask, lamda=PHANTOM_LAMDA)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref_k = pygrappa.mdgrappa(
        np.moveaxis(k * mask, 0, -1), calib=np.moveaxis(k[:, :, start:stop], 0, -1), kernel_size=(5, 5)
    )
    t_ref = time.perf_counter() - t0
    ref_k = np.moveaxis(ref_k, -1, 0).astype(np.complex64)

    ours = nrmse(zero_filled_image(ours_k, crop=crop), target)
    ref = nrmse(zero_filled_image(ref_k, crop=crop), target)
    with capsys.disabled():
        print(
            f"\n[grappa vs mdgrappa] NRMSE ours {ours:.4f} mdgrappa {ref:.4f}; time ours {t_ours:.3f}s "
            f"mdgrappa {t_ref:.3f}s (x{t_ref / max(t_ours, 1e-9):.0f})"
        )
    assert ours <= 1.2 * ref, (ours, ref)


# measured ratios at acc4, 264x132: 4 coils 0.34, 20 coils 0.20
@pytest.mark.parametrize("n_coils", [4, 20])
def test_other_coil_counts(n_coils: int) -> None:
    width = 132
    k = simulate(n_coils, 2 * width, width)
    mask = snu_mask(width, 4)
    ours, zf = errors(k, mask)
    assert ours <= 0.5 * zf, (n_coils, ours, zf)


def test_batched_equals_per_slice_and_numpy_equals_torch() -> None:
    width, height = 100, 160
    volume = np.stack([simulate(6, height, width, seed=s) for s in range(3)])
    volume[1] *= 3.0  # different scale per slice: calibration must be per slice
    mask = snu_mask(width, 4)
    batched = grappa_kspace(volume, mask)
    assert batched.shape == volume.shape and batched.dtype == np.complex64
    for s in range(3):
        np.testing.assert_allclose(
            batched[s], grappa_kspace(volume[s], mask), rtol=0, atol=1e-4 * abs(volume[s]).max()
        )
    as_torch = grappa_kspace(torch.from_numpy(volume), torch.from_numpy(mask.astype(np.float32)))
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.complex64
    np.testing.assert_allclose(as_torch.numpy(), batched, rtol=0, atol=1e-4 * abs(volume).max())
    image = grappa_image(torch.from_numpy(volume), mask, crop=(80, 120))
    assert isinstance(image, torch.Tensor) and image.dtype == torch.float32 and image.shape == (3, 80, 120)
    image_np = grappa_image(volume[0], mask)
    assert (
        isinstance(image_np, np.ndarray)
        and image_np.dtype == np.float32
        and image_np.shape == (height, width)
    )


def test_zero_filled_image_shapes_and_values() -> None:
    k = simulate(4, 64, 48)
    image = zero_filled_image(k)
    expected = np.sqrt(
        (
            np.abs(
                np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
            )
            ** 2
        ).sum(0)
    )
    assert image.dtype == np.float32 and image.shape == (64, 48)
    np.testing.assert_allclose(image, expected, rtol=1e-4, atol=1e-6 * expected.max())
    batch = zero_filled_image(torch.from_numpy(np.stack([k, k])), torch.ones(48), crop=(32, 64))
    assert isinstance(batch, torch.Tensor) and batch.shape == (2, 32, 64) and batch.dtype == torch.float32
    mask = snu_mask(48, 4)
    np.testing.assert_allclose(zero_filled_image(k, mask), zero_filled_image(k * mask), rtol=1e-6)


def test_narrow_acs_and_patterns() -> None:
    mask = snu_mask(198, 8)
    start, stop = detect_acs(mask)
    assert mask[start:stop].all() and start <= 99 < stop and stop - start >= 16
    patterns = plan_patterns(mask, (start, stop), 2)
    covered = np.sort(np.concatenate([p.targets for p in patterns]))
    np.testing.assert_array_equal(covered, np.flatnonzero(~mask))
    for p in patterns:  # sources were dropped where the 16-line ACS is too narrow for 2 per side
        span = max(p.offsets.max(), 0) - min(p.offsets.min(), 0)
        assert span <= (stop - start) - 4
    # a gap wider than the ACS allows: the columns far from any sampled line stay zero
    wide = np.zeros(120, dtype=bool)
    wide[55:63] = True
    wide[[0, 119]] = True
    k = simulate(4, 64, 120)
    filled = grappa_kspace(k * wide, wide)
    assert np.all(filled[..., 20] == 0) and np.all(filled[..., 54] != 0)


def test_bad_inputs() -> None:
    k = simulate(4, 64, 48)
    mask = snu_mask(48, 4)
    with pytest.raises(ValueError, match="mask has 47 entries"):
        grappa_kspace(k, mask[:-1])
    no_acs = np.zeros(48, dtype=bool)
    no_acs[::4] = True
    with pytest.raises(ValueError, match="no ACS block"):
        grappa_kspace(k, no_acs)
    with pytest.raises(ValueError, match="no sampled lines"):
        grappa_kspace(k, np.zeros(48))
    with pytest.raises(ValueError, match="must be complex"):
        grappa_kspace(np.abs(k), mask)
    with pytest.raises(ValueError, match="must be a complex tensor"):
        grappa_kspace(torch.from_numpy(np.abs(k)), mask)
    with pytest.raises(ValueError, match="shape"):
        grappa_kspace(k[0, 0], mask)
    with pytest.raises(ValueError, match="unsampled"):
        grappa_kspace(k, mask, acs=(0, 10))
    with pytest.raises(ValueError, match="must be complex"):
        zero_filled_image(np.abs(k))
