"""MRAugment: schedules, exact flips, affine maps, determinism, and the physically consistent (k-space, target) pair."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kspacelab import physics
from kspacelab.data.augment import (
    AugmentParams,
    AugmentSchedule,
    MRAugment,
    apply_transforms,
    augment_from_config,
)
from kspacelab.data.dataset import SnuDataModule
from kspacelab.data.transforms import SliceTransform
from kspacelab.errors import KspacelabError
from kspacelab.models.base import InputSpec


def _images(c: int = 3, h: int = 64, w: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    blob = (((yy + 0.1) / 0.5) ** 2 + (xx / 0.35) ** 2 < 1).float() + 0.5 * (
        (yy - 0.3) ** 2 + xx**2 < 0.02
    ).float()
    coils = torch.stack([torch.exp(-((yy - 0.5 * k + 0.5) ** 2)) for k in range(c)])
    phase = torch.exp(1j * (0.5 * xx + 0.2 * torch.randn(1, generator=g)))
    return (blob * coils * phase).to(torch.complex64)


def test_schedules() -> None:
    assert AugmentSchedule(strength=0.5, kind="constant", delay=3).probability(2) == 0.0
    assert AugmentSchedule(strength=0.5, kind="constant", delay=3).probability(3) == 0.5
    linear = AugmentSchedule(strength=0.8, kind="linear", delay=10, max_epochs=20)
    assert [linear.probability(e) for e in (10, 15, 20, 30)] == pytest.approx([0.0, 0.4, 0.8, 0.8])
    exp = AugmentSchedule(strength=1.0, kind="exp", delay=0, max_epochs=10, decay=5.0)
    assert exp.probability(0) == 0.0 and exp.probability(10) == pytest.approx(1.0)
    assert exp.probability(5) == pytest.approx((1 - math.exp(-2.5)) / (1 - math.exp(-5.0)))
    assert exp.probability(2) > 2 / 10  # the exponential ramp rises faster than the linear one


def test_probability_zero_is_the_identity() -> None:
    kspace = physics.fft2c(_images())
    aug = MRAugment(schedule=AugmentSchedule(strength=0.0))
    assert aug(kspace, "brain", "brain_acc4_1.h5", 0) is kspace
    delayed = MRAugment(schedule=AugmentSchedule(strength=1.0, kind="constant", delay=5), epoch=4)
    assert delayed.draw("brain", "x.h5", 0) == {}


def test_flips_and_half_turn_are_exact() -> None:
    images = _images()
    torch.testing.assert_close(apply_transforms(images, {"fliph": True}), images.flip(-1), rtol=0, atol=0)
    torch.testing.assert_close(apply_transforms(images, {"flipv": True}), images.flip(-2), rtol=0, atol=0)
    # non-square images keep their shape: any rot90 draw becomes the exact half turn
    torch.testing.assert_close(
        apply_transforms(images, {"rot90": 1}), images.flip(-1).flip(-2), rtol=0, atol=0
    )
    square = _images(h=48, w=48)
    torch.testing.assert_close(apply_transforms(square, {"rot90": 1}), torch.rot90(square, 1, (-2, -1)))


def test_affine_maps_move_the_object_as_asked() -> None:
    images = _images(c=1, h=64, w=64)
    rss = physics.rss_complex(images, dim=0)
    # an integer translation is a shift (interior; the blob stays away from the reflecting borders)
    shifted = physics.rss_complex(
        apply_transforms(images, {"translation": (4 / 64, -2 / 64)}, upsample=1), dim=0
    )
    expected = torch.roll(rss, shifts=(-2, 4), dims=(0, 1))
    assert float((shifted - expected)[8:-8, 8:-8].abs().max()) < 1e-4
    # a 90-degree affine rotation of a square image equals the exact rot90, up to interpolation at edges
    turned = physics.rss_complex(apply_transforms(images, {"rotation": 90.0}, upsample=1), dim=0)
    exact = torch.rot90(rss, -1, (0, 1))  # +90 degrees with y pointing down turns clockwise on screen
    alt = torch.rot90(rss, 1, (0, 1))
    err = min(float((turned - exact).abs().mean()), float((turned - alt).abs().mean()))
    assert err < 0.02 * float(rss.mean())
    # scaling by 1 (and shear 0) is the identity up to the upsampling filter
    same = apply_transforms(images, {"scaling": 1.0, "shear": (0.0, 0.0)}, upsample=1)
    torch.testing.assert_close(same, images, rtol=1e-5, atol=1e-5)
    # scaling changes the object's area by s^2
    big = physics.rss_complex(apply_transforms(images, {"scaling": 1.2}, upsample=2), dim=0)
    area = lambda x: float((x > 0.5 * float(rss.max())).sum())  # noqa: E731
    assert area(big) / area(rss) == pytest.approx(1.44, rel=0.08)


def test_draws_are_deterministic_per_slice_and_epoch() -> None:
    aug = MRAugment(params={"default": AugmentParams()}, schedule=AugmentSchedule(1.0, "constant"), seed=3)
    first = [aug.draw("brain", "brain_acc4_1.h5", s) for s in range(6)]
    assert first == [aug.draw("brain", "brain_acc4_1.h5", s) for s in range(6)]
    assert any(first) and len({repr(d) for d in first}) > 1
    aug.set_epoch(1)
    assert [aug.draw("brain", "brain_acc4_1.h5", s) for s in range(6)] != first
    knee_only = MRAugment(
        params={
            "knee": AugmentParams(weight_translation=0, weight_rotation=0, weight_shear=0, weight_scaling=0)
        },
        schedule=AugmentSchedule(1.0, "constant"),
    )
    drawn = [knee_only.draw("knee", "k.h5", s) for s in range(20)]
    assert all(set(d) <= {"fliph", "flipv", "rot90"} for d in drawn)


def test_config_parsing_and_errors() -> None:
    assert augment_from_config(None) is None and augment_from_config({}) is None
    aug = augment_from_config(
        {
            "schedule": {"strength": 0.5, "kind": "linear", "max_epochs": 10},
            "params": {"brain": {"max_rotation": 5}, "knee": {"weight_fliph": 0.0}},
        },
        seed=2,
    )
    assert (
        aug is not None
        and aug.params_for("brain").max_rotation == 5
        and aug.params_for("knee").weight_fliph == 0
    )
    assert aug.params_for("other") == AugmentParams()
    flat = augment_from_config({"params": {"max_shear_x": 3}})
    assert flat is not None and flat.params_for("brain").max_shear_x == 3
    with pytest.raises(ValueError, match="unknown MRAugment parameters"):
        augment_from_config({"params": {"max_spin": 1}})
    with pytest.raises(ValueError, match="unknown augment keys"):
        augment_from_config({"strength": 1})
    with pytest.raises(ValueError, match="kind"):
        augment_from_config({"schedule": {"kind": "cosine"}})


def test_augmented_training_pair_is_consistent(tiny_root: Path) -> None:
    """The target of an augmented slice is the RSS of its augmented, fully sampled k-space (centre-cropped)."""
    always = {"schedule": {"strength": 1.0, "kind": "constant"}}
    spec = InputSpec(crop_height={"brain": 192, "knee": 192})
    dm = SnuDataModule(str(tiny_root), augment=always)
    dm.set_input_spec(spec)
    dm.setup("fit")
    assert dm.train_dataset is not None and dm.val_dataset is not None
    assert dm.val_dataset.transform.augment is None  # validation is never augmented
    plain = SnuDataModule(str(tiny_root))
    plain.set_input_spec(spec)
    plain.setup("fit")
    assert plain.train_dataset is not None
    changed = 0
    for index in range(len(dm.train_dataset)):
        sample = dm.train_dataset[index]
        reference = plain.train_dataset[index]
        vi, slice_num = dm.train_dataset.items[index]
        volume = dm.train_dataset.volumes[vi].volume
        transform: SliceTransform = dm.train_dataset.transform
        assert transform.augment is not None
        ops = transform.augment.draw(volume.anatomy, volume.name, slice_num)
        if not ops:
            continue
        changed += 1
        # rebuild the fully sampled augmented k-space by hand and compare target and masked k-space
        from kspacelab import formats
        from kspacelab.physics import crop_readout

        kspace, _ = formats.read_kspace_slice(volume.kspace_path, slice_num)
        full = physics.fft2c(
            apply_transforms(physics.ifft2c(torch.from_numpy(kspace)), ops, transform.augment.upsample)
        )
        full = crop_readout(full, 192)
        target = physics.center_crop(
            physics.rss_complex(physics.ifft2c(full), dim=0), tuple(sample.target.shape)
        )
        torch.testing.assert_close(sample.target, target.float(), rtol=1e-4, atol=1e-6 * float(target.max()))
        masked = physics.to_real_view(full) * sample.mask
        torch.testing.assert_close(sample.masked_kspace, masked.float(), rtol=1e-4, atol=1e-9)
        assert not torch.allclose(sample.target, reference.target)
    assert changed > 0
    np.testing.assert_array_equal(dm.train_dataset[0].mask.numpy(), plain.train_dataset[0].mask.numpy())


def test_epoch_reaches_the_augmentation_and_training_with_it(tiny_root: Path, tmp_path: Path) -> None:
    from kspacelab.cli import main

    dm = SnuDataModule(
        str(tiny_root), augment={"schedule": {"strength": 0.5, "kind": "linear", "max_epochs": 4}}
    )
    dm.setup("fit")
    assert dm.train_dataset is not None and dm.train_dataset.transform.augment is not None
    # the training sampler yields (index, epoch): the epoch reaches the augmentation in whichever worker
    batch = next(iter(dm.train_dataloader().batch_sampler))  # type: ignore[arg-type]
    assert all(isinstance(key, tuple) and key[1] == 0 for key in batch)
    dm.train_dataset[(0, 3)]
    assert dm.train_dataset.transform.augment.epoch == 3
    config = Path(__file__).resolve().parents[1] / "src" / "kspacelab" / "configs" / "demo.yaml"
    argv = [
        "train",
        "--config",
        str(config),
        "--data.root",
        str(tiny_root),
        "--run-dir",
        str(tmp_path / "run"),
    ]
    argv += ["--model.model_kwargs", "{num_cascades: 1, chans: 4, sens_chans: 2, pools: 2, sens_pools: 2}"]
    argv += [
        "--data.augment",
        "{schedule: {strength: 1.0, kind: constant}, params: {brain: {max_rotation: 10}}}",
    ]
    argv += [
        "--trainer.max_steps",
        "2",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.enable_progress_bar",
        "false",
    ]
    assert main(argv) == 0
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()
    bad = [*argv[:5], "--run-dir", str(tmp_path / "bad"), "--data.augment", "{strength: 1}"]
    assert main(bad) == 2


# ---------------------------------------------------------------------------------------------- mask augmentation


def test_mask_augment_draws_kinds_with_the_slice_acceleration() -> None:
    from kspacelab.data.augment import MaskAugment, mask_augment_from_config
    from kspacelab.masks import estimate_acceleration, follows_organiser_rule, snu_mask

    helper = MaskAugment(kinds={"random_offset": 1.0}, exclude_organiser_offset=True, seed=1)
    for width in (320, 372, 396):
        for acc in (4, 8):
            drawn = [helper.draw(width, acc, "brain", f"b{i}.h5", i) for i in range(20)]
            assert all(m is not None and m.shape == (width,) for m in drawn)
            assert all(estimate_acceleration(m) == acc and not follows_organiser_rule(m) for m in drawn)
    pool = mask_augment_from_config(
        {"kinds": {"organiser": 1, "random_lines": 1, "equispaced_fraction": 1}}, seed=2
    )
    assert pool is not None
    masks_drawn = [pool.draw(372, 8, "knee", "k.h5", i) for i in range(60)]
    organiser = sum(np.array_equal(m, snu_mask(372, 8)) for m in masks_drawn)
    assert 5 < organiser < 40  # about a third
    assert pool.draw(372, 8, "knee", "k.h5", 0).tolist() == masks_drawn[0].tolist()  # deterministic
    ramp = MaskAugment(schedule=AugmentSchedule(1.0, "linear", delay=15, max_epochs=25))
    assert ramp.draw(372, 4, "knee", "x.h5", 0) is None  # epoch 0 < delay: keep the file's mask
    ramp.set_epoch(25)
    assert ramp.draw(372, 4, "knee", "x.h5", 0) is not None
    with pytest.raises(ValueError, match="unknown mask kinds"):
        MaskAugment(kinds={"spiral": 1.0})
    with pytest.raises(ValueError, match="unknown mask_augment keys"):
        mask_augment_from_config({"probability": 1})
    # anatomies: only knee slices get re-drawn masks (EJ's stage 3); slices of unknown anatomy keep their masks
    knee_only = mask_augment_from_config({"kinds": {"random_offset": 1}, "anatomies": ["knee"]})
    assert knee_only is not None and knee_only.anatomies == ("knee",)
    assert knee_only.draw(372, 4, "knee", "knee_acc4_3.h5", 0) is not None
    assert knee_only.draw(396, 4, "brain", "brain_acc4_3.h5", 0) is None
    assert knee_only.draw(372, 4, "", "file1000001.h5", 0) is None
    for bad in ([], ["spine"]):
        with pytest.raises(ValueError, match="anatomies"):
            mask_augment_from_config({"anatomies": bad})


def test_datamodule_mask_augmentation_and_both_accelerations(tiny_root: Path) -> None:
    from kspacelab.masks import estimate_acceleration, follows_organiser_rule

    dm = SnuDataModule(
        str(tiny_root),
        mask_augment={"kinds": {"random_offset": 1.0}, "exclude_organiser_offset": True},
        both_accelerations=True,
    )
    dm.setup("fit")
    assert dm.train_dataset is not None and dm.val_dataset is not None
    plain = SnuDataModule(str(tiny_root))
    plain.setup("fit")
    assert plain.train_dataset is not None
    assert len(dm.train_dataset) == 2 * len(plain.train_dataset)
    accs = []
    for index in range(len(dm.train_dataset)):
        sample = dm.train_dataset[(index, 0)]
        line = sample.mask.view(-1).numpy()
        assert not follows_organiser_rule(line)
        accs.append(estimate_acceleration(line))
    assert accs == [4, 8] * len(plain.train_dataset)  # every slice once with each acceleration
    # validation keeps the files' organiser masks
    assert all(
        follows_organiser_rule(dm.val_dataset[i].mask.view(-1).numpy()) for i in range(len(dm.val_dataset))
    )
    # restricted to knee files (EJ's stage 3): knee slices get random-offset masks, brain slices keep theirs
    knee_only = SnuDataModule(
        str(tiny_root),
        mask_augment={
            "kinds": {"random_offset": 1.0},
            "exclude_organiser_offset": True,
            "anatomies": ["knee"],
        },
    )
    knee_only.setup("fit")
    assert knee_only.train_dataset is not None
    seen = set()
    for index in range(len(knee_only.train_dataset)):
        sample = knee_only.train_dataset[(index, 0)]
        anatomy = sample.anatomy if isinstance(sample.anatomy, str) else sample.anatomy[0]
        seen.add(anatomy)
        assert follows_organiser_rule(sample.mask.view(-1).numpy()) == (anatomy == "brain"), index
    assert seen == {"brain", "knee"}


def test_training_samples_carry_the_volume_max_foreground_area(tiny_root: Path) -> None:
    from kspacelab import formats, metrics

    dm = SnuDataModule(str(tiny_root))
    dm.setup("fit")
    assert dm.train_dataset is not None and dm.val_dataset is not None
    for index in range(len(dm.train_dataset)):
        sample = dm.train_dataset[index]
        vi, _ = dm.train_dataset.items[index]
        volume = dm.train_dataset.volumes[vi].volume
        assert volume.image_path is not None
        labels = formats.read_image_volume(volume.image_path, "image_label")
        expected = max(int(metrics.foreground_mask(x, volume.anatomy).sum()) for x in labels)
        assert sample.max_area == expected > 0
        area = int(metrics.foreground_mask(sample.target.numpy(), volume.anatomy).sum())
        assert area <= sample.max_area
    assert dm.val_dataset[0].max_area == 0.0  # validation does not need it


def test_exclude_organiser_from_an_epoch_and_the_epoch_offset(tiny_root: Path) -> None:
    """From epoch ``exclude_organiser_from`` on, a drawn mask equal to the organiser's is drawn again; the data
    module's ``epoch_offset`` shifts every training-epoch schedule (a fine-tuning run that goes on counting)."""
    from kspacelab.data.augment import mask_augment_from_config
    from kspacelab.masks import snu_mask

    config = {"kinds": {"organiser": 1.0, "random_offset": 1.0}, "exclude_organiser_from": 3}
    augment = mask_augment_from_config(config, seed=5)
    assert augment is not None and augment.exclude_organiser_from == 3
    organiser = snu_mask(40, 4)

    def organiser_count(epoch: int) -> int:
        augment.set_epoch(epoch)
        drawn = [augment.draw(40, 4, "brain", f"brain_acc4_{i}.h5", 0) for i in range(40)]
        return sum(bool(np.array_equal(m, organiser)) for m in drawn)

    assert organiser_count(2) > 10  # over half of the draws (organiser kind, or a random offset that is it)
    assert organiser_count(3) == 0 and organiser_count(9) == 0
    with pytest.raises(ValueError, match="exclude_organiser_from needs"):
        mask_augment_from_config({"kinds": {"organiser": 1.0}, "exclude_organiser_from": 0})

    settings = {
        "augment": {"schedule": {"strength": 0.5, "kind": "linear", "delay": 10, "max_epochs": 20}},
        "mask_augment": {"kinds": {"random_lines": 1.0}, "schedule": {"kind": "linear", "max_epochs": 20}},
    }
    plain = SnuDataModule(str(tiny_root), **settings).training_transform()  # type: ignore[arg-type]
    shifted = SnuDataModule(str(tiny_root), epoch_offset=10, **settings).training_transform()  # type: ignore[arg-type]
    plain.set_epoch(15)
    shifted.set_epoch(5)
    assert shifted.epoch == plain.epoch == 15
    assert shifted.augment is not None and plain.augment is not None and shifted.mask_augment is not None
    assert shifted.augment.probability() == plain.augment.probability() == pytest.approx(0.25)
    assert shifted.mask_augment.probability() == pytest.approx(0.75)
    # same epoch, same draws
    draw = shifted.mask_augment.draw(40, 4, "knee", "knee_acc4_1.h5", 0)
    assert plain.mask_augment is not None and draw is not None
    assert draw.tolist() == plain.mask_augment.draw(40, 4, "knee", "knee_acc4_1.h5", 0).tolist()
    with pytest.raises(KspacelabError, match="epoch_offset"):
        SnuDataModule(str(tiny_root), epoch_offset=-1)
