"""Issue 18, part 3: `kspacelab robustness` scores a method, a checkpoint or a bundle under every mask family and
with fewer coils; PCA coil compression (:func:`kspacelab.physics.compress_coils`).

Everything runs on the tiny simulated dataset (``tiny_root``: 4 fully sampled val volumes with 6 coils and 2
slices); the reference scores come from `kspacelab reconstruct` + `kspacelab evaluate` on the val files themselves.
"""

from __future__ import annotations

import csv
import json
import shutil
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from helpers import tiny_varnet_checkpoint
from kspacelab import formats, masks, metrics, physics
from kspacelab.classical.zero_filled import zero_filled_image
from kspacelab.cli import main
from kspacelab.evaluation import evaluate_leaderboard
from kspacelab.experts.manifest import write_bundle
from kspacelab.robustness import (
    COIL_MODES,
    FAMILIES,
    OUTPUT_FILES,
    fewer_coils_target,
    reduce_coils,
    subset_indices,
    volume_mask,
)

# ------------------------------------------------------------------------------------------- helpers


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _report(out: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((out / "robustness.json").read_text())
    return report


def _row(
    report: dict[str, Any], family: str, acc: int, coils: object = "all", mode: str = "all"
) -> dict[str, Any]:
    key = (family, acc, coils, mode)
    (row,) = [
        r for r in report["rows"] if (r["family"], r["acceleration"], r["coils"], r["coil_mode"]) == key
    ]
    return row


def _line_mask(volume: dict[str, Any]) -> np.ndarray:
    mask = np.zeros(volume["width"], dtype=bool)
    mask[volume["lines"]] = True
    return mask


def _reference_scores(
    tiny_root: Path, recon: Path, how: list[str], capsys: pytest.CaptureFixture[str]
) -> dict[str, float]:
    """Per val file, the leaderboard SSIM of `reconstruct` (``how``: e.g. ``--method zero-filled``) on the val
    files themselves (the organiser mask of each file)."""
    assert (
        _run(["reconstruct", "--data", str(tiny_root), "--out", str(recon), "--quiet", *how], capsys)[0] == 0
    )
    scores = evaluate_leaderboard(tiny_root / "val", recon / "val", progress=False).per_volume
    return {v.name: v.ssim for v in scores}


def _check_against_reconstruct(report: dict[str, Any], reference: dict[str, float]) -> None:
    """The organiser rows (all coils) score each val file as `reconstruct` + `evaluate` do at the file's own
    acceleration: same masks, same reconstruction, same metric."""
    checked = 0
    for acc in (4, 8):
        for volume in _row(report, "organiser", acc)["per_volume"]:
            if f"_acc{acc}_" in volume["name"]:
                assert volume["ssim"] == pytest.approx(reference[volume["name"]], abs=1e-6), volume["name"]
                checked += 1
    assert checked == 4


# ---------------------------------------------------------------------------------------- coil compression


def _coil_data(coils: int, rank: int | None = None, seed: int = 0) -> torch.Tensor:
    """Complex ``(2, coils, 24, 20)`` k-space; with ``rank`` the coils are mixtures of ``rank`` sources."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.complex(torch.randn(*shape, generator=gen), torch.randn(*shape, generator=gen))

    if rank is None:
        return randn(2, coils, 24, 20)
    return torch.einsum("cr,srhw->schw", randn(coils, rank), randn(2, rank, 24, 20))


def _energy(kspace: torch.Tensor) -> float:
    """Total RSS energy: sum over pixels of the squared RSS image (orthonormal FFT: the same in k-space)."""
    return float((physics.rss_complex(physics.ifft2c(kspace), dim=1) ** 2).sum())


def test_compressing_to_all_coils_keeps_the_rss_image() -> None:
    kspace = _coil_data(6)
    compressed = physics.compress_coils(kspace, 6, coil_dim=1)
    assert compressed.shape == kspace.shape and compressed.dtype == kspace.dtype
    full = physics.rss_complex(physics.ifft2c(kspace), dim=1)
    torch.testing.assert_close(
        physics.rss_complex(physics.ifft2c(compressed), dim=1), full, rtol=1e-5, atol=1e-5
    )
    assert not torch.allclose(compressed, kspace)  # a rotation of the coils, not the identity


def test_compression_keeps_the_top_eigenvalues_energy() -> None:
    """Energy kept by n virtual coils = sum of the n largest eigenvalues of the coil covariance (numpy), to 1e-5
    relative; the virtual coils come largest first."""
    kspace = _coil_data(8, seed=1)
    x = kspace.numpy().transpose(1, 0, 2, 3).reshape(8, -1).astype(np.complex128)
    eigenvalues = np.sort(np.linalg.eigvalsh(x @ x.conj().T))[::-1]
    assert _energy(kspace) == pytest.approx(eigenvalues.sum(), rel=1e-5)
    for n in (1, 3, 5, 8):
        compressed = physics.compress_coils(kspace, n, coil_dim=1)
        assert compressed.shape[1] == n
        assert _energy(compressed) == pytest.approx(eigenvalues[:n].sum(), rel=1e-5)
        per_coil = (compressed.abs() ** 2).sum(dim=(0, 2, 3)).numpy()
        assert np.all(np.diff(per_coil) <= 1e-3 * per_coil[0])


def test_low_rank_coils_compress_without_loss() -> None:
    """8 coils that mix 3 sources: 3 virtual coils hold every bit of the RSS image (to 1e-4 relative)."""
    kspace = _coil_data(8, rank=3, seed=2)
    full = physics.rss_complex(physics.ifft2c(kspace), dim=1)
    compressed = physics.rss_complex(physics.ifft2c(physics.compress_coils(kspace, 3, coil_dim=1)), dim=1)
    torch.testing.assert_close(compressed, full, rtol=1e-4, atol=1e-4 * float(full.max()))


def test_compression_of_a_simulated_volume(tiny_root: Path) -> None:
    """On a simulated 6-coil volume, 4 PCA coils keep at least 95% of the RSS energy and beat any 4 real coils
    (the PCA optimum); 6 keep 100% (to 1e-5)."""
    vol = formats.discover_split(tiny_root, "val")[0]
    kspace = np.stack([formats.read_kspace_slice(vol.kspace_path, i)[0] for i in range(2)])
    energy = _energy(torch.from_numpy(kspace))
    kept = {n: _energy(torch.from_numpy(reduce_coils(kspace, n, "compressed"))) / energy for n in (2, 4, 6)}
    assert kept[6] == pytest.approx(1.0, abs=1e-5)
    assert kept[4] >= 0.95 and kept[2] < kept[4] < kept[6] + 1e-6
    subset = _energy(torch.from_numpy(reduce_coils(kspace, 4, "subset"))) / energy
    assert subset < kept[4]


def test_coil_subsets_are_spread_over_the_array() -> None:
    assert subset_indices(8, 4).tolist() == [0, 2, 4, 6]
    assert subset_indices(6, 4).tolist() == [0, 2, 3, 5]
    assert subset_indices(5, 5).tolist() == [0, 1, 2, 3, 4]
    kspace = np.arange(2 * 6 * 3 * 4).reshape(2, 6, 3, 4).astype(np.complex64)
    np.testing.assert_array_equal(reduce_coils(kspace, 3, "subset"), kspace[:, [0, 2, 4]])


def test_bad_compression_arguments() -> None:
    with pytest.raises(ValueError, match="cannot compress 6 coils to 7"):
        physics.compress_coils(_coil_data(6), 7, coil_dim=1)
    with pytest.raises(ValueError, match="complex"):
        physics.compress_coils(torch.zeros(1, 4, 8, 8), 2, coil_dim=1)


def test_the_fewer_coils_target_is_made_as_image_label(tiny_root: Path) -> None:
    """With every coil the recomputed target is the file's image_label, scale 1 (so the recipe is right); with 2
    coils it is the RSS of those coils, k-space and target scaled alike to the label's maximum."""
    for vol in formats.discover_split(tiny_root, "val"):
        assert vol.image_path is not None
        kspace = np.stack([formats.read_kspace_slice(vol.kspace_path, i)[0] for i in range(2)])
        label = formats.read_image_volume(vol.image_path)
        same_kspace, target = fewer_coils_target(kspace, label)
        np.testing.assert_allclose(target, label, rtol=1e-4, atol=1e-4 * float(label.max()))
        np.testing.assert_allclose(same_kspace, kspace, rtol=1e-4, atol=1e-4 * float(np.abs(kspace).max()))
        reduced = reduce_coils(kspace, 2, "subset")
        scaled, fewer = fewer_coils_target(reduced, label)
        assert fewer.max() == pytest.approx(label.max(), rel=1e-6)
        scale = float(np.abs(scaled).sum() / np.abs(reduced).sum())
        assert scale > 1.0  # 2 coils hold less signal than 6
        rss = zero_filled_image(scaled, None, crop=label.shape[-2:])
        np.testing.assert_allclose(fewer, rss, rtol=1e-4, atol=1e-5 * float(label.max()))
        assert not np.allclose(fewer, label, rtol=0.05)


# ------------------------------------------------------------------------------------------------ masks


def test_each_family_draws_its_own_kind_of_mask() -> None:
    width, name = 136, "knee_acc4_2.h5"
    for acc in (4, 8):
        n_snu = round(0.08 * width)  # the organiser's 8% centre
        center = np.zeros(width, dtype=bool)
        center[(width - n_snu + 1) // 2 :][:n_snu] = True
        organiser = volume_mask("organiser", width, acc, 0, name)
        np.testing.assert_array_equal(organiser, masks.snu_mask(width, acc))
        offset = volume_mask("random_offset", width, acc, 0, name)
        outer = np.flatnonzero(offset & ~center)
        assert np.all(np.diff(outer) % acc == 0) and np.all(offset[center])
        spaced = volume_mask("random_spaced", width, acc, 0, name)
        bins = np.flatnonzero(spaced & ~center) // acc
        assert len(np.unique(bins)) == len(bins) and np.all(spaced[center])
        lines = volume_mask("random_lines", width, acc, 0, name)
        assert np.all(lines[center]) and not np.array_equal(lines, organiser)
        n_center = round(width * 0.32 / acc)  # fastMRI: 0.08 at 4x, 0.04 at 8x
        for family in ("fastmri_random", "fastmri_equispaced"):
            mask = volume_mask(family, width, acc, 0, name)
            start = (width - n_center + 1) // 2
            assert np.all(mask[start : start + n_center]), family
        equi = volume_mask("fastmri_equispaced", width, acc, 0, name)
        outside = np.flatnonzero(equi[: (width - n_center + 1) // 2])
        assert np.all(np.diff(outside) == acc)
        for family in ("organiser", "random_offset", "random_spaced", "fastmri_equispaced"):
            assert masks.estimate_acceleration(volume_mask(family, width, acc, 0, name)) == acc, family
    # the random families draw per seed and per file (a few seeds or names: random_offset has 4 offsets at 4x);
    # the organiser rule is fixed
    for family in FAMILIES:
        per_seed = {volume_mask(family, width, 4, seed, name).tobytes() for seed in range(6)}
        per_name = {volume_mask(family, width, 4, 0, f"knee_acc4_{i}.h5").tobytes() for i in range(6)}
        assert (len(per_seed) == 1, len(per_name) == 1) == (family == "organiser",) * 2, family


# ----------------------------------------------------------------------------------------- the command


def test_robustness_with_a_classical_method(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    code, stdout, _ = _run(
        ["robustness", "--data", str(tiny_root), "--out", str(out), "--method", "zero-filled", "--quiet"],
        capsys,
    )
    assert code == 0
    report = _report(out)
    rows = report["rows"]
    # one row per family x acceleration (all coils), then per coil mode x count x acceleration
    expected = [(f, a, "all", "all") for f in FAMILIES for a in (4, 8)]
    expected += [("organiser", a, n, m) for m in COIL_MODES for n in (2, 4) for a in (4, 8)]
    assert [(r["family"], r["acceleration"], r["coils"], r["coil_mode"]) for r in rows] == expected
    assert sorted(report["volumes"]) == sorted(v.name for v in formats.discover_split(tiny_root, "val"))
    for row in rows:
        assert row["slices"] == 8 and len(row["per_volume"]) == 4
        coils = 6 if row["coils"] == "all" else row["coils"]
        assert all(v["coils"] == coils for v in row["per_volume"])
        pooled = np.mean([s for v in row["per_volume"] for s in v["slice_ssim"]])
        assert row["ssim"] == pytest.approx(pooled)
        reference = _row(report, "organiser", row["acceleration"])["ssim"]
        assert row["delta"] == pytest.approx(row["ssim"] - reference)
        # the masks in the report are the named family's (the mask drawn for each file)
        for volume in row["per_volume"]:
            drawn = volume_mask(row["family"], volume["width"], row["acceleration"], 0, volume["name"])
            np.testing.assert_array_equal(_line_mask(volume), drawn)
        fractions = [f for v in row["per_volume"] for f in v["foreground"]]
        assert len(fractions) == 8 and row["foreground"] == pytest.approx(np.mean(fractions), abs=1e-4)
        effective = np.mean([v["width"] / len(v["lines"]) for v in row["per_volume"]])
        assert row["effective_acceleration"] == pytest.approx(effective, abs=1e-4)
    # all coils: the targets are the files' labels (foreground fractions from the metric's mask of image_label)
    for volume in _row(report, "organiser", 4)["per_volume"]:
        label = formats.read_image_volume(tiny_root / "val" / "image" / volume["name"])
        anatomy = formats.anatomy_from_name(volume["name"])
        expected_fg = [float(metrics.foreground_mask(t, anatomy).mean()) for t in label]
        assert volume["foreground"] == pytest.approx(expected_fg)

    # the same numbers in the CSV and the printed table; a figure
    with open(out / "robustness.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(rows)
    for line, row in zip(table, rows, strict=True):
        assert float(line["ssim"]) == pytest.approx(row["ssim"]) and line["family"] == row["family"]
    assert "| random_lines | acc8 | all |" in stdout and "| organiser | acc4 | 2 subset |" in stdout
    assert (out / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the organiser rows are what `reconstruct` + `evaluate` give on the val files (their own organiser masks)
    reference = _reference_scores(tiny_root, tmp_path / "recon", ["--method", "zero-filled"], capsys)
    _check_against_reconstruct(report, reference)

    # a second run may replace the report; the seed changes the random masks only; "fewer" coils that are all 6
    # (a subset of all, a compression to all) score as the file itself (targets recomputed from k-space included)
    argv = ["robustness", "--data", str(tiny_root), "--out", str(out), "--method", "zero-filled", "--quiet"]
    argv += ["--families", "organiser", "random_lines", "--accelerations", "4", "--coils", "6", "--seed", "1"]
    assert _run(argv, capsys)[0] == 0
    again = _report(out)
    assert [r["family"] for r in again["rows"]] == ["organiser", "random_lines", "organiser", "organiser"]
    organiser = _row(report, "organiser", 4)["ssim"]
    assert _row(again, "organiser", 4)["ssim"] == pytest.approx(organiser, abs=1e-9)
    assert _row(again, "organiser", 4, 6, "subset")["ssim"] == pytest.approx(organiser, abs=1e-5)
    assert _row(again, "organiser", 4, 6, "compressed")["ssim"] == pytest.approx(organiser, abs=1e-4)
    lines0 = [v["lines"] for v in _row(report, "random_lines", 4)["per_volume"]]
    lines1 = [v["lines"] for v in _row(again, "random_lines", 4)["per_volume"]]
    assert lines0 != lines1


def test_robustness_with_a_checkpoint_and_a_bundle(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tiny_varnet_checkpoint(tmp_path / "model.ckpt")
    options = ["--families", "organiser", "random_offset", "--coils", "3", "--coil-modes", "compressed"]
    options += ["--quiet"]
    out = tmp_path / "ckpt_report"
    argv = ["robustness", "--data", str(tiny_root), "--out", str(out), "--checkpoint", str(ckpt), *options]
    code, stdout, _ = _run(argv, capsys)
    assert code == 0 and "checkpoint model.ckpt" in stdout
    report = _report(out)
    expected = [("organiser", 4, "all"), ("organiser", 8, "all"), ("random_offset", 4, "all")]
    expected += [("random_offset", 8, "all"), ("organiser", 4, 3), ("organiser", 8, 3)]
    assert [(r["family"], r["acceleration"], r["coils"]) for r in report["rows"]] == expected
    reference = _reference_scores(tiny_root, tmp_path / "recon", ["--checkpoint", str(ckpt)], capsys)
    _check_against_reconstruct(report, reference)

    # a bundle whose one expert is that model (anatomy from the file name) scores the same
    bundle = write_bundle(
        tmp_path / "bundle.yaml",
        [{"name": "all", "anatomy": "any", "acc": "any", "mask_rule": "any", "checkpoint": ckpt}],
        anatomy_source="filename",
    )
    out2 = tmp_path / "bundle_report"
    argv = ["robustness", "--data", str(tiny_root), "--out", str(out2), "--bundle", str(bundle), "--quiet"]
    argv += ["--families", "organiser", "random_offset", "--accelerations", "8", "--coils"]
    code, stdout, _ = _run(argv, capsys)
    assert code == 0 and "bundle bundle.yaml" in stdout
    for mine in _report(out2)["rows"]:
        assert mine["ssim"] == pytest.approx(_row(report, mine["family"], 8)["ssim"], abs=1e-6)


# ----------------------------------------------------------------------------------------------- errors


def _bad_case(tiny_root: Path, tmp_path: Path, case: str) -> tuple[list[str], str]:
    """``(extra argv, word the one-line error must contain)``; the base argv is set by the test."""
    if case == "leaderboard split":
        return ["--data", str(tiny_root / "leaderboard")], "no fully sampled 'val' split"
    if case == "undersampled files":
        return ["--data", str(tiny_root / "leaderboard" / "acc4")], "not fully sampled"
    if case == "unknown family":
        return ["--families", "organiser", "spiral"], "unknown mask family 'spiral'"
    if case == "unknown coil mode":
        return ["--coil-modes", "sum"], "unknown coil mode 'sum'"
    if case == "too many coils":
        return ["--coils", "2", "7"], "has 6 coils, fewer than the 7"
    if case == "no image partner":
        data = tmp_path / "noimage"
        shutil.copytree(tiny_root / "val" / "kspace", data / "kspace")
        return ["--data", str(data)], "has no image/ partner"
    if case == "output is the input":
        return ["--out", str(tiny_root / "val" / "kspace")], "input folder"
    if case == "foreign report file":
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "robustness.csv").write_text("mine\n")
        return [], "not part of a kspacelab robustness report"
    if case == "tta with a method":
        return ["--tta"], "--tta"
    raise AssertionError(case)


BAD_CASES = [
    "leaderboard split",
    "undersampled files",
    "unknown family",
    "unknown coil mode",
    "too many coils",
    "no image partner",
    "output is the input",
    "foreign report file",
    "tta with a method",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_line_and_writes_nothing(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    extra, word = _bad_case(tiny_root, tmp_path, case)
    out = tmp_path / "out"
    before = sorted(p.name for p in out.iterdir()) if out.exists() else None
    argv = [
        "robustness",
        "--data",
        str(tiny_root),
        "--out",
        str(out),
        "--method",
        "zero-filled",
        "--quiet",
        *extra,
    ]
    inputs = {p: p.stat().st_mtime_ns for p in tiny_root.rglob("*.h5")}
    code, stdout, err = _run(argv, capsys)
    assert code == 2 and stdout == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kspacelab: error: ") and word in lines[0], err
    after = sorted(p.name for p in out.iterdir()) if out.exists() else None
    assert after == before
    assert {p: p.stat().st_mtime_ns for p in tiny_root.rglob("*.h5")} == inputs
    assert not any((tiny_root / "val" / "kspace" / name).exists() for name in OUTPUT_FILES)


def test_a_failure_mid_run_names_the_input_and_writes_nothing(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A method that fails on the second condition: one line naming the input file and the condition (not the
    temporary copy), no report, no temporary folder left."""
    import tempfile

    from kspacelab import inference

    calls = {"n": 0}
    real = inference.CLASSICAL_METHODS["zero-filled"]

    def flaky(kspace: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] > 8:  # the first condition (4 volumes x 2 slices) succeeds
            raise ValueError("boom")
        return real(kspace, mask, size)

    monkeypatch.setitem(inference.CLASSICAL_METHODS, "zero-filled", flaky)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    out = tmp_path / "out"
    argv = ["robustness", "--data", str(tiny_root), "--out", str(out), "--method", "zero-filled", "--quiet"]
    code, _, err = _run([*argv, "--families", "organiser", "--coils"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "brain_acc4_2.h5 under organiser acc8: slice 0: zero-filled failed: boom" in err
    assert not out.exists() and list((tmp_path / "tmp").iterdir()) == []


def test_a_bad_checkpoint_is_one_line(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "out"
    argv = ["robustness", "--data", str(tiny_root), "--out", str(out), "--checkpoint", str(bad), "--quiet"]
    code, _, err = _run(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "bad.ckpt" in err
    assert not out.exists()


def test_volume_seeds_use_the_file_name() -> None:
    """The random masks are seeded from (seed, acceleration, crc32(name)) as documented."""
    mask = volume_mask("random_lines", 120, 8, 3, "brain_acc8_9.h5")
    rng = np.random.default_rng((3, 8, zlib.crc32(b"brain_acc8_9.h5")))
    rng.integers(1)  # the acceleration draw of the mask function (one acceleration)
    np.testing.assert_array_equal(mask, masks.random_lines_mask(120, 8, rng))
