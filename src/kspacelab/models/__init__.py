"""Reconstruction models and their registry.

``build_model("varnet", num_cascades=12, ...)`` constructs a registered model by name. Every model family lives in
its own module (``unet.py``, ``varnet.py``, ...); :mod:`kspacelab.models.base` states the interface. The registry
:data:`MODEL_REGISTRY` maps each name to a :class:`ModelEntry`: the model class, its typed configuration (a
dataclass with one field per constructor argument) and its task (which Lightning module trains it).

Adding a model = its module, one entry below, one recipe in ``kspacelab/configs/`` and its tests.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    """One registered model: its class, its typed configuration (:func:`~kspacelab.models.base.config_class`)
    and its task."""

    name: str
    cls: type[nn.Module]
    config: type
    task: Task

    def build(self, **config: Any) -> nn.Module:
        """The model built from ``config`` after :func:`~kspacelab.models.base.check_config`."""
        check_config(self.name, self.config, config)
        return self.cls(**config)


def _entry(name: str, cls: type[nn.Module], task: Task = "reconstruction") -> ModelEntry:
    return ModelEntry(name, cls, config_class(cls), task)


#: Model name -> entry; recipes (``model.model_name``) and checkpoints refer to models by these names.
MODEL_REGISTRY: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        _entry("varnet", VarNet),
        _entry("promptmr", PromptMR),
        _entry("anatomy_classifier", AnatomyClassifier, task="anatomy_classifier"),
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
