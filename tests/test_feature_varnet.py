"""Feature-domain VarNet, its LSKA variant and fastMRI's FIVarNet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from kspacelab import physics
from kspacelab.models import LSKA, FeatureVarNet, FIVarNet, build_model, model_entry
from kspacelab.models.feature_varnet import (
    AttentionPE,
    FeatureBlock,
    FeatureDecoder,
    FeatureEncoder,
    Unet2d,
    UnetLevel,
    _Context,
)
from kspacelab.models.lska import LSKA_DECOMPOSITIONS
from kspacelab.training.recipes import compose, find_config

FIXTURE = Path(__file__).parent / "fixtures" / "fivarnet_tiny.pt"
TINY: dict[str, Any] = dict(model_entry("feature_varnet").tiny)  # [1, 1, 1] cascades, 4 channels


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _inputs(batch: int = 1, coils: int = 3, height: int = 40, width: int = 30, seed: int = 0) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    lines = torch.zeros(width, dtype=torch.bool)
    lines[::3] = True
    lines[width // 2 - 3 : width // 2 + 3] = True
    mask = lines.view(1, 1, 1, width, 1).expand(batch, 1, 1, width, 1)
    kspace = torch.randn(batch, coils, height, width, 2, generator=gen) * 1e-4 * mask
    return kspace, mask


# ---------------------------------------------------------------------------------------------- LSKA


@pytest.mark.parametrize("kernel", sorted(LSKA_DECOMPOSITIONS))
def test_lska_impulse_response_covers_exactly_the_nominal_kernel(kernel: int) -> None:
    torch.manual_seed(kernel)
    lska = LSKA(2, kernel)
    with torch.no_grad():
        for module in lska.modules():
            if isinstance(module, nn.Conv2d):
                module.bias.zero_()  # type: ignore[union-attr]
                module.weight.copy_(torch.rand_like(module.weight) + 0.1)  # no accidental zero taps
        size = kernel + 20
        impulse = torch.zeros(1, 2, size, size)
        impulse[0, :, size // 2, size // 2] = 1.0
        support = lska.attention(impulse).abs().sum(dim=1)[0] > 0
    rows, cols = support.any(dim=1).nonzero(), support.any(dim=0).nonzero()
    assert int(rows.max() - rows.min()) + 1 == kernel and int(cols.max() - cols.min()) + 1 == kernel
    assert int(support.sum()) == kernel * kernel  # the whole k x k square, nothing outside it


@pytest.mark.parametrize("kernel", sorted(LSKA_DECOMPOSITIONS))
def test_lska_parameter_count(kernel: int) -> None:
    local, dilated, _ = LSKA_DECOMPOSITIONS[kernel]
    chans = 24
    expected = 2 * (chans * local + chans) + 2 * (chans * dilated + chans) + chans * chans + chans
    assert _count(LSKA(chans, kernel)) == expected


def test_lska_output_is_input_times_attention_and_clamp_bounds_it() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16) * 50
    lska = LSKA(3, 11)
    torch.testing.assert_close(lska(x), x * lska.attention(x))
    clamped = LSKA(3, 11, clamp=0.5)
    clamped.load_state_dict(lska.state_dict())
    assert clamped.attention(x).abs().max() <= 0.5
    with pytest.raises(ValueError, match="kernel_size"):
        LSKA(3, 9)


# ------------------------------------------------------------------------------- building blocks


def _identity_conv(conv: nn.Module) -> None:
    assert isinstance(conv, nn.Conv2d)
    with torch.no_grad():
        conv.weight.zero_()
        centre = conv.kernel_size[0] // 2
        for c in range(conv.out_channels):
            conv.weight[c, c, centre, centre] = 1.0
        if conv.bias is not None:
            conv.bias.zero_()


def test_encoder_decoder_round_trip_undoes_the_normalisation() -> None:
    torch.manual_seed(1)
    encoder, decoder = FeatureEncoder(2, feature_chans=2), FeatureDecoder(feature_chans=2, out_chans=2)
    _identity_conv(encoder.encoder[0])
    _identity_conv(decoder.decoder)
    image = torch.randn(3, 2, 12, 10) * 7 + 3
    var, mean = torch.var_mean(image, dim=(-2, -1), keepdim=True, correction=0)
    features = encoder(image, mean, var)
    torch.testing.assert_close(features.mean(dim=(-2, -1)), torch.zeros(3, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(features.var(dim=(-2, -1), correction=0), torch.ones(3, 2), atol=1e-4, rtol=0)
    torch.testing.assert_close(decoder(features, mean, var), image, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dc_weight", [1.0, 0.5])
def test_feature_data_consistency_pulls_sampled_lines_to_the_measurement(dc_weight: float) -> None:
    """Identity encoder/decoder, one coil with unit sensitivity: ``Dec(f - dc_term(f))`` has k-space
    ``k - dc_weight * mask (k - k0)``, so the sampled lines equal the measurement for dc_weight 1."""
    torch.manual_seed(2)
    encoder, decoder = FeatureEncoder(2, feature_chans=2), FeatureDecoder(feature_chans=2, out_chans=2)
    _identity_conv(encoder.encoder[0])
    _identity_conv(decoder.decoder)
    block = FeatureBlock(encoder, decoder, nn.Identity())
    with torch.no_grad():
        block.dc_weight.fill_(dc_weight)
    h, w = 16, 12
    mask = torch.zeros(1, 1, 1, w, dtype=torch.bool)
    mask[..., ::2] = True
    measured = torch.randn(1, 1, h, w, dtype=torch.complex64) * mask
    current = torch.randn(1, 2, h, w)  # an image estimate, real and imaginary channels
    zeros, ones = torch.zeros(1, 2, 1, 1), torch.ones(1, 2, 1, 1)
    sens = torch.ones(1, 1, h, w, dtype=torch.complex64)
    ctx = _Context(sens, zeros, ones, mask, measured, None)
    with torch.no_grad():
        updated = current - block.dc_term(current, ctx)
    as_kspace = physics.fft2c(torch.complex(updated[:, :1], updated[:, 1:]))
    before = physics.fft2c(torch.complex(current[:, :1], current[:, 1:]))
    expected = torch.where(mask, before - dc_weight * (before - measured), before)
    torch.testing.assert_close(as_kspace, expected, atol=1e-5, rtol=1e-5)
    if dc_weight == 1.0:
        torch.testing.assert_close(as_kspace * mask, measured, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("width", [28, 29, 30, 31])
def test_attention_blocks_round_trip_for_any_width(width: int) -> None:
    x = torch.randn(2, 3, 5, width)
    blocks = AttentionPE.to_blocks(x, 4)
    assert blocks.shape[1:] == (3, 4)
    torch.testing.assert_close(AttentionPE.from_blocks(blocks, (2, 3, 5, width), 4), x)
    # block (b=0, h=0, j=1) holds the padded columns 1, 1 + m, 1 + 2m, 1 + 3m of row 0
    total = (-width) % 4
    left, m = total - total // 2, (width + total) // 4
    assert blocks.shape[0] == 2 * 5 * m
    for k in (1, 2):
        assert torch.equal(blocks[1, :, k], x[0, :, 0, k * m + 1 - left])


def test_unet2d_carries_lska_at_the_bottleneck_and_the_deepest_levels() -> None:
    unet = Unet2d(4, 4, chans=4, num_pool_layers=3, lska_kernel=7, lska_levels=1)
    levels = []
    level: UnetLevel | None = unet.layer
    while level is not None:
        levels.append(level)
        level = level.child
    assert [lv.attention is not None for lv in levels] == [False, False, True, True]  # outer -> bottleneck
    assert [lv.out_planes for lv in levels] == [4, 8, 16, 32]
    out = unet(torch.randn(2, 4, 13, 11))  # odd sizes are reflect-padded and cropped back
    assert out.shape == (2, 4, 13, 11)


# --------------------------------------------------------------------------------- whole network


def test_cascade_counts_are_honoured() -> None:
    model = FeatureVarNet(**{**TINY, "cascade_counts": [2, 1, 3]})
    assert len(model.cascades) == 3 and len(model.image_cascades) == 3
    with_lska = [any(isinstance(m, LSKA) for m in block.modules()) for block in model.cascades]
    assert with_lska == [True, True, False]
    assert model.cascades[0].encoder is model.encoder and model.cascades[2].decoder is model.decoder  # shared
    assert [b.use_image_conv for b in model.cascades] == [True, False, False]  # every third, from the first
    no_image = FeatureVarNet(**{**TINY, "cascade_counts": [0, 2, 0]})
    assert len(no_image.image_cascades) == 0
    kspace, mask = _inputs()
    assert no_image(kspace, mask, crop_size=(24, 24)).shape == (1, 24, 24)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cascade_counts": [1, 1]}, "cascade_counts"),
        ({"cascade_counts": [0, 0, 2]}, "cascade_counts"),
        ({"cascade_counts": [1, -1, 1]}, "cascade_counts"),
        ({"lska_kernel": 9}, "lska_kernel"),
        ({"lska_levels": 3}, "lska_levels"),
        ({"kspace_mult_factor": 0.0}, "kspace_mult_factor"),
    ],
)
def test_bad_configurations_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FeatureVarNet(**{**TINY, **kwargs})


def test_geekseek_recipe_parameter_count() -> None:
    """[5, 10, 3] as the recipe states it: 74,392,504 (the team reported about 67.6 M; see the README)."""
    kwargs = compose([find_config("snu2025_feature_varnet_lska")])["model"]["model_kwargs"]
    model = build_model("feature_varnet", **kwargs)
    assert _count(model) == 74_392_504
    lska = sum(_count(m) for m in model.modules() if isinstance(m, LSKA))
    assert lska == 5 * (  # per LSKA cascade: widths 96 and 192 (two deepest levels) and 384 (bottleneck)
        sum(4 * (c * 3 + c) + c * c + c for c in (96, 192, 384))
    )


def test_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(3)
    plain = FeatureVarNet(**TINY)
    ckpt = FeatureVarNet(**TINY, use_checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    kspace, mask = _inputs()
    grads = []
    for model in (plain, ckpt):
        model.zero_grad()
        model(kspace, mask, crop_size=(24, 24)).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == len(list(plain.parameters()))
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-12)


def test_a_batch_equals_its_items() -> None:
    torch.manual_seed(4)
    model = FeatureVarNet(**{**TINY, "pe_attention": True}).eval()
    first, mask = _inputs(seed=1)
    second, _ = _inputs(seed=2)
    with torch.no_grad():
        batch = model(torch.cat([first, second]), mask.expand(2, -1, -1, -1, -1), crop_size=(24, 24))
        items = [model(k, mask, crop_size=(24, 24)) for k in (first, second)]
    torch.testing.assert_close(batch, torch.cat(items), rtol=1e-4, atol=1e-9)


def test_native_complex_input_gives_the_real_view_result() -> None:
    torch.manual_seed(5)
    model = FeatureVarNet(**TINY).eval()
    kspace, mask = _inputs()
    with torch.no_grad():
        real = model(kspace, mask, crop_size=(24, 24))
        native = model(torch.view_as_complex(kspace.contiguous()), mask[..., 0], crop_size=(24, 24))
    torch.testing.assert_close(native, real)


# ---------------------------------------------------------------------------- fastMRI's FIVarNet


def test_fivarnet_loads_the_reference_weights_and_gives_its_outputs() -> None:
    """tests/fixtures/fivarnet_tiny.pt: fastMRI's FIVarNet run once (tests/fixtures/make_fivarnet_fixture.py)."""
    fixture = torch.load(FIXTURE, weights_only=True)
    model = FIVarNet(**fixture["config"]).eval()
    model.load_state_dict(fixture["state_dict"], strict=True)
    kspace, mask, crop = fixture["masked_kspace"], fixture["mask"], tuple(fixture["crop_size"])
    with torch.no_grad():
        cropped_features = model(kspace, mask, None, crop)
        whole = model(kspace, mask)
    for got, want in ((cropped_features, fixture["output_cropped_features"]), (whole, fixture["output"])):
        assert got.shape == want.shape  # the whole field of view, as fastMRI returns it
        scale = want.abs().max()
        torch.testing.assert_close(got / scale, want / scale, rtol=0, atol=1e-5)
    assert not torch.allclose(cropped_features, whole)  # the crop of the feature U-Nets matters


def test_fivarnet_state_dict_names_and_parameter_count() -> None:
    fixture = torch.load(FIXTURE, weights_only=True)
    model = FIVarNet(**fixture["config"])
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in fixture["state_dict"].items()}
    assert _count(FIVarNet()) == 123_193_654  # fastMRI's defaults


def test_fivarnet_reconstruct_crops_to_the_output_size() -> None:
    from kspacelab.models.base import ReconSample

    torch.manual_seed(6)
    model = FIVarNet(num_cascades=1, sens_chans=2, sens_pools=1, chans=4, pools=1).eval()
    kspace, mask = _inputs()
    sample = ReconSample(
        kspace, mask, 0, torch.zeros(1, 24, 24), 1.0, torch.tensor([[24, 24]]), "brain", 4, "x", 0
    )
    with torch.no_grad():
        image = model.reconstruct(sample)
        whole = model(kspace, mask, None, (24, 24))
    assert image.shape == (1, 24, 24)
    torch.testing.assert_close(image, physics.center_crop(whole, (24, 24)))
