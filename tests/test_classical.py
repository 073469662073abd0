"""Tests for SENSE and L1-wavelet CS with ESPIRiT maps (kspacelab.classical.sense / cs / espirit).

Phantom: the smooth ellipse phantom with birdcage coils of ``tests/test_grappa.py`` (0.5 % noise, object in the
central half of the 2x oversampled readout); realistic slices: the simulator at the TINY geometry.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import TINY
from kspacelab import formats, metrics
from kspacelab.classical import (
    EspiritConfig,
    cs_image,
    espirit_maps,
    grappa_image,
    sense_image,
    zero_filled_image,
)
from kspacelab.classical.cs import daubechies_filter, wavelet_forward, wavelet_inverse, wavelet_shrink
from kspacelab.data.synthetic import simulate_volume, volume_rng
from kspacelab.masks import snu_mask
from kspacelab.physics import ifft2c
from test_grappa import simulate
from test_reconstruct import SLICES, W, _kspace, _run, _write_group

METHODS: dict[str, Callable[..., np.ndarray]] = {"sense": sense_image, "cs": cs_image}


def nrmse(recon: np.ndarray, target: np.ndarray) -> float:
    return float(np.linalg.norm(recon - target) / np.linalg.norm(target))


def object_crop(k: np.ndarray) -> tuple[int, int]:
    """The phantom's object region: the central half of the readout, all columns."""
    return (k.shape[-2] // 2, k.shape[-1])


# ------------------------------------------------------------------------------------------------ wavelets
@pytest.mark.parametrize("moments", [1, 2, 4, 6])
def test_daubechies_filters_are_orthonormal(moments: int) -> None:
    h = daubechies_filter(moments)
    assert h.size == 2 * moments
    np.testing.assert_allclose(h.sum(), np.sqrt(2.0), rtol=1e-12)
    for shift in range(moments):
        expected = 1.0 if shift == 0 else 0.0
        np.testing.assert_allclose(np.dot(h[: h.size - 2 * shift], h[2 * shift :]), expected, atol=1e-10)
    if moments == 2:  # the closed form of D4 (time-reversed order)
        s3 = np.sqrt(3.0)
        d4 = np.array([1 - s3, 3 - s3, 3 + s3, 1 + s3]) / (4 * np.sqrt(2.0))
        np.testing.assert_allclose(h, d4, atol=1e-12)


def test_wavelet_transform_is_orthogonal_and_shrink_keeps_shapes() -> None:
    x = torch.randn(3, 64, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    approx, details = wavelet_forward(x, 3, 4)
    np.testing.assert_allclose(wavelet_inverse(approx, details, 4).numpy(), x.numpy(), atol=1e-12)
    energy = (approx**2).sum() + sum(
        (d**2).sum() - (d[:, 0, 0] ** 2).sum() for d in details
    )  # [0, 0]: unused
    np.testing.assert_allclose(float(energy), float((x**2).sum()), rtol=1e-12)
    image = torch.randn(2, 37, 29, dtype=torch.complex64, generator=torch.Generator().manual_seed(1))
    same = wavelet_shrink(image, torch.zeros(2), 3, 2, (5, 3))  # zero threshold: identity
    assert same.shape == image.shape
    torch.testing.assert_close(same, image, rtol=1e-5, atol=1e-5)
    shrunk = wavelet_shrink(image, torch.full((2,), 1e3), 3, 2, (0, 0))  # only the approximation is left
    assert float(shrunk.abs().sum()) < float(image.abs().sum())


# ------------------------------------------------------------------------------------------------ ESPIRiT
def test_espirit_maps_match_sigpy() -> None:
    """Our maps equal sigpy's EspiritCalib maps up to a phase per pixel on the object (sigpy as an oracle)."""
    sigpy_mri = pytest.importorskip("sigpy.mri")
    height, width = 96, 64
    k = simulate(8, height, width)
    maps, eig = espirit_maps(
        torch.from_numpy(k)[None],
        (width // 2 - 12, width // 2 + 12),
        EspiritConfig(eig_crop=0.0, iterations=30),
        True,
    )
    ref = np.asarray(sigpy_mri.app.EspiritCalib(k, calib_width=24, crop=0.0, show_pbar=False).run())
    rss = zero_filled_image(k)
    foreground = rss > 0.2 * rss.max()
    inner = np.abs((maps[0].numpy().conj() * ref).sum(0))
    assert inner[foreground].min() > 0.999, inner[foreground].min()
    assert float(eig[0][torch.from_numpy(foreground)].min()) > 0.99
    norms = np.sqrt((np.abs(maps[0].numpy()) ** 2).sum(0))
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_espirit_eigenvalue_crop_zeroes_the_background() -> None:
    k = simulate(8, 96, 64)
    config = EspiritConfig(eig_crop=0.9)
    maps, eig = espirit_maps(torch.from_numpy(k)[None], (20, 44), config, return_eigenvalues=True)
    kept = maps[0].abs().sum(0) > 0
    assert torch.equal(kept, eig[0] >= 0.9)
    assert 0 < float(kept.float().mean()) < 1


# ------------------------------------------------------------------------------------------------ accuracy
@pytest.mark.parametrize("method", METHODS)
def test_fully_sampled_is_exact(method: str) -> None:
    """Fully sampled: the output is the label (RSS of the coil images) up to float32 rounding (measured NRMSE
    9e-8). With ``data_consistency=False`` the magnitude |x| is within 0.2 % on the object (measured 0.03 % SENSE,
    0.05 % CS; it drops the noise orthogonal to the maps) and 0 where the eigenvalue crop removed the maps."""
    k = simulate(6, 96, 64)
    for crop in ((48, 40), None):
        out = METHODS[method](k, np.ones(64), crop=crop, iterations=3)
        expected = zero_filled_image(k, crop=crop)
        assert out.shape == expected.shape and out.dtype == np.float32
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5 * expected.max())
    magnitude = METHODS[method](k, np.ones(64), crop=(48, 64), iterations=3, data_consistency=False)
    label = zero_filled_image(k, crop=(48, 64))
    on_object = label > 0.1 * label.max()
    assert nrmse(magnitude[on_object], label[on_object]) < 0.002


# NRMSE ratio method / zero-filled at acc4 (object region), measured SENSE / CS: 4 coils W=132 0.117 / 0.082,
# 20 coils W=132 0.106 / 0.074, 8 coils W=131 0.103 / 0.090, W=133 0.109 / 0.073 (ACS 10-11 lines)
@pytest.mark.parametrize(
    ("n_coils", "width", "max_ratio"),
    [(4, 132, 0.2), (20, 132, 0.2), (8, 131, 0.2), (8, 133, 0.2)],
)
@pytest.mark.parametrize("method", METHODS)
def test_coils_and_odd_widths_beat_zero_filled(
    method: str, n_coils: int, width: int, max_ratio: float
) -> None:
    k = simulate(n_coils, 2 * width, width)
    mask = snu_mask(width, 4)
    crop = object_crop(k)
    target = zero_filled_image(k, crop=crop)
    ours = METHODS[method](k * mask, mask, crop=crop)
    assert ours.shape == target.shape
    ratio = nrmse(ours, target) / nrmse(zero_filled_image(k, mask, crop=crop), target)
    assert ratio < max_ratio, ratio


@pytest.fixture(scope="module")
def tiny_acc4_slices() -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, float]]:
    """One realistic simulated acc4 slice per anatomy at the TINY geometry: (anatomy, k, mask, label, max)."""
    out = []
    for anatomy in ("brain", "knee"):
        vol = simulate_volume(anatomy, 4, volume_rng(0, "val", f"{anatomy}_acc4_1"), TINY)  # type: ignore[arg-type]
        out.append(
            (
                anatomy,
                vol.undersampled_kspace[:1],
                vol.mask,
                vol.image_label[:1],
                float(vol.image_label.max()),
            )
        )
    return out


def test_realistic_acc4_slice_beats_zero_filled(tiny_acc4_slices, capsys: pytest.CaptureFixture[str]) -> None:
    """Leaderboard SSIM on a simulated brain and knee-class acc4 slice: SENSE, CS (and GRAPPA) > zero-filled."""
    methods = {"zero-filled": zero_filled_image, "grappa": grappa_image, **METHODS}
    for anatomy, k, mask, label, max_value in tiny_acc4_slices:
        crop = label.shape[-2:]
        scores = {
            name: float(metrics.leaderboard_ssim_volume(fn(k, mask, crop=crop), label, max_value, anatomy)[0])
            for name, fn in methods.items()
        }
        with capsys.disabled():
            print(f"\n[{anatomy} acc4 TINY] " + ", ".join(f"{n} {s:.4f}" for n, s in scores.items()))
        for name in ("grappa", "sense", "cs"):
            assert scores[name] > scores["zero-filled"], (anatomy, scores)


def test_batched_equals_per_slice_and_types() -> None:
    volume = np.stack([simulate(6, 128, 80, seed=s) for s in range(2)])
    volume[1] *= 5.0  # scale per slice: maps, CG and the CS threshold are per slice
    mask = snu_mask(80, 4)
    for method, fn in METHODS.items():
        batched = fn(volume * mask, mask, crop=(64, 64))
        assert (
            isinstance(batched, np.ndarray) and batched.shape == (2, 64, 64) and batched.dtype == np.float32
        )
        for s in range(2):
            np.testing.assert_allclose(
                batched[s], fn(volume[s] * mask, mask, crop=(64, 64)), rtol=0, atol=1e-4 * batched[s].max()
            )
        as_torch = fn(torch.from_numpy(volume), torch.from_numpy(mask), crop=(64, 64))
        assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.float32, method
        np.testing.assert_allclose(as_torch.numpy(), batched, rtol=0, atol=1e-4 * batched.max())
    again = cs_image(volume * mask, mask, crop=(64, 64))
    np.testing.assert_array_equal(again, cs_image(volume * mask, mask, crop=(64, 64)))  # deterministic


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("method", METHODS)
def test_bad_inputs(method: str) -> None:
    fn = METHODS[method]
    k = simulate(4, 64, 48)
    mask = snu_mask(48, 4)
    with pytest.raises(ValueError, match="mask has 47 entries"):
        fn(k, mask[:-1])
    no_acs = np.zeros(48, dtype=bool)
    no_acs[::4] = True
    with pytest.raises(ValueError, match="no ACS block"):
        fn(k, no_acs)
    with pytest.raises(ValueError, match="no sampled lines"):
        fn(k, np.zeros(48))
    with pytest.raises(ValueError, match="must be complex"):
        fn(np.abs(k), mask)
    with pytest.raises(ValueError, match="must be a complex tensor"):
        fn(torch.from_numpy(np.abs(k)), mask)
    with pytest.raises(ValueError, match="shape"):
        fn(k[0, 0], mask)
    bad = k.copy()
    bad[1, 3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fn(bad, mask)
    with pytest.raises(ValueError, match="lamda"):
        fn(k, mask, lamda=-1.0)
    with pytest.raises(ValueError, match="iterations"):
        fn(k, mask, iterations=0)
    with pytest.raises(ValueError, match="threshold"):
        EspiritConfig(threshold=0.0)


# ------------------------------------------------------------------------------------------------ command line
@pytest.mark.parametrize("method", METHODS)
def test_reconstruct_command(tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str) -> None:
    """`kspacelab reconstruct --method sense|cs` on a tiny leaderboard (3-line ACS: the kernel shrinks to it)."""
    names = ["brain_test1.h5", "knee_test1.h5"]
    for acc in (4, 8):
        _write_group(tmp_path / "lb", acc, names)
    argv = ["reconstruct", "--data", str(tmp_path / "lb"), "--out", str(tmp_path / "rec"), "--method", method]
    code, out, _ = _run([*argv, "--quiet"], capsys)
    assert code == 0, out
    assert "slices/s" in out
    for acc in (4, 8):
        for name in names:
            recon = formats.read_reconstruction(tmp_path / "rec" / f"acc{acc}" / name)
            assert recon.shape == (SLICES, 32, 32) and recon.dtype == np.float32
            assert np.isfinite(recon).all() and recon.max() > 0


@pytest.mark.parametrize("problem", ["no_mask", "mask_length", "real_kspace", "nan", "truncated", "no_acs"])
@pytest.mark.parametrize("method", METHODS)
def test_reconstruct_bad_file_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str, problem: str
) -> None:
    import h5py

    _write_group(tmp_path / "lb", 4, ["brain_test1.h5", "brain_test2.h5"])
    bad = tmp_path / "lb" / "acc4" / "kspace" / "brain_test2.h5"
    kspace = _kspace(seed=99)
    if problem == "truncated":
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:
        with h5py.File(bad, "w") as f:
            if problem == "real_kspace":
                f["kspace"] = kspace.real
            elif problem == "nan":
                kspace[1, 0, 3, 3] = np.nan
                f["kspace"] = kspace
            else:
                f["kspace"] = kspace
            if problem == "mask_length":
                f["mask"] = np.ones(W + 2, np.float32)
            elif problem == "no_acs":
                equispaced = np.zeros(W, np.float32)
                equispaced[::4] = 1
                f["mask"] = equispaced
            elif problem != "no_mask":
                f["mask"] = snu_mask(W, 4).astype(np.float32)
    argv = ["reconstruct", "--data", str(tmp_path / "lb"), "--out", str(tmp_path / "rec"), "--method", method]
    code, _, err = _run([*argv, "--quiet"], capsys)
    assert code == 2
    assert "brain_test2.h5" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    if problem == "no_acs":
        assert "ACS" in err
    assert not (tmp_path / "rec").exists() or not any((tmp_path / "rec").rglob("*.h5"))


def test_maps_follow_the_readout_crop() -> None:
    """Reconstructing the readout-cropped problem equals cropping the zero-filled image on full data: the crop
    keeps exactly the centre rows (what the learned models see)."""
    k = simulate(4, 96, 48)
    full = ifft2c(torch.from_numpy(k)).abs().square().sum(0).sqrt().numpy()
    out = sense_image(k, np.ones(48), crop=(40, 48))
    np.testing.assert_allclose(out, full[28:68], rtol=1e-4, atol=1e-5 * full.max())


def test_reconstruct_workers_match_one_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--workers 2` (spawned processes) writes the same files as one process."""
    for acc in (4, 8):
        _write_group(tmp_path / "lb", acc, ["brain_test1.h5"])
    for workers in ("1", "2"):
        argv = [
            "reconstruct",
            "--data",
            str(tmp_path / "lb"),
            "--out",
            str(tmp_path / workers),
            "--method",
            "sense",
        ]
        code, out, _ = _run([*argv, "--workers", workers, "--quiet"], capsys)
        assert code == 0, out
    for acc in (4, 8):
        one = formats.read_reconstruction(tmp_path / "1" / f"acc{acc}" / "brain_test1.h5")
        two = formats.read_reconstruction(tmp_path / "2" / f"acc{acc}" / "brain_test1.h5")
        np.testing.assert_array_equal(one, two)
    code, _, err = _run(
        [
            "reconstruct",
            "--data",
            str(tmp_path / "lb"),
            "--out",
            str(tmp_path / "x"),
            "--checkpoint",
            str(tmp_path / "none.ckpt"),
            "--workers",
            "2",
        ],
        capsys,
    )
    assert code == 2 and "--workers applies to --method" in err
