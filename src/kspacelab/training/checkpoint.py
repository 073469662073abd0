"""Loading trained weights safely (``torch.load(..., weights_only=True)``) for inference.

:func:`load_model` rebuilds a model from a checkpoint written by :class:`~kspacelab.training.ReconModule` or from a
plain fastMRI-style VarNet ``state_dict`` (fastMRI's published weights); :func:`model_data_settings` tells how the
model's inputs were prepared in training.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kspacelab.errors import KspacelabError
from kspacelab.models import build_model

__all__ = ["load_model", "model_data_settings"]

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


def load_model(
    checkpoint: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model for inference (eval mode) with ``torch.load(..., weights_only=True)``.

    Accepted contents:

    * a Lightning checkpoint written by :class:`ReconModule`: the model is rebuilt with
      ``build_model(model_name, **model_kwargs)`` from ``hyper_parameters`` and given the ``model.*`` weights;
    * a plain fastMRI-style VarNet ``state_dict`` (``cascades.{i}.dc_weight``, ``sens_net.norm_unet...``;
      also under a ``state_dict`` key and/or a ``varnet.``/``module.`` prefix): ``num_cascades``, ``chans``,
      ``pools``, ``sens_chans``, ``sens_pools`` are read off the tensor shapes (fastMRI's published weights).

    Args:
        checkpoint: path of the ``.ckpt``/``.pt`` file.
        map_location: device for the tensors.

    Returns:
        ``(model, info)``: the model in eval mode and a dict with ``format`` (``"lightning"`` or
        ``"state_dict"``), ``model_name``, ``model_kwargs`` and, for Lightning checkpoints, ``hyper_parameters``,
        ``data_hyper_parameters`` (the data module's, see :func:`model_data_settings`), ``epoch`` and
        ``global_step``.

    Raises:
        KspacelabError: a missing, corrupt or unsafe file, or contents that are neither kind (one line naming
            the file).
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise KspacelabError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise KspacelabError(f"{path}: cannot read the checkpoint safely (weights_only): {first}") from None
    if not isinstance(obj, dict):
        raise KspacelabError(f"{path}: not a checkpoint (expected a dict, found {type(obj).__name__})")

    hparams = obj.get("hyper_parameters")
    state = obj.get("state_dict", obj)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise KspacelabError(
            f"{path}: no model weights found (neither a Lightning checkpoint nor a state dict)"
        )
    info: dict[str, Any]
    if isinstance(hparams, dict) and "model_name" in hparams:
        name = str(hparams["model_name"])
        kwargs = dict(hparams.get("model_kwargs") or {})
        weights = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        data_hparams = obj.get("datamodule_hyper_parameters")
        info = {
            "format": "lightning",
            "hyper_parameters": dict(hparams),
            "data_hyper_parameters": dict(data_hparams) if isinstance(data_hparams, dict) else {},
            "epoch": obj.get("epoch"),
            "global_step": obj.get("global_step"),
        }
    else:
        weights = _strip_prefix(state)
        inferred = _varnet_kwargs(weights)
        if inferred is None:
            raise KspacelabError(
                f"{path}: unknown checkpoint contents (neither a kspacelab Lightning checkpoint nor a "
                "fastMRI VarNet state dict)"
            )
        name, kwargs = "varnet", inferred
        info = {"format": "state_dict"}
    info.update(model_name=name, model_kwargs=kwargs)
    try:
        model = build_model(name, **kwargs)
        model.load_state_dict(weights, strict=True)
    except (TypeError, ValueError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise KspacelabError(f"{path}: weights do not fit model {name!r} {kwargs}: {first}") from None
    return model.to(map_location).eval(), info


def model_data_settings(info: dict[str, Any]) -> tuple[int, dict[str, int] | None]:
    """Input settings a loaded model was trained with: ``(num_adj_slices, crop_height)``.

    Read from the data module's hyper-parameters of a Lightning checkpoint (``info`` from :func:`load_model`);
    ``(1, None)`` (one slice, no readout crop) for plain state dicts or when they are absent. Inference must
    prepare its inputs the same way.
    """
    data = info.get("data_hyper_parameters") or {}
    num_adj_slices = int(data.get("num_adj_slices") or 1)
    crop = data.get("crop_height")
    crop_height = {str(k): int(v) for k, v in crop.items()} if isinstance(crop, dict) and crop else None
    return num_adj_slices, crop_height
