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


@pytest.mark.parametrize(
    ("anatomy", "width", "coils"), [("brain", 396, 4), ("knee", 322, 6), ("knee", 386, 5)]
)
def test_classical_methods_beat_zero_filled_at_real_geometry(
    anatomy: str, width: int, coils: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """acc4 organiser mask at the challenge geometry (768 x 396 brain, 640 x 322 / 386 knee, 4-6 coils, two
    slices): GRAPPA, SENSE and CS each score above zero-filling (leaderboard SSIM, 384 x 384 output)."""
    import time

    from kspacelab.classical import cs_image, grappa_image, sense_image, zero_filled_image

    if anatomy == "brain":
        preset = with_overrides("snu", brain_slices=(2, 2), brain_widths=(width,), brain_coils=(coils,))
    else:
        preset = with_overrides("snu", knee_slices=(2, 2), knee_widths=(width, width), knee_coils=(coils,))
    vol = simulate_volume(anatomy, 4, volume_rng(0, "val", f"{anatomy}_acc4_{width}"), preset)  # type: ignore[arg-type]
    assert vol.kspace.shape[1:] == (coils, 768 if anatomy == "brain" else 640, width)
    max_value = float(vol.image_label.max())
    methods = {"zero-filled": zero_filled_image, "grappa": grappa_image, "sense": sense_image, "cs": cs_image}
    scores, seconds = {}, {}
    for name, fn in methods.items():
        start = time.perf_counter()
        recon = fn(vol.undersampled_kspace, vol.mask, crop=(384, 384))
        seconds[name] = (time.perf_counter() - start) / vol.kspace.shape[0]
        scores[name] = float(
            metrics.leaderboard_ssim_volume(recon, vol.image_label, max_value, anatomy).mean()
        )
    with capsys.disabled():
        print(
            f"\n[{anatomy} {vol.kspace.shape[2]}x{width}, {coils} coils, acc4] "
            + ", ".join(f"{n} {scores[n]:.4f} ({seconds[n]:.2f} s/slice)" for n in methods)
        )
    for name in ("grappa", "sense", "cs"):
        assert scores[name] > scores["zero-filled"], scores


@pytest.mark.parametrize(
    ("team", "anatomy"), [("ej", "brain"), ("smartify", "knee")], ids=["ej-brain", "smartify-knee"]
)
def test_promptmr_team_configurations_forward_at_full_size(team: str, anatomy: str) -> None:
    """One inference pass of each 2025 team configuration at the challenge geometry, with the recipe's crop."""
    from kspacelab.models import PromptMR
    from kspacelab.physics import crop_readout
    from kspacelab.training.recipes import compose

    recipe = compose([f"snu2025_promptmr_{team}"])  # the bundled recipe
    kwargs = recipe["model"]["model_kwargs"]
    adj = int(kwargs["num_adj_slices"])
    height, width, coils = (768, 396, 16) if anatomy == "brain" else (640, 372, 15)
    crop = (recipe["model"].get("crop_height") or {}).get(anatomy)
    torch.manual_seed(0)
    model = PromptMR(**kwargs).eval()
    assert model.input_spec().num_adj_slices == adj
    g = torch.Generator().manual_seed(0)
    kspace = torch.randn(1, adj * coils, height, width, dtype=torch.complex64, generator=g) * 1e-4
    if crop is not None:
        kspace = crop_readout(kspace, int(crop))
    mask = torch.from_numpy(snu_mask(width, 4)).view(1, 1, 1, width)
    with torch.no_grad():
        out = model(kspace * mask, mask, crop_size=(384, 384))
    assert out.shape == (1, 384, 384) and torch.isfinite(out).all()


#: parameters of the single-coil models at their recipes' sizes (fastMRI's U-Net: 32 channels, 4 pools)
SINGLE_COIL_RECIPES = {
    "singlecoil_unet": ("fastmri_singlecoil_unet", 7_756_097),
    "singlecoil_varnet": ("singlecoil_varnet", 29_452_068),
    "stylish": ("singlecoil_stylish", 7_913_794),
}


@pytest.mark.parametrize("name", sorted(SINGLE_COIL_RECIPES))
def test_single_coil_models_forward_at_the_nyu_geometry(name: str) -> None:
    """One forward pass of each single-coil model at its recipe's size on a simulated NYU-size slice (k-space
    640 x 368, target 320 x 320) under fastMRI's x8 mask for the file: finite, of the target's size, and the
    recipe configuration's parameter count (the README's table)."""
    from kspacelab.data.singlecoil import SingleCoilTransform
    from kspacelab.data.synthetic import simulate_single_coil_volume
    from kspacelab.models import build_model
    from kspacelab.training.recipes import compose

    recipe, parameters = SINGLE_COIL_RECIPES[name]
    model = build_model(name, **compose([recipe])["model"]["model_kwargs"]).eval()
    assert sum(p.numel() for p in model.parameters()) == parameters
    volume = simulate_single_coil_volume(
        volume_rng(0, "singlecoil_val", "file1000001"), with_overrides("singlecoil", knee_slices=(1, 1))
    )
    transform = SingleCoilTransform(model.input_spec(), [8], seed_from_fname=True)
    attrs = {"max": float(volume.target.max())}
    sample = transform(volume.kspace[0][None], None, volume.target[0], attrs, "file1000001.h5", 0)
    batch = torch.utils.data.default_collate([sample])
    assert batch.masked_kspace.shape == (1, 1, 640, 368, 2)
    with torch.no_grad():
        image = model.reconstruct(batch)
    assert image.shape == (1, 320, 320) and bool(torch.isfinite(image).all()) and float(image.max()) > 0
