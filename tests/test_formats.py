"""Tests of kspacelab.formats: SNU/NYU HDF5 layouts, validation errors, discovery, atomic writes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from kspacelab import formats
from kspacelab.errors import DataFormatError
from kspacelab.formats import (
    NyuInfo,
    Volume,
    anatomy_from_name,
    atomic_h5,
    discover_folder,
    discover_nyu,
    discover_snu,
    kspace_shape,
    read_image_attrs,
    read_image_slice,
    read_image_volume,
    read_kspace_slice,
    read_mask,
    read_nyu_header,
    read_nyu_slice,
    read_reconstruction,
    validate_image_file,
    validate_kspace_file,
    validate_pair,
    write_image_file,
    write_kspace_file,
    write_reconstruction,
)

S, C, H, W = 3, 2, 8, 6
IMG = 5


# ------------------------------------------------------------------------------------------- helpers


def _kspace(rng: np.random.Generator, shape: tuple[int, ...] = (S, C, H, W)) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _mask(width: int = W) -> np.ndarray:
    m = np.zeros(width, dtype=np.float32)
    m[::2] = 1
    return m


def _images(rng: np.random.Generator, slices: int = S) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b, c = (rng.random((slices, IMG, IMG), dtype=np.float32) * 1e-4 for _ in range(3))
    return a, b, c


def _raw(path: Path, attrs: dict[str, Any] | None = None, **datasets: Any) -> Path:
    """Write an HDF5 file with exactly the given datasets/attrs (no checks), for building bad files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return path


def _good_kspace(path: Path, slices: int = S) -> Path:
    write_kspace_file(path, _kspace(np.random.default_rng(0), (slices, C, H, W)), _mask())
    return path


def _good_image(path: Path, slices: int = S) -> Path:
    write_image_file(path, *_images(np.random.default_rng(1), slices))
    return path


def _assert_one_line(err: pytest.ExceptionInfo[DataFormatError], path: Path, *words: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "\r" not in msg
    assert msg.startswith(f"{path}: ")
    assert path.name in msg
    for word in words:
        assert word in msg, (word, msg)
    return msg


# ---------------------------------------------------------------------------------------- round trips


def test_kspace_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    k = _kspace(rng).astype(np.complex128)  # written as complex64
    mask = np.array([1, 0, 1, 1, 0, 1], dtype=np.int64)
    path = tmp_path / "sub" / "dir" / "brain_acc4_1.h5"  # parents created
    write_kspace_file(path, k, mask)
    with h5py.File(path, "r") as f:
        assert f["kspace"].dtype == np.complex64
        assert f["mask"].dtype == np.float32
        np.testing.assert_array_equal(f["mask"][()], mask.astype(np.float32))
    assert kspace_shape(path) == (S, C, H, W)
    np.testing.assert_array_equal(read_mask(path), mask.astype(bool))
    assert read_mask(path).dtype == np.bool_
    for i in range(S):
        ks, m = read_kspace_slice(path, i)
        assert ks.dtype == np.complex64 and ks.shape == (C, H, W)
        assert m.dtype == np.bool_ and m.shape == (W,)
        np.testing.assert_array_equal(ks, k[i].astype(np.complex64))
    np.testing.assert_array_equal(read_kspace_slice(path, -1)[0], k[-1].astype(np.complex64))
    with pytest.raises(IndexError):
        read_kspace_slice(path, S)
    validate_kspace_file(path)


def test_single_coil_kspace_reads_with_one_coil(tmp_path: Path) -> None:
    k = _kspace(np.random.default_rng(2), (S, H, W))
    path = tmp_path / "knee_acc8_3.h5"
    write_kspace_file(path, k, _mask())
    assert kspace_shape(path) == (S, 1, H, W)
    ks, _ = read_kspace_slice(path, 1)
    np.testing.assert_array_equal(ks, k[1][None])
    validate_kspace_file(path, allow_single_coil=True)
    with pytest.raises(DataFormatError) as err:
        validate_kspace_file(path)
    _assert_one_line(err, path, "kspace", "rank 3")


def test_image_round_trip_and_default_attrs(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    inp, grappa, label = (a.astype(np.float64) for a in _images(rng))
    path = tmp_path / "image" / "brain_acc4_1.h5"
    write_image_file(path, inp, grappa, label)
    with h5py.File(path, "r") as f:
        for key in ("image_input", "image_grappa", "image_label"):
            assert f[key].dtype == np.float32 and f[key].shape == (S, IMG, IMG)
    attrs = read_image_attrs(path)
    assert set(attrs) == {"max", "norm"}
    assert isinstance(attrs["max"], float) and isinstance(attrs["norm"], float)
    assert attrs["max"] == pytest.approx(float(label.astype(np.float32).max()), rel=1e-6)
    assert attrs["norm"] == pytest.approx(float(np.linalg.norm(label.astype(np.float32))), rel=1e-6)
    for key, ref in (("image_input", inp), ("image_grappa", grappa), ("image_label", label)):
        vol = read_image_volume(path, key)
        assert vol.dtype == np.float32 and vol.shape == (S, IMG, IMG)
        np.testing.assert_array_equal(vol, ref.astype(np.float32))
        sl = read_image_slice(path, 2, key)
        assert sl.dtype == np.float32 and sl.shape == (IMG, IMG)
        np.testing.assert_array_equal(sl, ref[2].astype(np.float32))
    np.testing.assert_array_equal(read_image_slice(path, 0), label[0].astype(np.float32))
    validate_image_file(path, expected_slices=S)


def test_image_explicit_attrs_and_missing_norm(tmp_path: Path) -> None:
    inp, grappa, label = _images(np.random.default_rng(4))
    path = tmp_path / "knee_acc4_2.h5"
    write_image_file(path, inp, grappa, label, max_value=5e-4, norm=0.25)
    assert read_image_attrs(path) == {"max": 5e-4, "norm": 0.25}
    other = _raw(tmp_path / "knee_acc4_3.h5", attrs={"max": 1e-4}, image_label=label)
    assert read_image_attrs(other)["norm"] == pytest.approx(float(np.linalg.norm(label)), rel=1e-6)


def test_reconstruction_round_trip(tmp_path: Path) -> None:
    recon = np.random.default_rng(5).random((S, IMG, IMG))  # float64, stored as float32
    path = tmp_path / "out" / "acc4" / "brain_test1.h5"
    write_reconstruction(path, recon)
    with h5py.File(path, "r") as f:
        assert f["reconstruction"].dtype == np.float32
    out = read_reconstruction(path, expected_shape=(S, IMG, IMG))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, recon.astype(np.float32))
    np.testing.assert_array_equal(read_reconstruction(path), out)


@pytest.mark.parametrize(
    "call",
    [
        lambda p: write_kspace_file(p, np.ones((S, C, H, W), np.float32), _mask()),
        lambda p: write_kspace_file(p, np.ones((C, H, W, 1, 1), np.complex64), np.ones(1)),
        lambda p: write_kspace_file(p, np.ones((S, C, H, W), np.complex64), _mask(W + 1)),
        lambda p: write_kspace_file(p, np.ones((S, C, H, W), np.complex64), 2 * _mask()),
        lambda p: write_image_file(p, np.ones((S, 4, 4)), np.ones((S, 4, 4)), np.ones((S, 5, 5))),
        lambda p: write_image_file(p, np.ones((4, 4)), np.ones((4, 4)), np.ones((4, 4))),
        lambda p: write_reconstruction(p, np.ones((4, 4))),
        lambda p: write_reconstruction(p, np.ones((S, 4, 4), np.complex64)),
    ],
)
def test_writers_reject_bad_arrays_and_write_nothing(tmp_path: Path, call: Any) -> None:
    path = tmp_path / "brain_acc4_1.h5"
    with pytest.raises(ValueError):
        call(path)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ atomicity


def test_atomic_h5_failure_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "brain_acc4_1.h5"
    with pytest.raises(RuntimeError, match="boom"), atomic_h5(path) as f:
        f.create_dataset("kspace", data=np.zeros(4))
        raise RuntimeError("boom")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_h5_failure_keeps_existing_file(tmp_path: Path) -> None:
    path = _good_kspace(tmp_path / "brain_acc4_1.h5")
    before = path.read_bytes()
    with pytest.raises(KeyError), atomic_h5(path) as f:
        f.create_dataset("kspace", data=np.zeros(4))
        raise KeyError("half way")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    validate_kspace_file(path)


def test_atomic_h5_writes_hidden_temporary_then_replaces(tmp_path: Path) -> None:
    path = _good_kspace(tmp_path / "brain_acc4_1.h5")
    with atomic_h5(path) as f:
        f.create_dataset("reconstruction", data=np.ones((1, 2, 2), np.float32))
        tmps = [p for p in tmp_path.iterdir() if p.name != path.name]
        assert len(tmps) == 1 and tmps[0].name.startswith(f".{path.name}.tmp-")
        with h5py.File(path, "r") as old:  # the old file is still complete while writing
            assert "kspace" in old
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    with h5py.File(path, "r") as new:
        assert list(new.keys()) == ["reconstruction"]


# ----------------------------------------------------------------------------------------- validation

_K = np.ones((S, C, H, W), np.complex64)


def _nan_at(a: np.ndarray, index: tuple[int, ...], value: complex | float) -> np.ndarray:
    b = a.copy()
    b[index] = value
    return b


KSPACE_CASES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("missing-kspace", {"mask": _mask()}, ("'kspace'", "missing")),
    ("real-kspace", {"kspace": np.ones((S, C, H, W), np.float32), "mask": _mask()}, ("'kspace'", "float32")),
    ("rank-5", {"kspace": np.ones((1, S, C, H, W), np.complex64), "mask": _mask()}, ("'kspace'", "rank 5")),
    ("rank-2", {"kspace": np.ones((H, W), np.complex64), "mask": _mask()}, ("'kspace'", "rank 2")),
    ("missing-mask", {"kspace": _K}, ("'mask'", "missing")),
    ("mask-length", {"kspace": _K, "mask": _mask(W + 2)}, ("'mask'", f"length {W + 2}", f"W={W}")),
    ("mask-value-2", {"kspace": _K, "mask": np.array([0, 1, 2, 1, 0, 1], np.float32)}, ("'mask'", "2")),
    ("mask-2d", {"kspace": _K, "mask": np.ones((2, W), np.float32)}, ("'mask'", "shape")),
    ("mask-complex", {"kspace": _K, "mask": np.ones(W, np.complex64)}, ("'mask'", "dtype")),
    ("kspace-nan", {"kspace": _nan_at(_K, (1, 0, 2, 3), np.nan), "mask": _mask()}, ("'kspace'", "NaN")),
    ("kspace-inf", {"kspace": _nan_at(_K, (2, 1, 0, 0), np.inf), "mask": _mask()}, ("'kspace'", "Inf")),
    ("kspace-nan-imag", {"kspace": _nan_at(_K, (0, 0, 0, 0), 1j * np.nan), "mask": _mask()}, ("'kspace'",)),
    ("empty", {"kspace": np.ones((0, C, H, W), np.complex64), "mask": _mask()}, ("'kspace'", "no slices")),
]


@pytest.mark.parametrize(("case", "datasets", "words"), KSPACE_CASES, ids=[c[0] for c in KSPACE_CASES])
def test_validate_kspace_errors(
    tmp_path: Path, case: str, datasets: dict[str, Any], words: tuple[str]
) -> None:
    path = _raw(tmp_path / "brain_acc4_1.h5", **datasets)
    with pytest.raises(DataFormatError) as err:
        validate_kspace_file(path)
    _assert_one_line(err, path, *words)


@pytest.mark.parametrize(
    "mask",
    [
        np.array([1, 0, 1, 0, 1, 1], bool),
        np.array([1, 0, 1, 0, 1, 1], np.int8),
        np.array([[1, 0, 1, 0, 1, 1]], np.float64),  # squeezable (1, W)
        np.array([1, 0, 1, 0, 1, 1], np.float32).reshape(W, 1),
    ],
)
def test_validate_kspace_accepts_mask_dtypes_and_squeezable_shapes(tmp_path: Path, mask: np.ndarray) -> None:
    path = _raw(tmp_path / "brain_acc4_1.h5", kspace=_K.astype(np.complex128), mask=mask)
    validate_kspace_file(path)
    np.testing.assert_array_equal(read_mask(path), [True, False, True, False, True, True])


@pytest.mark.parametrize("slices_per_read", [1, 2, 3, 4, 100])
def test_validate_kspace_finiteness_is_checked_in_chunks(
    tmp_path: Path, monkeypatch: Any, slices_per_read: int
) -> None:
    k = np.ones((7, C, H, W), np.complex64)
    k[5, 1, 3, 2] = np.inf
    k[6, 0, 0, 0] = np.nan
    path = _raw(tmp_path / "knee_acc4_1.h5", kspace=k, mask=_mask())
    monkeypatch.setattr(formats, "_CHUNK_BYTES", slices_per_read * C * H * W * 8)
    with pytest.raises(DataFormatError) as err:
        validate_kspace_file(path)
    msg = _assert_one_line(err, path, "'kspace'", "Inf", "slice 5")
    assert "NaN" not in msg  # the NaN of slice 6 comes later, whatever the grouping of slices


_L = np.full((S, IMG, IMG), 1e-4, np.float32)
_MAX = {"max": 1e-4, "norm": 1.0}

IMAGE_CASES: list[tuple[str, dict[str, Any], dict[str, Any], tuple[str, ...]]] = [
    ("missing-label", _MAX, {"image_input": _L}, ("'image_label'", "missing")),
    ("label-int", _MAX, {"image_label": _L.astype(np.int32)}, ("'image_label'", "int32")),
    ("label-complex", _MAX, {"image_label": _L.astype(np.complex64)}, ("'image_label'", "dtype")),
    ("label-rank-2", _MAX, {"image_label": _L[0]}, ("'image_label'", "rank 2")),
    ("input-rank-2", _MAX, {"image_label": _L, "image_input": _L[0]}, ("'image_input'", "rank 2")),
    ("grappa-shape", _MAX, {"image_label": _L, "image_grappa": _L[:2]}, ("'image_grappa'", "shape")),
    ("label-nan", _MAX, {"image_label": _nan_at(_L, (1, 2, 3), np.nan)}, ("'image_label'", "NaN")),
    ("label-inf", _MAX, {"image_label": _nan_at(_L, (2, 0, 0), -np.inf)}, ("'image_label'", "Inf")),
    ("grappa-nan", _MAX, {"image_label": _L, "image_grappa": _nan_at(_L, (0, 0, 0), np.nan)}, ("grappa",)),
    ("missing-max", {"norm": 1.0}, {"image_label": _L}, ("'max'", "missing")),
    ("max-zero", {"max": 0.0}, {"image_label": _L}, ("'max'", "positive")),
    ("max-nan", {"max": np.nan}, {"image_label": _L}, ("'max'", "nan")),
    ("max-text", {"max": "big"}, {"image_label": _L}, ("'max'", "not a number")),
    ("norm-inf", {"max": 1e-4, "norm": np.inf}, {"image_label": _L}, ("'norm'", "inf")),
]


@pytest.mark.parametrize(("case", "attrs", "datasets", "words"), IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_validate_image_errors(
    tmp_path: Path, case: str, attrs: dict[str, Any], datasets: dict[str, Any], words: tuple[str]
) -> None:
    path = _raw(tmp_path / "knee_acc8_4.h5", attrs=attrs, **datasets)
    with pytest.raises(DataFormatError) as err:
        validate_image_file(path)
    _assert_one_line(err, path, *words)


def test_validate_image_slice_count(tmp_path: Path) -> None:
    path = _good_image(tmp_path / "brain_acc4_1.h5", slices=12)
    validate_image_file(path, expected_slices=12)
    with pytest.raises(DataFormatError) as err:
        validate_image_file(path, expected_slices=14)
    msg = _assert_one_line(err, path, "image_label")
    assert msg == f"{path}: has 12 slices in image_label but its k-space file has 14"


def test_read_image_attrs_missing_max(tmp_path: Path) -> None:
    path = _raw(tmp_path / "brain_acc4_1.h5", attrs={"norm": 1.0}, image_label=_L)
    with pytest.raises(DataFormatError) as err:
        read_image_attrs(path)
    _assert_one_line(err, path, "'max'")


@pytest.mark.parametrize(
    "check",
    [
        validate_kspace_file,
        validate_image_file,
        read_reconstruction,
        read_mask,
        kspace_shape,
        read_nyu_header,
        lambda p: read_kspace_slice(p, 0),
        lambda p: read_image_slice(p, 0),
    ],
)
@pytest.mark.parametrize("damage", ["truncated", "not-hdf5", "missing", "folder"])
def test_unreadable_files(tmp_path: Path, check: Any, damage: str) -> None:
    path = tmp_path / "brain_test3.h5"
    if damage == "truncated":
        _good_kspace(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        words: tuple[str, ...] = ("not a readable HDF5 file (truncated or corrupt?)",)
    elif damage == "not-hdf5":
        path.write_text("kspace,mask\n1,2\n")
        words = ("not a readable HDF5 file",)
    elif damage == "missing":
        words = ("not found",)
    else:
        path.mkdir()
        words = ("folder",)
    with pytest.raises(DataFormatError) as err:
        check(path)
    _assert_one_line(err, path, *words)


def test_validate_pair(tmp_path: Path) -> None:
    kpath = _good_kspace(tmp_path / "kspace" / "brain_acc4_1.h5")
    ipath = _good_image(tmp_path / "image" / "brain_acc4_1.h5")
    validate_pair(kpath, ipath)

    missing = tmp_path / "image" / "brain_acc4_2.h5"
    with pytest.raises(DataFormatError) as err:
        validate_pair(kpath, missing)
    _assert_one_line(err, missing, "missing image file", "brain_acc4_1.h5")

    missing_k = tmp_path / "kspace" / "brain_acc4_9.h5"
    with pytest.raises(DataFormatError) as err:
        validate_pair(missing_k, ipath)
    _assert_one_line(err, missing_k, "missing k-space file")

    short = _good_image(tmp_path / "image" / "brain_acc4_5.h5", slices=S - 1)
    with pytest.raises(DataFormatError) as err:
        validate_pair(kpath, short)
    msg = _assert_one_line(err, short, "image_label")
    assert msg.endswith(f"has {S - 1} slices in image_label but its k-space file has {S}")

    bad_k = _raw(tmp_path / "kspace" / "brain_acc4_6.h5", kspace=_K, mask=2 * _mask())
    with pytest.raises(DataFormatError) as err:
        validate_pair(bad_k, ipath)
    _assert_one_line(err, bad_k, "'mask'")


RECON_CASES: list[tuple[str, dict[str, Any], tuple[int, ...] | None, tuple[str, ...]]] = [
    ("missing", {"image_label": _L}, None, ("'reconstruction'", "missing")),
    ("rank-2", {"reconstruction": _L[0]}, None, ("'reconstruction'", "rank 2")),
    ("int", {"reconstruction": _L.astype(np.int16)}, None, ("'reconstruction'", "int16")),
    ("nan", {"reconstruction": _nan_at(_L, (2, 4, 4), np.nan)}, None, ("'reconstruction'", "NaN")),
    ("shape", {"reconstruction": _L}, (S + 1, IMG, IMG), ("'reconstruction'", f"expected ({S + 1}, 5, 5)")),
]


@pytest.mark.parametrize(("case", "datasets", "shape", "words"), RECON_CASES, ids=[c[0] for c in RECON_CASES])
def test_read_reconstruction_errors(
    tmp_path: Path, case: str, datasets: dict[str, Any], shape: Any, words: tuple[str]
) -> None:
    path = _raw(tmp_path / "acc4" / "brain_test1.h5", **datasets)
    with pytest.raises(DataFormatError) as err:
        read_reconstruction(path, expected_shape=shape)
    _assert_one_line(err, path, *words)


def _read_first_mask_sum(path: str) -> float:
    return float(read_kspace_slice(path, 0)[1].sum())


def test_readers_work_in_forked_workers(tmp_path: Path) -> None:
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    path = _good_kspace(tmp_path / "brain_acc4_1.h5")
    read_kspace_slice(path, 0)  # the parent has used the file before forking
    with multiprocessing.get_context("fork").Pool(2) as pool:
        sums = pool.map(_read_first_mask_sum, [str(path)] * 4)
    assert sums == [float(_mask().sum())] * 4


# ------------------------------------------------------------------------------------------ discovery


def test_anatomy_from_name() -> None:
    assert anatomy_from_name("brain_acc4_1.h5") == "brain"
    assert anatomy_from_name("knee_test10.h5") == "knee"
    assert anatomy_from_name("/data/train/kspace/Brain_acc8_3.h5") == "brain"
    assert anatomy_from_name("file_knee_7.h5") == "knee"
    assert anatomy_from_name("brain_with_knee.h5") == "brain"  # the prefix wins
    for bad in ("phantom_1.h5", "x_brain_knee.h5"):
        with pytest.raises(DataFormatError) as err:
            anatomy_from_name(bad)
        assert bad in str(err.value) and "\n" not in str(err.value)


def test_natural_key_order() -> None:
    names = ["brain_test10.h5", "brain_test2.h5", "Brain_test1.h5", "knee_test1.h5", "brain_acc4_100.h5"]
    assert sorted(names, key=formats.natural_key) == [
        "brain_acc4_100.h5",
        "Brain_test1.h5",
        "brain_test2.h5",
        "brain_test10.h5",
        "knee_test1.h5",
    ]


def _touch_volume(folder: Path, name: str, image: bool = True) -> None:
    """Tiny placeholder files: discovery only looks at names, never at contents."""
    (folder / "kspace").mkdir(parents=True, exist_ok=True)
    (folder / "kspace" / name).write_bytes(b"")
    if image:
        (folder / "image").mkdir(parents=True, exist_ok=True)
        (folder / "image" / name).write_bytes(b"")


def test_discover_folder_natural_order_and_fields(tmp_path: Path) -> None:
    for name in ("brain_test10.h5", "knee_test1.h5", "brain_test2.h5", "brain_test1.h5"):
        _touch_volume(tmp_path, name, image=name != "knee_test1.h5")
    (tmp_path / "kspace" / ".brain_test3.h5.tmp-abc").write_bytes(b"")  # an unfinished write
    (tmp_path / "kspace" / "notes.txt").write_text("x")
    vols = discover_folder(tmp_path, split="leaderboard", acceleration=8)
    assert [v.name for v in vols] == ["brain_test1.h5", "brain_test2.h5", "brain_test10.h5", "knee_test1.h5"]
    first = vols[0]
    assert first == Volume(
        name="brain_test1.h5",
        kspace_path=tmp_path / "kspace" / "brain_test1.h5",
        image_path=tmp_path / "image" / "brain_test1.h5",
        anatomy="brain",
        acceleration=8,
        split="leaderboard",
    )
    assert vols[3].image_path is None and vols[3].anatomy == "knee"
    with pytest.raises(AttributeError):
        first.name = "x"  # type: ignore[misc]


def test_discover_folder_acceleration_from_name(tmp_path: Path) -> None:
    _touch_volume(tmp_path, "brain_acc8_2.h5")
    _touch_volume(tmp_path, "knee_acc4_1.h5")
    vols = discover_folder(tmp_path, split="train")
    assert [(v.name, v.acceleration, v.split) for v in vols] == [
        ("brain_acc8_2.h5", 8, "train"),
        ("knee_acc4_1.h5", 4, "train"),
    ]
    with pytest.raises(DataFormatError) as err:
        discover_folder(tmp_path, acceleration=4)
    _assert_one_line(err, tmp_path / "kspace" / "brain_acc8_2.h5", "acc8", "acc4")


def test_discover_folder_missing_partners(tmp_path: Path) -> None:
    _touch_volume(tmp_path, "brain_acc4_1.h5")
    (tmp_path / "image" / "brain_acc4_2.h5").write_bytes(b"")
    with pytest.raises(DataFormatError) as err:
        discover_folder(tmp_path)
    _assert_one_line(err, tmp_path / "kspace" / "brain_acc4_2.h5", "missing k-space file")

    (tmp_path / "image" / "brain_acc4_2.h5").unlink()
    (tmp_path / "kspace" / "brain_acc4_3.h5").write_bytes(b"")
    assert len(discover_folder(tmp_path)) == 2
    with pytest.raises(DataFormatError) as err:
        discover_folder(tmp_path, require_images=True)
    _assert_one_line(err, tmp_path / "image" / "brain_acc4_3.h5", "missing image file")


def test_discover_folder_require_images_without_image_folder(tmp_path: Path) -> None:
    _touch_volume(tmp_path, "brain_acc4_1.h5", image=False)
    assert discover_folder(tmp_path)[0].image_path is None
    with pytest.raises(DataFormatError) as err:
        discover_folder(tmp_path, require_images=True)
    _assert_one_line(err, tmp_path / "image", "image/")


def test_discover_folder_empty_and_missing(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError) as err:
        discover_folder(tmp_path)
    _assert_one_line(err, tmp_path, "kspace/")
    (tmp_path / "kspace").mkdir()
    (tmp_path / "kspace" / "readme.txt").write_text("x")
    with pytest.raises(DataFormatError) as err:
        discover_folder(tmp_path)
    _assert_one_line(err, tmp_path / "kspace", "no .h5 files")
    with pytest.raises(DataFormatError) as err:
        discover_folder(tmp_path / "nope")
    _assert_one_line(err, tmp_path / "nope", "not found")
    _touch_volume(tmp_path, "phantom_1.h5")
    with pytest.raises(DataFormatError) as err:
        discover_folder(tmp_path)
    _assert_one_line(err, tmp_path / "kspace" / "phantom_1.h5", "anatomy")


def _leaderboard(folder: Path) -> None:
    for acc in ("acc4", "acc8"):
        for name in ("brain_test10.h5", "brain_test2.h5", "knee_test1.h5"):
            _touch_volume(folder / acc, name)


def test_discover_snu_dataset_root(tmp_path: Path) -> None:
    for i in (10, 2, 1):
        _touch_volume(tmp_path / "train", f"brain_acc4_{i}.h5")
    _touch_volume(tmp_path / "train", "knee_acc8_5.h5")
    _touch_volume(tmp_path / "val", "knee_acc8_86.h5")
    _leaderboard(tmp_path / "leaderboard")
    found = discover_snu(tmp_path)
    assert list(found) == ["train", "val", "leaderboard/acc4", "leaderboard/acc8"]
    assert [v.name for v in found["train"]] == [
        "brain_acc4_1.h5",
        "brain_acc4_2.h5",
        "brain_acc4_10.h5",
        "knee_acc8_5.h5",
    ]
    assert [v.acceleration for v in found["train"]] == [4, 4, 4, 8]
    assert {v.split for v in found["train"]} == {"train"}
    assert [(v.split, v.anatomy, v.acceleration) for v in found["val"]] == [("val", "knee", 8)]
    for acc in (4, 8):
        vols = found[f"leaderboard/acc{acc}"]
        assert [v.name for v in vols] == ["brain_test2.h5", "brain_test10.h5", "knee_test1.h5"]
        assert {(v.split, v.acceleration) for v in vols} == {("leaderboard", acc)}
        assert vols[0].kspace_path == tmp_path / "leaderboard" / f"acc{acc}" / "kspace" / "brain_test2.h5"


def test_discover_snu_partial_root_and_bad_leaderboard(tmp_path: Path) -> None:
    _touch_volume(tmp_path / "val", "brain_acc4_90.h5")
    assert list(discover_snu(tmp_path)) == ["val"]
    (tmp_path / "leaderboard").mkdir()
    with pytest.raises(DataFormatError) as err:
        discover_snu(tmp_path)
    _assert_one_line(err, tmp_path / "leaderboard", "acc4/")


def test_discover_snu_leaderboard_folder(tmp_path: Path) -> None:
    _leaderboard(tmp_path)
    found = discover_snu(tmp_path)
    assert list(found) == ["acc4", "acc8"]
    assert [v.acceleration for v in found["acc8"]] == [8, 8, 8]
    assert found["acc4"][2].image_path == tmp_path / "acc4" / "image" / "knee_test1.h5"
    only8 = tmp_path / "only8"
    _touch_volume(only8 / "acc8", "brain_test1.h5", image=False)
    assert list(discover_snu(only8)) == ["acc8"]


def test_discover_snu_single_folder(tmp_path: Path) -> None:
    _touch_volume(tmp_path, "knee_acc4_3.h5", image=False)
    found = discover_snu(tmp_path)
    assert list(found) == [""]
    assert found[""][0] == Volume(
        "knee_acc4_3.h5", tmp_path / "kspace" / "knee_acc4_3.h5", None, "knee", 4, ""
    )


def test_discover_snu_errors(tmp_path: Path) -> None:
    (tmp_path / "image").mkdir()
    with pytest.raises(DataFormatError) as err:
        discover_snu(tmp_path)
    _assert_one_line(err, tmp_path, "not an SNU dataset")
    with pytest.raises(DataFormatError) as err:
        discover_snu(tmp_path / "missing")
    _assert_one_line(err, tmp_path / "missing", "not found")
    (tmp_path / "acc4" / "kspace").mkdir(parents=True)
    with pytest.raises(DataFormatError) as err:
        discover_snu(tmp_path)
    _assert_one_line(err, tmp_path / "acc4" / "kspace", "no .h5 files")


# ------------------------------------------------------------------------------------------------ NYU


def _ismrmrd_xml(enc: tuple[int, int, int], rec: tuple[int, int, int], center: int, maximum: int) -> bytes:
    def size(v: tuple[int, int, int]) -> str:
        return f"<matrixSize><x>{v[0]}</x><y>{v[1]}</y><z>{v[2]}</z></matrixSize>"

    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD" '
        'xmlns:xs="http://www.w3.org/2001/XMLSchema">\n'
        "  <studyInformation><studyTime>12:00:00</studyTime></studyInformation>\n"
        "  <encoding>\n"
        f"    <encodedSpace>{size(enc)}<fieldOfView_mm><x>280</x><y>140</y><z>4.5</z></fieldOfView_mm>"
        "</encodedSpace>\n"
        f"    <reconSpace>{size(rec)}</reconSpace>\n"
        "    <encodingLimits>\n"
        "      <kspace_encoding_step_0><minimum>0</minimum><maximum>0</maximum><center>0</center>"
        "</kspace_encoding_step_0>\n"
        f"      <kspace_encoding_step_1><minimum>0</minimum><maximum>{maximum}</maximum>"
        f"<center>{center}</center></kspace_encoding_step_1>\n"
        "    </encodingLimits>\n"
        "  </encoding>\n"
        "</ismrmrdHeader>\n"
    ).encode()


def _nyu_multicoil(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    k = _kspace(rng, (4, 3, 16, 12))
    target = rng.random((4, 6, 6), dtype=np.float32)
    attrs = {"acquisition": "CORPD_FBK", "max": 0.0005, "norm": 0.12, "patient_id": "abc123"}
    _raw(
        path,
        attrs=attrs,
        kspace=k,
        reconstruction_rss=target,
        ismrmrd_header=np.bytes_(_ismrmrd_xml((32, 12, 1), (6, 6, 1), center=5, maximum=10)),
    )
    return k, target


def test_nyu_multicoil_header_and_slice(tmp_path: Path) -> None:
    path = tmp_path / "file1000001.h5"
    k, target = _nyu_multicoil(path)
    info = read_nyu_header(path)
    assert isinstance(info, NyuInfo)
    assert info.path == path
    assert info.kspace_shape == (4, 3, 16, 12) and info.num_slices == 4 and info.multicoil
    assert info.target_key == "reconstruction_rss" and not info.has_mask
    assert info.acquisition == "CORPD_FBK" and info.patient_id == "abc123"
    assert info.max_value == pytest.approx(0.0005) and info.norm == pytest.approx(0.12)
    assert info.encoding_size == (32, 12, 1) and info.recon_size == (6, 6, 1)
    assert (info.padding_left, info.padding_right) == (12 // 2 - 5, 12 // 2 - 5 + 10 + 1)
    assert info.attrs["acquisition"] == "CORPD_FBK"
    ks, mask, tgt = read_nyu_slice(path, 2)
    assert ks.dtype == np.complex64 and ks.shape == (3, 16, 12)
    np.testing.assert_array_equal(ks, k[2])
    assert mask is None
    assert tgt is not None and tgt.dtype == np.float32
    np.testing.assert_array_equal(tgt, target[2])


def test_nyu_single_coil_test_file(tmp_path: Path) -> None:
    path = tmp_path / "file1000002_v2.h5"
    k = _kspace(np.random.default_rng(8), (2, 16, 10))
    mask = np.zeros(10, np.float32)
    mask[3:7] = 1
    _raw(
        path,
        attrs={"acquisition": "CORPDFS_FBK"},
        kspace=k,
        mask=mask,
        ismrmrd_header=_ismrmrd_xml((32, 10, 1), (8, 8, 1), center=6, maximum=9).decode(),
    )
    info = read_nyu_header(path)
    assert not info.multicoil and info.kspace_shape == (2, 16, 10)
    assert info.target_key is None and info.has_mask
    assert info.max_value is None and info.norm is None and info.patient_id is None
    assert (info.padding_left, info.padding_right) == (-1, 9)
    ks, m, tgt = read_nyu_slice(path, 1)
    assert ks.shape == (16, 10) and ks.dtype == np.complex64
    assert m is not None and m.dtype == np.bool_
    np.testing.assert_array_equal(m, mask.astype(bool))
    assert tgt is None


def test_nyu_single_coil_esc_target(tmp_path: Path) -> None:
    path = tmp_path / "file1000003.h5"
    target = np.random.default_rng(9).random((2, 4, 4), dtype=np.float32)
    _raw(
        path,
        kspace=_kspace(np.random.default_rng(9), (2, 8, 8)),
        reconstruction_esc=target,
        ismrmrd_header=np.bytes_(_ismrmrd_xml((16, 8, 1), (4, 4, 1), 4, 7)),
    )
    assert read_nyu_header(path).target_key == "reconstruction_esc"
    tgt = read_nyu_slice(path, 1)[2]
    assert tgt is not None
    np.testing.assert_array_equal(tgt, target[1])


def test_nyu_header_matches_fastmri(tmp_path: Path) -> None:
    mri_data = pytest.importorskip("fastmri.data.mri_data")
    path = tmp_path / "file1000001.h5"
    _nyu_multicoil(path)
    metadata, num_slices = mri_data.SliceDataset._retrieve_metadata(None, path)
    info = read_nyu_header(path)
    assert info.num_slices == num_slices
    assert info.padding_left == metadata["padding_left"]
    assert info.padding_right == metadata["padding_right"]
    assert info.encoding_size == metadata["encoding_size"]
    assert info.recon_size == metadata["recon_size"]


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (b"<ismrmrdHeader><encoding>", ("'ismrmrd_header'", "not valid XML")),
        (
            b'<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding/></ismrmrdHeader>',
            ("'ismrmrd_header'", "encodedSpace/matrixSize/x"),
        ),
        (None, ("'ismrmrd_header'", "missing")),
    ],
)
def test_nyu_header_errors(tmp_path: Path, header: bytes | None, words: tuple[str]) -> None:
    path = tmp_path / "file1000009.h5"
    datasets: dict[str, Any] = {"kspace": _kspace(np.random.default_rng(0), (1, 2, 4, 4))}
    if header is not None:
        datasets["ismrmrd_header"] = np.bytes_(header)
    _raw(path, **datasets)
    with pytest.raises(DataFormatError) as err:
        read_nyu_header(path)
    _assert_one_line(err, path, *words)


def test_nyu_header_without_namespace(tmp_path: Path) -> None:
    path = tmp_path / "file1000010.h5"
    xml = _ismrmrd_xml((20, 14, 1), (8, 8, 1), 7, 13).replace(b' xmlns="http://www.ismrm.org/ISMRMRD"', b"")
    _raw(path, kspace=_kspace(np.random.default_rng(0), (1, 2, 4, 14)), ismrmrd_header=np.bytes_(xml))
    info = read_nyu_header(path)
    assert info.encoding_size == (20, 14, 1) and (info.padding_left, info.padding_right) == (0, 14)


def test_discover_nyu(tmp_path: Path) -> None:
    for name in ("file1000010.h5", "file1000002.h5", "file100.h5"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "other.txt").write_text("x")
    assert [p.name for p in discover_nyu(tmp_path)] == ["file100.h5", "file1000002.h5", "file1000010.h5"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataFormatError) as err:
        discover_nyu(empty)
    _assert_one_line(err, empty, "no .h5 files")
    with pytest.raises(DataFormatError) as err:
        discover_nyu(tmp_path / "absent")
    _assert_one_line(err, tmp_path / "absent", "not found")


def test_no_file_appears_after_a_rollback_from_another_thread_while_writes_are_paused(tmp_path: Path) -> None:
    """A device process's watcher thread removes the run's files while the main thread goes on: a write whose
    path was claimed before the rollback must not reach the disk while the watcher holds ``writes_paused``
    (it ends the process inside that block)."""
    run = formats.OutputSet()
    claimed, rolled_back = threading.Event(), threading.Event()
    written = tmp_path / "out" / "late.txt"
    formats.atomic_text(run.claim(tmp_path / "out" / "early.txt"), "x")

    def writer() -> None:
        path = run.claim(written)
        claimed.set()
        rolled_back.wait(10)
        formats.atomic_text(path, "written after the rollback")

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    assert claimed.wait(10)
    with formats.writes_paused():
        run.rollback()
        rolled_back.set()
        thread.join(0.5)  # the writer would write now, without the pause
        left = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    thread.join(10)
    assert left == []
    assert written.read_text() == "written after the rollback"  # it waited, it was not lost or broken


def test_a_second_sigint_does_not_stop_the_rollback(tmp_path: Path) -> None:
    """A device process gets SIGINT from torch when its command dies, sometimes twice: the rollback that the first
    KeyboardInterrupt starts must finish all the same, and the first exception is what propagates."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")

    class InterruptedRollback(formats.OutputSet):
        def rollback(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)  # the second SIGINT, before any file is removed
            time.sleep(0.2)  # the handler runs here, if SIGINT is not ignored
            super().rollback()

    run = InterruptedRollback()
    with pytest.raises(KeyboardInterrupt, match="first"), formats.all_or_nothing(run):
        for i in range(3):
            formats.atomic_text(run.claim(tmp_path / "out" / f"f{i}.txt"), "x")
        raise KeyboardInterrupt("first")
    assert not (tmp_path / "out").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
