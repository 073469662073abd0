"""Weights trained outside kspacelab: which model they are, with which configuration, in which wrapper.

:func:`external_model` turns the tensors of a file that is not a kspacelab training checkpoint into a registry
name, constructor arguments and the weights under kspacelab's names:

* fastMRI-style VarNet state dicts (fastMRI's published weights): ``num_cascades``, ``chans``, ``pools``,
  ``sens_chans``, ``sens_pools`` read off the tensor shapes;
* fastMRI's U-Net state dicts (its published single-coil knee U-Net, ``knee_sc_leaderboard_state_dict.pt``, or a
  ``UnetModule`` Lightning checkpoint): the single-coil U-Net (``singlecoil_unet``) with ``chans`` and
  ``num_pool_layers`` read off the tensor shapes and fastMRI's mean/std normalisation;
* PromptMR+ state dicts in the reference implementation's names (hellopipu/PromptMR-plus: its published weights
  and the checkpoints of the teams that started from it): the configuration read off the tensor shapes
  (:func:`kspacelab.models.promptmr_compat.promptmr_kwargs`) or given as a YAML file (:func:`read_model_config`).

The wrappers are recognised from the keys (:func:`unwrap_weights`): a plain state dict, a Lightning checkpoint's
``state_dict`` (with a ``model.``, ``promptmr.``, ``varnet.`` or ``module.`` prefix, or any prefix in front
of the cascades; the training module's other entries, e.g. a loss's buffers, are left out) and DeepSpeed's ``mp_rank_00_model_states.pt`` (``module``).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import torch
import yaml

from kspacelab.errors import KspacelabError
from kspacelab.models import PromptMR
from kspacelab.models.promptmr_compat import promptmr_kwargs, shared_prelu_conflict, upgrade_legacy_keys

__all__ = ["external_model", "read_model_config", "unwrap_weights"]

#: prefixes of the model's entries in the training modules that wrap it
PREFIXES = ("model.", "promptmr.", "varnet.", "unet.", "module.")
_FIRST_CASCADE = "cascades.0.dc_weight"
_VARNET_CASCADE = re.compile(r"^cascades\.(\d+)\.dc_weight$")


def _tensors_only(value: Any) -> bool:
    return (
        isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())
    )


def unwrap_weights(obj: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The model's state dict inside a loaded file, its wrapper's prefixes removed; None when there is none.

    Looks in ``obj["state_dict"]`` (Lightning), ``obj["module"]`` (DeepSpeed) or ``obj`` itself, then removes
    one of :data:`PREFIXES` shared by every key, or keeps only the keys under whatever prefix holds the first
    cascade (``promptmr.cascades.0.dc_weight``, ``net.cascades.0.dc_weight``, ...), until neither applies.
    """
    if _tensors_only(obj.get("state_dict")):
        state: dict[str, torch.Tensor] = obj["state_dict"]
    elif _tensors_only(obj.get("module")):
        state = obj["module"]
    elif _tensors_only(obj):
        state = obj
    else:
        return None
    while True:
        prefix = next((p for p in PREFIXES if all(k.startswith(p) for k in state)), None)
        if (
            prefix is None and _FIRST_CASCADE not in state
        ):  # a training module's other entries beside the model
            prefix = next(
                (k[: -len(_FIRST_CASCADE)] for k in state if k.endswith("." + _FIRST_CASCADE)), None
            )
        if prefix is None:
            return state
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _count_levels(state: dict[str, torch.Tensor], prefix: str) -> int:
    levels = {
        int(m.group(1))
        for k in state
        if (m := re.match(re.escape(prefix) + r"down_sample_layers\.(\d+)\.", k))
    }
    return len(levels)


def varnet_kwargs(state: dict[str, torch.Tensor]) -> dict[str, Any] | None:
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


def unet_kwargs(state: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    """Single-coil U-Net arguments of a fastMRI ``Unet(in_chans=1, out_chans=1, ...)`` state dict, or None if it is
    not one."""
    first = state.get("down_sample_layers.0.layers.0.weight")
    pools = _count_levels(state, "")
    last = state.get(f"up_conv.{pools - 1}.1.weight")
    if first is None or last is None or first.ndim != 4 or first.shape[1] != 1 or last.shape[0] != 1:
        return None
    return {"chans": int(first.shape[0]), "num_pool_layers": pools, "normalization": "meanstd"}


def read_model_config(path: str | Path) -> dict[str, Any]:
    """PromptMR+ constructor arguments from a YAML file.

    Accepted layouts: the reference implementation's configuration (``model: {init_args: {...}}``), a
    kspacelab recipe (``model: {model_name: promptmr, model_kwargs: {...}}``) or a plain mapping of arguments.
    Entries that are not :class:`kspacelab.models.PromptMR` arguments (the reference's ``lr_gamma``, ...) are
    left out.

    Raises:
        KspacelabError: a missing or unreadable file, or one without a mapping of arguments (one line).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise KspacelabError(f"{path}: cannot read the model configuration: {reason}") from None
    model = data.get("model") if isinstance(data, dict) else None
    if isinstance(model, dict):
        name = model.get("model_name", "promptmr")
        if name != "promptmr":
            raise KspacelabError(f"{path}: a configuration for model {name!r}, not promptmr")
        data = model.get("init_args", model.get("model_kwargs"))
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise KspacelabError(
            f"{path}: no model configuration (expected a mapping of PromptMR arguments, model.init_args or "
            "model.model_kwargs)"
        )
    accepted = set(inspect.signature(PromptMR).parameters)
    return {k: v for k, v in data.items() if k in accepted}


def external_model(
    weights: dict[str, torch.Tensor], path: Path, model_config: str | Path | None = None
) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """``(registry name, constructor arguments, weights)`` for the unwrapped weights of a file from elsewhere.

    Args:
        weights: the state dict (:func:`unwrap_weights`).
        path: the file, for messages.
        model_config: a YAML file of PromptMR+ arguments (:func:`read_model_config`) used instead of the shapes;
            ``shared_prelu`` is read off the weights when the file does not set it.

    Raises:
        KspacelabError: weights of neither kind, or PromptMR+ weights kspacelab's model cannot express (one line).
    """
    weights = upgrade_legacy_keys(weights)
    if model_config is None:
        inferred = varnet_kwargs(weights)
        if inferred is not None:
            return "varnet", inferred, weights
        inferred = unet_kwargs(weights)
        if inferred is not None:
            return "singlecoil_unet", inferred, {"unet." + k: v for k, v in weights.items()}
    try:
        kwargs = promptmr_kwargs(weights)
    except (ValueError, KeyError, IndexError) as err:
        raise KspacelabError(f"{path}: PromptMR+ weights that kspacelab cannot build: {err}") from None
    if kwargs is None:
        raise KspacelabError(
            f"{path}: unknown weights (neither a fastMRI VarNet or U-Net nor a PromptMR+ state dict, also looked for "
            "under "
            "'state_dict' and 'module' and behind the prefixes " + ", ".join(PREFIXES) + ")"
        )
    if model_config is not None:
        given = read_model_config(model_config)
        given.setdefault("shared_prelu", shared_prelu_conflict(weights) is None)
        kwargs = given
    return "promptmr", kwargs, weights
