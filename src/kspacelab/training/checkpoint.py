"""Loading trained weights safely (``torch.load(..., weights_only=True)``).

:func:`load_model` rebuilds a model from a checkpoint written by ``kspacelab train`` or from a plain
fastMRI-style VarNet ``state_dict`` (fastMRI's published weights) and returns a :class:`LoadedModel`: the model,
the :class:`~kspacelab.models.base.InputSpec` its inputs were prepared with in training, its configuration and
where it came from. :func:`read_state_dict` reads only the weights (a stage's starting point).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kspacelab.errors import KspacelabError
from kspacelab.models import build_model
from kspacelab.models.base import InputSpec, ReconModel

__all__ = ["LoadedModel", "Provenance", "load_model", "read_state_dict"]

_VARNET_CASCADE = re.compile(r"^cascades\.(\d+)\.dc_weight$")
_STATE_PREFIXES = ("model.", "varnet.", "module.")


def _count_levels(state: dict[str, torch.Tensor], prefix: str) -> int:
    levels = {
        int(m.group(1))
        for k in state
        if (m := re.match(re.escape(prefix) + r"down_sample_layers\.(\d+)\.", k))
    }
    return len(levels)


def _varnet_kwargs(state: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    """VarNet constructor arguments inferred from a fastMRI-style state dict, or None if it is not one."""
    cascades = {int(m.group(1)) for k in state if (m := _VARNET_CASCADE.match(k))}
    sens = "sens_net.norm_unet.unet."
    casc = "cascades.0.model.unet."
    first = "down_sample_layers.0.layers.0.weight"
    if not cascades or sens + first not in state or casc + first not in state:
        return None
    kwargs: dict[str, Any] = {
        "num_cascades": len(cascades),
        "chans": int(state[casc + first].shape[0]),
        "pools": _count_levels(state, casc),
        "sens_chans": int(state[sens + first].shape[0]),
        "sens_pools": _count_levels(state, sens),
    }
    if "cascades.0.reg_weight" in state:  # kspacelab's GRAPPA-start variant
        kwargs["initial_kspace"] = "grappa"
    return kwargs


def _strip_prefix(state: dict[str, Any]) -> dict[str, Any]:
    for prefix in _STATE_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items()}
    return state


@dataclass(frozen=True)
class Provenance:
    """Where a loaded model came from."""

    path: Path
    format: str  # "lightning" (a kspacelab training checkpoint) or "state_dict" (plain weights)
    epoch: int | None = None
    global_step: int | None = None


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference and what is needed to feed it.

    Attributes:
        model: the model, in eval mode, on the device it was loaded to.
        name: its registry name (``"varnet"``, ...).
        config: the keyword arguments it was built with.
        input_spec: how its inputs were prepared in training (adjacent slices, readout crop, extra images).
        provenance: the file, its format and the training progress it holds.
        hyper_parameters: the training module's hyper-parameters (empty for plain state dicts).
        data_hyper_parameters: the data module's (e.g. the classifier's ``image_key``; empty when absent).
    """

    model: nn.Module
    name: str
    config: dict[str, Any]
    input_spec: InputSpec
    provenance: Provenance
    hyper_parameters: dict[str, Any] = field(default_factory=dict)
    data_hyper_parameters: dict[str, Any] = field(default_factory=dict)


def _read(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with one-line errors; the object must be a dict."""
    if not path.is_file():
        raise KspacelabError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise KspacelabError(f"{path}: cannot read the checkpoint safely (weights_only): {first}") from None
    if not isinstance(obj, dict):
        raise KspacelabError(f"{path}: not a checkpoint (expected a dict, found {type(obj).__name__})")
    return obj


def _weights(obj: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    state = obj.get("state_dict", obj)
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise KspacelabError(
            f"{path}: no model weights found (neither a Lightning checkpoint nor a state dict)"
        )
    return state


def read_state_dict(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The model weights of a kspacelab checkpoint (``model.`` prefix removed) or of a plain state dict (a
    ``varnet.``/``module.`` prefix removed), read with ``weights_only=True``."""
    path = Path(checkpoint)
    obj = _read(path, "cpu")
    state = _weights(obj, path)
    if isinstance(obj.get("hyper_parameters"), dict) and any(k.startswith("model.") for k in state):
        return {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    return _strip_prefix(state)


def _input_spec(model: nn.Module, hparams: dict[str, Any], data_hparams: dict[str, Any]) -> InputSpec:
    """The model's declared inputs with the readout crop it was trained with.

    The crop is the training module's ``crop_height``; checkpoints written before it moved there kept it in the
    data module's hyper-parameters.
    """
    declared = model.input_spec() if isinstance(model, ReconModel) else InputSpec()
    crop = hparams.get("crop_height")
    if crop is None:
        crop = data_hparams.get("crop_height")
    return declared.with_crop({str(k): int(v) for k, v in (crop or {}).items()})


def load_model(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Load a model for inference (eval mode) with ``torch.load(..., weights_only=True)``.

    Accepted contents:

    * a Lightning checkpoint written by ``kspacelab train``: the model is rebuilt with
      ``build_model(model_name, **model_kwargs)`` from ``hyper_parameters`` and given the ``model.*`` weights;
    * a plain fastMRI-style VarNet ``state_dict`` (``cascades.{i}.dc_weight``, ``sens_net.norm_unet...``;
      also under a ``state_dict`` key and/or a ``varnet.``/``module.`` prefix): ``num_cascades``, ``chans``,
      ``pools``, ``sens_chans``, ``sens_pools`` are read off the tensor shapes (fastMRI's published weights).

    Args:
        checkpoint: path of the ``.ckpt``/``.pt`` file.
        map_location: device for the tensors.

    Raises:
        KspacelabError: a missing, corrupt or unsafe file, or contents that are neither kind (one line naming
            the file).
    """
    path = Path(checkpoint)
    obj = _read(path, map_location)
    state = _weights(obj, path)
    hparams = obj.get("hyper_parameters")
    data_hparams: dict[str, Any] = {}
    if isinstance(hparams, dict) and "model_name" in hparams:
        name = str(hparams["model_name"])
        kwargs = dict(hparams.get("model_kwargs") or {})
        weights = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        raw_data = obj.get("datamodule_hyper_parameters")
        data_hparams = dict(raw_data) if isinstance(raw_data, dict) else {}
        provenance = Provenance(path, "lightning", obj.get("epoch"), obj.get("global_step"))
        hparams = dict(hparams)
    else:
        weights = _strip_prefix(state)
        inferred = _varnet_kwargs(weights)
        if inferred is None:
            raise KspacelabError(
                f"{path}: unknown checkpoint contents (neither a kspacelab Lightning checkpoint nor a "
                "fastMRI VarNet state dict)"
            )
        name, kwargs = "varnet", inferred
        provenance = Provenance(path, "state_dict")
        hparams = {}
    try:
        model = build_model(name, **kwargs)
        model.load_state_dict(weights, strict=True)
        spec = _input_spec(model, hparams, data_hparams)
    except (TypeError, ValueError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise KspacelabError(f"{path}: weights do not fit model {name!r} {kwargs}: {first}") from None
    return LoadedModel(model.to(map_location).eval(), name, kwargs, spec, provenance, hparams, data_hparams)
