"""Synthetic SNU-layout datasets: layout, physics consistency, intensity scale, determinism."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from helpers import TINY
from kspacelab.data.synthetic import (
    PRESETS,
    Anatomy,
    simulate_dataset,
    simulate_volume,
    volume_rng,
)
from kspacelab.errors import KspacelabError
from kspacelab.masks import snu_mask
from kspacelab.metrics import FOREGROUND_THRESHOLDS, foreground_mask, leaderboard_ssim_volume
from kspacelab.physics import center_crop, ifft2c, rss_complex


def _expected_files(n_train: int, n_val: int, n_lb: int) -> set[str]:
    names = set()
    for kind in ("image", "kspace"):
        for anatomy in ("brain", "knee"):
            for acc in (4, 8):
                names |= {f"train/{kind}/{anatomy}_acc{acc}_{i}.h5" for i in range(1, n_train + 1)}
                names |= {
                    f"val/{kind}/{anatomy}_acc{acc}_{i}.h5" for i in range(n_train + 1, n_train + n_val + 1)
                }
                names |= {f"leaderboard/acc{acc}/{kind}/{anatomy}_test{i}.h5" for i in range(1, n_lb + 1)}
    return names


def _read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {key: f[key][()] for key in f}


def _rss_crop(kspace: np.ndarray, crop: int) -> np.ndarray:
    return center_crop(rss_complex(ifft2c(torch.from_numpy(kspace)), dim=1), (crop, crop)).numpy()


def _nrmse(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "data"
    summary = simulate_dataset(out, TINY, seed=0, progress=False)
    assert summary.files == {"train": 8, "val": 8, "leaderboard": 8}
    assert summary.volumes == {"train": 4, "val": 4, "leaderboard": 4}
    assert summary.out_dir == out and summary.seconds > 0
    return out


def _files(root: Path, kind: str) -> list[Path]:
    return sorted(root.rglob(f"{kind}/*.h5"))


def test_presets() -> None:
    snu, demo = PRESETS["snu"], PRESETS["demo"]
    assert (snu.brain_height, snu.knee_height, snu.crop) == (768, 640, 384)
    assert set(snu.brain_widths) == {392, 396} and snu.knee_widths == (320, 480)
    assert min(snu.brain_coils) == 4 and max(snu.brain_coils) == 20 and snu.knee_coils == (15,)
    assert (demo.brain_height, demo.knee_height, demo.crop) == (384, 320, 192)
    assert (demo.train_volumes, demo.val_volumes, demo.leaderboard_volumes) == (5, 2, 2)


def test_layout_and_names(dataset: Path) -> None:
    found = {p.relative_to(dataset).as_posix() for p in dataset.rglob("*") if p.is_file()}
    assert found == _expected_files(1, 1, 1)


def test_kspace_files(dataset: Path) -> None:
    for path in _files(dataset, "kspace"):
        data = _read(path)
        kspace, mask = data["kspace"], data["mask"]
        anatomy = path.name.split("_")[0]
        acc = int(path.parts[-3][3:]) if "leaderboard" in path.parts else int(path.name.split("_")[1][3:])
        assert kspace.dtype == np.complex64 and kspace.ndim == 4
        height = TINY.brain_height if anatomy == "brain" else TINY.knee_height
        assert kspace.shape[2] == height and kspace.shape[1] == 6 and kspace.shape[0] == 2
        assert mask.dtype == np.float32 and mask.shape == (kspace.shape[-1],)
        np.testing.assert_array_equal(mask.astype(bool), snu_mask(kspace.shape[-1], acc))
        column_energy = (np.abs(kspace) ** 2).sum(axis=(0, 1, 2))
        if "leaderboard" in path.parts:
            assert np.all(kspace[..., ~mask.astype(bool)] == 0)
            assert np.all(column_energy[mask.astype(bool)] > 0)
        else:
            assert np.all(column_energy > 0)  # fully sampled


def test_image_files_match_kspace(dataset: Path) -> None:
    for image_path in _files(dataset, "image"):
        images = _read(image_path)
        data = _read(image_path.parents[1] / "kspace" / image_path.name)
        kspace, mask = data["kspace"], data["mask"]
        label, zero_filled, grappa = images["image_label"], images["image_input"], images["image_grappa"]
        for a in (label, zero_filled, grappa):
            assert a.dtype == np.float32 and a.shape == (kspace.shape[0], TINY.crop, TINY.crop)
        scale = float(label.max())
        expected_input = _rss_crop(kspace * mask.astype(np.complex64), TINY.crop)
        np.testing.assert_allclose(zero_filled, expected_input, rtol=1e-5, atol=1e-6 * scale)
        if "leaderboard" not in image_path.parts:
            np.testing.assert_allclose(label, _rss_crop(kspace, TINY.crop), rtol=1e-5, atol=1e-6 * scale)
        # a real GRAPPA reconstruction: neither the label nor the zero-filled image (quality: see below)
        assert _nrmse(grappa, label) > 1e-3 and _nrmse(grappa, zero_filled) > 1e-3


def test_attrs_and_intensity_range(dataset: Path) -> None:
    for path in _files(dataset, "image"):
        with h5py.File(path, "r") as f:
            label = f["image_label"][()]
            max_attr, norm_attr = float(f.attrs["max"]), float(f.attrs["norm"])
        anatomy: Anatomy = "brain" if path.name.startswith("brain") else "knee"
        lo, hi = TINY.max_range(anatomy)
        assert max_attr == pytest.approx(float(label.max()), rel=1e-6)
        assert lo <= max_attr <= hi
        assert norm_attr == pytest.approx(float(np.linalg.norm(label.astype(np.float64))), rel=1e-5)


@pytest.mark.parametrize("anatomy", ["brain", "knee"])
def test_demo_geometry_foreground_and_grappa(anatomy: Anatomy) -> None:
    volume = simulate_volume(anatomy, 4, volume_rng(3, "train", f"{anatomy}_acc4_1"), "demo")
    label = volume.image_label
    # at acc4 with the demo's ACS width GRAPPA beats zero filling in the leaderboard SSIM (the tiny test
    # preset's ACS is too narrow for a fair comparison)
    max_value = float(label.max())
    ssim_grappa = leaderboard_ssim_volume(volume.image_grappa, label, max_value, anatomy).mean()
    ssim_zero_filled = leaderboard_ssim_volume(volume.image_input, label, max_value, anatomy).mean()
    assert ssim_grappa > ssim_zero_filled
    lo, hi = PRESETS["demo"].max_range(anatomy)
    assert lo <= float(label.max()) <= hi
    fractions = [float(foreground_mask(s, anatomy).mean()) for s in label]
    assert 0.2 <= float(np.mean(fractions)) <= 0.8, fractions
    # background (outermost columns, air around the anatomy) stays below the leaderboard threshold
    border = np.concatenate([label[:, :, :4], label[:, :, -4:]], axis=-1)
    assert float((border > FOREGROUND_THRESHOLDS[anatomy]).mean()) < 0.01


def test_deterministic(dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    simulate_dataset(again, TINY, seed=0, progress=False)
    for path in sorted(dataset.rglob("*.h5")):
        first, second = _read(path), _read(again / path.relative_to(dataset))
        assert first.keys() == second.keys()
        for key in first:
            np.testing.assert_array_equal(first[key], second[key], err_msg=f"{path}:{key}")
    # a volume depends only on (seed, split, name): regenerating one alone gives the stored k-space
    alone = simulate_volume("brain", 8, volume_rng(0, "val", "brain_acc8_2"), TINY)
    np.testing.assert_array_equal(alone.kspace, _read(dataset / "val/kspace/brain_acc8_2.h5")["kspace"])
    other = simulate_volume("brain", 8, volume_rng(1, "val", "brain_acc8_2"), TINY)
    assert other.kspace.shape != alone.kspace.shape or not np.array_equal(other.kspace, alone.kspace)
    lb4 = _read(dataset / "leaderboard/acc4/image/brain_test1.h5")["image_label"]
    lb8 = _read(dataset / "leaderboard/acc8/image/brain_test1.h5")["image_label"]
    assert lb4.shape != lb8.shape or not np.array_equal(lb4, lb8)  # different scans per acceleration


def test_refuses_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "note.txt").write_text("keep me")
    with pytest.raises(KspacelabError, match="not empty"):
        simulate_dataset(tmp_path, TINY, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["note.txt"]
    with pytest.raises(KspacelabError, match="unknown preset"):
        simulate_dataset(tmp_path / "new", "nope", progress=False)
    with pytest.raises(KspacelabError, match="seed"):
        simulate_dataset(tmp_path / "new", TINY, seed=-1, progress=False)
