"""Classical (non-learned) reconstructions: zero-filled, GRAPPA, SENSE and L1-wavelet CS with ESPIRiT maps."""

from kspacelab.classical.cs import cs_image
from kspacelab.classical.espirit import EspiritConfig, espirit_maps
from kspacelab.classical.grappa import detect_acs, grappa_image, grappa_kspace, plan_patterns
from kspacelab.classical.sense import sense_image
from kspacelab.classical.zero_filled import zero_filled_image

__all__ = [
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
