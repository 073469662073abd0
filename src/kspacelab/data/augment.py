"""Training augmentation: MRAugment (physics-aware, Fabian et al., ICML 2021) and mask augmentation.

MRAugment augments fully sampled multi-coil k-space.

The augmentation acts on the complex coil images, not on the magnitude target: k-space -> coil images ->
random flips, 180/90-degree rotation, and one affine map (translation, rotation, shear, scaling) -> k-space, and
the target is recomputed as the RSS of the augmented coil images, so the pair stays physically consistent
(undersampling happens afterwards, on the augmented k-space). Every transform fires with probability
``p(epoch) * weight``; ``p`` follows a schedule over epochs (constant, linear or exponential ramp, after a
delay). The affine map is applied to real and imaginary parts with reflect padding on an image upsampled
``upsample`` times (then averaged back down), which limits interpolation blur and aliasing.

Draws are deterministic: a slice's transforms depend only on ``(seed, epoch, file name, slice)``, whatever
worker processes the slice.

Mask augmentation (:class:`MaskAugment`) replaces a training slice's mask, with a probability that follows the
same kind of schedule, by one drawn from a pool of kinds (organiser rule, random offset / spacing / lines,
fastMRI's kinds): the "helper" recipe of the 2025 entries, which trains experts robust to masks other than the
organiser's.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F

from kspacelab import physics
from kspacelab.challenge import ACCELERATIONS, ANATOMIES

__all__ = [
    "MASK_AUGMENT_KINDS",
    "AugmentParams",
    "AugmentSchedule",
    "MRAugment",
    "MaskAugment",
    "augment_from_config",
    "mask_augment_from_config",
    "stable_seed",
]

ScheduleKind = Literal["constant", "linear", "exp"]


@dataclass(frozen=True)
class AugmentParams:
    """Weights (relative probabilities) and limits of the transforms, for one anatomy.

    Limits: translations as fractions of the image size, angles in degrees, ``max_scaling`` as a fraction
    (scale drawn in ``1 +- max_scaling``). A weight of 0 disables a transform.
    """

    weight_fliph: float = 0.5
    weight_flipv: float = 0.5
    weight_rot90: float = 0.5
    weight_translation: float = 1.0
    weight_rotation: float = 1.0
    weight_shear: float = 1.0
    weight_scaling: float = 1.0
    max_translation_x: float = 0.125
    max_translation_y: float = 0.08
    max_rotation: float = 180.0
    max_shear_x: float = 15.0
    max_shear_y: float = 15.0
    max_scaling: float = 0.25

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AugmentParams:
        """Build from a config mapping; unknown keys are an error (one line naming them)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown MRAugment parameters {unknown}; known: {sorted(known)}")
        return cls(**{k: float(v) for k, v in values.items()})


@dataclass(frozen=True)
class AugmentSchedule:
    """Augmentation probability ``p(epoch)``: 0 before ``delay``, then ramps to ``strength`` at ``max_epochs``.

    ``constant``: ``strength`` from the delay on; ``linear``: a straight ramp; ``exp``: MRAugment's
    ``strength * (1 - exp(-t * decay)) / (1 - exp(-decay))`` with ``t`` the ramp fraction in ``[0, 1]``.
    """

    strength: float = 0.5
    kind: ScheduleKind = "exp"
    delay: int = 0
    max_epochs: int = 50
    decay: float = 5.0

    def probability(self, epoch: int) -> float:
        """``p`` at ``epoch`` (0-based), in ``[0, strength]``."""
        if epoch < self.delay or self.strength <= 0:
            return 0.0
        if self.kind == "constant":
            return self.strength
        span = max(1, self.max_epochs - self.delay)
        t = min(1.0, (epoch - self.delay) / span)
        if self.kind == "linear":
            return self.strength * t
        return self.strength * (1.0 - math.exp(-t * self.decay)) / (1.0 - math.exp(-self.decay))


def stable_seed(*parts: object) -> int:
    """A 32-bit seed that depends only on ``parts`` (not on the process, worker or Python hash seed)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 2**32


@dataclass
class MRAugment:
    """The augmentation pipeline; call it on fully sampled ``(C, H, W)`` complex k-space."""

    params: dict[str, AugmentParams] = field(default_factory=lambda: {"default": AugmentParams()})
    schedule: AugmentSchedule = field(default_factory=AugmentSchedule)
    upsample: int = 2
    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """The current training epoch (selects the schedule's probability and reseeds the draws)."""
        self.epoch = int(epoch)

    def probability(self) -> float:
        """The schedule's probability ``p`` at the current epoch (each transform fires with ``p * weight``)."""
        return self.schedule.probability(self.epoch)

    def params_for(self, anatomy: str) -> AugmentParams:
        """The anatomy's parameter set, else ``"default"``."""
        return self.params.get(anatomy) or self.params.get("default") or AugmentParams()

    def draw(self, anatomy: str, fname: str, slice_num: int) -> dict[str, Any]:
        """The transforms one slice gets this epoch (empty when none fires)."""
        p = self.probability()
        if p <= 0:
            return {}
        prm = self.params_for(anatomy)
        g = torch.Generator().manual_seed(stable_seed(self.seed, self.epoch, fname, slice_num))

        def fires(weight: float) -> bool:
            return weight > 0 and float(torch.rand((), generator=g)) < p * weight

        def uniform(limit: float) -> float:
            return float((torch.rand((), generator=g) * 2 - 1) * limit)

        out: dict[str, Any] = {}
        if fires(prm.weight_fliph):
            out["fliph"] = True
        if fires(prm.weight_flipv):
            out["flipv"] = True
        if fires(prm.weight_rot90):
            out["rot90"] = int(torch.randint(1, 4, (), generator=g))
        if fires(prm.weight_translation):
            out["translation"] = (uniform(prm.max_translation_x), uniform(prm.max_translation_y))
        if fires(prm.weight_rotation):
            out["rotation"] = uniform(prm.max_rotation)
        if fires(prm.weight_shear):
            out["shear"] = (uniform(prm.max_shear_x), uniform(prm.max_shear_y))
        if fires(prm.weight_scaling):
            out["scaling"] = 1.0 + uniform(prm.max_scaling)
        return out

    def __call__(self, kspace: torch.Tensor, anatomy: str, fname: str, slice_num: int) -> torch.Tensor:
        """Augmented k-space ``(C, H, W)`` complex64 of fully sampled ``kspace`` (returned as is when nothing fires)."""
        ops = self.draw(anatomy, fname, slice_num)
        if not ops:
            return kspace
        return physics.fft2c(apply_transforms(physics.ifft2c(kspace.to(torch.complex64)), ops, self.upsample))


def apply_transforms(images: torch.Tensor, ops: Mapping[str, Any], upsample: int = 2) -> torch.Tensor:
    """Apply drawn transforms to complex coil images ``(C, H, W)``; the shape is kept.

    Flips are exact index reversals; ``rot90`` turns by ``k`` quarter turns on square images and by a half turn
    (exact) otherwise, so the shape never changes; the affine part is one ``grid_sample`` (bilinear, reflect
    padding) at ``upsample`` times the resolution.
    """
    x = images
    if ops.get("fliph"):
        x = x.flip(-1)
    if ops.get("flipv"):
        x = x.flip(-2)
    if "rot90" in ops:
        k = int(ops["rot90"])
        x = (
            torch.rot90(x, k, dims=(-2, -1))
            if x.shape[-2] == x.shape[-1]
            else torch.rot90(x, 2, dims=(-2, -1))
        )
    affine = {k: ops[k] for k in ("translation", "rotation", "shear", "scaling") if k in ops}
    if affine:
        x = _affine(x, affine, upsample)
    return x


def _affine(images: torch.Tensor, ops: Mapping[str, Any], upsample: int) -> torch.Tensor:
    """Rotation, shear, scaling about the centre, then translation, of complex ``(C, H, W)`` images."""
    c, h, w = images.shape
    tx, ty = ops.get("translation", (0.0, 0.0))
    angle = math.radians(float(ops.get("rotation", 0.0)))
    shx, shy = (math.radians(float(a)) for a in ops.get("shear", (0.0, 0.0)))
    scale = float(ops.get("scaling", 1.0))
    # forward map in pixel units (x right, y down): A = R @ Sh @ S; grid_sample needs the inverse in [-1, 1] units
    rot = torch.tensor(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=torch.float64
    )
    shear = torch.tensor([[1.0, math.tan(shx)], [math.tan(shy), 1.0]], dtype=torch.float64)
    forward = rot @ shear * scale
    inverse = torch.linalg.inv(forward)
    # normalised coordinates: u = 2 x / (w - 1) - 1, so a pixel-space matrix M becomes D^-1 M D with D = diag(w, h)
    d = torch.diag(torch.tensor([w / 2.0, h / 2.0], dtype=torch.float64))
    theta = torch.zeros(1, 2, 3, dtype=torch.float64)
    theta[0, :, :2] = torch.linalg.inv(d) @ inverse @ d
    shift = torch.tensor(
        [2.0 * tx, 2.0 * ty], dtype=torch.float64
    )  # fractions of the size -> normalised units
    theta[0, :, 2] = -(theta[0, :, :2] @ shift)
    real = torch.view_as_real(images).permute(0, 3, 1, 2).reshape(1, 2 * c, h, w).float()
    if upsample > 1:
        real = F.interpolate(real, scale_factor=upsample, mode="bilinear", align_corners=False)
    grid = F.affine_grid(theta.float(), list(real.shape), align_corners=False)
    out = F.grid_sample(real, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if upsample > 1:
        out = F.avg_pool2d(out, upsample)
    out = out.reshape(c, 2, h, w).permute(0, 2, 3, 1).contiguous()
    return torch.view_as_complex(out)


def augment_from_config(config: Mapping[str, Any] | None, seed: int = 0) -> MRAugment | None:
    """An :class:`MRAugment` from a plain config mapping (YAML), or None for None / ``{}``.

    Keys: ``schedule`` (the fields of :class:`AugmentSchedule`), ``params`` (``{"default": {...},
    "brain": {...}, "knee": {...}}``, fields of :class:`AugmentParams`; or the fields directly for all
    anatomies), ``upsample``.
    """
    if not config:
        return None
    known = {"schedule", "params", "upsample"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown augment keys {unknown}; known: {sorted(known)}")
    schedule = AugmentSchedule(**dict(config.get("schedule") or {}))
    if schedule.kind not in ("constant", "linear", "exp"):
        raise ValueError(f"augment.schedule.kind must be constant | linear | exp, got {schedule.kind!r}")
    raw = dict(config.get("params") or {})
    if raw and all(isinstance(v, Mapping) for v in raw.values()):
        params = {str(k): AugmentParams.from_dict(v) for k, v in raw.items()}
    else:
        params = {"default": AugmentParams.from_dict(raw)}
    return MRAugment(params=params, schedule=schedule, upsample=int(config.get("upsample", 2)), seed=seed)


# ----------------------------------------------------------------------------------------------------
# Mask augmentation
# ----------------------------------------------------------------------------------------------------
# fastMRI's centre fractions of the challenge's accelerations (acc 4: 0.08, acc 8: 0.04), used by the fastMRI
# kinds of :class:`MaskAugment` unless ``center_fractions`` says otherwise.
_DEFAULT_CENTER_FRACTIONS: dict[int, float] = dict(zip(ACCELERATIONS, (0.08, 0.04), strict=True))

#: Mask kinds :class:`MaskAugment` draws from: the organiser rule, the robustness variants and fastMRI's kinds.
MASK_AUGMENT_KINDS = (
    "organiser",
    "random_offset",
    "random_spaced",
    "random_lines",
    "random",
    "equispaced",
    "equispaced_fraction",
    "magic",
    "magic_fraction",
)


@dataclass
class MaskAugment:
    """Replace a training slice's mask, with probability ``p(epoch)``, by a mask drawn from ``kinds``.

    ``kinds`` maps a kind of :data:`MASK_AUGMENT_KINDS` to its relative probability. The drawn mask has the
    slice's acceleration; ``organiser`` is :func:`kspacelab.masks.snu_mask`; the variants keep the SNU 8 %
    centre; fastMRI kinds use ``center_fractions[acc]``. ``exclude_organiser_offset`` keeps ``random_offset``
    draws off the organiser's offset (so "helper" experts never see the organiser mask from it). ``anatomies``
    restricts the replacement to slices of those anatomies (EJ's stage 3 re-drew only the knee masks); ``None``
    applies it to every slice. From epoch ``exclude_organiser_from`` on (None: never), a drawn mask that equals
    the organiser mask of its width and acceleration is drawn again (sMaRtIfy's helpers after their first 30
    epochs), so the replacement is never the organiser's. Draws depend only on ``(seed, epoch, file name,
    slice)``.
    """

    kinds: dict[str, float] = field(default_factory=lambda: {"random_offset": 1.0})
    schedule: AugmentSchedule = field(default_factory=lambda: AugmentSchedule(strength=1.0, kind="constant"))
    exclude_organiser_offset: bool = False
    anatomies: tuple[str, ...] | None = None
    center_fractions: dict[int, float] = field(default_factory=lambda: dict(_DEFAULT_CENTER_FRACTIONS))
    exclude_organiser_from: int | None = None
    seed: int = 0
    epoch: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kinds) - set(MASK_AUGMENT_KINDS))
        if unknown:
            raise ValueError(f"unknown mask kinds {unknown}; known: {list(MASK_AUGMENT_KINDS)}")
        if not self.kinds or any(w < 0 for w in self.kinds.values()) or sum(self.kinds.values()) <= 0:
            raise ValueError(f"mask kinds need non-negative weights with a positive sum, got {self.kinds}")
        if self.anatomies is not None and (not self.anatomies or not set(self.anatomies) <= set(ANATOMIES)):
            raise ValueError(
                f"mask_augment.anatomies must list {' and/or '.join(ANATOMIES)}, got {list(self.anatomies)}"
            )
        if self.exclude_organiser_from is not None and not any(
            w > 0 for k, w in self.kinds.items() if k != "organiser"
        ):
            raise ValueError(
                "exclude_organiser_from needs a mask kind other than 'organiser' with a positive weight"
            )

    def set_epoch(self, epoch: int) -> None:
        """The current training epoch (selects the schedule's probability and reseeds the draws)."""
        self.epoch = int(epoch)

    def probability(self) -> float:
        """The probability that a slice's mask is replaced at the current epoch."""
        return self.schedule.probability(self.epoch)

    def kind_probabilities(self) -> dict[str, float]:
        """The probability of each kind of replacement mask at the current epoch (the schedule's probability
        times the kind's share of the weights); the rest of the probability keeps the slice's own mask."""
        total = sum(self.kinds.values())
        p = self.probability()
        return {kind: p * weight / total for kind, weight in sorted(self.kinds.items())}

    def draw(self, width: int, acc: int, anatomy: str, fname: str, slice_num: int) -> Any:
        """A ``(W,)`` bool mask of acceleration ``acc``, or None to keep the slice's own mask.

        ``anatomy`` is the slice's (``"brain"``, ``"knee"`` or ``""`` when unknown, as the dataset gives it).
        """
        import numpy as np

        from kspacelab import masks

        p = self.probability()
        if p <= 0 or (self.anatomies is not None and anatomy not in self.anatomies):
            return None
        rng = np.random.default_rng(stable_seed(self.seed, self.epoch, fname, slice_num, "mask"))
        if rng.random() >= p:
            return None
        drawn = self._draw_kind(width, acc, rng)
        if self.exclude_organiser_from is not None and self.epoch >= self.exclude_organiser_from:
            organiser = masks.snu_mask(width, acc)
            for _ in range(1000):
                if not np.array_equal(drawn, organiser):
                    return drawn
                drawn = self._draw_kind(width, acc, rng)
            raise ValueError(
                f"mask_augment: 1000 draws in a row equal the organiser mask (W={width}, acc={acc})"
            )
        return drawn

    def _draw_kind(self, width: int, acc: int, rng: Any) -> Any:
        """One mask ``(W,)`` bool of a kind drawn by weight from ``kinds`` (``rng``: numpy Generator)."""
        import numpy as np

        from kspacelab import masks

        names = sorted(self.kinds)
        weights = np.array([self.kinds[n] for n in names], dtype=np.float64)
        kind = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        if kind == "organiser":
            return masks.snu_mask(width, acc)
        if kind == "random_offset":
            return masks.random_offset_mask(
                width, acc, rng, exclude_organiser_offset=self.exclude_organiser_offset
            )
        if kind == "random_spaced":
            return masks.random_spaced_mask(width, acc, rng)
        if kind == "random_lines":
            return masks.random_lines_mask(width, acc, rng)
        fraction = float(self.center_fractions.get(acc, 0.08))
        mask_func = masks.create_mask_for_mask_type(kind, [fraction], [acc])
        drawn, _ = mask_func((1, 8, width, 2), seed=int(rng.integers(2**31)))
        return masks.as_line_mask(drawn)


def mask_augment_from_config(config: Mapping[str, Any] | None, seed: int = 0) -> MaskAugment | None:
    """A :class:`MaskAugment` from a config mapping (``kinds``, ``schedule``, ``exclude_organiser_offset``,
    ``exclude_organiser_from``, ``center_fractions``, ``anatomies``), or None for None / ``{}``."""
    if not config:
        return None
    known = {
        "kinds",
        "schedule",
        "exclude_organiser_offset",
        "exclude_organiser_from",
        "center_fractions",
        "anatomies",
    }
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown mask_augment keys {unknown}; known: {sorted(known)}")
    schedule = AugmentSchedule(**{"strength": 1.0, "kind": "constant", **dict(config.get("schedule") or {})})
    if schedule.kind not in ("constant", "linear", "exp"):
        raise ValueError(f"mask_augment.schedule.kind must be constant | linear | exp, got {schedule.kind!r}")
    fractions = {
        int(k): float(v) for k, v in dict(config.get("center_fractions") or _DEFAULT_CENTER_FRACTIONS).items()
    }
    return MaskAugment(
        kinds={str(k): float(v) for k, v in dict(config.get("kinds") or {"random_offset": 1.0}).items()},
        schedule=schedule,
        exclude_organiser_offset=bool(config.get("exclude_organiser_offset", False)),
        center_fractions=fractions,
        anatomies=None if config.get("anatomies") is None else tuple(str(a) for a in config["anatomies"]),
        exclude_organiser_from=(
            None if config.get("exclude_organiser_from") is None else int(config["exclude_organiser_from"])
        ),
        seed=seed,
    )
