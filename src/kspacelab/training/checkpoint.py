"""Loading trained weights safely: never unpickling code, whatever the environment says.

Every checkpoint kspacelab reads (``reconstruct --checkpoint``, bundles, ``train --ckpt_path``, a run folder's
``last.ckpt``, ``--init-weights``) goes through :func:`safe_load`: ``torch.load(..., weights_only=True)`` passed
explicitly (torch lets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` override only a *missing* ``weights_only``), after a
check that the running torch really refuses a pickled callable in this environment; a file holding anything but
tensors and plain values is refused with one line, and nothing in it runs.

:func:`load_model` rebuilds a model from a checkpoint written by ``kspacelab train`` or from a plain
fastMRI-style VarNet ``state_dict`` (fastMRI's published weights) and returns a :class:`LoadedModel`: the model,
the :class:`~kspacelab.models.base.InputSpec` its inputs were prepared with in training, its configuration and
where it came from. :func:`read_state_dict` reads only the weights (a stage's starting point).
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kspacelab import challenge
from kspacelab.errors import KspacelabError
from kspacelab.models import build_model
from kspacelab.models.base import InputSpec, ReconModel
from kspacelab.models.promptmr_compat import is_legacy_state_dict
from kspacelab.training.external_weights import external_model, unwrap_weights

__all__ = [
    "ACCEPTED",
    "LoadedModel",
    "Provenance",
    "is_training_checkpoint",
    "load_model",
    "read_state_dict",
    "safe_load",
]


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


#: What kspacelab reads, for the messages that refuse a file.
ACCEPTED = (
    "kspacelab accepts a kspacelab training checkpoint or a fastMRI-style VarNet or PromptMR+ state dict of plain "
    "tensors (alone, in a Lightning checkpoint or in a DeepSpeed mp_rank_00_model_states.pt)"
)

_FORCING_VARIABLES = ("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_WEIGHTS_ONLY_LOAD")
_probe_calls: list[int] = []


def _probe_payload() -> None:
    """Called only if torch unpickled the probe's callable: loading would run code."""
    _probe_calls.append(1)


class _Probe:
    """A pickle that calls :func:`_probe_payload` when it is unpickled (harmless)."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_probe_payload, ())


@functools.lru_cache(maxsize=8)
def _unsafe_loading(environment: tuple[str | None, ...]) -> str | None:
    """Why ``torch.load(..., weights_only=True)`` is not safe in this environment (None when it is).

    Loads a pickled callable from memory: a torch that honours ``weights_only=True`` refuses it; one that lets the
    environment (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``) override it calls the harmless :func:`_probe_payload`.
    """
    del environment  # the cache key
    buffer = io.BytesIO()
    torch.save({"probe": _Probe()}, buffer)
    buffer.seek(0)
    before = len(_probe_calls)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.load(buffer, weights_only=True)
    except pickle.UnpicklingError:
        return None  # refused, as it must be
    except Exception as err:  # e.g. both forcing variables set
        return (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")
    ran = " (and ran it)" if len(_probe_calls) > before else ""
    return f"torch {torch.__version__} unpickles arbitrary objects{ran} although weights_only=True"


def _refuse_unsafe_environment(path: Path) -> None:
    reason = _unsafe_loading(tuple(os.environ.get(name) for name in _FORCING_VARIABLES))
    if reason is not None:
        raise KspacelabError(
            f"{path}: refusing to load a checkpoint: {reason} (unset {_FORCING_VARIABLES[0]} and run again)"
        )


def _load_problem(err: BaseException) -> str:
    """One line saying why torch refused or failed to read a file (without torch's advice to load unsafely)."""
    text = str(err)
    blocked = re.search(r"GLOBAL (\S+)", text)
    if isinstance(err, pickle.UnpicklingError) and blocked:
        name = blocked.group(1).rstrip(".,:")
        return (
            f"refused: it holds Python objects ({name}), not only tensors and plain values; nothing was run"
        )
    detail = text.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler error:" in text else text
    lines = [
        line.strip()
        for line in detail.splitlines()
        if line.strip()
        and "weights_only" not in line
        and not line.strip().startswith("Check the documentation")
    ]
    reason = lines[0].rstrip(".") if lines else type(err).__name__
    if isinstance(err, EOFError):
        reason = "the file is empty or truncated"
    elif isinstance(err, OSError):
        reason = f"truncated or corrupt: {reason}"
    elif isinstance(err, KeyError):
        reason = "not a torch file"
    return f"not a readable torch checkpoint ({reason})"


def safe_load(path: str | Path, map_location: str | torch.device | None = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain values only, never code, whatever the
    environment says; torch's warnings are silenced.

    Raises:
        KspacelabError: a missing file, an environment in which torch would unpickle code, or a file that is not a
            torch file of plain values (one line naming the file and what kspacelab accepts).
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a checkpoint file" if path.is_dir() else "checkpoint file not found"
        raise KspacelabError(f"{path}: {what}")
    _refuse_unsafe_environment(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True, mmap=False)
    except KspacelabError:
        raise
    except Exception as err:
        raise KspacelabError(f"{path}: {_load_problem(err)}; {ACCEPTED}") from None


def _read(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """:func:`safe_load`; the object must be a dict."""
    obj = safe_load(path, map_location)
    if not isinstance(obj, dict):
        raise KspacelabError(f"{path}: not a checkpoint (a {type(obj).__name__}, not a mapping); {ACCEPTED}")
    return obj


def is_training_checkpoint(obj: Any) -> bool:
    """Whether ``obj`` (a loaded checkpoint) is a Lightning training checkpoint kspacelab can resume from."""
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("state_dict"), dict)
        and isinstance(obj.get("loops"), dict)
        and isinstance(obj.get("optimizer_states"), list)
        and isinstance(obj.get("global_step"), int)
    )


def _weights(obj: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    state = obj.get("state_dict", obj.get("module", obj))
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise KspacelabError(
            f"{path}: no model weights found (neither a Lightning checkpoint nor a state dict); {ACCEPTED}"
        )
    return state


def read_state_dict(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The model weights of a kspacelab checkpoint (``model.`` prefix removed) or of weights from elsewhere
    (unwrapped by :func:`kspacelab.training.external_weights.unwrap_weights`: a ``state_dict`` or DeepSpeed
    ``module`` entry, a ``model.``/``promptmr.``/``varnet.``/``module.`` prefix), read with ``weights_only=True``."""
    path = Path(checkpoint)
    obj = _read(path, "cpu")
    state = _weights(obj, path)
    if isinstance(obj.get("hyper_parameters"), dict) and any(k.startswith("model.") for k in state):
        return {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    return unwrap_weights(obj) or state


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _broken(path: Path, problem: str) -> KspacelabError:
    return KspacelabError(f"{path}: broken settings in the checkpoint: {problem}")


def _crop_setting(value: Any, path: Path, key: str) -> dict[str, int]:
    """A checkpoint's ``crop_height``: None or a mapping of anatomy to a positive integer height."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _broken(path, f"{key} must be a mapping of anatomy to height, got {_short(value)}")
    crop: dict[str, int] = {}
    for anatomy, height in value.items():
        if anatomy not in challenge.ANATOMIES:
            raise _broken(
                path,
                f"{key}: unknown anatomy {_short(anatomy)}; choose from {', '.join(challenge.ANATOMIES)}",
            )
        if isinstance(height, bool) or not isinstance(height, int) or height < 1:
            raise _broken(path, f"{key}[{anatomy!r}] must be a positive integer, got {_short(height)}")
        crop[str(anatomy)] = height
    return crop


def _model_settings(hparams: Mapping[str, Any], path: Path) -> tuple[str, dict[str, Any]]:
    """``model_name`` and ``model_kwargs`` of a training checkpoint's hyper-parameters, checked for type."""
    name = hparams.get("model_name")
    if not isinstance(name, str):
        raise _broken(path, f"model_name must be a string, got {_short(name)}")
    kwargs = hparams.get("model_kwargs")
    if kwargs is None:
        return name, {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise _broken(
            path, f"model_kwargs must be a mapping of argument names to values, got {_short(kwargs)}"
        )
    return name, dict(kwargs)


def _input_spec(model: nn.Module, crop: dict[str, int]) -> InputSpec:
    """The model's declared inputs with the readout crop it was trained with."""
    declared = model.input_spec() if isinstance(model, ReconModel) else InputSpec()
    return declared.with_crop(crop)


def load_model(
    checkpoint: str | Path, map_location: str | torch.device = "cpu", model_config: str | Path | None = None
) -> LoadedModel:
    """Load a model for inference (eval mode) through :func:`safe_load` (``weights_only=True``).

    Accepted contents:

    * a Lightning checkpoint written by ``kspacelab train``: the model is rebuilt with
      ``build_model(model_name, **model_kwargs)`` from ``hyper_parameters`` and given the ``model.*`` weights;
      the readout crop is the training module's ``crop_height`` (checkpoints written before it moved there kept
      it in the data module's hyper-parameters);
      PromptMR+ checkpoints written before the model took the reference implementation's parameter names are
      renamed on load and built with ``shared_prelu=False`` (they had a PReLU per block) unless their settings
      say otherwise;
    * weights from elsewhere (:mod:`kspacelab.training.external_weights`): a fastMRI-style VarNet or a PromptMR+
      state dict in the reference implementation's names, plain, in a Lightning checkpoint's ``state_dict``
      (``model.``/``promptmr.``/``varnet.``/``module.`` prefix) or in DeepSpeed's ``module``; the configuration
      is read off the tensor shapes, or from ``model_config`` for PromptMR+.

    Args:
        checkpoint: path of the ``.ckpt``/``.pt`` file.
        map_location: device for the tensors.
        model_config: a YAML file of PromptMR+ arguments for weights from elsewhere (not for kspacelab training
            checkpoints, which hold their configuration).

    Raises:
        KspacelabError: a missing, corrupt or unsafe file, broken settings inside it (``model_kwargs`` not a
            mapping, a ``crop_height`` or ``num_adj_slices`` of the wrong type or value, ...), or contents that are
            neither kind (one line naming the file).
    """
    path = Path(checkpoint)
    obj = _read(path, map_location)
    state = _weights(obj, path)
    hparams = obj.get("hyper_parameters")
    data_hparams: dict[str, Any] = {}
    if isinstance(hparams, dict) and "model_name" in hparams:
        if model_config is not None:
            raise KspacelabError(
                f"{path}: a kspacelab training checkpoint holds its model configuration; --model-config is for "
                "weights from elsewhere"
            )
        name, kwargs = _model_settings(hparams, path)
        weights = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        if name == "promptmr" and "shared_prelu" not in kwargs and is_legacy_state_dict(weights):
            kwargs["shared_prelu"] = False  # written before the reference's names: one PReLU per block
        raw_data = obj.get("datamodule_hyper_parameters")
        data_hparams = dict(raw_data) if isinstance(raw_data, dict) else {}
        epoch, step = obj.get("epoch"), obj.get("global_step")
        provenance = Provenance(
            path,
            "lightning",
            epoch if isinstance(epoch, int) else None,
            step if isinstance(step, int) else None,
        )
        hparams = dict(hparams)
        if hparams.get("crop_height") is not None:
            crop = _crop_setting(hparams.get("crop_height"), path, "crop_height")
        else:
            crop = _crop_setting(data_hparams.get("crop_height"), path, "datamodule crop_height")
    else:
        unwrapped = unwrap_weights(obj)
        if unwrapped is None:
            raise KspacelabError(f"{path}: no model weights found; {ACCEPTED}")
        name, kwargs, weights = external_model(unwrapped, path, model_config)
        crop = {}
        provenance = Provenance(path, "state_dict")
        hparams = {}
    try:
        model = build_model(name, **kwargs)
        spec = _input_spec(model, crop)
    except (TypeError, ValueError, AttributeError, KeyError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        first = re.sub(r"<class '(\w+)'>", r"\1", first)
        raise _broken(
            path, first if first.startswith(f"model {name!r}") else f"model {name!r}: {first}"
        ) from None
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        first = " ".join(lines[:2])[:300] or type(err).__name__  # torch's heading and its first problem
        raise KspacelabError(
            f"{path}: weights do not fit model {name!r} {_short(kwargs, 200)}: {first}"
        ) from None
    return LoadedModel(model.to(map_location).eval(), name, kwargs, spec, provenance, hparams, data_hparams)
