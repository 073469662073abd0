"""`kspacelab reconstruct` with classical methods: output layout, sizes, and bad inputs."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from kspacelab import formats, physics
from kspacelab.cli import main
from kspacelab.masks import snu_mask

H, W, COILS, SLICES, CROP = 48, 40, 4, 2, 32


def _kspace(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.zeros((SLICES, COILS, H, W), np.complex64)
    yy, xx = np.mgrid[:H, :W]
    blob = ((yy - H / 2) ** 2 / (H / 4) ** 2 + (xx - W / 2) ** 2 / (W / 3) ** 2) < 1
    for c in range(COILS):
        sens = np.exp(-((yy - H * c / COILS) ** 2 + (xx - W / 2) ** 2) / (H * W / 2))
        image[:, c] = blob * sens * (1 + 0.1 * rng.standard_normal((SLICES, H, W)))
    return physics.fft2c(torch.from_numpy(image * 1e-3)).numpy().astype(np.complex64)


def _write_group(root: Path, acc: int, names: list[str], with_images: bool = True) -> None:
    mask = snu_mask(W, acc).astype(np.float32)
    for i, name in enumerate(names):
        kspace = _kspace(seed=acc * 10 + i)
        formats.write_kspace_file(root / f"acc{acc}" / "kspace" / name, kspace * mask, mask)
        if with_images:
            label = np.ones((SLICES, CROP, CROP), np.float32)
            formats.write_image_file(root / f"acc{acc}" / "image" / name, label, label, label)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("method", ["zero-filled", "grappa"])
def test_reconstruct_leaderboard_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str
) -> None:
    names = ["brain_test1.h5", "knee_test1.h5"]
    for acc in (4, 8):
        _write_group(tmp_path / "lb", acc, names)
    code, out, _ = _run(
        [
            "reconstruct",
            "--data",
            str(tmp_path / "lb"),
            "--out",
            str(tmp_path / "rec"),
            "--method",
            method,
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, out
    assert "slices/s" in out
    for acc in (4, 8):
        for name in names:
            recon = formats.read_reconstruction(tmp_path / "rec" / f"acc{acc}" / name)
            assert recon.shape == (SLICES, CROP, CROP) and recon.dtype == np.float32
    # zero-filled output is the RSS of the undersampled k-space, centre-cropped
    if method == "zero-filled":
        kspace = h5py.File(tmp_path / "lb" / "acc4" / "kspace" / "knee_test1.h5")["kspace"][()]
        expected = physics.center_crop(
            physics.rss_complex(physics.ifft2c(torch.from_numpy(kspace)), 1), (CROP, CROP)
        )
        recon = formats.read_reconstruction(tmp_path / "rec" / "acc4" / "knee_test1.h5")
        np.testing.assert_allclose(recon, expected.numpy(), rtol=1e-5, atol=1e-9)


def test_reconstruct_without_images_uses_384_and_crop_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_group(tmp_path / "lb", 4, ["knee_test3.h5"], with_images=False)
    folder = tmp_path / "lb" / "acc4"
    code, _, _ = _run(
        [
            "reconstruct",
            "--data",
            str(folder),
            "--out",
            str(tmp_path / "a"),
            "--method",
            "zero-filled",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0
    assert formats.read_reconstruction(tmp_path / "a" / "knee_test3.h5").shape == (SLICES, 384, 384)
    code, _, _ = _run(
        [
            "reconstruct",
            "--data",
            str(folder),
            "--out",
            str(tmp_path / "b"),
            "--method",
            "zero-filled",
            "--crop",
            "20",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0
    assert formats.read_reconstruction(tmp_path / "b" / "knee_test3.h5").shape == (SLICES, 20, 20)


@pytest.mark.parametrize("problem", ["no_mask", "mask_length", "real_kspace", "nan", "truncated"])
def test_bad_kspace_file_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
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
            elif problem != "no_mask":
                f["mask"] = snu_mask(W, 4).astype(np.float32)
    code, _, err = _run(
        [
            "reconstruct",
            "--data",
            str(tmp_path / "lb"),
            "--out",
            str(tmp_path / "rec"),
            "--method",
            "grappa",
            "--quiet",
        ],
        capsys,
    )
    assert code == 2
    assert "brain_test2.h5" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "rec").exists() or not any((tmp_path / "rec").rglob("*.h5"))


def test_unknown_method_and_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["reconstruct", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--method", "magic"])
    assert exc.value.code == 2
    capsys.readouterr()
    code, _, err = _run(
        [
            "reconstruct",
            "--data",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "o"),
            "--method",
            "grappa",
        ],
        capsys,
    )
    assert code == 2 and "missing" in err


def test_grappa_without_calibration_block_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mask = np.zeros(W, np.float32)
    mask[::4] = 1  # equispaced lines only: no ACS block to calibrate on
    formats.write_kspace_file(tmp_path / "lb" / "kspace" / "brain_test1.h5", _kspace(1) * mask, mask)
    code, _, err = _run(
        [
            "reconstruct",
            "--data",
            str(tmp_path / "lb"),
            "--out",
            str(tmp_path / "rec"),
            "--method",
            "grappa",
            "--quiet",
        ],
        capsys,
    )
    assert code == 2 and "brain_test1.h5" in err and "ACS" in err
    assert not any((tmp_path / "rec").rglob("*.h5")) if (tmp_path / "rec").exists() else True


@pytest.mark.parametrize("width", [8, 9, 396, 397])
@pytest.mark.parametrize("real_view", [False, True])
def test_flip_width_kspace_is_the_image_flip(width: int, real_view: bool) -> None:
    """k-space flip for TTA == fft2c(flip_W(ifft2c(k))), and the mask moves with the sampled lines."""
    from kspacelab.physics import flip_width_kspace

    g = torch.Generator().manual_seed(width)
    image = torch.complex(
        torch.randn(1, 3, 10, width, generator=g), torch.randn(1, 3, 10, width, generator=g)
    )
    line = torch.rand(width, generator=g) > 0.5
    kspace = physics.fft2c(image) * line
    expected = physics.fft2c(physics.ifft2c(kspace).flip(-1))
    if real_view:
        flipped, flipped_mask = flip_width_kspace(torch.view_as_real(kspace), line.view(1, 1, 1, width, 1))
        flipped = torch.view_as_complex(flipped)
        flipped_line = flipped_mask.view(width)
    else:
        flipped, flipped_mask = flip_width_kspace(kspace, line.view(1, 1, 1, width))
        flipped_line = flipped_mask.view(width)
    torch.testing.assert_close(flipped, expected, rtol=1e-5, atol=1e-5)
    assert torch.all(expected[..., ~flipped_line].abs() < 1e-5)
    assert flipped_line.sum() == line.sum()
