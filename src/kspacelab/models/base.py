"""The model interface: what a reconstruction model takes, what it returns and what input it declares.

* :class:`InputSpec`: how a model's inputs are prepared (adjacent slices stacked along the coil axis, an
  image-domain crop of the readout axis per anatomy, extra images such as a classical reconstruction,
  single- or multi-coil data). The data pipeline builds samples from it; a checkpoint carries it.
* :class:`ReconSample`: one slice (or a collated batch of slices) ready for a model.
* :class:`ReconModel`: the base class of every reconstruction model. ``model.reconstruct(sample)`` returns
  the magnitude image at the sample's output size; :meth:`ReconModel.input_spec` declares the inputs.
* :func:`config_class`: the typed configuration (a dataclass) of a model class, read off its constructor, and
  :func:`check_config`, which refuses misspelt keys with the list of allowed ones.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from kspacelab import challenge, physics

__all__ = ["InputSpec", "ReconModel", "ReconSample", "check_config", "config_class", "maybe_checkpoint"]


@dataclass(frozen=True)
class InputSpec:
    """How the inputs of a model are prepared; equal in training and inference.

    Attributes:
        num_adj_slices: odd number of adjacent slices stacked along the coil axis (centre slice in the middle).
        crop_height: image-domain height of the readout axis per anatomy (``{"brain": 384}``); anatomies not
            listed are not cropped.
        extra_images: image datasets the model reads besides k-space (e.g. ``("image_grappa",)``), stacked in
            this order as :attr:`ReconSample.extra_images`.
        multicoil: multi-coil k-space ``(C, H, W)`` (True) or single-coil ``(H, W)`` data (False).
        classical_fallback: the classical reconstruction (``grappa``, ``sense``, ``cs``, ``zero-filled``) the data
            pipeline computes from the file's k-space and mask, and caches, where a file lacks an extra image.
    """

    num_adj_slices: int = 1
    crop_height: Mapping[str, int] = field(default_factory=dict)
    extra_images: tuple[str, ...] = ()
    multicoil: bool = True
    classical_fallback: str = "grappa"

    def __post_init__(self) -> None:
        adj = self.num_adj_slices
        if isinstance(adj, bool) or not isinstance(adj, int) or adj < 1 or adj % 2 == 0:
            raise ValueError(f"num_adj_slices must be a positive odd integer, got {adj!r}")
        heights = dict(self.crop_height or {})
        for anatomy, height in heights.items():
            if anatomy not in challenge.ANATOMIES:
                raise ValueError(
                    f"crop_height: unknown anatomy {anatomy!r}; choose from {', '.join(challenge.ANATOMIES)}"
                )
            if isinstance(height, bool) or not isinstance(height, int) or height < 1:
                raise ValueError(f"crop_height[{anatomy!r}] must be a positive integer, got {height!r}")
        object.__setattr__(self, "crop_height", heights)
        object.__setattr__(self, "extra_images", tuple(str(name) for name in self.extra_images))

    def readout_height(self, height: int, anatomy: str) -> int:
        """Readout height ``H`` of the model input for data of ``height`` rows and ``anatomy``."""
        crop = self.crop_height.get(anatomy)
        return height if crop is None else min(height, crop)

    def with_crop(self, crop_height: Mapping[str, int] | None) -> InputSpec:
        """This spec with the readout crops ``crop_height`` (None: no crop)."""
        return dataclasses.replace(self, crop_height=dict(crop_height or {}))

    def to_dict(self) -> dict[str, Any]:
        """Plain values (ints, strings, lists), as stored in checkpoints."""
        return {
            "num_adj_slices": self.num_adj_slices,
            "crop_height": dict(self.crop_height),
            "extra_images": list(self.extra_images),
            "multicoil": self.multicoil,
            "classical_fallback": self.classical_fallback,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> InputSpec:
        """Inverse of :meth:`to_dict`; raises ValueError for unknown keys or bad values."""
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown input-spec keys {unknown}")
        data = dict(values)
        if "extra_images" in data:
            data["extra_images"] = tuple(data["extra_images"] or ())
        return cls(**data)


#: lesion boxes a :class:`ReconSample` carries per slice (rows of ``boxes``)
MAX_BOXES = 16


def no_boxes() -> torch.Tensor:
    """The ``boxes`` of a slice without lesion boxes: float32 zeros ``(MAX_BOXES, 4)``."""
    return torch.zeros(MAX_BOXES, 4, dtype=torch.float32)


class ReconSample(NamedTuple):
    """One slice (or, collated by ``default_collate``, a batch) ready for a reconstruction model.

    A NamedTuple, so :func:`torch.utils.data.default_collate` batches it field by field: tensors are
    stacked (a leading batch axis ``B`` appears), ints become int64 tensors ``(B,)``, floats float64
    tensors ``(B,)``, strings tuples of ``B`` strings.

    Attributes:
        masked_kspace: float32 ``(C', H, W, 2)`` real view of the undersampled k-space; ``C' = adj * C``
            for ``adj`` adjacent slices stacked along the coil axis in slice order ``s - adj // 2 .. s +
            adj // 2``, so the centre slice's coils are the middle block. ``H`` is the readout height after
            the optional crop.
        mask: bool ``(1, 1, W, 1)`` sampling mask (broadcasts against ``masked_kspace``).
        num_low_frequencies: length of the fully sampled centre block.
        target: float32 ``(h, w)`` target image; zeros of the output size when there is no target.
        max_value: the volume's data range (file attr ``max``); 0.0 when unknown.
        crop_size: int64 ``(2,)`` = ``(h, w)``, the size of the model's output.
        anatomy: ``"brain"``, ``"knee"`` or ``""`` when unknown.
        acceleration: acceleration of the mask (falling back to the volume's nominal one); 0 when unknown.
        fname: the volume's file name, e.g. ``"brain_acc4_1.h5"``.
        slice_num: index of the (centre) slice in the volume.
        max_area: largest leaderboard-foreground area (pixels) over the volume's slices, for the
            ``sqrt(area / max_area)`` loss weight; 0.0 when not computed.
        extra_images: float32 ``(E, h, w)``: the :attr:`InputSpec.extra_images` of the slice, in order
            (``E = 0`` for most models).
        boxes: float32 ``(MAX_BOXES, 4)``: the slice's lesion boxes ``(x, y, width, height)`` in target pixels
            (the image file's 2026 ``annotations``), padded with zero rows; all zeros without boxes.
    """

    masked_kspace: torch.Tensor
    mask: torch.Tensor
    num_low_frequencies: int
    target: torch.Tensor
    max_value: float
    crop_size: torch.Tensor
    anatomy: str
    acceleration: int
    fname: str
    slice_num: int
    max_area: float = 0.0
    extra_images: torch.Tensor | None = None
    boxes: torch.Tensor | None = None

    def output_size(self) -> tuple[int, int]:
        """``(h, w)`` of the model output: the target's size (the first item's for a batch)."""
        size = self.crop_size.reshape(-1, 2)[0]
        return int(size[0]), int(size[1])

    def to(self, device: torch.device | str) -> ReconSample:
        """The sample with every tensor field on ``device``."""
        moved: dict[str, Any] = {
            name: value.to(device)
            for name, value in self._asdict().items()
            if isinstance(value, torch.Tensor) and name != "crop_size"
        }
        return self._replace(**moved)


class ReconModel(nn.Module):
    """Base class of the reconstruction models.

    A subclass implements ``forward(masked_kspace, mask, num_low_frequencies=None, crop_size=None)`` (the
    fastMRI VarNet call) or overrides :meth:`reconstruct` when it needs more of the sample (extra images,
    anatomy, acceleration), and overrides :meth:`input_spec` when it needs adjacent slices or extra images.
    """

    def input_spec(self) -> InputSpec:
        """What the model needs besides the centre slice's k-space (default: nothing; no readout crop)."""
        return InputSpec()

    def reconstruct(self, sample: ReconSample, size: Sequence[int] | None = None) -> torch.Tensor:
        """Magnitude image ``(B, h, w)`` float of a collated batch.

        Args:
            sample: a batch (tensors on the model's device).
            size: output ``(h, w)``; default :meth:`ReconSample.output_size`.
        """
        out = tuple(size) if size is not None else sample.output_size()
        image: torch.Tensor = self(
            sample.masked_kspace, sample.mask, sample.num_low_frequencies, crop_size=out
        )
        return image

    def reconstruct_ensemble(self, sample: ReconSample, size: Sequence[int] | None = None) -> torch.Tensor:
        """Self-ensemble (``reconstruct --tta``): the mean of the image and the un-flipped image of the
        left-right flipped slice, the flip done exactly in k-space (:func:`kspacelab.physics.flip_width_kspace`).
        Models with extra inputs override it."""
        out = tuple(size) if size is not None else sample.output_size()
        kspace, mask = physics.flip_width_kspace(sample.masked_kspace, sample.mask)
        flipped = sample._replace(masked_kspace=kspace, mask=mask, target=sample.target.flip(-1))
        return 0.5 * (self.reconstruct(sample, out) + self.reconstruct(flipped, out).flip(-1))

    def pretrained_parts(self) -> list[tuple[nn.Module, str]]:
        """``(submodule, checkpoint path)`` pairs the trainer loads before training starts (none by default)."""
        return []


def maybe_checkpoint(function: Any, *args: Any, enabled: bool) -> Any:
    """``function(*args)``; with ``enabled`` and gradients on, recomputed in the backward pass instead of storing
    its activations (activation checkpointing, non-reentrant), the option every model's ``use_checkpoint`` sets."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(function, *args, use_reentrant=False)
    return function(*args)


def config_class(model_class: type[nn.Module]) -> type:
    """The typed configuration of ``model_class``: a frozen dataclass with one field per keyword argument of its
    constructor (same name, type and default). ``config_class(VarNet)(num_cascades=4)`` is a valid config."""
    hints = typing.get_type_hints(model_class.__init__)
    fields: list[tuple[str, Any, Any]] = []
    for name, param in inspect.signature(model_class.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = dataclasses.MISSING if param.default is param.empty else param.default
        fields.append((name, hints.get(name, Any), field(default=default)))
    return dataclasses.make_dataclass(f"{model_class.__name__}Config", fields, frozen=True)


def _type_ok(value: Any, annotation: Any) -> bool:
    """A loose check of simple annotations (int, float, bool, str, optionals and sequences of them)."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence, typing.Sequence) or annotation in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return isinstance(value, (list, tuple)) and all(
            _type_ok(item, args[0]) if args else True for item in value
        )
    return True  # anything richer is checked by the model itself


def check_config(model_name: str, config: type, values: Mapping[str, Any]) -> None:
    """Refuse keys ``config`` (a :func:`config_class`) does not have, and values of the wrong simple type.

    Raises:
        ValueError: one line naming the model, the offending key(s) and the allowed keys.
    """
    fields = {f.name: f for f in dataclasses.fields(config)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(unknown)} for model {model_name!r}; allowed: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(config)
    for key, value in values.items():
        if not _type_ok(value, hints.get(key, Any)):
            raise ValueError(
                f"model {model_name!r}: {key} = {value!r} does not have the type {hints[key]}".replace(
                    "typing.", ""
                )
            )
    missing = [f.name for f in fields.values() if f.default is dataclasses.MISSING and f.name not in values]
    if missing:
        raise ValueError(f"model {model_name!r} needs {', '.join(missing)}")
