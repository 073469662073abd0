"""Single-coil U-Net against fastMRI's single-coil U-Net pipeline (the oracle) and the single-coil E2E-VarNet."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from helpers import SC_CROP, SC_SHAPE, single_coil_batch
from kspacelab import physics
from kspacelab.models import VarNet
from kspacelab.models.base import ReconSample
from kspacelab.models.singlecoil import SingleCoilUnet, SingleCoilVarNet, intensity_stats

fastmri_models = pytest.importorskip("fastmri.models")
fastmri_transforms = pytest.importorskip("fastmri.data.transforms")

H, W = SC_SHAPE
CROP = SC_CROP


def _fastmri_pipeline(unet: nn.Module, sample: ReconSample) -> torch.Tensor:
    """fastMRI's UnetDataTransform (single-coil, no mask function: the k-space is already masked) per slice,
    its Unet, and UnetModule's un-normalisation ``output * std + mean``."""
    transform = fastmri_transforms.UnetDataTransform("singlecoil")
    outputs = []
    for i in range(sample.masked_kspace.shape[0]):
        kspace = torch.view_as_complex(sample.masked_kspace[i, 0].contiguous()).numpy()
        target = sample.target[i].numpy()
        item = transform(kspace, None, target, {}, sample.fname[i], i)
        output = unet(item.image[None, None]).squeeze(1)[0]
        outputs.append(output * item.std + item.mean)
    return torch.stack(outputs)


def test_state_dict_keys_are_fastmri_unet_module_keys() -> None:
    ours = SingleCoilUnet().state_dict()
    reference = fastmri_models.Unet(1, 1, 32, 4).state_dict()
    assert set(ours) == {"unet." + k for k in reference}
    assert {k: v.shape for k, v in ours.items()} == {"unet." + k: v.shape for k, v in reference.items()}


@pytest.mark.parametrize("chans,pools", [(8, 2), (4, 3)])
def test_unet_equals_fastmri_pipeline(chans: int, pools: int) -> None:
    torch.manual_seed(0)
    ours = SingleCoilUnet(chans=chans, num_pool_layers=pools).eval()
    reference = fastmri_models.Unet(1, 1, chans, pools).eval()
    state = {k.removeprefix("unet."): v for k, v in ours.state_dict().items()}
    reference.load_state_dict(state, strict=True)
    sample = single_coil_batch()
    with torch.no_grad():
        got = ours.reconstruct(sample)
        expected = _fastmri_pipeline(reference, sample)
    assert got.shape == (2, *CROP)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_unet_input_is_clamped_like_fastmri() -> None:
    """A single bright pixel lies far beyond 6 standard deviations: fastMRI clamps it, so must we."""
    ours = SingleCoilUnet(chans=4, num_pool_layers=2).eval()
    reference = fastmri_models.Unet(1, 1, 4, 2).eval()
    reference.load_state_dict({k.removeprefix("unet."): v for k, v in ours.state_dict().items()})
    sample = single_coil_batch(batch=1)
    image = physics.ifft2c(torch.view_as_complex(sample.masked_kspace[0, 0].contiguous()))
    image[H // 2, W // 2] += 100 * image.abs().max()
    kspace = physics.to_real_view(physics.fft2c(image))[None, None]
    sample = sample._replace(masked_kspace=kspace)
    with torch.no_grad():
        torch.testing.assert_close(
            ours.reconstruct(sample), _fastmri_pipeline(reference, sample), rtol=1e-4, atol=1e-6
        )


def test_volume_max_divides_by_the_file_max_and_falls_back_to_the_slice_max() -> None:
    torch.manual_seed(0)
    model = SingleCoilUnet(chans=4, num_pool_layers=2, normalization="volume_max").eval()
    sample = single_coil_batch(max_value=3e-4)
    zero_filled = physics.center_crop(
        physics.ifft2c(physics.to_complex(sample.masked_kspace))[:, 0].abs(), CROP
    )
    with torch.no_grad():
        expected = model.unet((zero_filled / 3e-4).unsqueeze(1)).squeeze(1) * 3e-4
        torch.testing.assert_close(model.reconstruct(sample), expected)
    stats = intensity_stats(zero_filled, "volume_max", torch.tensor([3e-4, 0.0]))
    torch.testing.assert_close(stats.scale.flatten(), torch.stack([torch.tensor(3e-4), zero_filled[1].max()]))
    assert torch.all(stats.shift == 0)


def test_unknown_normalization_is_refused() -> None:
    with pytest.raises(ValueError, match="normalization must be one of"):
        SingleCoilUnet(normalization="max")
    with pytest.raises(ValueError, match="normalization must be one of"):
        SingleCoilVarNet(normalization="minmax")


def test_multicoil_kspace_is_refused() -> None:
    model = SingleCoilVarNet(num_cascades=1, chans=4, pools=2)
    with pytest.raises(ValueError, match=r"need k-space \(B, 1, H, W, 2\)"):
        model(torch.zeros(1, 2, H, W, 2), torch.ones(1, 1, 1, W, 1, dtype=torch.bool))


def test_input_specs_are_single_coil() -> None:
    assert not SingleCoilUnet(chans=4, num_pool_layers=2).input_spec().multicoil
    assert not SingleCoilVarNet(num_cascades=1, chans=4, pools=2).input_spec().multicoil


def test_one_coil_sensitivity_of_ones_makes_the_coil_operators_plain_ffts() -> None:
    g = torch.Generator().manual_seed(1)
    image = torch.randn(2, 1, H, W, dtype=torch.complex64, generator=g)
    kspace = torch.randn(2, 1, H, W, dtype=torch.complex64, generator=g)
    ones = torch.ones_like(image)
    torch.testing.assert_close(physics.sens_expand(image, ones), physics.fft2c(image))
    torch.testing.assert_close(physics.sens_reduce(kspace, ones), physics.ifft2c(kspace))


class _Zero(nn.Module):
    """A regulariser that returns zeros (isolates the data-consistency term)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def test_cascade_is_the_soft_dc_formula_and_restores_sampled_lines() -> None:
    torch.manual_seed(0)
    model = SingleCoilVarNet(num_cascades=1, chans=4, pools=2)
    cascade = model.cascades[0]
    g = torch.Generator().manual_seed(2)
    k0 = torch.randn(1, 1, H, W, dtype=torch.complex64, generator=g)
    k = torch.randn(1, 1, H, W, dtype=torch.complex64, generator=g)
    mask = (torch.rand(1, 1, 1, W, generator=g) < 0.3).expand(1, 1, 1, W)
    k0 = k0 * mask
    ones = torch.ones_like(k)
    with torch.no_grad():
        cascade.dc_weight.fill_(0.7)
        got = cascade(k, k0, mask, ones)
        reg = physics.fft2c(cascade.model(physics.ifft2c(k)))
        expected = k - torch.where(mask, k - k0, torch.zeros_like(k)) * 0.7 - reg
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        cascade.model = _Zero()
        cascade.dc_weight.fill_(1.0)
        out = cascade(k, k0, mask, ones)
    m = mask.expand_as(k)
    torch.testing.assert_close(out[m], k0[m])  # sampled lines = measured
    torch.testing.assert_close(out[~m], k[~m])  # the rest untouched


def test_varnet_equals_multicoil_varnet_with_sensitivities_of_ones() -> None:
    torch.manual_seed(0)
    multi = VarNet(num_cascades=2, chans=4, pools=2, sens_chans=2, sens_pools=2).eval()
    single = SingleCoilVarNet(num_cascades=2, chans=4, pools=2, normalization="volume_max").eval()
    cascade_state = {k: v for k, v in multi.state_dict().items() if k.startswith("cascades.")}
    single.load_state_dict(cascade_state, strict=True)
    multi.sens_net.forward = lambda k, mask, num_low=None: torch.ones_like(k)  # type: ignore[method-assign]
    sample = single_coil_batch(max_value=1.0)  # scale 1: the multi-coil VarNet does not normalise
    with torch.no_grad():
        expected = multi(sample.masked_kspace, sample.mask, crop_size=CROP)
        got = single.reconstruct(sample)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.max()))


def test_varnet_normalisations_agree_and_shapes() -> None:
    """The network is scale-equivariant, so dividing by the std or the volume max gives the same image."""
    torch.manual_seed(0)
    meanstd = SingleCoilVarNet(num_cascades=2, chans=4, pools=2).eval()
    volume = SingleCoilVarNet(num_cascades=2, chans=4, pools=2, normalization="volume_max").eval()
    volume.load_state_dict(meanstd.state_dict())
    sample = single_coil_batch(max_value=2e-4)
    with torch.no_grad():
        a = meanstd.reconstruct(sample)
        b = volume.reconstruct(sample)
        full = meanstd(sample.masked_kspace, sample.mask)
    assert a.shape == (2, *CROP) and full.shape == (2, H, W)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(a.max()))
    torch.testing.assert_close(a, physics.center_crop(full, CROP), rtol=1e-5, atol=1e-5 * float(a.max()))
    assert not torch.allclose(
        a, physics.center_crop(physics.ifft2c(physics.to_complex(sample.masked_kspace)).abs()[:, 0], CROP)
    )


def test_varnet_trains_one_step() -> None:
    torch.manual_seed(0)
    model = SingleCoilVarNet(num_cascades=1, chans=4, pools=2)
    sample = single_coil_batch()
    loss = (model.reconstruct(sample) - sample.target).abs().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads if g is not None)


def test_fastmri_masks_used_in_tests_are_line_masks() -> None:
    sample = single_coil_batch(acceleration=8)
    lines = sample.mask[0, 0, 0, :, 0]
    assert 1 < int(lines.sum()) < W
    assert np.isclose(float(sample.masked_kspace[0][..., ~lines, :].abs().sum()), 0.0)
