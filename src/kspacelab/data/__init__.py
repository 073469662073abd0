"""Data pipeline: synthetic datasets, slice datasets, transforms and the Lightning data modules.

The names below are imported lazily (on first access), so ``import kspacelab.data.synthetic`` does not
pay for importing Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kspacelab.data.dataset import ShapeGroupedBatchSampler, SliceDataset, SnuDataModule, seed_worker
    from kspacelab.data.singlecoil import SingleCoilDataModule
    from kspacelab.data.transforms import SliceTransform

__all__ = [
    "ShapeGroupedBatchSampler",
    "SingleCoilDataModule",
    "SliceDataset",
    "SliceTransform",
    "SnuDataModule",
    "seed_worker",
]

_HOME = {
    "ShapeGroupedBatchSampler": "kspacelab.data.dataset",
    "SingleCoilDataModule": "kspacelab.data.singlecoil",
    "SliceDataset": "kspacelab.data.dataset",
    "SnuDataModule": "kspacelab.data.dataset",
    "seed_worker": "kspacelab.data.dataset",
    "SliceTransform": "kspacelab.data.transforms",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
