"""The sMaRtIfy recipes' schedules per epoch, printed from the objects ``kspacelab train`` builds.

For each of the team's epochs 0..64 it composes the bundled recipes as the mixture does (the shared model for
epochs 0-29; ``snu2025_smartify_expert`` on top for epochs 30-64), builds the Lightning module's optimiser and
scheduler (:func:`kspacelab.training.module.configure_optimization`) and the data module's training transform
(:meth:`kspacelab.data.dataset.SnuDataModule.training_transform`), and prints the learning rate, the MRAugment
probability of the hacker, and the probability that a helper's mask is re-drawn (and whether the organiser mask
is then excluded). No data are read and nothing trains.

Usage::

    python benchmarks/snu2025_schedules.py [--epochs 15 16 27 ...]
"""

from __future__ import annotations

import argparse
from typing import Any

from kspacelab.data.dataset import SnuDataModule
from kspacelab.models import MODEL_REGISTRY
from kspacelab.training.module import ReconModule, configure_optimization
from kspacelab.training.recipes import compose

SHARED_EPOCHS = 30  # the shared model's run; the experts' runs count on from here (data.epoch_offset)


def learning_rates(configs: list[str], epochs: int) -> list[float]:
    """The learning rate of each epoch of a run of ``configs`` (scheduler stepped at every epoch end)."""
    model = dict(compose(configs)["model"])
    model["model_kwargs"] = {**model["model_kwargs"], **MODEL_REGISTRY["promptmr"].tiny}  # same schedule
    setup = configure_optimization(ReconModule(**model))
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(epochs):
        rates.append(float(optimizer.param_groups[0]["lr"]))
        optimizer.step()
        scheduler.step()
    return rates


def transform(configs: list[str]) -> Any:
    data = {k: v for k, v in compose(configs)["data"].items() if k != "root"}
    return SnuDataModule(root=".", **data).training_transform()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--epochs",
        type=int,
        nargs="*",
        default=[0, 5, 15, 16, 25, 26, 27, 29, 30, 32, 33, 34, 38, 39, 44, 45, 49, 50, 64],
    )
    args = parser.parse_args()
    model, expert, helper = "snu2025_promptmr_smartify", "snu2025_smartify_expert", "snu2025_smartify_helper"
    lr = learning_rates([model], SHARED_EPOCHS) + learning_rates([model, expert], 35)
    hacker = {False: transform([model]), True: transform([model, expert])}
    helpers = {False: transform([model, helper]), True: transform([model, expert, helper])}
    print(
        "| epoch | run | learning rate | MRAugment p (hacker) | helper mask re-drawn p | organiser excluded |"
    )
    print("|---:|---|---:|---:|---:|---|")
    for epoch in args.epochs:
        expert_run = epoch >= SHARED_EPOCHS
        local = epoch - SHARED_EPOCHS if expert_run else epoch
        h, m = hacker[expert_run], helpers[expert_run]
        h.set_epoch(local)
        m.set_epoch(local)
        augment = h.augment.probability() if h.augment is not None else 0.0
        mask = m.mask_augment
        excluded = mask.exclude_organiser_from is not None and mask.epoch >= mask.exclude_organiser_from
        run = "expert" if expert_run else "shared"
        print(
            f"| {epoch} | {run} | {lr[epoch]:.4g} | {augment:.4f} | {mask.probability():.4f} | {excluded} |"
        )


if __name__ == "__main__":
    main()
