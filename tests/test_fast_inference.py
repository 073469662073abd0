"""Fast inference paths of ``reconstruct``: batches, loader workers, half precision (autocast), their accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import tiny_varnet_checkpoint
from kspacelab import formats, physics
from kspacelab.cli import main
from kspacelab.data.dataset import SliceDataset
from kspacelab.data.transforms import SliceTransform
from kspacelab.evaluation import evaluate_leaderboard
from kspacelab.inference import ReconOptions, reconstruct_with_checkpoint, validated_volumes, volume_batches
from kspacelab.models.base import InputSpec

#: accuracy of the half-precision paths against float32 (tiny VarNet on the tiny data; measured 9e-5 and 1.3e-5
#: leaderboard SSIM, 3.5 % and 0.36 % of the volume maximum per pixel)
TOLERANCE = {"bf16": {"ssim": 5e-4, "pixel": 0.08}, "16": {"ssim": 1e-4, "pixel": 0.01}}


@pytest.fixture(scope="module")
def float32_run(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(checkpoint, output)`` of a one-slice-at-a-time float32 run on the tiny leaderboard."""
    folder = tmp_path_factory.mktemp("fast")
    ckpt = tiny_varnet_checkpoint(folder / "model.ckpt")
    out = folder / "rec32"
    reconstruct_with_checkpoint(tiny_root / "leaderboard", out, ckpt, ReconOptions(progress=False))
    return ckpt, out


def _volumes(folder: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(folder)): formats.read_reconstruction(p) for p in sorted(folder.rglob("*.h5"))}


def test_batches_and_loader_workers_give_the_same_files(
    tiny_root: Path, tmp_path: Path, float32_run: tuple[Path, Path]
) -> None:
    ckpt, reference = float32_run
    options = ReconOptions(progress=False, batch_size=3, loader_workers=2)
    reconstruct_with_checkpoint(tiny_root / "leaderboard", tmp_path / "rec", ckpt, options)
    ours, theirs = _volumes(tmp_path / "rec"), _volumes(reference)
    assert ours.keys() == theirs.keys() and len(ours) == 4
    for name, volume in ours.items():
        np.testing.assert_allclose(volume, theirs[name], rtol=1e-5, atol=1e-6 * float(theirs[name].max()))


@pytest.mark.parametrize("precision", ["bf16", "16"])
def test_half_precision_is_within_the_stated_tolerance(
    tiny_root: Path, tmp_path: Path, float32_run: tuple[Path, Path], precision: str
) -> None:
    ckpt, reference = float32_run
    out = tmp_path / precision
    summary = reconstruct_with_checkpoint(
        tiny_root / "leaderboard", out, ckpt, ReconOptions(progress=False, precision=precision)
    )
    assert summary.timing is not None and summary.timing["precision"] == precision
    ours, theirs = _volumes(out), _volumes(reference)
    for name, volume in ours.items():
        assert volume.dtype == np.float32
        worst = float(np.abs(volume - theirs[name]).max()) / float(np.abs(theirs[name]).max())
        assert 0 < worst < TOLERANCE[precision]["pixel"], (name, worst)  # 0 would mean autocast did nothing
    board = tiny_root / "leaderboard"
    half, full = (
        evaluate_leaderboard(board, out, progress=False),
        evaluate_leaderboard(board, reference, progress=False),
    )
    for a, b in zip(half.per_volume, full.per_volume, strict=True):
        assert abs(a.ssim - b.ssim) < TOLERANCE[precision]["ssim"], (a.name, a.ssim, b.ssim)


def test_ffts_of_half_precision_input_run_in_float32() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 16, 12, 2)
    for dtype in (torch.bfloat16, torch.float16):
        half = x.to(dtype)
        k = physics.fft2c(half)
        assert k.dtype == torch.float32
        torch.testing.assert_close(k, physics.fft2c(half.float()))
        assert physics.ifft2c(half).dtype == torch.float32


def test_volume_batches_never_cross_volumes(tiny_root: Path) -> None:
    volumes = [vol for _, vol in validated_volumes(tiny_root / "leaderboard")]
    dataset = SliceDataset(volumes, SliceTransform(InputSpec(), use_file_mask=True, inference=True))
    for size in (1, 2, 3, 64):
        batches = volume_batches(dataset, size)
        assert [i for b in batches for i in b] == list(range(len(dataset)))
        for batch in batches:
            assert 1 <= len(batch) <= size
            assert len({dataset.items[i][0] for i in batch}) == 1
            # a volume's last slice ends a batch (the volume is written there)
            v, s = dataset.items[batch[-1]]
            nxt = batch[-1] + 1
            assert s == dataset.volumes[v].num_slices - 1 or (
                nxt < len(dataset) and dataset.items[nxt][0] == v
            )


def test_fast_path_options_are_checked(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["reconstruct", "--data", str(tiny_root / "leaderboard"), "--out", str(tmp_path / "rec")]
    assert main([*argv, "--method", "grappa", "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--precision" in err
    with pytest.raises(SystemExit):
        main([*argv, "--checkpoint", "x.ckpt", "--precision", "8"])
    capsys.readouterr()
    ckpt = tiny_varnet_checkpoint(tmp_path / "m.ckpt")
    assert main([*argv, "--checkpoint", str(ckpt), "--loader-workers", "-1"]) == 2
    assert "--loader-workers" in capsys.readouterr().err
    assert not (tmp_path / "rec").exists()
    assert main([*argv, "--checkpoint", str(ckpt), "--precision", "16", "--batch-size", "2", "--quiet"]) == 0
    report = json.loads((tmp_path / "rec" / "timing.json").read_text())
    assert report["precision"] == "16" and report["batch_size"] == 2
