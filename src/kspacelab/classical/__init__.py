"""Classical (non-learned) reconstructions: zero-filled, GRAPPA, SENSE and L1-wavelet CS with ESPIRiT maps.

:data:`METHODS` names them for ``kspacelab reconstruct --method`` and for the classical second images of two-stage
models: ``f(masked_kspace, mask, (h, w)) -> float32 (h, w)`` (or ``(S, h, w)`` for a volume).
"""

from collections.abc import Callable

import numpy as np

from kspacelab.classical.cs import cs_image
from kspacelab.classical.espirit import EspiritConfig, espirit_maps
from kspacelab.classical.grappa import detect_acs, grappa_image, grappa_kspace, plan_patterns
from kspacelab.classical.sense import sense_image
from kspacelab.classical.zero_filled import zero_filled_image

ClassicalMethod = Callable[[np.ndarray, np.ndarray, tuple[int, int]], np.ndarray]


def _zero_filled(kspace: np.ndarray, mask: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    return np.asarray(zero_filled_image(kspace, mask, crop=crop), dtype=np.float32)


def _grappa(kspace: np.ndarray, mask: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    return np.asarray(grappa_image(kspace, mask, crop=crop), dtype=np.float32)


def _sense(kspace: np.ndarray, mask: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    return np.asarray(sense_image(kspace, mask, crop=crop), dtype=np.float32)


def _cs(kspace: np.ndarray, mask: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    return np.asarray(cs_image(kspace, mask, crop=crop), dtype=np.float32)


#: Method name -> reconstruction of masked k-space ``(C, H, W)`` with its mask ``(W,)`` at output size ``(h, w)``.
METHODS: dict[str, ClassicalMethod] = {
    "zero-filled": _zero_filled,
    "grappa": _grappa,
    "sense": _sense,
    "cs": _cs,
}
#: Version of the methods' outputs, part of the classical cache key (:mod:`kspacelab.data.classical_cache`): raise
#: it whenever a change makes any method return different images (2: noise-following regularisation).
ALGORITHM_VERSION = 2
#: Methods that calibrate on the fully sampled centre block.
METHODS_NEEDING_ACS = frozenset({"grappa", "sense", "cs"})

__all__ = [
    "ALGORITHM_VERSION",
    "METHODS",
    "METHODS_NEEDING_ACS",
    "ClassicalMethod",
    "EspiritConfig",
    "cs_image",
    "detect_acs",
    "espirit_maps",
    "grappa_image",
    "grappa_kspace",
    "plan_patterns",
    "sense_image",
    "zero_filled_image",
]
