"""RCAN and the two-stage model (frozen first stage + refiner on a classical second image): sizes, channel
attention, the untrained identity, freezing, the image-domain self-ensemble and the classical-image cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from kspacelab import classical, formats
from kspacelab.data import classical_cache
from kspacelab.data.dataset import SliceDataset
from kspacelab.data.transforms import SliceTransform
from kspacelab.models import MODEL_REGISTRY, RCAN, RefinedModel, build_model
from kspacelab.models.base import ReconSample
from kspacelab.models.rcan import ChannelAttention
from kspacelab.models.refined import ENSEMBLE_MEMBERS

TINY_VARNET = {"num_cascades": 1, "chans": 4, "sens_chans": 2, "pools": 2, "sens_pools": 2}


def _rcan_parameters(
    c_in: int, c_out: int, n: int, groups: int, blocks: int, r: int, bottleneck: bool
) -> int:
    """The parameter count of an RCAN written out layer by layer (convolutions with biases)."""

    def conv(i: int, o: int, k: int) -> int:
        return i * o * k * k + o

    hidden = n // r
    attention = conv(n, hidden, 1) + conv(hidden, n, 1)
    if bottleneck:
        m = n // 4
        body = conv(n, m, 1) + 1 + conv(m, m, 3) + 1 + conv(m, n, 1)  # two single-slope PReLUs
    else:
        body = 2 * conv(n, n, 3)
    group = blocks * (body + attention) + conv(n, n, 3)
    return conv(c_in, n, 3) + groups * group + conv(n, n, 3) + conv(n, c_out, 3)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_rcan_shapes_and_parameter_counts() -> None:
    team = RCAN(
        2, 1, n_feats=160, n_resgroups=4, n_resblocks=25, reduction=16, res_scale=0.125, bottleneck=True
    )
    assert _count(team) == _rcan_parameters(2, 1, 160, 4, 25, 16, True) == 4_238_481
    paper = RCAN(3, 3, n_feats=64, n_resgroups=10, n_resblocks=20, reduction=16)
    assert _count(paper) == _rcan_parameters(3, 3, 64, 10, 20, 16, False)
    small = RCAN(2, 1, n_feats=8, n_resgroups=2, n_resblocks=2, reduction=4, bottleneck=True)
    x = torch.randn(2, 2, 17, 23)
    assert small(x).shape == (2, 1, 17, 23)
    # the recipe's refiner is the team's size
    refined = build_model("refined", **{**MODEL_REGISTRY["refined"].tiny, "n_feats": 160, "n_resgroups": 4,
                                        "n_resblocks": 25, "reduction": 16, "res_scale": 0.125})  # fmt: skip
    assert _count(refined.refiner) == 4_238_481  # type: ignore[arg-type]


def test_rcan_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    plain = RCAN(2, 1, n_feats=8, n_resgroups=2, n_resblocks=2, reduction=4, bottleneck=True)
    checked = RCAN(
        2, 1, n_feats=8, n_resgroups=2, n_resblocks=2, reduction=4, bottleneck=True, use_checkpoint=True
    )
    checked.load_state_dict(plain.state_dict())
    x = torch.randn(1, 2, 12, 12)
    for model in (plain, checked):
        model(x).square().sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checked.named_parameters(), strict=True):
        assert a.grad is not None and b.grad is not None
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_channel_attention_is_a_per_channel_sigmoid_gain() -> None:
    torch.manual_seed(1)
    ca = ChannelAttention(8, reduction=4)
    x = torch.randn(2, 8, 5, 6)
    pooled = x.mean(dim=(2, 3))  # (B, C)
    hidden = torch.relu(pooled @ ca.squeeze.weight[:, :, 0, 0].T + ca.squeeze.bias)
    gain = torch.sigmoid(hidden @ ca.excite.weight[:, :, 0, 0].T + ca.excite.bias)
    torch.testing.assert_close(ca(x), x * gain[:, :, None, None])


def _sample(tiny_root: Path, model: RefinedModel) -> ReconSample:
    volume = formats.discover_folder(tiny_root / "val", split="val")[0]
    dataset = SliceDataset([volume], SliceTransform(model.input_spec()))
    return torch.utils.data.default_collate([dataset[0]])


def test_untrained_refiner_returns_the_first_stage_image(tiny_root: Path) -> None:
    torch.manual_seed(2)
    model = RefinedModel(first_stage_kwargs=TINY_VARNET, n_feats=8, n_resgroups=1, n_resblocks=1, reduction=4)
    sample = _sample(tiny_root, model)
    assert sample.extra_images is not None and sample.extra_images.shape[1] == 1
    with torch.no_grad():
        first = model.first_stage.reconstruct(sample)  # type: ignore[operator]
        assert torch.equal(model.reconstruct(sample), first)
        assert torch.equal(model.reconstruct_ensemble(sample), first)


def test_untrained_refiner_on_the_second_image_returns_the_second_image(tiny_root: Path) -> None:
    torch.manual_seed(2)
    model = RefinedModel(first_stage_kwargs=TINY_VARNET, n_feats=8, n_resgroups=1, n_resblocks=1, reduction=4,
                         residual_base="second_image")  # fmt: skip
    sample = _sample(tiny_root, model)
    assert sample.extra_images is not None
    with torch.no_grad():
        assert torch.equal(model.reconstruct(sample), sample.extra_images[:, -1])
        torch.nn.init.normal_(model.refiner.tail.weight, std=0.1)  # a trained refiner changes it
        assert not torch.equal(model.reconstruct(sample), sample.extra_images[:, -1])
    with pytest.raises(ValueError, match="residual_base"):
        RefinedModel(first_stage_kwargs=TINY_VARNET, residual_base="both")


def test_frozen_first_stage_is_unchanged_by_training_and_keeps_no_graph(tiny_root: Path) -> None:
    torch.manual_seed(3)
    model = RefinedModel(first_stage_kwargs=TINY_VARNET, n_feats=8, n_resgroups=1, n_resblocks=1, reduction=4)
    model.train()
    assert not model.first_stage.training and model.refiner.training
    before = {k: v.clone() for k, v in model.first_stage.state_dict().items()}
    sample = _sample(tiny_root, model)
    first = model.first_stage_image(sample, sample.output_size())
    assert first.grad_fn is None and not first.requires_grad  # no first-stage graph is stored
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    refiner_before = {k: v.clone() for k, v in model.refiner.state_dict().items()}
    for _ in range(3):
        loss = (model.reconstruct(sample) - sample.target).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in model.first_stage.state_dict().items())
    assert not all(torch.equal(refiner_before[k], v) for k, v in model.refiner.state_dict().items())
    assert all(p.grad is None for p in model.first_stage.parameters())


class _CountingStage:
    """Wraps a first stage's ``reconstruct`` and counts its calls."""

    def __init__(self, stage: nn.Module) -> None:
        self.original, self.calls = stage.reconstruct, 0

    def reconstruct(self, sample: ReconSample, size: tuple[int, int]) -> torch.Tensor:
        self.calls += 1
        return self.original(sample, size)  # type: ignore[operator,no-any-return]


def test_first_stage_cache_hit_miss_bound_and_invalidation(tiny_root: Path) -> None:
    torch.manual_seed(4)
    kwargs = {
        "first_stage_kwargs": TINY_VARNET,
        "n_feats": 8,
        "n_resgroups": 1,
        "n_resblocks": 1,
        "reduction": 4,
    }
    model = RefinedModel(**kwargs, first_stage_cache=2)  # type: ignore[arg-type]
    uncached = RefinedModel(**kwargs)  # type: ignore[arg-type]
    uncached.load_state_dict(model.state_dict())
    volume = formats.discover_folder(tiny_root / "val", split="val")[0]
    dataset = SliceDataset([volume], SliceTransform(model.input_spec()))
    sample = torch.utils.data.default_collate([dataset[0]])
    samples = [sample, sample._replace(masked_kspace=sample.masked_kspace * 3)]
    size = samples[0].output_size()
    counter = _CountingStage(model.first_stage)
    model.first_stage.reconstruct = counter.reconstruct  # type: ignore[method-assign,assignment]

    first = model.first_stage_image(samples[0], size)
    assert counter.calls == 1
    assert torch.equal(model.first_stage_image(samples[0], size), first) and counter.calls == 1  # hit
    torch.testing.assert_close(first, uncached.first_stage_image(samples[0], size), rtol=0, atol=0)
    model.first_stage_image(samples[0], (size[0] - 2, size[1] - 2))  # another output size: a miss
    assert counter.calls == 2
    changed = samples[1]._replace(masked_kspace=samples[1].masked_kspace * 2)
    model.first_stage_image(samples[1], size)
    model.first_stage_image(changed, size)  # same file and slice, other k-space: a miss
    assert counter.calls == 4 and len(model._cache) == 2  # bounded: the oldest entries were dropped
    model.first_stage_image(samples[0], size)
    assert counter.calls == 5

    new_weights = {
        k: v + 0.01 if v.is_floating_point() else v for k, v in model.first_stage.state_dict().items()
    }
    model.first_stage.load_state_dict(new_weights)  # new weights empty the cache
    assert not model._cache
    updated = model.first_stage_image(samples[0], size)
    assert counter.calls == 6 and not torch.equal(updated, first)
    model.to(torch.float64)  # so does a dtype or device move
    assert not model._cache

    trainable = RefinedModel(**kwargs, freeze_first_stage=False, first_stage_cache=8)  # type: ignore[arg-type]
    trainable.first_stage_image(samples[0], size)
    assert not trainable._cache  # a trained first stage is never cached
    with pytest.raises(ValueError, match="first_stage_cache"):
        RefinedModel(**kwargs, first_stage_cache=-1)  # type: ignore[arg-type]


class _Pointwise(nn.Module):
    """An image function that commutes with flips and rotations (a 1x1 convolution)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize("members", [["identity", "hflip"], ["rot180"], ["hflip_rot180", "identity", "rot180"],
                                     list(ENSEMBLE_MEMBERS)])  # fmt: skip
def test_each_ensemble_member_is_undone(tiny_root: Path, members: list[str]) -> None:
    torch.manual_seed(4)
    model = RefinedModel(first_stage_kwargs=TINY_VARNET, n_feats=8, n_resgroups=1, n_resblocks=1, reduction=4,
                         ensemble=members)  # fmt: skip
    sample = _sample(tiny_root, model)
    model.refiner = _Pointwise()  # type: ignore[assignment]
    with torch.no_grad():
        single, ensemble = model.reconstruct(sample), model.reconstruct_ensemble(sample)
    torch.testing.assert_close(ensemble, single, rtol=1e-5, atol=1e-7 * float(single.abs().max()))
    for name, (forward, inverse) in ENSEMBLE_MEMBERS.items():  # every member is its own exact inverse pair
        x = torch.randn(1, 5, 7)
        assert torch.equal(inverse(forward(x)), x) and (name == "identity" or not torch.equal(forward(x), x))


def test_a_non_equivariant_refiner_is_changed_by_the_ensemble(tiny_root: Path) -> None:
    torch.manual_seed(5)
    model = RefinedModel(first_stage_kwargs=TINY_VARNET, n_feats=8, n_resgroups=1, n_resblocks=1, reduction=4)
    with torch.no_grad():
        for p in model.refiner.parameters():
            p.normal_(0, 0.1)
    sample = _sample(tiny_root, model)
    with torch.no_grad():
        assert not torch.allclose(model.reconstruct(sample), model.reconstruct_ensemble(sample))


def test_bad_refined_configurations_are_refused() -> None:
    for bad, match in (
        ({"first_stage": "anatomy_classifier"}, "first_stage"),
        ({"first_stage": "refined"}, "first_stage"),
        ({"classical_fallback": "magic"}, "classical_fallback"),
        ({"ensemble": ["identity", "identity"]}, "ensemble"),
        ({"ensemble": ["vflip"]}, "ensemble"),
    ):
        with pytest.raises(ValueError, match=match):
            RefinedModel(**{"first_stage_kwargs": TINY_VARNET, **bad})  # type: ignore[arg-type]


def test_classical_cache_hit_miss_and_invalidation(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(classical_cache.CACHE_ENV, str(tmp_path / "cache"))
    source = sorted((tiny_root / "val" / "kspace").glob("*.h5"))[0]
    path = tmp_path / source.name
    shutil.copy(source, path)
    calls: list[str] = []
    real = classical_cache.METHODS["grappa"]

    def counting(kspace: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        calls.append("grappa")
        return real(kspace, mask, size)

    monkeypatch.setitem(classical_cache.METHODS, "grappa", counting)
    first = classical_cache.classical_slice(path, 1, "grappa", (64, 64))
    assert len(calls) == 1 and first.shape == (64, 64) and first.dtype == np.float32
    kspace, mask = formats.read_kspace_slice(path, 1)
    np.testing.assert_array_equal(first, real(kspace * mask[None, None, :], mask, (64, 64)))
    again = classical_cache.classical_slice(path, 1, "grappa", (64, 64))  # hit: not recomputed
    assert len(calls) == 1 and np.array_equal(again, first)
    classical_cache.classical_slice(path, 1, "grappa", (32, 32))  # another size is another entry
    classical_cache.classical_slice(path, 0, "grappa", (64, 64))  # another slice too
    assert len(calls) == 3
    with h5py.File(path, "r+") as f:  # the file changes: its entries no longer apply
        f["kspace"][1] = f["kspace"][1] * 2
    changed = classical_cache.classical_slice(path, 1, "grappa", (64, 64))
    assert len(calls) == 4
    np.testing.assert_allclose(changed, 2 * first, rtol=1e-4, atol=1e-6 * float(first.max()))
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    # a changed algorithm (a new ALGORITHM_VERSION): the entries of the old one are not served
    monkeypatch.setattr(classical, "ALGORITHM_VERSION", classical.ALGORITHM_VERSION + 1)
    classical_cache.classical_slice(path, 1, "grappa", (64, 64))
    assert len(calls) == 5
    with pytest.raises(ValueError, match="unknown classical method"):
        classical_cache.classical_slice(path, 1, "magic", (64, 64))


def test_second_image_falls_back_to_the_classical_method(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an image file the second image is the spec's classical fallback computed from the k-space."""
    monkeypatch.setenv(classical_cache.CACHE_ENV, str(tmp_path / "cache"))
    model = RefinedModel(first_stage_kwargs=TINY_VARNET, n_feats=8, n_resgroups=1, n_resblocks=1, reduction=4,
                         second_image="image_grappa", classical_fallback="zero-filled")  # fmt: skip
    volume = formats.discover_folder(tiny_root / "val", split="val")[0]
    assert volume.image_path is not None
    with_file = SliceDataset([volume], SliceTransform(model.input_spec()))[0]
    np.testing.assert_array_equal(
        with_file.extra_images[0].numpy(),  # type: ignore[index]
        formats.read_image_slice(volume.image_path, 0, "image_grappa"),
    )
    missing = SliceTransform(
        model.input_spec().__class__(extra_images=("image_sense",), classical_fallback="zero-filled")
    )
    computed = SliceDataset([volume], missing)[0].extra_images
    kspace, mask = formats.read_kspace_slice(volume.kspace_path, 0)
    expected = classical_cache.METHODS["zero-filled"](kspace * mask[None, None, :], mask, computed.shape[-2:])  # type: ignore[union-attr]
    np.testing.assert_array_equal(computed[0].numpy(), expected)  # type: ignore[index]


def test_reconstruct_sense_fills_the_cache_that_second_images_read(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`reconstruct --method sense` keeps its slices in the classical cache: a second `reconstruct` and a refiner's
    SENSE second images of the same slices are read from it, not recomputed."""
    from kspacelab.inference import ReconOptions, reconstruct_dataset

    monkeypatch.setenv(classical_cache.CACHE_ENV, str(tmp_path / "cache"))
    data = tmp_path / "data"
    shutil.copytree(tiny_root / "val" / "kspace", data / "kspace")
    first = reconstruct_dataset(data, tmp_path / "sense1", "sense", ReconOptions(progress=False))
    entries = sorted((tmp_path / "cache").rglob("*_sense_*.npy"))
    assert len(entries) == first.slices > 0

    def refuse(*args: object) -> np.ndarray:
        raise AssertionError("recomputed instead of read from the cache")

    monkeypatch.setitem(classical_cache.METHODS, "sense", refuse)
    reconstruct_dataset(data, tmp_path / "sense2", "sense", ReconOptions(progress=False))
    for out in sorted((tmp_path / "sense1").rglob("*.h5")):
        again = tmp_path / "sense2" / out.relative_to(tmp_path / "sense1")
        np.testing.assert_array_equal(formats.read_reconstruction(out), formats.read_reconstruction(again))
