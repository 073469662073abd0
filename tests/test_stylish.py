"""StylishNet: AdaIN, noise injection, the texture code switches, hard data consistency, the losses, GAN steps."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import SC_CROP, SC_SHAPE, single_coil_batch
from kspacelab import physics
from kspacelab.models.singlecoil import SingleCoilInput
from kspacelab.models.stylish import (
    AdaIN,
    NoiseInjection,
    PatchDiscriminator,
    StylishNet,
    TextureEncoder,
    discriminator_loss,
    generator_gan_loss,
    generator_losses,
    high_pass,
    kl_divergence,
    radial_frequency,
    texture_l1,
)

TINY = {"chans": 4, "num_pool_layers": 2, "style_dim": 8, "encoder_chans": 4}


def _model(**kwargs: object) -> StylishNet:
    torch.manual_seed(0)
    return StylishNet(**{**TINY, **kwargs})  # type: ignore[arg-type]


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------- AdaIN and noise


def test_adain_output_statistics_are_the_style_scale_and_shift() -> None:
    torch.manual_seed(0)
    adain = AdaIN(channels=6, style_dim=5)
    x = torch.randn(3, 6, 16, 12) * 4 + 7
    style = torch.randn(3, 5)
    out = adain(x, style)
    scale, shift = adain.modulation(style, x.shape[-2:])
    assert scale.shape == shift.shape == (3, 6, 1, 1)
    torch.testing.assert_close(out.mean(dim=(2, 3)), shift[:, :, 0, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        out.std(dim=(2, 3), unbiased=False), scale[:, :, 0, 0].abs(), atol=1e-3, rtol=1e-3
    )


def test_adain_per_pixel_modulation() -> None:
    torch.manual_seed(0)
    spatial = AdaIN(channels=4, style_dim=3, spatial=True)
    x = torch.randn(2, 4, 8, 8) * 2 + 1
    code_map = torch.randn(2, 3, 2, 2)
    scale, shift = spatial.modulation(code_map, (8, 8))
    assert scale.shape == (2, 4, 8, 8) and not torch.allclose(scale[..., 0, 0], scale[..., -1, -1])
    normalised = (x - x.mean(dim=(2, 3), keepdim=True)) / torch.sqrt(
        x.var(dim=(2, 3), unbiased=False, keepdim=True) + 1e-5
    )
    torch.testing.assert_close(spatial(x, code_map), normalised * scale + shift, atol=1e-5, rtol=1e-5)
    # a spatially constant code map is the global AdaIN with the same affine map
    vector = AdaIN(channels=4, style_dim=3)
    with torch.no_grad():
        vector.affine.weight.copy_(spatial.affine.weight[:, :, 0, 0])  # type: ignore[index]
        vector.affine.bias.copy_(spatial.affine.bias)  # type: ignore[arg-type]
    style = torch.randn(2, 3)
    torch.testing.assert_close(spatial(x, style[:, :, None, None].expand(2, 3, 5, 5)), vector(x, style))


def test_adain_refuses_the_wrong_kind_of_style() -> None:
    with pytest.raises(ValueError, match="code map"):
        AdaIN(4, 3, spatial=True)(torch.zeros(1, 4, 4, 4), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="code vector"):
        AdaIN(4, 3)(torch.zeros(1, 4, 4, 4), torch.zeros(1, 3, 2, 2))


def test_noise_injection_starts_at_zero_and_is_off_in_eval() -> None:
    noise = NoiseInjection(3)
    x = torch.randn(2, 3, 5, 5)
    assert torch.equal(noise.weight, torch.zeros(1, 3, 1, 1))
    torch.testing.assert_close(noise(x), x)  # weight 0
    with torch.no_grad():
        noise.weight.fill_(1.0)
    added = noise(x) - x
    assert added.abs().sum() > 0
    torch.testing.assert_close(added[:, 0], added[:, 2])  # one value per pixel, shared by the channels
    noise.eval()
    torch.testing.assert_close(noise(x), x)


# ---------------------------------------------------------------------- generator and switches


def test_generate_shapes_global_and_spatial() -> None:
    sample = single_coil_batch()
    for spatial in (False, True):
        model = _model(spatial_modulation=spatial).eval()
        for source in ("target", "proxy", None):
            out = model.generate(sample, texture_source=source)
            assert out.image.shape == (2, *SC_CROP)
            assert out.normalised.shape == out.target_normalised.shape == (2, 1, *SC_CROP)
            assert out.kspace.shape == (2, 1, *SC_SHAPE, 2)
            code = (2, 8, *model.encoder.code_size(*SC_SHAPE)) if spatial else (2, 8)
            assert out.mu.shape == out.logvar.shape == code
    assert model.encoder.code_size(*SC_SHAPE) == (6, 5)  # the code map lies on the full k-space grid


def test_hard_data_consistency_is_exact_at_sampled_lines() -> None:
    sample = single_coil_batch(acceleration=8)
    for normalization in ("meanstd", "volume_max"):
        model = _model(normalization=normalization).eval()
        with torch.no_grad():
            out = model.generate(sample)
        lines = sample.mask[:, 0, 0, :, 0]  # (B, W)
        got = physics.to_complex(out.kspace)[:, 0]  # (B, H, W)
        measured = physics.to_complex(sample.masked_kspace)[:, 0]
        for b in range(2):
            torch.testing.assert_close(got[b][:, lines[b]], measured[b][:, lines[b]], rtol=1e-5, atol=1e-10)
            # the generator filled the unsampled lines
            assert got[b][:, ~lines[b]].abs().max() > 1e-3 * measured[b].abs().max()
        # the image is the magnitude of that k-space, cropped
        image = physics.center_crop(physics.complex_abs(physics.ifft2c(out.kspace))[:, 0], SC_CROP)
        torch.testing.assert_close(out.image, image, rtol=1e-5, atol=1e-6 * float(image.max()))
        torch.testing.assert_close(out.image, model.reconstruct(sample))


def test_normalised_units_match_the_other_single_coil_models() -> None:
    sample = single_coil_batch(max_value=3e-4)
    model = _model(normalization="volume_max").eval()
    out = model.generate(sample, texture_source="target")
    torch.testing.assert_close(out.target_normalised[:, 0], sample.target / 3e-4)
    torch.testing.assert_close(out.normalised[:, 0], out.image / 3e-4)
    model = _model().eval()
    out = model.generate(sample, texture_source="target")
    zero_filled = physics.center_crop(
        physics.ifft2c(physics.to_complex(sample.masked_kspace))[:, 0].abs(), SC_CROP
    )
    std, mean = torch.std_mean(zero_filled.flatten(1), dim=1)
    torch.testing.assert_close(
        out.target_normalised[:, 0], (sample.target - mean[:, None, None]) / std[:, None, None]
    )


def test_reconstruct_is_deterministic_in_eval_and_noisy_in_training() -> None:
    model = _model()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, NoiseInjection):
                module.weight.fill_(0.5)
    sample = single_coil_batch(batch=1)
    model.eval()
    torch.testing.assert_close(model.reconstruct(sample), model.reconstruct(sample), rtol=0, atol=0)
    model.train()
    assert not torch.allclose(model.reconstruct(sample), model.reconstruct(sample))


def test_noise_switch_removes_the_noise_parameters() -> None:
    with_noise = {n for n, _ in _model().named_parameters() if "noise" in n}
    assert len(with_noise) == 2 * 2  # two styled convolutions per decoder block, two blocks
    assert not [n for n, _ in _model(noise=False).named_parameters() if "noise" in n]
    decoder_chans = 2 * (TINY["chans"] + 2 * TINY["chans"])
    assert _count(_model()) - _count(_model(noise=False)) == decoder_chans


def test_spatial_switch_makes_the_modulation_per_pixel() -> None:
    assert isinstance(_model().up[0].conv1.adain.affine, torch.nn.Linear)
    spatial = _model(spatial_modulation=True)
    assert isinstance(spatial.up[0].conv1.adain.affine, torch.nn.Conv2d)
    assert spatial.encoder.spatial
    # per-pixel codes: changing the code in one corner changes the output there more than far away
    sample = single_coil_batch(batch=1)
    spatial.eval()
    batch_out = spatial.generate(sample, texture_source="target")
    code = batch_out.mu.detach().clone()
    generator_input = physics.ifft2c(physics.to_complex(sample.masked_kspace))
    with torch.no_grad():
        base = spatial.generator(generator_input, code)
        code[..., 0, 0] += 5.0
        moved = spatial.generator(generator_input, code)
    diff = (moved - base).abs()[0, 0]
    h, w = diff.shape
    assert diff[: h // 4, : w // 4].mean() > 3 * diff[-h // 4 :, -w // 4 :].mean()


def test_texture_sources_and_proxy_guidance() -> None:
    sample = single_coil_batch()
    plain = _model().eval()
    prior = plain.generate(sample)
    assert torch.equal(prior.mu, torch.zeros(2, 8)) and torch.equal(prior.logvar, torch.zeros(2, 8))
    assert not torch.equal(plain.generate(sample, texture_source="target").mu, prior.mu)
    guided = _model(proxy_guidance=True).eval()
    default = guided.generate(sample)
    proxy = guided.generate(sample, texture_source="proxy")
    torch.testing.assert_close(default.mu, proxy.mu)
    assert default.mu.abs().sum() > 0
    # the proxy is the high-pass filtered zero-filled image: measured content inside the cutoff does not change it
    guided = _model(proxy_guidance=True, proxy_cutoff=0.2, normalization="volume_max").eval()
    sample = single_coil_batch(max_value=2e-4)  # a fixed scale: the normalisation does not change either
    low = (radial_frequency(*SC_SHAPE) < 0.2)[None, None, :, :, None] & sample.mask
    added = sample._replace(masked_kspace=sample.masked_kspace + 3.0 * sample.masked_kspace * low)
    assert not torch.allclose(added.masked_kspace, sample.masked_kspace)
    torch.testing.assert_close(guided.generate(added).mu, guided.generate(sample).mu, rtol=1e-4, atol=1e-6)
    high = (radial_frequency(*SC_SHAPE) > 0.3)[None, None, :, :, None] & sample.mask
    changed = sample._replace(masked_kspace=sample.masked_kspace + 3.0 * sample.masked_kspace * high)
    assert not torch.allclose(guided.generate(changed).mu, guided.generate(sample).mu, rtol=1e-3, atol=1e-5)
    with pytest.raises(ValueError, match="texture_source"):
        guided.generate(sample, texture_source="zero-filled")
    with pytest.raises(ValueError, match="proxy_cutoff"):
        StylishNet(proxy_cutoff=1.5)


def test_high_pass_removes_exactly_the_low_frequencies() -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.randn(2, 1, 32, 24, generator=g)
    filtered = high_pass(image, 0.25)
    k_in, k_out = physics.fft2c(image.to(torch.complex64)), physics.fft2c(filtered)
    low = radial_frequency(32, 24) < 0.25
    assert low.sum() > 1 and (~low).sum() > 1
    assert k_out[..., low].abs().max() < 1e-6
    torch.testing.assert_close(k_out[..., ~low], k_in[..., ~low], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(high_pass(image, 0.0).real, image, atol=1e-5, rtol=1e-5)


def test_texture_encoder_shapes() -> None:
    encoder = TextureEncoder(chans=4, style_dim=6)
    mu, logvar = encoder(torch.randn(3, 1, 32, 24))
    assert mu.shape == logvar.shape == (3, 6)
    spatial = TextureEncoder(chans=4, style_dim=6, spatial=True)
    mu, _ = spatial(torch.randn(3, 1, 33, 24))
    assert mu.shape == (3, 6, *spatial.code_size(33, 24)) == (3, 6, 5, 3)


def test_patch_discriminator_shapes() -> None:
    disc = PatchDiscriminator(chans=4, num_layers=3)
    assert disc(torch.randn(2, 1, 32, 32)).shape == (2, 1, 2, 2)
    assert PatchDiscriminator(chans=4, num_layers=2)(torch.randn(1, 1, 32, 40)).shape == (1, 1, 6, 8)


# ---------------------------------------------------------------------- losses


def test_kl_divergence_closed_form() -> None:
    assert float(kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4))) == 0.0
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    posterior = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    prior = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(posterior, prior).mean()
    torch.testing.assert_close(kl_divergence(mu, logvar), expected)
    assert float(kl_divergence(mu, logvar)) > 0


def test_gan_losses_are_the_softplus_values() -> None:
    fake = torch.tensor([0.0, 2.0, -1.0])
    real = torch.tensor([3.0, -0.5])
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
    expected_g = (softplus(-0.0) + softplus(-2.0) + softplus(1.0)) / 3
    assert math.isclose(float(generator_gan_loss(fake)), expected_g, rel_tol=1e-6)
    expected_d = (softplus(-3.0) + softplus(0.5)) / 2 + (softplus(0.0) + softplus(2.0) + softplus(-1.0)) / 3
    assert math.isclose(float(discriminator_loss(real, fake)), expected_d, rel_tol=1e-6)


def test_texture_l1_is_zero_for_equal_images_and_sees_texture_not_offsets() -> None:
    model = _model()
    g = torch.Generator().manual_seed(0)
    image = torch.randn(2, 1, 32, 32, generator=g)
    assert float(texture_l1(model, image, image)) == 0.0
    assert float(texture_l1(model, image + 3.0, image)) < 1e-5  # the filters do not see a constant
    smooth = F.avg_pool2d(image, 5, stride=1, padding=2)
    assert float(texture_l1(model, smooth, image)) > 0.1
    assert model.texture_filters.shape == (5, 1, 3, 3) and "texture_filters" not in model.state_dict()


# ---------------------------------------------------------------------- GAN steps


def test_generator_and_discriminator_steps_touch_only_their_own_parameters() -> None:
    model = _model()
    disc = PatchDiscriminator(chans=4, num_layers=2)
    sample = single_coil_batch()
    opt_g = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3)

    def g_loss() -> torch.Tensor:
        torch.manual_seed(1)  # same reparameterisation sample before and after the step
        out = model.generate(sample, texture_source="target")
        return generator_losses(model, out, disc(out.normalised))["total"]

    def d_loss() -> torch.Tensor:
        with torch.no_grad():
            torch.manual_seed(1)
            out = model.generate(sample, texture_source="target")
        return discriminator_loss(disc(out.target_normalised), disc(out.normalised))

    _step_changes_only_its_own_parameters(opt_g, g_loss, own=model, other=disc)
    _step_changes_only_its_own_parameters(opt_d, d_loss, own=disc, other=model)


def _step_changes_only_its_own_parameters(
    optimiser: torch.optim.Optimizer, loss_fn: Callable[[], torch.Tensor], own: nn.Module, other: nn.Module
) -> None:
    """One optimiser step on ``loss_fn()``: ``own`` changes, ``other`` does not, the loss decreases."""
    own_before = [p.detach().clone() for p in own.parameters()]
    other_before = [p.detach().clone() for p in other.parameters()]
    loss = loss_fn()
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    assert all(torch.equal(p, q) for p, q in zip(other.parameters(), other_before, strict=True))
    assert any(not torch.equal(p, q) for p, q in zip(own.parameters(), own_before, strict=True))
    with torch.no_grad():
        assert float(loss_fn()) < float(loss)


def test_parameter_counts_of_the_default_model(capsys: pytest.CaptureFixture[str]) -> None:
    """Counts computed from the modules (reported, not claimed): generator, texture encoder, discriminator."""
    model = StylishNet()
    encoder = _count(model.encoder)
    generator = _count(model) - encoder
    adain = sum(_count(m) for m in model.modules() if isinstance(m, AdaIN))
    disc = _count(PatchDiscriminator())
    with capsys.disabled():
        print(
            f"\nStylishNet(): generator {generator:,} (AdaIN {adain:,}), texture encoder {encoder:,}, "
            f"PatchDiscriminator(): {disc:,} parameters"
        )
    # AdaIN maps: (style_dim + 1) * 2C per styled convolution, two per decoder block of C = 32 * 2**i channels
    assert adain == sum(2 * (64 + 1) * 2 * 32 * 2**i for i in range(4))
    assert _count(StylishNet(spatial_modulation=True)) == _count(model)  # 1x1 conv and linear: same counts


def test_generator_is_a_residual_on_its_input() -> None:
    """With the output convolution zeroed the generator returns its input image."""
    model = _model().eval()
    with torch.no_grad():
        model.out_conv.weight.zero_()
        model.out_conv.bias.zero_()  # type: ignore[union-attr]
    image = torch.randn(2, 1, *SC_SHAPE, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.generator(image, torch.randn(2, 8)), image)


def test_bf16_autocast_keeps_the_data_consistency_in_float32() -> None:
    model = _model().eval()
    sample = single_coil_batch(batch=1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.generate(sample)
    assert out.image.dtype == torch.float32 and out.kspace.dtype == torch.float32
    lines = sample.mask[0, 0, 0, :, 0]
    got, measured = physics.to_complex(out.kspace)[0, 0], physics.to_complex(sample.masked_kspace)[0, 0]
    torch.testing.assert_close(got[:, lines], measured[:, lines], rtol=1e-5, atol=1e-10)


def test_texture_input_is_the_output_region_zero_padded_onto_the_full_grid() -> None:
    sample = single_coil_batch()
    batch = SingleCoilInput.of(sample.masked_kspace, sample.mask, SC_CROP, "meanstd")
    scale = batch.stats.channel().scale
    guided, plain = _model(proxy_guidance=True), _model()
    for model, source in ((guided, "target"), (guided, "proxy"), (plain, "target")):
        image = model.texture_input(batch, sample.target, source)
        assert image.shape == (2, 1, *SC_SHAPE)
        inner = physics.center_crop(image, SC_CROP)
        assert float(inner.abs().sum()) > 0
        assert float(image.abs().sum()) == pytest.approx(float(inner.abs().sum()))  # zero outside the region
    filtered_target = high_pass(sample.target.unsqueeze(1), 0.1).abs() / scale
    torch.testing.assert_close(
        physics.center_crop(guided.texture_input(batch, sample.target, "target"), SC_CROP), filtered_target
    )
    normalised_target = batch.stats.channel().normalise(sample.target.unsqueeze(1))
    torch.testing.assert_close(
        physics.center_crop(plain.texture_input(batch, sample.target, "target"), SC_CROP), normalised_target
    )


def test_generator_losses_are_the_weighted_sum_of_the_terms() -> None:
    model = _model()
    out = model.generate(single_coil_batch(), texture_source="target")
    fake_logits = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    terms = generator_losses(model, out, fake_logits)
    torch.testing.assert_close(terms["l1"], (out.normalised - out.target_normalised).abs().mean())
    torch.testing.assert_close(terms["kl"], kl_divergence(out.mu, out.logvar))
    torch.testing.assert_close(terms["gan"], generator_gan_loss(fake_logits))
    expected = terms["l1"] + 0.01 * terms["kl"] + terms["texture"] + 0.01 * terms["gan"]
    torch.testing.assert_close(terms["total"], expected)
    assert all(float(value.detach()) > 0 for value in terms.values())
