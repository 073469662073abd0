"""Reconstruction models and their registry.

``build_model("varnet", num_cascades=12, ...)`` constructs a registered model by name; every model family
lives in its own module (``unet.py``, ``varnet.py``, ...).
"""

from __future__ import annotations

from typing import Any

import torch

from kspacelab.models.classifier import AnatomyClassifier
from kspacelab.models.promptmr import PromptMR
from kspacelab.models.unet import NormUnet, Unet
from kspacelab.models.varnet import SensitivityModel, VarNet, VarNetBlock

__all__ = [
    "MODEL_REGISTRY",
    "AnatomyClassifier",
    "NormUnet",
    "PromptMR",
    "SensitivityModel",
    "Unet",
    "VarNet",
    "VarNetBlock",
    "build_model",
]

#: Model name -> class; configuration files refer to models by these names.
MODEL_REGISTRY: dict[str, type[torch.nn.Module]] = {
    "varnet": VarNet,
    "anatomy_classifier": AnatomyClassifier,
    "promptmr": PromptMR,
}


def build_model(name: str, **kwargs: Any) -> torch.nn.Module:
    """Construct the registered model ``name`` with keyword arguments ``kwargs``.

    Raises:
        ValueError: for an unknown name (the message lists the registered names).
    """
    try:
        cls = MODEL_REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(MODEL_REGISTRY))
        raise ValueError(f"unknown model {name!r}; registered models: {known}") from None
    return cls(**kwargs)
