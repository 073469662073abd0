"""Single-coil evaluation: the hallucination index, reconstruction of NYU single-coil folders, fastMRI scores."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from fastmri import evaluate as fastmri_eval
from fastmri.data.subsample import RandomMaskFunc
from scipy import ndimage

from helpers import TINY_VARNET, tiny_varnet_checkpoint
from kspacelab import formats, masks, metrics, physics
from kspacelab.cli import main
from kspacelab.errors import DataFormatError
from kspacelab.evaluation import evaluate_fastmri
from kspacelab.inference import ReconOptions, reconstruct_dataset, reconstruct_with_model
from kspacelab.models.base import InputSpec, ReconSample
from kspacelab.models.varnet import VarNet
from kspacelab.training.checkpoint import LoadedModel, Provenance

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
    """A blurred output has less detail everywhere: the index stays below 1e-3 (the tolerance of this test; the
    window's local energies, not pixel values, keep a blurred edge's spread from counting)."""
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


# ------------------------------------------------------------------------------ single-coil NYU test files

HEIGHT, WIDTH, CROP = 48, 40, 32
#: a folder of single-coil files and, per file name, its (k-space, target)
NyuFolder = tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]


def _header(height: int, width: int, recon: tuple[int, int]) -> bytes:
    return f"""<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>
<encodedSpace><matrixSize><x>{height}</x><y>{width}</y><z>1</z></matrixSize></encodedSpace>
<reconSpace><matrixSize><x>{recon[0]}</x><y>{recon[1]}</y><z>1</z></matrixSize></reconSpace>
<encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>{width - 1}</maximum>
<center>{width // 2}</center></kspace_encoding_step_1></encodingLimits></encoding></ismrmrdHeader>""".encode()


def _image_volume(rng: np.random.Generator, slices: int) -> np.ndarray:
    """Complex images ``(S, H, W)``: a smooth blob with a phase, the object of a single-coil file."""
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    blob = ((yy - HEIGHT / 2) ** 2 / 14**2 + (xx - WIDTH / 2) ** 2 / 12**2 < 1).astype(np.float64)
    images = []
    for _ in range(slices):
        magnitude = ndimage.gaussian_filter(blob * (0.6 + 0.4 * rng.random(blob.shape)), 1.0)
        images.append(magnitude * np.exp(1j * 0.3 * rng.standard_normal() * yy / HEIGHT))
    return np.stack(images)


def write_singlecoil(
    path: Path,
    rng: np.random.Generator,
    slices: int = 2,
    test_mask: np.ndarray | None = None,
    multicoil: bool = False,
    acceleration: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Write an NYU single-coil file as fastMRI ships them: ``kspace`` complex64 ``(S, H, W)`` (fully sampled, or
    masked with ``test_mask`` for a test file, which then has a ``mask`` and no target), target
    ``reconstruction_esc`` float32 ``(S, 32, 32)`` = the centre crop of ``|ifft2c(kspace)|``, ``ismrmrd_header``
    and attrs (``acceleration`` when given, as test files state it). ``multicoil``: ``(S, 2, H, W)`` k-space
    instead (a file a single-coil run refuses).
    Returns ``(kspace, target)``."""
    images = _image_volume(rng, slices)
    kspace = physics.fft2c(torch.from_numpy(images)).numpy().astype(np.complex64)
    target = np.abs(images[:, (HEIGHT - CROP) // 2 : (HEIGHT + CROP) // 2, (WIDTH - CROP) // 2 :][..., :CROP])
    target = target.astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        if multicoil:
            f.create_dataset("kspace", data=np.stack([kspace, 0.5 * kspace], axis=1))
        elif test_mask is not None:
            f.create_dataset("kspace", data=kspace * test_mask)
            f.create_dataset("mask", data=test_mask.astype(bool))
        else:
            f.create_dataset("kspace", data=kspace)
        if test_mask is None:
            f.create_dataset("reconstruction_esc", data=target)
        f["ismrmrd_header"] = _header(HEIGHT, WIDTH, (24, 24) if test_mask is not None else (CROP, CROP))
        f.attrs["acquisition"] = "CORPD_FBK"
        f.attrs["max"] = float(target.max())
        f.attrs["norm"] = float(np.linalg.norm(target))
        f.attrs["patient_id"] = path.stem
        if acceleration is not None:
            f.attrs["acceleration"] = acceleration
    return kspace, target


def _zero_filled(kspace: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """fastMRI's single-coil zero-filled image: ifft2c of the masked k-space, complex centre crop, magnitude."""
    image = physics.ifft2c(torch.from_numpy(kspace * mask))
    return np.abs(physics.center_crop(image, size).numpy())


def _fastmri_mask(name: str, acceleration: int) -> np.ndarray:
    """The validation mask fastMRI draws for a file: its RandomMaskFunc with the centre fraction of the
    acceleration, seeded with the file name's code points."""
    fraction = {4: 0.08, 8: 0.04, 16: 0.02, 32: 0.01}[acceleration]
    mask, _ = RandomMaskFunc([fraction], [acceleration])((HEIGHT, WIDTH, 2), seed=tuple(map(ord, name)))
    return mask.numpy().reshape(-1).astype(bool)


@pytest.fixture
def nyu_val(tmp_path: Path) -> NyuFolder:
    """A folder of two fully sampled single-coil files; name -> (kspace, target)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "singlecoil_val"
    files = {name: write_singlecoil(folder / name, rng) for name in ("file1000000.h5", "file1000007.h5")}
    return folder, files


Cli = Callable[[list[str]], tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run the ``kspacelab`` program: ``(exit status, stdout, stderr)``."""

    def run(argv: list[str]) -> tuple[int, str, str]:
        code = main(argv)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_zero_filled_of_fully_sampled_files_uses_fastmri_validation_masks(
    nyu_val: NyuFolder, tmp_path: Path, cli: Cli
) -> None:
    folder, files = nyu_val
    out = tmp_path / "recon"
    argv = ["reconstruct", "--data", str(folder), "--out", str(out), "--method", "zero-filled"]
    code, stdout, _ = cli([*argv, "--acceleration", "8", "--quiet"])
    assert code == 0, stdout
    assert "2 volumes (4 slices)" in stdout and "x8" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["file1000000.h5", "file1000007.h5", "timing.json"]
    for name, (kspace, target) in files.items():
        mask = _fastmri_mask(name, 8)
        assert 2 <= mask.sum() < WIDTH // 2
        recon = formats.read_reconstruction(out / name, expected_shape=target.shape)
        assert recon.dtype == np.float32
        np.testing.assert_allclose(recon, _zero_filled(kspace, mask, (CROP, CROP)), rtol=1e-5, atol=1e-6)
    # another acceleration draws another mask (the output is replaced, a kspacelab reconstruction)
    assert cli([*argv, "--acceleration", "4", "--quiet"])[0] == 0
    kspace, _ = files["file1000000.h5"]
    recon = formats.read_reconstruction(out / "file1000000.h5")
    expected = _zero_filled(kspace, _fastmri_mask("file1000000.h5", 4), (CROP, CROP))
    np.testing.assert_allclose(recon, expected, rtol=1e-5, atol=1e-6)


def test_test_files_use_their_mask_and_header_recon_size(tmp_path: Path, cli: Cli) -> None:
    rng = np.random.default_rng(1)
    mask = masks.single_coil_mask_func(4)((HEIGHT, WIDTH, 2), seed=7)[0].numpy().reshape(-1).astype(bool)
    kspace, _ = write_singlecoil(tmp_path / "test" / "file1001.h5", rng, slices=3, test_mask=mask)
    out = tmp_path / "recon"
    argv = ["reconstruct", "--data", str(tmp_path / "test"), "--out", str(out), "--method", "zero-filled"]
    assert cli([*argv, "--quiet"])[0] == 0
    recon = formats.read_reconstruction(out / "file1001.h5", expected_shape=(3, 24, 24))
    np.testing.assert_allclose(recon, _zero_filled(kspace, mask, (24, 24)), rtol=1e-5, atol=1e-6)
    # --acceleration with a file that has its own mask: refused, naming the file; nothing new written
    code, _, err = cli([*argv, "--out", str(tmp_path / "other"), "--acceleration", "8"])
    assert code == 2 and "file1001.h5" in err and "own 'mask'" in err and err.count("\n") == 1
    assert not (tmp_path / "other").exists()


def test_bad_single_coil_folders_are_one_line_errors_before_any_write(
    nyu_val: NyuFolder, tmp_path: Path, cli: Cli
) -> None:
    folder, _ = nyu_val
    out = tmp_path / "recon"
    base = ["reconstruct", "--data", str(folder), "--out", str(out)]
    # fully sampled files without --acceleration
    code, _, err = cli([*base, "--method", "zero-filled", "--quiet"])
    assert code == 2 and "file1000000.h5" in err and "--acceleration" in err and err.count("\n") == 1
    # an acceleration outside 4/8/16/32
    code, _, err = cli([*base, "--method", "zero-filled", "--acceleration", "6"])
    assert code == 2 and "4, 8, 16, 32" in err
    # a drawn mask without any line (x32 of a 40-line file)
    assert not _fastmri_mask("file1000007.h5", 32).any()
    code, _, err = cli([*base, "--method", "zero-filled", "--acceleration", "32"])
    assert code == 2 and "file1000007.h5" in err and "samples no k-space line" in err
    # a multi-coil-only method on single-coil files
    code, _, err = cli([*base, "--method", "grappa", "--acceleration", "4"])
    assert code == 2 and "file1000000.h5" in err and "multi-coil" in err and err.count("\n") == 1
    # a multi-coil NYU file, last in the folder: named, and nothing written for the valid files before it
    write_singlecoil(folder / "file1000009.h5", np.random.default_rng(2), multicoil=True)
    code, _, err = cli([*base, "--method", "zero-filled", "--acceleration", "4"])
    assert code == 2 and "file1000009.h5" in err and "multi-coil" in err and err.count("\n") == 1
    assert not out.exists()
    # ... or left out with --skip-bad, named in a warning
    code, stdout, _ = cli([*base, "--method", "zero-filled", "--acceleration", "4", "--skip-bad", "--quiet"])
    assert code == 0 and "skipped" in stdout and "file1000009.h5" in stdout
    assert sorted(p.name for p in out.glob("*.h5")) == ["file1000000.h5", "file1000007.h5"]
    shutil.rmtree(out)
    (folder / "file1000009.h5").unlink()
    # the paths that take multi-coil SNU data only name the folder's first file
    multi_coil_only = [
        [*base, "--method", "zero-filled", "--devices", "2"],
        [*base, "--bundle", str(tmp_path / "bundle.yaml")],
        ["robustness", "--data", str(folder), "--out", str(out), "--method", "zero-filled"],
    ]
    for argv in multi_coil_only:
        code, _, err = cli([*argv, "--quiet"])
        assert code == 2 and "file1000000.h5: an NYU fastMRI file" in err and err.count("\n") == 1, argv
    # --acceleration with SNU data, and with the paths that take no single-coil data
    snu = tmp_path / "snu"
    kspace = np.ones((1, 2, 16, 16), np.complex64)
    formats.write_kspace_file(snu / "kspace" / "brain_test1.h5", kspace, masks.snu_mask(16, 4))
    snu_args = ["reconstruct", "--data", str(snu), "--out", str(out), "--method", "zero-filled"]
    code, _, err = cli([*snu_args, "--acceleration", "4"])
    assert code == 2 and "single-coil NYU" in err
    code, _, err = cli([*base, "--method", "zero-filled", "--acceleration", "4", "--devices", "2"])
    assert code == 2 and "--acceleration" in err
    assert not out.exists()


def test_checkpoint_reconstructs_single_coil_files(nyu_val: NyuFolder, tmp_path: Path, cli: Cli) -> None:
    """Plumbing with a multi-coil VarNet on one coil: outputs at the target size, the masked input of the
    file-name-seeded mask (a second run agrees), timing written."""
    folder, files = nyu_val
    checkpoint = tiny_varnet_checkpoint(tmp_path / "tiny.ckpt")
    out = tmp_path / "recon"
    argv = ["reconstruct", "--data", str(folder), "--out", str(out), "--checkpoint", str(checkpoint)]
    code, stdout, _ = cli([*argv, "--acceleration", "16", "--quiet"])
    assert code == 0, stdout
    assert (out / "timing.json").is_file()
    first = {
        name: formats.read_reconstruction(out / name, expected_shape=t.shape)
        for name, (_, t) in files.items()
    }
    assert all(np.isfinite(r).all() and r.max() > 0 for r in first.values())
    assert cli([*argv, "--acceleration", "16", "--quiet"])[0] == 0
    for name, recon in first.items():
        np.testing.assert_array_equal(formats.read_reconstruction(out / name), recon)


def test_single_coil_model_refuses_multi_coil_data(tmp_path: Path) -> None:
    snu = tmp_path / "snu"
    formats.write_kspace_file(
        snu / "kspace" / "brain_test1.h5", np.ones((1, 2, 16, 16), np.complex64), masks.snu_mask(16, 4)
    )
    torch.manual_seed(0)
    loaded = LoadedModel(
        model=VarNet(**TINY_VARNET),
        name="singlecoil_test",
        config={},
        input_spec=InputSpec(multicoil=False),
        provenance=Provenance(tmp_path / "none.ckpt", "state_dict"),
    )
    with pytest.raises(DataFormatError, match=r"brain_test1\.h5.*single-coil"):
        reconstruct_with_model(snu, tmp_path / "recon", loaded, ReconOptions(progress=False))
    assert not (tmp_path / "recon").exists()


class _ZeroFilledModel(torch.nn.Module):
    """A single-coil "model" whose output is the zero-filled magnitude of its input (shows what it was fed); it
    records the accelerations of its batches."""

    def __init__(self) -> None:
        super().__init__()
        self.accelerations: set[int] = set()

    def reconstruct(self, sample: ReconSample, size: tuple[int, int]) -> torch.Tensor:
        self.accelerations.update(torch.as_tensor(sample.acceleration).reshape(-1).tolist())
        image = physics.ifft2c(physics.to_complex(sample.masked_kspace[:, 0]))
        return physics.center_crop(image.abs(), size)


def test_model_input_is_masked_as_zero_filled(nyu_val: NyuFolder, tmp_path: Path) -> None:
    """A single-coil model gets each slice masked with the file's fastMRI validation mask: its zero-filled
    output equals the --method zero-filled reconstruction."""
    folder, files = nyu_val
    # this file's x4 mask has as many lines as an x8 mask would (an estimate from the lines says 8)
    files = {**files, "file1000011.h5": write_singlecoil(folder / "file1000011.h5", np.random.default_rng(8))}
    options = ReconOptions(progress=False, acceleration=4)
    probe = _ZeroFilledModel()
    loaded = LoadedModel(
        model=probe,
        name="zero_filled_probe",
        config={},
        input_spec=InputSpec(multicoil=False),
        provenance=Provenance(tmp_path / "none.ckpt", "state_dict"),
    )
    reconstruct_with_model(folder, tmp_path / "model", loaded, options)
    reconstruct_dataset(folder, tmp_path / "method", "zero-filled", options)
    for name in files:
        via_model = formats.read_reconstruction(tmp_path / "model" / name)
        np.testing.assert_allclose(
            via_model, formats.read_reconstruction(tmp_path / "method" / name), atol=1e-6
        )
        kspace, _ = files[name]
        expected = _zero_filled(kspace, _fastmri_mask(name, 4), (CROP, CROP))
        np.testing.assert_allclose(via_model, expected, rtol=1e-5, atol=1e-6)
    # the exact acceleration of the drawn masks, whatever their lines suggest
    assert masks.estimate_acceleration(_fastmri_mask("file1000011.h5", 4), [4, 8, 16, 32]) == 8
    assert probe.accelerations == {4}
    # a test file: its own mask, and the acceleration its attrs state
    probe.accelerations.clear()
    mask = _fastmri_mask("file1000000.h5", 8)
    write_singlecoil(
        tmp_path / "test" / "file1002.h5", np.random.default_rng(6), test_mask=mask, acceleration=16
    )
    reconstruct_with_model(tmp_path / "test", tmp_path / "test_out", loaded, ReconOptions(progress=False))
    assert probe.accelerations == {16}


# ------------------------------------------------------------------------------------------ fastMRI scores


def _write_recons(folder: Path, recons: dict[str, np.ndarray]) -> Path:
    for name, recon in recons.items():
        formats.write_reconstruction(folder / name, recon)
    return folder


def test_evaluate_fastmri_matches_the_fastmri_package(nyu_val: NyuFolder, tmp_path: Path, cli: Cli) -> None:
    folder, files = nyu_val
    rng = np.random.default_rng(4)
    recons = {
        name: (target + level * target.max() * rng.standard_normal(target.shape)).astype(np.float32)
        for (name, (_, target)), level in zip(files.items(), (0.02, 0.05), strict=True)
    }
    recon_dir = _write_recons(tmp_path / "recon", recons)
    result = evaluate_fastmri(folder, recon_dir, progress=False)
    assert [v.name for v in result.per_volume] == list(files)
    for score in result.per_volume:
        target, recon = files[score.name][1], recons[score.name]
        assert score.slices == 2
        assert score.nmse == pytest.approx(float(fastmri_eval.nmse(target, recon)), rel=1e-5)
        assert score.psnr == pytest.approx(float(fastmri_eval.psnr(target, recon)), rel=1e-6)
        assert score.ssim == pytest.approx(float(fastmri_eval.ssim(target, recon)[0]), rel=1e-6)
        assert score.hallucination == metrics.hallucination_index(recon, target)
    noisier = result.per_volume[1]
    assert (
        noisier.nmse > result.per_volume[0].nmse
        and noisier.hallucination > result.per_volume[0].hallucination
    )
    for key in ("nmse", "psnr", "ssim", "hallucination"):
        assert result.means[key] == pytest.approx(np.mean([getattr(v, key) for v in result.per_volume]))

    json_path = tmp_path / "scores.json"
    argv = ["evaluate", "--metric", "fastmri", "--leaderboard", str(folder), "--recon", str(recon_dir)]
    code, stdout, _ = cli([*argv, "--json", str(json_path), "--quiet"])
    assert code == 0
    assert "| file1000007.h5 | 2 |" in stdout and f"SSIM {result.means['ssim']:.4f}" in stdout
    scores = json.loads(json_path.read_text())
    assert scores["metric"] == "fastmri" and scores["volumes"] == 2
    assert scores["ssim"] == pytest.approx(result.means["ssim"]) and scores["total"] == scores["ssim"]
    assert scores["per_volume"][1]["hallucination"] == pytest.approx(noisier.hallucination)
    assert cli([*argv, "--json", str(json_path), "--quiet"])[0] == 0  # its own scores file is replaced


def test_reconstruct_then_evaluate_orders_accelerations(nyu_val: NyuFolder, tmp_path: Path) -> None:
    """Zero-filled at x4 and x16, scored: fewer lines, worse scores; the timing of the run is picked up."""
    folder, _ = nyu_val
    scores = {}
    for acceleration in (4, 16):
        out = tmp_path / f"x{acceleration}"
        reconstruct_dataset(
            folder, out, "zero-filled", ReconOptions(progress=False, acceleration=acceleration)
        )
        scores[acceleration] = evaluate_fastmri(folder, out, progress=False)
        assert scores[acceleration].timing is not None
    assert scores[16].means["nmse"] > scores[4].means["nmse"]
    assert scores[16].means["ssim"] < scores[4].means["ssim"]


def test_evaluate_fastmri_errors_name_the_file(nyu_val: NyuFolder, tmp_path: Path, cli: Cli) -> None:
    folder, files = nyu_val
    recon_dir = tmp_path / "recon"
    argv = [
        "evaluate",
        "--metric",
        "fastmri",
        "--leaderboard",
        str(folder),
        "--recon",
        str(recon_dir),
        "--quiet",
    ]
    code, _, err = cli(argv)
    assert code == 2 and "recon" in err and "does not exist" in err
    _write_recons(recon_dir, {"file1000000.h5": files["file1000000.h5"][1]})
    code, _, err = cli(argv)
    assert code == 2 and "file1000007.h5" in err and "missing" in err and err.count("\n") == 1
    _write_recons(recon_dir, {"file1000007.h5": files["file1000007.h5"][1][:, :30]})
    code, _, err = cli(argv)
    assert code == 2 and "file1000007.h5" in err and "(2, 32, 32)" in err and err.count("\n") == 1
    _write_recons(recon_dir, {"file1000007.h5": files["file1000007.h5"][1]})
    json_path = tmp_path / "scores.json"
    assert cli([*argv, "--json", str(json_path)])[0] == 0  # perfect volumes: PSNR inf, null in JSON
    scores = json.loads(json_path.read_text())
    assert scores["psnr"] is None and scores["per_volume"][0]["psnr"] is None and scores["nmse"] == 0.0
    mask = np.zeros(WIDTH, bool)
    mask[WIDTH // 2 - 2 : WIDTH // 2 + 2] = True
    write_singlecoil(folder / "file1000008.h5", np.random.default_rng(9), test_mask=mask)
    _write_recons(recon_dir, {"file1000008.h5": np.zeros((2, 24, 24), np.float32)})
    code, _, err = cli(argv)
    assert code == 2 and "file1000008.h5" in err and "no target" in err and err.count("\n") == 1
