"""Classical (non-learned) reconstructions: zero-filled and GRAPPA."""

from kspacelab.classical.grappa import detect_acs, grappa_image, grappa_kspace, plan_patterns
from kspacelab.classical.zero_filled import zero_filled_image

__all__ = ["detect_acs", "grappa_image", "grappa_kspace", "plan_patterns", "zero_filled_image"]
