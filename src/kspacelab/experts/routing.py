"""Routing volumes to the experts of a bundle: anatomy (classifier or file name), acceleration and mask rule.

:func:`load_bundle` reads a manifest (:mod:`kspacelab.experts.manifest`) and loads every checkpoint with
``weights_only=True``; :func:`route_volumes` decides, per volume, which expert reconstructs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kspacelab import formats, masks
from kspacelab.errors import DataFormatError, KspacelabError
from kspacelab.experts.manifest import Bundle, ExpertSpec, read_bundle
from kspacelab.inference import CLASSICAL_METHODS, output_size
from kspacelab.models.classifier import classify_volume
from kspacelab.training.checkpoint import LoadedModel, load_model

__all__ = ["LoadedBundle", "RoutingDecision", "load_bundle", "route_volumes"]

#: Image dataset the anatomy classifier reads when its checkpoint does not say.
DEFAULT_CLASSIFIER_IMAGE = "image_grappa"


@dataclass
class LoadedBundle:
    """A bundle with its models loaded (eval mode)."""

    bundle: Bundle
    experts: dict[str, LoadedModel]
    classifier: torch.nn.Module | None = None
    classifier_image_key: str = DEFAULT_CLASSIFIER_IMAGE
    fallback: LoadedModel | None = None

    def model_for(self, expert: ExpertSpec | None) -> tuple[str, LoadedModel]:
        """``(name, loaded model)`` serving a route (``expert`` None: the fallback)."""
        if expert is not None:
            return expert.name, self.experts[expert.name]
        if self.fallback is None:  # excluded by read_bundle
            raise KspacelabError(f"{self.bundle.path}: no expert and no fallback for a route")
        return "fallback", self.fallback


def load_bundle(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedBundle:
    """:func:`~kspacelab.experts.manifest.read_bundle`, then every checkpoint loaded safely."""
    bundle = read_bundle(path)
    experts = {e.name: load_model(e.checkpoint, map_location=map_location) for e in bundle.experts}
    classifier = None
    image_key = DEFAULT_CLASSIFIER_IMAGE
    if bundle.classifier is not None and bundle.needs_anatomy and bundle.anatomy_source == "classifier":
        loaded = load_model(bundle.classifier, map_location=map_location)
        classifier = loaded.model
        image_key = str(loaded.data_hyper_parameters.get("image_key") or image_key)
    fallback = load_model(bundle.fallback, map_location=map_location) if bundle.fallback is not None else None
    return LoadedBundle(bundle, experts, classifier, image_key, fallback)


@dataclass(frozen=True)
class RoutingDecision:
    """Where one volume went (one entry of ``OUT/routing.json``)."""

    file: str  # e.g. "acc4/brain_test1.h5"
    anatomy: str
    anatomy_probability: float | None  # the classifier's probability; None when taken from the file name
    acc: int
    mask_rule: str  # "organiser" | "other"
    expert: str


def _volume_images_for_classifier(vol: formats.Volume, image_key: str, crop: int | None) -> torch.Tensor:
    """``(S, h, w)`` images the anatomy classifier reads: the image file's ``image_key`` when present, else
    GRAPPA (or zero-filled for ``image_input``) reconstructed from the volume's k-space."""
    if vol.image_path is not None:
        try:
            return torch.from_numpy(formats.read_image_volume(vol.image_path, image_key))
        except KspacelabError:
            pass  # no such dataset in this file: compute it
    recon_fn = CLASSICAL_METHODS["zero-filled" if image_key == "image_input" else "grappa"]
    size = output_size(vol, crop)
    slices = []
    for index in range(formats.kspace_shape(vol.kspace_path)[0]):
        kspace, mask = formats.read_kspace_slice(vol.kspace_path, index)
        try:
            slices.append(recon_fn(kspace * mask[None, None, :], mask, size))
        except ValueError as err:
            raise DataFormatError(
                vol.kspace_path, f"slice {index}: image for the classifier failed: {err}"
            ) from err
    return torch.from_numpy(np.stack(slices))


def route_volumes(
    volumes: list[tuple[str, formats.Volume]], loaded: LoadedBundle, crop: int | None = None
) -> list[RoutingDecision]:
    """Route every volume: anatomy (classifier or file name), acceleration and organiser rule from the mask."""
    bundle = loaded.bundle
    decisions = []
    for group, vol in volumes:
        mask = formats.read_mask(vol.kspace_path)
        try:
            acc = masks.estimate_acceleration(mask)
        except ValueError:
            if vol.acceleration is None:
                raise DataFormatError(vol.kspace_path, "cannot tell the acceleration from the mask") from None
            acc = vol.acceleration
        rule = "organiser" if masks.follows_organiser_rule(mask) else "other"
        probability: float | None = None
        if not bundle.needs_anatomy:
            anatomy = vol.anatomy
        elif bundle.anatomy_source == "filename" or loaded.classifier is None:
            anatomy = formats.anatomy_from_name(vol.name)
        else:
            images = _volume_images_for_classifier(vol, loaded.classifier_image_key, crop)
            anatomy, probability = classify_volume(loaded.classifier, images)
        expert = bundle.route(anatomy, acc, rule)
        name = expert.name if expert is not None else "fallback"
        file = f"{group}/{vol.name}" if group else vol.name
        decisions.append(RoutingDecision(file, anatomy, probability, acc, rule, name))
    return decisions
