"""Leaderboard scoring of folders: pooling rule, errors that name the file, JSON output, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kspacelab import formats, metrics
from kspacelab.cli import main
from kspacelab.evaluation import evaluate_leaderboard

SIZE = 32


def _target(rng: np.random.Generator, slices: int, anatomy: str) -> np.ndarray:
    """A blob of anatomy-scale intensity on a dark background."""
    scale = 5e-4 if anatomy == "brain" else 1.2e-4
    yy, xx = np.mgrid[:SIZE, :SIZE]
    blob = ((yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2 < (SIZE / 3) ** 2).astype(np.float32)
    vol = np.stack([blob * (0.6 + 0.4 * rng.random((SIZE, SIZE))) for _ in range(slices)])
    return (vol * scale).astype(np.float32)


def _make_leaderboard(root: Path, spec: dict[str, dict[str, int]], seed: int = 0) -> dict[str, np.ndarray]:
    """Write ``root/accX/image/NAME.h5`` targets; returns name -> target volume."""
    rng = np.random.default_rng(seed)
    targets = {}
    for group, volumes in spec.items():
        for name, slices in volumes.items():
            target = _target(rng, slices, formats.anatomy_from_name(name))
            formats.write_image_file(root / group / "image" / name, target, target, target)
            targets[f"{group}/{name}"] = target
    return targets


def _noisy(target: np.ndarray, level: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (target + level * target.max() * rng.standard_normal(target.shape)).astype(np.float32)


SPEC = {
    "acc4": {"brain_test1.h5": 2, "knee_test1.h5": 4},
    "acc8": {"brain_test1.h5": 3, "knee_test2.h5": 1},
}


def test_perfect_reconstruction_scores_one(tmp_path: Path) -> None:
    targets = _make_leaderboard(tmp_path / "lb", SPEC)
    for key, target in targets.items():
        formats.write_reconstruction(tmp_path / "rec" / key, target)
    result = evaluate_leaderboard(tmp_path / "lb", tmp_path / "rec", progress=False)
    assert result.groups == {"acc4": 1.0, "acc8": 1.0}
    assert result.total == 1.0


def test_scores_pool_slices_not_volumes_and_match_metric(tmp_path: Path) -> None:
    targets = _make_leaderboard(tmp_path / "lb", SPEC)
    expected: dict[str, list[float]] = {"acc4": [], "acc8": []}
    for i, (key, target) in enumerate(sorted(targets.items())):
        group, name = key.split("/")
        recon = _noisy(target, 0.05 * (i + 1), seed=i)
        formats.write_reconstruction(tmp_path / "rec" / key, recon)
        anatomy = formats.anatomy_from_name(name)
        expected[group] += [
            metrics.leaderboard_ssim(recon[s], target[s], float(target.max()), anatomy)
            for s in range(len(target))
        ]
    result = evaluate_leaderboard(tmp_path / "lb", tmp_path / "rec", progress=False)
    for group in ("acc4", "acc8"):
        assert result.groups[group] == pytest.approx(np.mean(expected[group]), abs=1e-12)
        volume_means = [v.ssim for v in result.per_volume if v.group == group]
        # slice pooling differs from averaging volume means when slice counts differ
        assert result.groups[group] != pytest.approx(np.mean(volume_means), abs=1e-9)
    assert result.total == pytest.approx((result.groups["acc4"] + result.groups["acc8"]) / 2)
    assert set(result.per_anatomy["acc4"]) == {"brain", "knee"}


def test_flat_folder(tmp_path: Path) -> None:
    target = _target(np.random.default_rng(1), 2, "knee")
    formats.write_image_file(tmp_path / "lb" / "image" / "knee_test3.h5", target, target, target)
    formats.write_reconstruction(tmp_path / "rec" / "knee_test3.h5", _noisy(target, 0.1, 0))
    result = evaluate_leaderboard(tmp_path / "lb", tmp_path / "rec", progress=False)
    assert list(result.groups) == [""] and 0 < result.groups[""] < 1
    assert result.total == result.groups[""]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_scores_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    targets = _make_leaderboard(tmp_path / "lb", SPEC)
    for i, (key, target) in enumerate(targets.items()):
        formats.write_reconstruction(tmp_path / "rec" / key, _noisy(target, 0.05, i))
    code, out, _ = _run(
        [
            "evaluate",
            "--leaderboard",
            str(tmp_path / "lb"),
            "--recon",
            str(tmp_path / "rec"),
            "--json",
            str(tmp_path / "s.json"),
            "--quiet",
        ],
        capsys,
    )
    assert code == 0
    data = json.loads((tmp_path / "s.json").read_text())
    assert {"acc4", "acc8", "total", "per_volume"} <= set(data)
    assert f"SSIM acc4: {data['acc4']:.4f}" in out and f"SSIM total: {data['total']:.4f}" in out
    assert len(data["per_volume"]) == 4


@pytest.mark.parametrize("problem", ["missing", "shape", "nan", "garbage", "no_key"])
def test_cli_bad_reconstruction_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    targets = _make_leaderboard(tmp_path / "lb", SPEC)
    for key, target in targets.items():
        formats.write_reconstruction(tmp_path / "rec" / key, target)
    bad = tmp_path / "rec" / "acc8" / "knee_test2.h5"
    if problem == "missing":
        bad.unlink()
    elif problem == "shape":
        formats.write_reconstruction(bad, np.zeros((1, SIZE, SIZE - 2), np.float32))
    elif problem == "nan":
        formats.write_reconstruction(bad, np.full((1, SIZE, SIZE), np.nan, np.float32))
    elif problem == "garbage":
        bad.write_bytes(b"not an hdf5 file")
    else:
        import h5py

        with h5py.File(bad, "w") as f:
            f["recon"] = np.zeros((1, SIZE, SIZE), np.float32)
    code, _, err = _run(
        ["evaluate", "--leaderboard", str(tmp_path / "lb"), "--recon", str(tmp_path / "rec"), "--quiet"],
        capsys,
    )
    assert code == 2
    assert "knee_test2.h5" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_missing_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(
        ["evaluate", "--leaderboard", str(tmp_path / "nope"), "--recon", str(tmp_path)], capsys
    )
    assert code == 2 and "nope" in err
