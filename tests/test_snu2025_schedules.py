"""The 2025 recipes' schedules at the epochs the teams' scripts name, read off the objects the trainer builds.

Nothing trains here: each test composes the bundled recipes as ``kspacelab train`` does, builds the Lightning
module (tiny model) or the data module's training transform from them, and steps the real scheduler / sets the
real epoch. The expected values come from the teams' own constructions (torch's StepLR stepped from epoch 5;
SequentialLR of LinearLR -> ConstantLR -> StepLR; MRAugment's and the mask augmentor's ``schedule_p`` formula).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kspacelab import masks
from kspacelab.data.dataset import SnuDataModule
from kspacelab.data.transforms import SliceTransform
from kspacelab.experts.training import read_recipe
from kspacelab.models import MODEL_REGISTRY
from kspacelab.training.module import ReconModule, configure_optimization
from kspacelab.training.recipes import compose

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "src" / "kspacelab" / "configs"
MODEL = CONFIGS / "snu2025_promptmr_smartify.yaml"
EXPERT = CONFIGS / "snu2025_smartify_expert.yaml"
HELPER = CONFIGS / "snu2025_smartify_helper.yaml"
MIXTURE = CONFIGS / "snu2025_moe_smartify.yaml"


def _module(config: dict[str, Any]) -> ReconModule:
    """The recipe's Lightning module with the registry's tiny PromptMR+ (the schedule does not depend on it)."""
    model = dict(config["model"])
    model["model_kwargs"] = {**model["model_kwargs"], **MODEL_REGISTRY["promptmr"].tiny}
    return ReconModule(**model)


def _lr_per_epoch(module: ReconModule, epochs: int) -> list[float]:
    """The learning rate of each epoch, stepping the configured scheduler at every epoch end as Lightning does."""
    setup = configure_optimization(module)
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    assert setup["lr_scheduler"]["interval"] == "epoch"
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # (no gradients: a no-op, but keeps torch from warning about the order)
        scheduler.step()
    return rates


def _training_transform(config: dict[str, Any], root: Path) -> SliceTransform:
    data = {key: value for key, value in config["data"].items() if key != "root"}
    return SnuDataModule(root=str(root), **data).training_transform()


def _transform_at(transform: SliceTransform, epoch: int, offset: int) -> SliceTransform:
    """``transform`` set to the team's (global) ``epoch`` of a run that starts at epoch ``offset``."""
    transform.set_epoch(epoch - offset)
    return transform


def _schedule_p(
    t: int, delay: int, plateau: int, p_max: float, decay: float = 5.0, clamp: bool = True
) -> float:
    """MRAugment's exponential ``schedule_p`` (the teams' formula): 0 before ``delay``, then
    ``p_max (1 - exp(-(t - D) c)) / (1 - exp(-(T - D) c))`` with ``c = decay / (T - D)`` (``p_max`` from ``T``)."""
    if t < delay:
        return 0.0
    if clamp and t >= plateau:
        return p_max
    c = decay / (plateau - delay)
    return p_max / (1 - math.exp(-(plateau - delay) * c)) * (1 - math.exp(-(t - delay) * c))


# ------------------------------------------------------------------------------------------ learning rate


def test_shared_model_lr_drops_in_epochs_16_and_27() -> None:
    """sMaRtIfy's first run: AdamW 2e-4, StepLR(11, 0.3) stepped at the end of every epoch from epoch 5 on."""
    module = _module(compose([MODEL]))
    rates = _lr_per_epoch(module, 30)
    assert rates[15] == pytest.approx(2e-4, rel=1e-12)
    assert rates[16] == pytest.approx(6e-5, rel=1e-12)
    assert rates[26] == pytest.approx(6e-5, rel=1e-12)
    assert rates[27] == pytest.approx(1.8e-5, rel=1e-12)
    # every epoch as the team's loop: torch's StepLR, `if epoch >= 5: scheduler.step()` after each epoch
    param = torch.nn.Parameter(torch.zeros(1))
    reference_opt = torch.optim.AdamW([param], lr=2e-4, weight_decay=0.01)
    reference = torch.optim.lr_scheduler.StepLR(reference_opt, step_size=11, gamma=0.3)
    expected = []
    for epoch in range(30):
        expected.append(reference_opt.param_groups[0]["lr"])
        reference_opt.step()
        if epoch >= 5:
            reference.step()
    np.testing.assert_allclose(rates, expected, rtol=1e-12)
    optimizer = configure_optimization(module)["optimizer"]
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["weight_decay"] == 0.01


@pytest.mark.parametrize("epochs", [35, 30])  # hackers: epochs 30..64; helpers: 30..59
def test_expert_lr_is_the_teams_sequential_schedule(epochs: int) -> None:
    """The fine-tuning run: 3 warm-up epochs from 0.1 x 2e-4, 6 constant, then StepLR(5, 0.3), per epoch."""
    module = _module(compose([MODEL, EXPERT], ["--trainer.max_epochs", str(epochs)]))
    rates = _lr_per_epoch(module, epochs)
    param = torch.nn.Parameter(torch.zeros(1))
    reference_opt = torch.optim.AdamW([param], lr=2e-4, weight_decay=0.01)
    sched = torch.optim.lr_scheduler
    reference = sched.SequentialLR(
        reference_opt,
        [
            sched.LinearLR(reference_opt, start_factor=0.1, end_factor=1.0, total_iters=3),
            sched.ConstantLR(reference_opt, factor=1.0, total_iters=9 - 3),
            sched.StepLR(reference_opt, 5, 0.3),
        ],
        milestones=[3, 9],
    )
    expected = []
    for _ in range(epochs):
        expected.append(reference_opt.param_groups[0]["lr"])
        reference_opt.step()
        reference.step()
    np.testing.assert_allclose(rates, expected, rtol=1e-9)
    # the team's epochs 30 (first of the run), 33 (warm-up done), 38 (last constant), 39 and 44 (steps)
    assert (
        rates[0] == pytest.approx(2e-5)
        and rates[3] == pytest.approx(2e-4)
        and rates[8] == pytest.approx(2e-4)
    )
    assert rates[9] == pytest.approx(2e-4) and rates[14] == pytest.approx(6e-5)


# ------------------------------------------------------------------------------------------------ MRAugment


def test_mraugment_starts_at_epoch_33_and_reaches_half_at_epoch_50(tmp_path: Path) -> None:
    transform = _training_transform(compose([MODEL, EXPERT]), tmp_path)
    augment = transform.augment
    assert augment is not None and transform.epoch_offset == 30
    p = {}
    for epoch in (30, 32, 33, 34, 40, 50, 64):
        _transform_at(transform, epoch, 30)
        p[epoch] = augment.probability()
    assert p[30] == 0.0 and p[32] == 0.0 and p[33] == 0.0  # MRAugment's ramp is 0 at its delay
    for epoch in (34, 40, 50):
        assert p[epoch] == pytest.approx(_schedule_p(epoch, 33, 50, 0.5), rel=1e-12)
    assert p[50] == pytest.approx(0.5) and p[64] == pytest.approx(0.5)
    brain, knee = augment.params_for("brain"), augment.params_for("knee")
    assert (brain.weight_fliph, brain.max_translation_x, brain.max_translation_y) == (0.4, 0.03, 0.05)
    assert (knee.weight_fliph, knee.max_translation_x, knee.max_shear_x, knee.max_shear_y) == (
        0.5,
        0.08,
        10,
        10,
    )
    for params in (brain, knee):  # the team's rotation and scaling, for the knee too
        assert (params.weight_rotation, params.max_rotation) == (1.0, 5.0)
        assert (params.weight_scaling, params.max_scaling) == (1.0, 0.12)
        assert params.weight_rot90 == 0.0 and params.weight_flipv == 0.0
    assert augment.upsample == 1
    # the shared model trains without MRAugment
    assert _training_transform(compose([MODEL]), tmp_path).augment is None


def test_mixture_helpers_train_30_epochs_with_mraugment_full_at_45(tmp_path: Path) -> None:
    members, _ = read_recipe(MIXTURE)
    shared = {m.name: m for m in members if m.role == "shared"}
    assert set(shared) == {"hacker_shared", "helper_shared"}
    experts = [m for m in members if m.role == "expert"]
    assert len(experts) == 8
    for member in experts:
        helper = member.mask_rule == "other"
        assert member.init_from == ("helper_shared" if helper else "hacker_shared")
        names = [path.name for path in member.configs]
        assert names[:2] == [MODEL.name, EXPERT.name] and (HELPER.name in names) == helper
        config = compose(member.configs, list(member.args))
        assert config["trainer"]["max_epochs"] == (30 if helper else 35)
        transform = _training_transform(config, tmp_path)
        assert transform.augment is not None
        plateau = 45 if helper else 50
        p = _transform_at(transform, plateau - 1, 30).augment.probability()  # type: ignore[union-attr]
        assert p == pytest.approx(_schedule_p(plateau - 1, 33, plateau, 0.5), rel=1e-12) and p < 0.5
        assert _transform_at(transform, plateau, 30).augment.probability() == 0.5  # type: ignore[union-attr]
    assert [p.name for p in shared["helper_shared"].configs] == [MODEL.name, HELPER.name]
    assert [p.name for p in shared["hacker_shared"].configs] == [MODEL.name]


# ---------------------------------------------------------------------------------------- mask augmentation


def test_helper_mask_ramp_over_epochs_16_to_25_then_never_the_organiser_mask(tmp_path: Path) -> None:
    shared = _training_transform(compose([MODEL, HELPER]), tmp_path)
    expert = _training_transform(compose([MODEL, EXPERT, HELPER]), tmp_path)
    assert shared.mask_augment is not None and expert.mask_augment is not None

    def kinds(transform: SliceTransform, epoch: int, offset: int) -> dict[str, float]:
        return _transform_at(transform, epoch, offset).mask_augment.kind_probabilities()  # type: ignore[union-attr]

    for epoch in (0, 10, 15):
        assert kinds(shared, epoch, 0) == {"random_lines": 0.0, "random_offset": 0.0}
    for epoch in (16, 20, 25, 29):
        p = _schedule_p(epoch, 15, 25, 1.0)
        got = kinds(shared, epoch, 0)
        assert got["random_lines"] == pytest.approx(p / 2, rel=1e-12)
        assert got["random_offset"] == pytest.approx(p / 2, rel=1e-12)
    assert 0 < kinds(shared, 16, 0)["random_offset"] < kinds(shared, 24, 0)["random_offset"] < 0.5
    assert kinds(shared, 25, 0)["random_offset"] == 0.5
    assert kinds(expert, 30, 30) == {"random_lines": 0.5, "random_offset": 0.5}

    # the organiser mask: possible among the draws before epoch 30 (a random offset may be the organiser's),
    # never from epoch 30 on (W = 24, acc 4: a quarter of the equispaced draws have the organiser's offset)
    width, acc = 24, 4
    organiser = masks.snu_mask(width, acc)

    def organiser_draws(transform: SliceTransform, epoch: int, offset: int) -> int:
        augment = _transform_at(transform, epoch, offset).mask_augment
        assert augment is not None
        drawn = [augment.draw(width, acc, "knee", f"knee_acc4_{i}", 0) for i in range(200)]
        assert all(d is not None for d in drawn)  # p = 1: every mask re-drawn
        return sum(bool(np.array_equal(d, organiser)) for d in drawn)

    assert organiser_draws(shared, 29, 0) > 0
    assert organiser_draws(expert, 30, 30) == 0
    assert organiser_draws(expert, 45, 30) == 0
