"""Reconstruction models and their registry.

``build_model("varnet", num_cascades=12, ...)`` constructs a registered model by name. Every model family lives in
its own module (``unet.py``, ``varnet.py``, ...); :mod:`kspacelab.models.base` states the interface. The registry
:data:`MODEL_REGISTRY` maps each name to a :class:`ModelEntry`: the model class, its typed configuration (a
dataclass with one field per constructor argument) and its task (which Lightning module trains it).

Adding a model = its module, one entry below, one recipe in ``kspacelab/configs/`` and its tests.
"""

from __future__ import annotations

from kspacelab.models.base import InputSpec, ReconModel, ReconSample
from kspacelab.models.classifier import AnatomyClassifier
from kspacelab.models.feature_varnet import FeatureVarNet, FIVarNet
from kspacelab.models.lska import LSKA
from kspacelab.models.promptmr import PromptMR
from kspacelab.models.rcan import RCAN
from kspacelab.models.refined import RefinedModel
from kspacelab.models.registry import MODEL_REGISTRY, ModelEntry, Task, build_model, model_entry, register
from kspacelab.models.singlecoil import SingleCoilUnet, SingleCoilVarNet
from kspacelab.models.stylish import PatchDiscriminator, StylishNet
from kspacelab.models.unet import NormUnet, Unet
from kspacelab.models.varnet import SensitivityModel, VarNet, VarNetBlock

__all__ = [
    "LSKA",
    "MODEL_REGISTRY",
    "RCAN",
    "AnatomyClassifier",
    "FIVarNet",
    "FeatureVarNet",
    "InputSpec",
    "ModelEntry",
    "NormUnet",
    "PatchDiscriminator",
    "PromptMR",
    "ReconModel",
    "ReconSample",
    "RefinedModel",
    "SensitivityModel",
    "SingleCoilUnet",
    "SingleCoilVarNet",
    "StylishNet",
    "Task",
    "Unet",
    "VarNet",
    "VarNetBlock",
    "build_model",
    "model_entry",
]

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

register(
    "varnet",
    VarNet,
    recipe="snu_baseline_varnet",
    tiny={"num_cascades": 1, "chans": 4, "sens_chans": 2, "pools": 2, "sens_pools": 2},
)
register("promptmr", PromptMR, recipe="snu2025_promptmr_ej", tiny=_TINY_PROMPTMR)
register(
    "refined",
    RefinedModel,
    recipe="snu2022_varnet_rcan",
    tiny={
        "first_stage_kwargs": {"num_cascades": 1, "chans": 4, "sens_chans": 2, "pools": 2, "sens_pools": 2},
        "n_feats": 8,
        "n_resgroups": 1,
        "n_resblocks": 1,
        "reduction": 4,
    },
)
register(
    "feature_varnet",
    FeatureVarNet,
    recipe="snu2025_feature_varnet_lska",
    tiny={
        "cascade_counts": [1, 1, 1],
        "feature_chans": 4,
        "unet_chans": 4,
        "unet_pools": 2,
        "image_chans": 4,
        "image_pools": 2,
        "sens_chans": 2,
        "sens_pools": 2,
        "lska_levels": 1,
    },
)
register(
    "anatomy_classifier",
    AnatomyClassifier,
    recipe="anatomy_classifier",
    tiny={"chans": 4, "num_blocks": 2, "image_size": 32},
    task="anatomy_classifier",
)
register(
    "singlecoil_unet",
    SingleCoilUnet,
    recipe="fastmri_singlecoil_unet",
    tiny={"chans": 4, "num_pool_layers": 2},
    task="singlecoil",
)
register(
    "singlecoil_varnet",
    SingleCoilVarNet,
    recipe="singlecoil_varnet",
    tiny={"num_cascades": 1, "chans": 4, "pools": 2},
    task="singlecoil",
)
register(
    "stylish",
    StylishNet,
    recipe="singlecoil_stylish",
    tiny={"chans": 4, "num_pool_layers": 2, "style_dim": 8, "encoder_chans": 4},
    task="generative",
)
