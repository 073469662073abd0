"""The model registry: name -> :class:`ModelEntry` (class, typed configuration, task, recipe, tiny configuration).

The entries are made in :mod:`kspacelab.models` (``__init__.py``); this module holds the table and the lookups, so
that a model built from other registered models (a two-stage model's first stage) can find them without importing
the package that registers it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from kspacelab.models.base import check_config, config_class

__all__ = ["MODEL_REGISTRY", "ModelEntry", "Task", "build_model", "model_entry", "register"]

#: What a model is trained for: image reconstruction from multi-coil k-space, anatomy classification (routing),
#: single-coil reconstruction, or single-coil reconstruction trained adversarially (the generative texture model).
Task = Literal["reconstruction", "anatomy_classifier", "singlecoil", "generative"]


@dataclass(frozen=True)
class ModelEntry:
    """One registered model.

    Attributes:
        name: the registry name (``model.model_name`` in recipes).
        cls: the model class.
        config: its typed configuration, a dataclass of the constructor's arguments
            (:func:`~kspacelab.models.base.config_class`).
        task: what trains it (``reconstruction``: :class:`~kspacelab.training.module.ReconModule` on k-space;
            ``anatomy_classifier``: the routing classifier on images; ``singlecoil``:
            :class:`~kspacelab.training.singlecoil.SingleCoilModule` on NYU single-coil files; ``generative``:
            :class:`~kspacelab.training.singlecoil.GenerativeModule`, the same data against a discriminator).
        recipe: the bundled recipe that trains it (``kspacelab train --config RECIPE``).
        tiny: a few-thousand-parameter configuration for tests and smoke runs (overrides the recipe's
            ``model_kwargs``; keys the recipe sets and ``tiny`` does not, e.g. ``num_adj_slices``, stay).
    """

    name: str
    cls: type[nn.Module]
    config: type
    task: Task
    recipe: str
    tiny: Mapping[str, Any] = field(default_factory=dict)

    def build(self, **config: Any) -> nn.Module:
        """The model built from ``config`` after :func:`~kspacelab.models.base.check_config`."""
        check_config(self.name, self.config, config)
        return self.cls(**config)


#: Model name -> entry; recipes (``model.model_name``) and checkpoints refer to models by these names.
MODEL_REGISTRY: dict[str, ModelEntry] = {}


def register(
    name: str, cls: type[nn.Module], recipe: str, tiny: Mapping[str, Any], task: Task = "reconstruction"
) -> ModelEntry:
    """Add ``cls`` under ``name`` (its typed configuration read off its constructor); returns the entry."""
    if name in MODEL_REGISTRY:
        raise ValueError(f"model {name!r} is registered already")
    entry = ModelEntry(name, cls, config_class(cls), task, recipe, dict(tiny))
    MODEL_REGISTRY[name] = entry
    return entry


def model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``.

    Raises:
        ValueError: for an unknown name (the message lists the registered names).
    """
    try:
        return MODEL_REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(MODEL_REGISTRY))
        raise ValueError(f"unknown model {name!r}; registered models: {known}") from None


def build_model(name: str, **config: Any) -> nn.Module:
    """Construct the registered model ``name`` from keyword arguments ``config``.

    Raises:
        ValueError: an unknown name, a misspelt key (the message lists the allowed keys) or a value of the
            wrong type.
    """
    return model_entry(name).build(**config)
