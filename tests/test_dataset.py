"""Tests of the slice dataset, the slice transform, the shape-grouped sampler and the data module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from helpers import TINY
from kspacelab import formats, masks, physics
from kspacelab.data import (
    ShapeGroupedBatchSampler,
    SliceDataset,
    SliceTransform,
    SnuDataModule,
)
from kspacelab.data.synthetic import simulate_dataset
from kspacelab.errors import KspacelabError
from kspacelab.models.base import InputSpec, ReconSample
from kspacelab.physics import crop_readout


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SNU-layout dataset: 4 train, 4 val and 2 + 2 leaderboard volumes of 2 slices, 6 coils."""
    out = tmp_path_factory.mktemp("snu") / "data"
    simulate_dataset(out, preset=TINY, progress=False)
    return out


@pytest.fixture(scope="module")
def train(root: Path) -> SliceDataset:
    return SliceDataset.from_folder(root / "train", SliceTransform(), split="train")


def _real_view(k: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack([k.real, k.imag], axis=-1).astype(np.float32))


def _image_rss(masked_kspace: torch.Tensor, crop: tuple[int, int]) -> torch.Tensor:
    image = physics.rss_complex(physics.ifft2c(masked_kspace), dim=0)
    return physics.center_crop(image, crop)


# ------------------------------------------------------------------------------------------- items


def test_item_shapes_and_dtypes(train: SliceDataset) -> None:
    assert len(train) == 8  # 4 volumes x 2 slices
    for i in range(len(train)):
        item = train[i]
        assert isinstance(item, ReconSample)
        c, h, w = train.volumes[train.items[i][0]].kspace_shape
        assert item.masked_kspace.shape == (c, h, w, 2)
        assert item.masked_kspace.dtype == torch.float32
        assert item.mask.shape == (1, 1, w, 1)
        assert item.mask.dtype == torch.bool
        assert item.target.shape == (TINY.crop, TINY.crop)
        assert item.target.dtype == torch.float32
        assert item.crop_size.dtype == torch.int64
        assert item.crop_size.tolist() == [TINY.crop, TINY.crop]
        assert isinstance(item.num_low_frequencies, int)
        assert isinstance(item.max_value, float)
        assert item.anatomy in ("brain", "knee")
        assert item.fname.endswith(".h5")
        assert item.slice_num == train.items[i][1]
        assert item.extra_images.shape == (0, TINY.crop, TINY.crop)  # the default spec names no extra images
        assert item.extra_images.dtype == torch.float32
        assert item.output_size() == (TINY.crop, TINY.crop)


def test_train_item_is_file_kspace_times_file_mask_with_target_and_max(train: SliceDataset) -> None:
    accelerations = set()
    for i in range(len(train)):
        item = train[i]
        vol = train.volumes[train.items[i][0]].volume
        k, m = formats.read_kspace_slice(vol.kspace_path, item.slice_num)
        assert torch.equal(item.mask.reshape(-1), torch.from_numpy(m))
        expected = _real_view(k) * torch.from_numpy(m).reshape(1, 1, -1, 1)
        assert torch.equal(item.masked_kspace, expected)
        assert not torch.equal(item.masked_kspace, _real_view(k))  # the train k-space is fully sampled
        assert vol.image_path is not None
        label = formats.read_image_slice(vol.image_path, item.slice_num, "image_label")
        assert torch.equal(item.target, torch.from_numpy(label))
        assert item.max_value == formats.read_image_attrs(vol.image_path)["max"]
        start, stop = masks.center_block(m)
        assert item.num_low_frequencies == stop - start
        assert item.acceleration == vol.acceleration == masks.estimate_acceleration(m)
        assert item.anatomy == vol.anatomy
        accelerations.add(item.acceleration)
    assert accelerations == {4, 8}


def test_leaderboard_items_unchanged(root: Path) -> None:
    for acc in (4, 8):
        board = SliceDataset.from_folder(
            root / "leaderboard" / f"acc{acc}", SliceTransform(), split="leaderboard", acceleration=acc
        )
        assert len(board) == 4
        for i in range(len(board)):
            item = board[i]
            vol = board.volumes[board.items[i][0]].volume
            k, _ = formats.read_kspace_slice(vol.kspace_path, item.slice_num)
            assert torch.equal(item.masked_kspace, _real_view(k))
            assert item.acceleration == acc


def test_adjacent_slices_stack_along_coils_with_clamping(root: Path, train: SliceDataset) -> None:
    adj = SliceDataset.from_folder(root / "train", SliceTransform(InputSpec(num_adj_slices=3)))
    vol = adj.volumes[0].volume
    num_slices = adj.volumes[0].num_slices
    coils = adj.volumes[0].kspace_shape[0]
    assert num_slices == 2
    for s, neighbours in ((0, [0, 0, 1]), (num_slices - 1, [0, 1, 1])):
        item = adj[s]
        assert item.slice_num == s
        assert item.masked_kspace.shape[0] == 3 * coils
        _, m = formats.read_kspace_slice(vol.kspace_path, s)
        mask = torch.from_numpy(m).reshape(1, 1, -1, 1)
        for block, j in enumerate(neighbours):
            k, _ = formats.read_kspace_slice(vol.kspace_path, j)
            got = item.masked_kspace[block * coils : (block + 1) * coils]
            assert torch.equal(got, _real_view(k) * mask)
        assert torch.equal(item.target, train[s].target)  # centre slice's target
    assert adj.shape_keys()[0][0] == 3 * coils


# -------------------------------------------------------------------------------------- mask functions


def test_mask_func_seeded_from_fname_matches_direct_call(root: Path) -> None:
    transform = SliceTransform(
        mask_func=masks.create_mask_for_mask_type("equispaced_fraction", [0.08], [4]),
        use_file_mask=False,
        seed_from_fname=True,
    )
    ds = SliceDataset.from_folder(root / "val", transform)
    direct = masks.create_mask_for_mask_type("equispaced_fraction", [0.08], [4])
    for i in (0, 1, 0):  # two slices of one volume, and the first again (a second epoch)
        item = ds[i]
        vol = ds.volumes[0].volume
        k, file_mask = formats.read_kspace_slice(vol.kspace_path, item.slice_num)
        expected, _ = direct(item.masked_kspace.shape, seed=tuple(map(ord, vol.name)))
        assert torch.equal(item.mask, expected.bool())
        assert not np.array_equal(item.mask.reshape(-1).numpy(), file_mask)
        assert torch.equal(item.masked_kspace, _real_view(k) * expected)
        start, stop = masks.center_block(expected)
        assert item.num_low_frequencies == stop - start
        assert item.acceleration == 4


def test_unseeded_mask_func_draws_new_masks_each_epoch(root: Path) -> None:
    transform = SliceTransform(
        mask_func=masks.create_mask_for_mask_type("equispaced_fraction", [0.08], [4], seed=0),
        use_file_mask=False,
    )
    ds = SliceDataset.from_folder(root / "train", transform)
    epochs = [[ds[i].mask.reshape(-1) for i in range(len(ds))] for _ in range(2)]
    assert any(not torch.equal(a, b) for a, b in zip(*epochs, strict=True))


def test_transform_needs_a_mask() -> None:
    with pytest.raises(ValueError, match="mask_func"):
        SliceTransform(use_file_mask=False)
    k = np.ones((2, 8, 6), dtype=np.complex64)
    with pytest.raises(ValueError, match="no mask"):
        SliceTransform()(k, None, None, {}, "x.h5", 0)


# ---------------------------------------------------------------------------------------- crop height


def test_crop_readout_equals_1d_fft_along_readout() -> None:
    rng = np.random.default_rng(0)
    k = (rng.standard_normal((3, 40, 12)) + 1j * rng.standard_normal((3, 40, 12))).astype(np.complex64)
    got = crop_readout(torch.from_numpy(k), 24).numpy()
    axis = -2
    image = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(k, axes=axis), axis=axis, norm="ortho"), axes=axis)
    image = image[:, (40 - 24) // 2 : (40 - 24) // 2 + 24]
    expected = np.fft.fftshift(
        np.fft.fft(np.fft.ifftshift(image, axes=axis), axis=axis, norm="ortho"), axes=axis
    )
    assert got.shape == (3, 24, 12)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert crop_readout(torch.from_numpy(k), 64).shape == (3, 40, 12)  # no-op when H <= height


def test_crop_height_keeps_the_target_image(train: SliceDataset) -> None:
    height = 160  # TINY: H = 256, target 128
    cropped = SliceDataset(
        [info.volume for info in train.volumes],
        SliceTransform(InputSpec(crop_height={"brain": height, "knee": height})),
    )
    assert {key[1] for key in cropped.shape_keys()} == {height}
    for i in (0, len(train) - 1):
        full, small = train[i], cropped[i]
        assert small.masked_kspace.shape[1] == height
        assert torch.equal(small.mask, full.mask)
        crop = (TINY.crop, TINY.crop)
        reference = _image_rss(full.masked_kspace, crop)
        image = _image_rss(small.masked_kspace, crop)
        assert float((image - reference).abs().max()) <= 1e-5 * float(reference.abs().max())
    with pytest.raises(ValueError, match="smaller than the target"):
        SliceDataset(
            [train.volumes[0].volume], SliceTransform(InputSpec(crop_height={"brain": 100, "knee": 100}))
        )[0]
    with pytest.raises(ValueError, match="parity"):
        SliceDataset(
            [train.volumes[0].volume], SliceTransform(InputSpec(crop_height={"brain": 161, "knee": 161}))
        )[0]


# -------------------------------------------------------------------------------------------- sampler


def _epoch(sampler: ShapeGroupedBatchSampler) -> list[list[int]]:
    batches = list(sampler)
    assert len(batches) == len(sampler)
    return batches


def test_sampler_groups_by_shape_and_covers_every_index_once() -> None:
    shapes = [(1, 2)] * 5 + [(3, 4)] * 3 + [(1, 2, 3)] * 4
    shapes = [shapes[i] for i in np.random.default_rng(1).permutation(len(shapes))]
    sampler = ShapeGroupedBatchSampler(shapes, batch_size=2, shuffle=True, seed=7)
    batches = _epoch(sampler)
    assert len(batches) == 3 + 2 + 2
    assert all(len({shapes[i] for i in b}) == 1 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(len(shapes)))
    again = ShapeGroupedBatchSampler(shapes, batch_size=2, shuffle=True, seed=7)
    assert _epoch(again) == batches  # deterministic for a seed
    sampler.set_epoch(1)
    assert _epoch(sampler) != batches  # a new order per epoch
    assert sampler.sampler is sampler  # Lightning's set_epoch hook
    plain = ShapeGroupedBatchSampler(shapes, batch_size=2, shuffle=False)
    assert [i for b in _epoch(plain) for i in b] == sorted(
        range(len(shapes)), key=lambda i: ([*dict.fromkeys(shapes)].index(shapes[i]), i)
    )
    dropped = _epoch(ShapeGroupedBatchSampler(shapes, batch_size=2, shuffle=True, drop_last=True))
    assert all(len(b) == 2 for b in dropped) and len(dropped) == 2 + 1 + 2


def test_sampler_splits_batches_across_ranks() -> None:
    shapes = [(1,)] * 4 + [(2,)] * 3 + [(3,)] * 4  # 2 + 2 + 2 = 6 batches of 2
    ranks = [
        _epoch(ShapeGroupedBatchSampler(shapes, 2, True, seed=3, num_replicas=2, rank=r)) for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == 3
    sets = [{i for b in batches for i in b} for batches in ranks]
    assert not sets[0] & sets[1]
    assert sets[0] | sets[1] == set(range(len(shapes)))
    odd = [*shapes, (4,)]  # 7 batches: ceil -> 4 per rank, one batch repeated
    ranks = [_epoch(ShapeGroupedBatchSampler(odd, 2, True, seed=3, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 4
    assert {i for batches in ranks for b in batches for i in b} == set(range(len(odd)))
    ranks = [
        _epoch(ShapeGroupedBatchSampler(odd, 2, True, seed=3, drop_last=True, num_replicas=2, rank=r))
        for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == 2  # 5 full batches -> 2 per rank
    with pytest.raises(ValueError, match="rank"):
        ShapeGroupedBatchSampler(shapes, 2, True, num_replicas=2, rank=2)


# ---------------------------------------------------------------------------------------- data module


def _batches(loader: torch.utils.data.DataLoader) -> list[Any]:
    """All batches of a loader (collated ReconSamples: tensor, not int/float, fields)."""
    return list(loader)


def test_datamodule_builds_loaders_and_collates(root: Path, tmp_path: Path) -> None:
    dm = SnuDataModule(str(root), batch_size=2)
    dm.setup("fit")
    assert dm.train_dataset is not None and dm.val_dataset is not None
    assert len(dm.train_dataset) == 8 and len(dm.val_dataset) == 8
    batch: Any = next(iter(dm.train_dataloader()))
    assert type(batch).__name__ == "ReconSample" and batch._fields == ReconSample._fields
    b, c, _, w, two = batch.masked_kspace.shape
    assert (b, c, two) == (2, 6, 2)
    assert batch.mask.shape == (2, 1, 1, w, 1)
    assert batch.target.shape == (2, TINY.crop, TINY.crop)
    assert batch.crop_size.shape == (2, 2) and batch.crop_size.dtype == torch.int64
    assert batch.max_value.shape == (2,) and batch.acceleration.shape == (2,)
    assert batch.fname == tuple(batch.fname) and len(batch.fname) == 2
    assert batch.anatomy[0] in ("brain", "knee")
    val = _batches(dm.val_dataloader())
    assert [n for vb in val for n in vb.fname] == [
        dm.val_dataset.volumes[vi].volume.name for vi, _ in dm.val_dataset.items
    ]
    merged = SnuDataModule(str(root), batch_size=2, merge_val_into_train=True)
    merged.setup("fit")
    assert merged.train_dataset is not None and merged.val_dataset is not None
    assert len(merged.train_dataset) == len(dm.train_dataset) + len(dm.val_dataset)
    assert len(merged.val_dataset) == len(dm.val_dataset)
    torch.save({"hyper_parameters": dict(dm.hparams)}, tmp_path / "hp.ckpt")
    loaded = torch.load(tmp_path / "hp.ckpt", weights_only=True)
    assert loaded["hyper_parameters"]["root"] == str(root)


def test_datamodule_workers_yield_the_same_batches(root: Path) -> None:
    results = []
    for workers in (0, 2):
        dm = SnuDataModule(str(root), batch_size=2, num_workers=workers, seed=5)
        dm.setup("fit")
        loader = dm.train_dataloader()
        assert loader.persistent_workers == (workers > 0)
        results.append(_batches(loader))
        del loader
    a, b = results
    assert len(a) == len(b) == 4
    for x, y in zip(a, b, strict=True):
        assert x.fname == y.fname
        assert torch.equal(x.slice_num, y.slice_num)
        assert torch.equal(x.masked_kspace, y.masked_kspace)
        assert torch.equal(x.target, y.target)


def test_datamodule_mask_type_masks(root: Path) -> None:
    dm = SnuDataModule(
        str(root),
        mask_type="equispaced_fraction",
        center_fractions=[0.08],
        accelerations=[4],
        use_file_mask=False,
    )
    dm.setup("fit")
    assert dm.val_dataset is not None and dm.train_dataset is not None
    first = [dm.val_dataset[i].mask for i in range(2)]
    assert torch.equal(first[0], first[1])  # seeded from the file name: one mask per volume
    assert dm.train_dataset.transform.seed_from_fname is False
    assert dm.val_dataset.transform.seed_from_fname is True


# ------------------------------------------------------------------------------------------------ NYU

_HEADER = """<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>
<encodedSpace><matrixSize><x>32</x><y>24</y><z>1</z></matrixSize></encodedSpace>
<reconSpace><matrixSize><x>20</x><y>18</y><z>1</z></matrixSize></reconSpace>
<encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>23</maximum><center>12</center>
</kspace_encoding_step_1></encodingLimits></encoding></ismrmrdHeader>"""


def _write_nyu(path: Path, with_target: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    shape = (3, 4, 32, 24)
    kspace = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    target = rng.random((3, 16, 16)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace)
        f["ismrmrd_header"] = _HEADER.encode()
        if with_target:
            f.create_dataset("reconstruction_rss", data=target)
        else:
            f.create_dataset("mask", data=masks.snu_mask(24, 4).astype(np.float32))
        f.attrs["max"] = 0.75
        f.attrs["norm"] = 2.0
        f.attrs["acquisition"] = "CORPD_FBK"
        f.attrs["patient_id"] = "abc"
    return kspace, target


def test_nyu_multicoil_items(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train_dir, test_dir = tmp_path / "train", tmp_path / "test"
    train_dir.mkdir()
    test_dir.mkdir()
    kspace, target = _write_nyu(train_dir / "file1000001.h5", True, rng)
    mask_func = masks.create_mask_for_mask_type("equispaced_fraction", [0.08], [4])
    transform = SliceTransform(InputSpec(num_adj_slices=3), mask_func=mask_func, seed_from_fname=True)
    ds = SliceDataset.from_nyu(train_dir, transform)
    assert len(ds) == 3
    item = ds[1]
    assert item.masked_kspace.shape == (12, 32, 24, 2)
    expected, _ = mask_func((12, 32, 24, 2), seed=tuple(map(ord, "file1000001.h5")))
    assert torch.equal(item.masked_kspace[4:8], _real_view(kspace[1]) * expected)
    assert torch.equal(item.target, torch.from_numpy(target[1]))
    assert item.max_value == 0.75
    assert item.anatomy == "knee"
    assert item.crop_size.tolist() == [16, 16]
    assert item.acceleration == 4
    assert ds.shape_keys()[0] == (12, 32, 24, 16, 16)

    k_test, _ = _write_nyu(test_dir / "file_brain_AXT2_1.h5", False, rng)
    test_item = SliceDataset.from_nyu(test_dir, SliceTransform())[0]
    assert torch.equal(test_item.mask.reshape(-1), torch.from_numpy(masks.snu_mask(24, 4)))
    assert torch.equal(test_item.masked_kspace, _real_view(k_test[0]) * test_item.mask)
    assert test_item.crop_size.tolist() == [20, 18]  # the header's recon size
    assert torch.equal(test_item.target, torch.zeros(20, 18))
    assert test_item.anatomy == "brain"


# ----------------------------------------------------------------------------------------- bad inputs


def test_missing_split_folder_is_a_one_line_error(root: Path) -> None:
    dm = SnuDataModule(str(root), train_split="nope")
    with pytest.raises(KspacelabError) as err:
        dm.setup("fit")
    message = str(err.value)
    assert "nope" in message and "\n" not in message


def test_even_or_bad_arguments_raise(train: SliceDataset) -> None:
    volumes = [info.volume for info in train.volumes]
    for bad in (0, 2, 4):  # the number of adjacent slices is validated by the model's input spec
        with pytest.raises(ValueError, match="num_adj_slices"):
            InputSpec(num_adj_slices=bad)
    with pytest.raises(ValueError, match="sample_rate"):
        SliceDataset(volumes, SliceTransform(), sample_rate=0.0)
    half = SliceDataset(volumes, SliceTransform(), sample_rate=0.5, seed=1)
    assert len(half.volumes) == 2
    assert [v.volume for v in half.volumes] == [
        v.volume for v in SliceDataset(volumes, SliceTransform(), sample_rate=0.5, seed=1).volumes
    ]


def test_datamodule_expert_filters(root: Path) -> None:
    """only_accelerations / only_anatomies keep exactly the matching volumes of every split."""
    everything = SnuDataModule(str(root))
    everything.setup("fit")
    assert everything.train_dataset is not None
    all_train = {(v.volume.anatomy, v.volume.acceleration) for v in everything.train_dataset.volumes}
    assert all_train == {("brain", 4), ("brain", 8), ("knee", 4), ("knee", 8)}
    for anatomies, accelerations in ((None, [8]), (["knee"], None), (["brain"], [4])):
        dm = SnuDataModule(str(root), only_anatomies=anatomies, only_accelerations=accelerations)
        dm.setup("fit")
        for dataset in (dm.train_dataset, dm.val_dataset):
            assert dataset is not None
            kept = {(v.volume.anatomy, v.volume.acceleration) for v in dataset.volumes}
            expected = {
                (a, r)
                for a, r in all_train
                if (anatomies is None or a in anatomies) and (accelerations is None or r in accelerations)
            }
            assert kept == expected
    with pytest.raises(ValueError, match="only_anatomies"):
        SnuDataModule(str(root), only_anatomies=["liver"])
    empty = SnuDataModule(str(root), only_accelerations=[16])
    with pytest.raises(KspacelabError, match="no volumes left"):
        empty.setup("fit")
