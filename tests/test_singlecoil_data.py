"""Single-coil data: the NYU file writer, the simulated single-coil layout and SingleCoilDataModule."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from helpers import TINY_SC
from kspacelab import formats, masks
from kspacelab.cli import main
from kspacelab.data.phantoms import ObjectVolume, coil_array
from kspacelab.data.singlecoil import SingleCoilDataModule
from kspacelab.data.synthetic import (
    PRESETS,
    SINGLE_COIL_SPLITS,
    emulate_single_coil,
    simulate_dataset,
    simulate_single_coil_volume,
    volume_rng,
)
from kspacelab.errors import DataFormatError, KspacelabError
from kspacelab.models.base import InputSpec
from kspacelab.physics import center_crop, fft2c, ifft2c, rss_complex


def _one_line(err: pytest.ExceptionInfo[KspacelabError], *words: str) -> None:
    message = str(err.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, (word, message)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("singlecoil") / "data"
    summary = simulate_dataset(out, TINY_SC, seed=0, progress=False)
    assert summary.files == {"singlecoil_train": 2, "singlecoil_val": 1, "singlecoil_test": 2}
    return out


# ------------------------------------------------------------------------------------------------ writer


def test_write_nyu_file_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    kspace = (rng.standard_normal((3, 16, 12)) + 1j * rng.standard_normal((3, 16, 12))).astype(np.complex64)
    target = rng.random((3, 8, 8)).astype(np.float32)
    attrs = {"acquisition": "CORPD_FBK", "max": float(target.max()), "norm": 1.5, "patient_id": "ab12"}
    path = tmp_path / "file1000001.h5"
    formats.write_nyu_file(path, kspace, target, attrs=attrs)
    info = formats.read_nyu_header(path)
    assert info.kspace_shape == (3, 16, 12) and not info.multicoil and not info.has_mask
    assert info.target_key == "reconstruction_esc"
    assert info.encoding_size == (16, 12, 1) and info.recon_size == (8, 8, 1)
    assert (info.padding_left, info.padding_right) == (0, 12)
    assert (info.acquisition, info.max_value, info.norm, info.patient_id) == (
        "CORPD_FBK",
        pytest.approx(float(target.max())),
        1.5,
        "ab12",
    )
    for s in range(3):
        k, mask, tgt = formats.read_nyu_slice(path, s)
        np.testing.assert_array_equal(k, kspace[s])
        assert mask is None and tgt is not None
        np.testing.assert_array_equal(tgt, target[s])
    assert formats.discover_nyu(tmp_path) == [path]
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left behind

    # a test file: undersampled, mask, no target, header stating the recon size; it passes the k-space check
    line = np.zeros(12, dtype=bool)
    line[4:8] = True
    test_path = tmp_path / "file1000002.h5"
    header = formats.ismrmrd_header((16, 12, 1), (8, 8, 1))
    formats.write_nyu_file(test_path, kspace * line, mask=line, attrs={"acceleration": 4}, header=header)
    formats.validate_kspace_file(test_path, allow_single_coil=True)
    info = formats.read_nyu_header(test_path)
    assert info.has_mask and info.target_key is None and info.recon_size == (8, 8, 1)
    assert info.attrs["acceleration"] == 4
    _, mask, tgt = formats.read_nyu_slice(test_path, 1)
    assert tgt is None and mask is not None
    np.testing.assert_array_equal(mask, line)

    # multi-coil: the target is reconstruction_rss
    multi = tmp_path / "multi.h5"
    formats.write_nyu_file(multi, kspace[:, None].repeat(2, axis=1), target)
    assert formats.read_nyu_header(multi).target_key == "reconstruction_rss"


def test_write_nyu_file_refuses_bad_input_and_writes_nothing(tmp_path: Path) -> None:
    kspace = np.ones((2, 8, 6), dtype=np.complex64)
    path = tmp_path / "file.h5"
    bad_calls = [
        ({"kspace": np.ones((2, 8, 6))}, "complex"),
        ({"target": np.ones((3, 4, 4))}, "S=2"),
        ({"target": np.ones((2, 4, 4)), "mask": np.ones(5)}, "W=6"),
        ({}, "header"),
        ({"header": b"<ismrmrdHeader>"}, "XML"),
    ]
    for changes, word in bad_calls:
        arguments = {"kspace": kspace, **changes}
        with pytest.raises(ValueError, match=word):
            formats.write_nyu_file(path, **arguments)  # type: ignore[arg-type]
    with pytest.raises(TypeError):  # h5py cannot store the attribute: the write fails midway
        formats.write_nyu_file(path, kspace, np.ones((2, 4, 4)), attrs={"bad": object()})  # type: ignore[dict-item]
    assert list(tmp_path.iterdir()) == []


def test_fastmri_reads_the_written_files(root: Path) -> None:
    mri_data = pytest.importorskip("fastmri.data.mri_data")
    dataset = mri_data.SliceDataset(root / "singlecoil_val", challenge="singlecoil", transform=None)
    path = next((root / "singlecoil_val").glob("*.h5"))
    kspace, mask, target, attrs, fname, slice_num = dataset[1]
    np.testing.assert_array_equal(kspace, formats.read_nyu_slice(path, 1)[0])
    np.testing.assert_array_equal(target, formats.read_nyu_slice(path, 1)[2])
    assert mask is None and fname == path.name and slice_num == 1
    assert attrs["max"] == pytest.approx(formats.read_nyu_header(path).max_value)
    assert attrs["recon_size"] == (TINY_SC.crop, TINY_SC.crop, 1)


# ------------------------------------------------------------------------------------------ simulation


def test_presets() -> None:
    full, demo = PRESETS["singlecoil"], PRESETS["singlecoil-demo"]
    assert (full.layout, full.knee_height, full.knee_widths, full.crop) == (
        "singlecoil",
        640,
        (368, 368),
        320,
    )
    assert (demo.layout, demo.knee_height, demo.crop) == ("singlecoil", 128, 64)
    assert PRESETS["snu"].layout == PRESETS["demo"].layout == "snu"


def _objects(height: int, width: int) -> ObjectVolume:
    support = np.zeros((1, height, width), dtype=bool)
    support[:, height // 4 : 3 * height // 4, width // 8 : 7 * width // 8] = True
    return ObjectVolume(
        support.astype(np.float32), support, (height / 2, width / 2), (height / 4, width * 3 / 8), 3.0
    )


def test_emulated_coil_is_the_sensitivity_weighted_combination() -> None:
    rng = np.random.default_rng(1)
    height, width = 32, 24
    coils = coil_array(rng, 4, _objects(height, width))
    maps = torch.from_numpy(coils.maps(height, width, 0))
    image = torch.from_numpy(rng.standard_normal((height, width)) + 1j * rng.standard_normal((height, width)))
    image = image.to(torch.complex64)
    kspace = fft2c(maps * image).numpy()[None]
    volume = emulate_single_coil(kspace, coils, (16, 16))
    # noise-free: x = sum_c conj(S_c) S_c m / sqrt(sum_c |S_c|^2) = sqrt(sum_c |S_c|^2) m, |x| = RSS of the coils
    expected = rss_complex(maps, dim=0) * image
    scale = float(expected.abs().max())
    combined = ifft2c(torch.from_numpy(volume.kspace[0])).numpy()
    np.testing.assert_allclose(combined, expected.numpy(), rtol=1e-5, atol=1e-6 * scale)
    rss = center_crop(rss_complex(maps * image, dim=0), (16, 16)).numpy()
    np.testing.assert_allclose(volume.target[0], rss, rtol=1e-5, atol=1e-6 * scale)

    # white coil noise of standard deviation sigma passes the unit-norm weights with the same sigma
    sigma = 0.3
    noise = (
        sigma / np.sqrt(2) * (rng.standard_normal((1, 4, 64, 64)) + 1j * rng.standard_normal((1, 4, 64, 64)))
    )
    combined = emulate_single_coil(noise.astype(np.complex64), coils, (64, 64)).kspace
    assert np.std(combined) == pytest.approx(sigma, rel=0.05)


def test_single_coil_files(root: Path) -> None:
    lo, hi = TINY_SC.knee_max
    for split in SINGLE_COIL_SPLITS[:2]:
        for path in sorted((root / split).glob("*.h5")):
            with h5py.File(path, "r") as f:
                kspace, target = f["kspace"][()], f["reconstruction_esc"][()]
                attrs = dict(f.attrs)
                assert "mask" not in f
            assert (
                kspace.dtype == np.complex64 and kspace.ndim == 3 and kspace.shape[1] == TINY_SC.knee_height
            )
            assert TINY_SC.knee_slices[0] <= kspace.shape[0] <= TINY_SC.knee_slices[1]
            assert target.dtype == np.float32 and target.shape == (
                kspace.shape[0],
                TINY_SC.crop,
                TINY_SC.crop,
            )
            magnitude = center_crop(
                ifft2c(torch.from_numpy(kspace)).abs(), (TINY_SC.crop, TINY_SC.crop)
            ).numpy()
            np.testing.assert_allclose(target, magnitude, rtol=1e-4, atol=1e-6 * float(target.max()))
            assert attrs["acquisition"] == "CORPD_FBK" and len(attrs["patient_id"]) == 64
            assert float(attrs["max"]) == pytest.approx(float(target.max())) and lo <= attrs["max"] <= hi
            assert float(attrs["norm"]) == pytest.approx(float(np.linalg.norm(target.astype(np.float64))))
            info = formats.read_nyu_header(path)
            assert info.encoding_size == (TINY_SC.knee_height, kspace.shape[2], 1)
            assert info.recon_size == (TINY_SC.crop, TINY_SC.crop, 1)
            assert np.all((np.abs(kspace) ** 2).sum(axis=(0, 1)) > 0)  # fully sampled


def test_single_coil_test_files(root: Path) -> None:
    subsample = pytest.importorskip("fastmri.data.subsample")
    paths = sorted((root / "singlecoil_test").glob("*.h5"), key=lambda p: formats.natural_key(p.name))
    assert [formats.read_nyu_header(p).attrs["acceleration"] for p in paths] == [4, 8]
    for path in paths:
        formats.validate_kspace_file(path, allow_single_coil=True)
        info = formats.read_nyu_header(path)
        assert (
            info.target_key is None and info.has_mask and info.recon_size == (TINY_SC.crop, TINY_SC.crop, 1)
        )
        acc = int(info.attrs["acceleration"])
        with h5py.File(path, "r") as f:
            kspace, mask = f["kspace"][()], f["mask"][()]
        expected, num_low = masks.single_coil_mask_func(acc)(
            (*kspace.shape[1:], 2), seed=masks.fname_seed(path.name)
        )
        fastmri_mask, fastmri_low = subsample.create_mask_for_mask_type(
            "random", [masks.SINGLE_COIL_EXTREME[acc]], [acc]
        )((*kspace.shape[1:], 2), seed=tuple(map(ord, path.name)))
        np.testing.assert_array_equal(mask, fastmri_mask.numpy().reshape(-1).astype(bool))
        np.testing.assert_array_equal(mask, expected.numpy().reshape(-1).astype(bool))
        assert info.attrs["num_low_frequency"] == num_low == fastmri_low
        assert np.all(kspace[..., ~mask] == 0) and np.all(np.abs(kspace[..., mask]).sum(axis=(0, 1)) > 0)
        assert TINY_SC.knee_max[0] <= info.max_value <= TINY_SC.knee_max[1]


def test_simulation_is_reproducible(root: Path) -> None:
    path = root / "singlecoil_val" / "file1000003.h5"
    again = simulate_single_coil_volume(volume_rng(0, "singlecoil_val", "file1000003"), TINY_SC)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(again.kspace, f["kspace"][()])
        np.testing.assert_array_equal(again.target, f["reconstruction_esc"][()])
    other = simulate_single_coil_volume(volume_rng(1, "singlecoil_val", "file1000003"), TINY_SC)
    assert other.kspace.shape != again.kspace.shape or not np.array_equal(other.kspace, again.kspace)


def test_simulate_cli_and_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert (
        main(["simulate", str(out), "--preset", "singlecoil-demo", "--volumes-per-group", "1", "--quiet"])
        == 0
    )
    assert "NYU single-coil knee" in capsys.readouterr().out
    counts = {split: len(list((out / split).glob("*.h5"))) for split in SINGLE_COIL_SPLITS}
    assert counts == {
        "singlecoil_train": 1,
        "singlecoil_val": PRESETS["singlecoil-demo"].val_volumes,
        "singlecoil_test": 2,
    }
    assert formats.read_nyu_header(out / "singlecoil_train" / "file1000001.h5").kspace_shape[1] == 128
    with pytest.raises(KspacelabError, match="annotations"):
        simulate_dataset(tmp_path / "x", TINY_SC, progress=False, annotations=True)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------ data module


def _module(root: Path, **kwargs: object) -> SingleCoilDataModule:
    dm = SingleCoilDataModule(str(root), **kwargs)  # type: ignore[arg-type]
    dm.set_input_spec(InputSpec(multicoil=False))
    dm.setup("fit")
    return dm


def test_validation_batches(root: Path) -> None:
    dm = _module(root, batch_size=2)
    assert dm.val_dataset is not None
    path = next((root / "singlecoil_val").glob("*.h5"))
    info = formats.read_nyu_header(path)
    assert len(dm.val_dataset) == info.num_slices * 4
    seen = set()
    for batch in dm.val_dataloader():
        b = batch.masked_kspace.shape[0]
        assert batch.masked_kspace.shape == (b, 1, TINY_SC.knee_height, info.kspace_shape[2], 2)
        assert batch.mask.shape == (b, 1, 1, info.kspace_shape[2], 1)
        assert batch.target.shape == (b, TINY_SC.crop, TINY_SC.crop)
        assert batch.anatomy == ("knee",) * b
        for i in range(b):
            acc, fname, s = int(batch.acceleration[i]), batch.fname[i], int(batch.slice_num[i])
            seen.add((s, acc))
            expected, low = masks.single_coil_mask_func(acc)(
                (1, 1, info.kspace_shape[2], 1), seed=masks.fname_seed(fname)
            )
            assert torch.equal(batch.mask[i].reshape(-1), expected.reshape(-1).bool())
            assert int(batch.num_low_frequencies[i]) == low
            kspace, _, target = formats.read_nyu_slice(path, s)
            assert target is not None
            masked = torch.view_as_real(torch.from_numpy(kspace)) * expected.reshape(1, -1, 1)
            assert torch.equal(batch.masked_kspace[i, 0], masked)
            assert torch.equal(batch.target[i], torch.from_numpy(target))
            assert float(batch.max_value[i]) == pytest.approx(info.max_value)
    assert seen == {(s, a) for s in range(info.num_slices) for a in (4, 8, 16, 32)}


def _train_masks(dm: SingleCoilDataModule, epoch: int) -> dict[tuple[str, int], tuple[int, torch.Tensor]]:
    loader = dm.train_dataloader()
    loader.batch_sampler.set_epoch(epoch)  # type: ignore[union-attr]
    found = {}
    for batch in loader:
        for i in range(batch.mask.shape[0]):
            found[batch.fname[i], int(batch.slice_num[i])] = (
                int(batch.acceleration[i]),
                batch.mask[i].reshape(-1),
            )
    return found


def test_training_masks_exact_accelerations_and_seeds(root: Path) -> None:
    dm = _module(root, accelerations=[4, 32], seed=3)
    epochs = [_train_masks(dm, e) for e in range(4)]
    drawn = [acc for epoch in epochs for acc, _ in epoch.values()]
    assert set(drawn) == {4, 32}
    for epoch in epochs:
        for acc, mask in epoch.values():  # W = 64..68: x4 samples about 16 lines, x32 about 2
            lines = int(mask.sum())
            assert (lines >= 9) if acc == 4 else (lines <= 8), (acc, lines)
    assert any(epochs[0][k][0] != epochs[1][k][0] for k in epochs[0])  # the acceleration is drawn per epoch
    one_acc = _module(root, accelerations=[8], seed=3)
    first, second = _train_masks(one_acc, 0), _train_masks(one_acc, 1)
    assert all(first[k][0] == 8 for k in first)
    assert any(
        not torch.equal(first[k][1], second[k][1]) for k in first
    )  # so is the mask of one acceleration
    rerun = _module(root, accelerations=[4, 32], seed=3)
    for e in (0, 3):
        again = _train_masks(rerun, e)
        assert again.keys() == epochs[e].keys()
        assert all(
            again[k][0] == epochs[e][k][0] and torch.equal(again[k][1], epochs[e][k][1]) for k in again
        )
    other = _train_masks(_module(root, accelerations=[4, 32], seed=4), 0)
    assert any(not torch.equal(other[k][1], epochs[0][k][1]) for k in other)


def test_training_masks_do_not_depend_on_workers(root: Path) -> None:
    alone = _train_masks(_module(root, seed=5, batch_size=2), 1)
    workers = _train_masks(_module(root, seed=5, batch_size=2, num_workers=2), 1)
    assert alone.keys() == workers.keys()
    assert all(alone[k][0] == workers[k][0] and torch.equal(alone[k][1], workers[k][1]) for k in alone)


def test_resume_position_skips_the_trained_batches(root: Path) -> None:
    dm = _module(root, seed=1)
    loader = dm.train_dataloader()
    loader.batch_sampler.set_epoch(2)  # type: ignore[union-attr]
    full = [(batch.fname, batch.slice_num.tolist(), batch.mask) for batch in loader]
    dm.resume_position = (2, 2)
    resumed_loader = dm.train_dataloader()
    resumed_loader.batch_sampler.set_epoch(2)  # type: ignore[union-attr]
    resumed = [(batch.fname, batch.slice_num.tolist(), batch.mask) for batch in resumed_loader]
    assert len(resumed) == len(full) - 2
    for (f1, s1, m1), (f2, s2, m2) in zip(full[2:], resumed, strict=True):
        assert f1 == f2 and s1 == s2 and torch.equal(m1, m2)
    assert dm.resume_position is None


def test_bad_input_is_one_line(root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataFormatError) as err:
        _module(tmp_path)
    _one_line(err, str(tmp_path / "singlecoil_val"), "not found")
    (tmp_path / "singlecoil_val").mkdir()
    with pytest.raises(DataFormatError) as err:
        _module(tmp_path)
    _one_line(err, str(tmp_path / "singlecoil_val"), "no .h5 files")

    mixed = tmp_path / "mixed"
    shutil.copytree(root, mixed)
    multi = mixed / "singlecoil_val" / "file_multi.h5"
    formats.write_nyu_file(multi, np.ones((1, 2, 8, 8), np.complex64), np.ones((1, 4, 4), np.float32))
    with pytest.raises(DataFormatError) as err:
        _module(mixed)
    _one_line(err, str(multi), "multi-coil")
    multi.unlink()
    test_file = next((mixed / "singlecoil_test").glob("*.h5"))
    shutil.copy(test_file, mixed / "singlecoil_train" / test_file.name)
    with pytest.raises(DataFormatError) as err:
        _module(mixed)
    _one_line(err, str(mixed / "singlecoil_train" / test_file.name), "mask")

    with pytest.raises(KspacelabError) as err:
        SingleCoilDataModule(str(root), accelerations=[4, 6])
    _one_line(err, "accelerations", "[4, 6]")
    with pytest.raises(KspacelabError) as err:
        SingleCoilDataModule(str(root)).set_input_spec(InputSpec())
    _one_line(err, "multicoil")
