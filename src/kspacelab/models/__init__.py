"""Reconstruction models and their registry.

``build_model("varnet", num_cascades=12, ...)`` constructs a registered model by name. Every model family lives in
its own module (``unet.py``, ``varnet.py``, ...); :mod:`kspacelab.models.base` states the interface. The registry
:data:`MODEL_REGISTRY` maps each name to a :class:`ModelEntry`: the model class, its typed configuration (a
dataclass with one field per constructor argument) and its task (which Lightning module trains it).

Adding a model = its module, one entry below, one recipe in ``kspacelab/configs/`` and its tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from kspacelab.models.base import InputSpec, ReconModel, ReconSample, check_config, config_class
from kspacelab.models.classifier import AnatomyClassifier
from kspacelab.models.promptmr import PromptMR
from kspacelab.models.unet import NormUnet, Unet
from kspacelab.models.varnet import SensitivityModel, VarNet, VarNetBlock

__all__ = [
    "MODEL_REGISTRY",
    "AnatomyClassifier",
    "InputSpec",
    "ModelEntry",
    "NormUnet",
    "PromptMR",
    "ReconModel",
    "ReconSample",
    "SensitivityModel",
    "Task",
    "Unet",
    "VarNet",
    "VarNetBlock",
    "build_model",
    "model_entry",
]

#: What a model is trained for: image reconstruction from k-space, or anatomy classification (routing).
Task = Literal["reconstruction", "anatomy_classifier"]


@dataclass(frozen=True)
class ModelEntry:
    """One registered model.

    Attributes:
        name: the registry name (``model.model_name`` in recipes).
        cls: the model class.
        config: its typed configuration, a dataclass of the constructor's arguments
            (:func:`~kspacelab.models.base.config_class`).
        task: what trains it (``reconstruction``: :class:`~kspacelab.training.module.ReconModule` on k-space;
            ``anatomy_classifier``: the routing classifier on images).
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


def _entry(
    name: str, cls: type[nn.Module], recipe: str, tiny: Mapping[str, Any], task: Task = "reconstruction"
) -> ModelEntry:
    return ModelEntry(name, cls, config_class(cls), task, recipe, dict(tiny))


_TINY_PROMPTMR = {
    "num_cascades": 2,
    "n_feat0": 4,
    "feature_dim": [6, 8, 10],
    "prompt_dim": [2, 4, 6],
    "sens_n_feat0": 4,
    "sens_feature_dim": [4, 6, 8],
    "sens_prompt_dim": [2, 2, 2],
    "len_prompt": [2, 2, 2],
    "prompt_size": [8, 4, 2],
    "n_enc_cab": [1, 1, 1],
    "n_dec_cab": [1, 1, 1],
    "n_skip_cab": [1, 0, 1],
    "n_bottleneck_cab": 1,
    "n_history": 0,
}

#: Model name -> entry; recipes (``model.model_name``) and checkpoints refer to models by these names.
MODEL_REGISTRY: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        _entry(
            "varnet",
            VarNet,
            recipe="snu_baseline_varnet",
            tiny={"num_cascades": 1, "chans": 4, "sens_chans": 2, "pools": 2, "sens_pools": 2},
        ),
        _entry("promptmr", PromptMR, recipe="snu2025_promptmr_ej", tiny=_TINY_PROMPTMR),
        _entry(
            "anatomy_classifier",
            AnatomyClassifier,
            recipe="anatomy_classifier",
            tiny={"chans": 4, "num_blocks": 2, "image_size": 32},
            task="anatomy_classifier",
        ),
    )
}


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
