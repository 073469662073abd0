"""Full-size checks at the real challenge geometry (marked slow: `make test-slow`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kspacelab import metrics
from kspacelab.data.synthetic import simulate_volume, volume_rng, with_overrides
from kspacelab.masks import snu_mask
from kspacelab.physics import center_crop, ifft2c, rss_complex

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("anatomy", ["brain", "knee"])
def test_snu_geometry_volume(anatomy: str) -> None:
    """A real-geometry volume: shapes, organiser mask, label = RSS of k-space, scale, GRAPPA beats zero-filled."""
    preset = with_overrides("snu", brain_slices=(2, 2), knee_slices=(2, 2), brain_coils=(16,))
    vol = simulate_volume(anatomy, 4, volume_rng(0, "train", f"{anatomy}_acc4_1"), preset)  # type: ignore[arg-type]
    _, _, h, w = vol.kspace.shape
    assert h == (768 if anatomy == "brain" else 640)
    assert (w in (392, 396)) if anatomy == "brain" else (320 <= w <= 480)
    assert np.array_equal(vol.mask, snu_mask(w, 4))
    label = center_crop(rss_complex(ifft2c(torch.from_numpy(vol.kspace)), dim=1), (384, 384)).numpy()
    np.testing.assert_allclose(vol.image_label, label, rtol=1e-5, atol=1e-6 * label.max())
    lo, hi = preset.max_range(anatomy)  # type: ignore[arg-type]
    assert lo <= vol.image_label.max() <= hi
    max_value = float(vol.image_label.max())
    zf = metrics.leaderboard_ssim_volume(vol.image_input, vol.image_label, max_value, anatomy).mean()
    grappa = metrics.leaderboard_ssim_volume(vol.image_grappa, vol.image_label, max_value, anatomy).mean()
    assert grappa > zf
