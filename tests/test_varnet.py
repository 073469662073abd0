"""E2E-VarNet and NormUnet against the fastMRI reference implementation (the oracle)."""

from __future__ import annotations

import pytest
import torch

from kspacelab import physics
from kspacelab.masks import create_mask_for_mask_type
from kspacelab.models import MODEL_REGISTRY, NormUnet, Unet, VarNet, build_model
from kspacelab.models.varnet import VarNetBlock
from kspacelab.physics import low_frequency_window

fastmri_models = pytest.importorskip("fastmri.models")

SMALL = {"num_cascades": 2, "chans": 4, "sens_chans": 2}
SNU_BASELINE = {"num_cascades": 1, "chans": 9, "sens_chans": 4}


def _rel_err(got: torch.Tensor, expected: torch.Tensor) -> float:
    """Max absolute difference relative to the largest magnitude of ``expected``."""
    return float((got.double() - expected.double()).abs().max() / expected.double().abs().max())


def _pair(config: dict[str, int], dtype: torch.dtype = torch.float32) -> tuple[VarNet, torch.nn.Module]:
    torch.manual_seed(0)
    reference = fastmri_models.VarNet(**config).to(dtype)
    ours = VarNet(**config).to(dtype)
    ours.load_state_dict(reference.state_dict(), strict=True)
    return ours, reference


def _data(
    shape: tuple[int, int, int, int],
    kind: str = "equispaced",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Real-view masked k-space ``(B, C, H, W, 2)``, bool mask ``(B, 1, 1, W, 1)``, ACS width."""
    b, c, h, w = shape
    mask, num_low = create_mask_for_mask_type(kind, [0.08], [4])((c, h, w, 2), seed=seed)
    mask = mask.bool().unsqueeze(0).expand(b, -1, -1, -1, -1)
    g = torch.Generator().manual_seed(seed)
    kspace = torch.randn(b, c, h, w, 2, generator=g, dtype=dtype) * mask
    return kspace, mask, int(num_low)


@pytest.mark.parametrize(
    "config", [{}, SMALL, SNU_BASELINE, {"num_cascades": 3, "sens_pools": 3, "pools": 2}]
)
def test_state_dict_keys_and_shapes_equal_fastmri(config: dict[str, int]) -> None:
    ours = VarNet(**config).state_dict()
    reference = fastmri_models.VarNet(**config).state_dict()
    assert list(ours) == list(reference)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in reference.items()}


def test_fastmri_weights_load_strict_and_parameter_counts() -> None:
    reference = fastmri_models.VarNet(**SNU_BASELINE)
    ours = VarNet(**SNU_BASELINE)
    ours.load_state_dict(reference.state_dict(), strict=True)
    for name, value in ours.state_dict().items():
        assert torch.equal(value, reference.state_dict()[name])
    assert sum(p.numel() for p in VarNet().parameters()) == 29_936_966
    assert sum(p.numel() for p in ours.parameters()) == 734_943


@pytest.mark.parametrize(
    ("shape", "kind"),
    [((2, 4, 64, 48), "equispaced"), ((2, 3, 40, 37), "equispaced"), ((1, 4, 48, 33), "random")],
)
@pytest.mark.parametrize("given_low", [False, True])
def test_forward_matches_fastmri(shape: tuple[int, int, int, int], kind: str, given_low: bool) -> None:
    ours, reference = _pair(SMALL)
    kspace, mask, num_low = _data(shape, kind)
    low = num_low if given_low else None
    with torch.no_grad():
        expected = reference(kspace, mask, low)
        got = ours(kspace, mask, low)
        got_complex = ours(torch.view_as_complex(kspace), mask[..., 0], low)
    assert got.shape == expected.shape == shape[:1] + shape[2:]
    assert _rel_err(got, expected) < 1e-5
    assert _rel_err(got_complex, expected) < 1e-5
    torch.testing.assert_close(got_complex, got, rtol=0, atol=0)


def test_num_low_frequencies_as_tensor_and_detection_match_fastmri() -> None:
    ours, reference = _pair(SMALL)
    kspace, mask, num_low = _data((2, 3, 32, 40))
    lows = torch.tensor([num_low, num_low - 2])
    with torch.no_grad():
        got = ours(kspace, mask, lows)
        # fastMRI takes one int for the batch: run it per sample
        expected = torch.cat([reference(kspace[i : i + 1], mask[i : i + 1], int(lows[i])) for i in range(2)])
    assert _rel_err(got, expected) < 1e-5
    # detection equals fastMRI's on assorted masks, including odd widths and an all-ones mask
    for width, seed in [(40, 1), (37, 2), (33, 3)]:
        for kind in ("equispaced", "random", "magic"):
            m, _ = create_mask_for_mask_type(kind, [0.08], [4])((1, 8, width, 2), seed=seed)
            m = m.bool().unsqueeze(0)
            start, num = low_frequency_window(m[..., 0])
            ref_start, ref_num = reference.sens_net.get_pad_and_num_low_freqs(m)
            assert torch.equal(start, ref_start) and torch.equal(num, ref_num)
    full = torch.ones(1, 1, 1, 16, dtype=torch.bool)
    ref = reference.sens_net.get_pad_and_num_low_freqs(full[..., None])
    assert all(torch.equal(a, b) for a, b in zip(low_frequency_window(full), ref, strict=True))


def test_gradients_match_fastmri_in_float64() -> None:
    # float32 gradients of random-weight U-Nets are ill-conditioned (fastMRI vs its own float64 differs by ~1%),
    # so the exact comparison runs both implementations in float64.
    ours, reference = _pair(SMALL, torch.float64)
    kspace, mask, _ = _data((2, 3, 32, 27), dtype=torch.float64)
    ours(kspace, mask).sum().backward()
    reference(kspace, mask).sum().backward()
    ref_params = dict(reference.named_parameters())
    for name, param in ours.named_parameters():
        expected = ref_params[name].grad
        assert param.grad is not None and expected is not None
        torch.testing.assert_close(param.grad, expected, rtol=1e-7, atol=1e-9 * float(expected.abs().max()))


def test_float32_gradients_close_to_fastmri() -> None:
    ours, reference = _pair(SMALL)
    kspace, mask, _ = _data((1, 3, 32, 32))
    ours(kspace, mask).sum().backward()
    reference(kspace, mask).sum().backward()
    ref_params = dict(reference.named_parameters())
    for name, param in ours.named_parameters():
        expected = ref_params[name].grad
        assert param.grad is not None and expected is not None
        assert torch.isfinite(param.grad).all()
        if expected.norm() > 0:
            assert float((param.grad - expected).norm() / expected.norm()) < 5e-2, name


@pytest.mark.parametrize(("use_checkpoint", "sens_checkpoint"), [(True, False), (False, True), (True, True)])
def test_checkpointing_gives_identical_outputs_and_grads(use_checkpoint: bool, sens_checkpoint: bool) -> None:
    torch.manual_seed(0)
    plain = VarNet(**SMALL)
    ckpt = VarNet(**SMALL, use_checkpoint=use_checkpoint, sens_checkpoint=sens_checkpoint)
    ckpt.load_state_dict(plain.state_dict())
    kspace, mask, _ = _data((1, 3, 32, 24))
    out_plain = plain(kspace, mask)
    out_ckpt = ckpt(kspace, mask)
    torch.testing.assert_close(out_ckpt, out_plain, rtol=0, atol=0)
    out_plain.sum().backward()
    out_ckpt.sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters(), strict=True):
        assert a.grad is not None and b.grad is not None
        torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=0, msg=name)


def test_crop_size_crops_and_pads() -> None:
    ours, _ = _pair(SMALL)
    kspace, mask, _ = _data((1, 3, 40, 30))
    with torch.no_grad():
        full = ours(kspace, mask)
        cropped = ours(kspace, mask, crop_size=(20, 16))
        padded = ours(kspace, mask, crop_size=(32, 36))
    torch.testing.assert_close(cropped, physics.center_crop(full, (20, 16)), rtol=0, atol=0)
    assert padded.shape == (1, 32, 36)
    torch.testing.assert_close(physics.center_crop(padded, (32, 30)), physics.center_crop(full, (32, 30)))
    assert float(padded[..., :3].abs().max()) == 0.0


def test_data_consistency_with_zero_regulariser_restores_measured_samples() -> None:
    norm_unet = NormUnet(chans=4, num_pools=2)
    final = norm_unet.unet.up_conv[-1][1]
    with torch.no_grad():
        final.weight.zero_()
        final.bias.zero_()
    block = VarNetBlock(norm_unet)
    kspace, mask, _ = _data((1, 3, 32, 24))
    k0 = torch.view_as_complex(kspace)
    line_mask = mask[..., 0]
    sens = physics.to_complex(torch.randn(1, 3, 32, 24, 2))
    current = torch.randn(1, 3, 32, 24, dtype=torch.complex64)
    with torch.no_grad():
        out = block(current, k0, line_mask, sens)
        model_term = physics.sens_expand(norm_unet(physics.sens_reduce(current, sens)), sens)
    # the zeroed U-Net still returns the (un-normalised) input mean, so the regulariser term is removed here;
    # what remains is current - where(mask, current - k0, 0): measured samples restored, others untouched
    sampled = line_mask.expand_as(k0)
    torch.testing.assert_close((out + model_term)[sampled], k0[sampled])
    torch.testing.assert_close((out + model_term)[~sampled], current[~sampled])
    with torch.no_grad():
        assert float(norm_unet(physics.sens_reduce(current, sens)).abs().max()) > 0  # the mean, not zero


def test_normunet_and_unet_match_fastmri() -> None:
    torch.manual_seed(1)
    reference = fastmri_models.varnet.NormUnet(4, 2)
    ours = NormUnet(4, 2)
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 1, 21, 30, 2)
    with torch.no_grad():
        expected = reference(x)
        got = ours(x)
        got_complex = ours(torch.view_as_complex(x))
    assert got.shape == expected.shape == (2, 1, 21, 30, 2)
    assert _rel_err(got, expected) < 1e-5
    assert _rel_err(torch.view_as_real(got_complex), expected) < 1e-5
    # the plain U-Net on odd sizes (reflect padding of the upsampled maps)
    ref_unet = fastmri_models.Unet(3, 2, chans=4, num_pool_layers=3)
    unet = Unet(3, 2, chans=4, num_pool_layers=3)
    unet.load_state_dict(ref_unet.state_dict(), strict=True)
    image = torch.randn(2, 3, 27, 19)
    with torch.no_grad():
        assert _rel_err(unet(image), ref_unet(image)) < 1e-5


def test_registry() -> None:
    entry = MODEL_REGISTRY["varnet"]
    assert entry.cls is VarNet and entry.task == "reconstruction" and entry.name == "varnet"
    assert entry.config(**SMALL).num_cascades == 2  # the typed config has the constructor's fields
    model = build_model("varnet", **SMALL)
    assert isinstance(model, VarNet) and len(model.cascades) == 2
    with pytest.raises(ValueError, match="varnet"):
        build_model("no-such-model")
    # a misspelt key names itself and lists the allowed keys; a value of the wrong type is refused
    with pytest.raises(ValueError, match=r"num_cascade\b.*allowed: num_cascades, sens_chans"):
        build_model("varnet", num_cascade=2)
    with pytest.raises(ValueError, match="chans"):
        build_model("varnet", chans="eight")
    with pytest.raises(ValueError, match="chans"):
        build_model("varnet", chans=True)


@pytest.mark.slow
def test_full_size_snu_baseline_forward() -> None:
    model = VarNet(**SNU_BASELINE).eval()
    kspace, mask, _ = _data((1, 16, 768, 396))
    with torch.no_grad():
        out = model(kspace, mask, crop_size=(384, 384))
    assert out.shape == (1, 384, 384)
    assert torch.isfinite(out).all()


def _snu_batch(
    widths: tuple[int, ...], acc: int = 4, coils: int = 4, height: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Complex masked k-space ``(B, C, H, W)`` of smooth coil images, organiser masks ``(B, 1, 1, W)``."""
    from kspacelab.masks import snu_mask

    g = torch.Generator().manual_seed(1)
    width = widths[0]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    images = []
    for b in range(len(widths)):
        obj = ((yy / 0.8) ** 2 + (xx / 0.7) ** 2 < 1).float() * (
            1 + 0.2 * torch.randn(height, width, generator=g)
        )
        sens = torch.stack([torch.exp(-((yy - c / coils) ** 2 + xx**2) * (1 + b)) for c in range(coils)])
        images.append(obj * sens * torch.exp(1j * 0.3 * xx))
    kspace = physics.fft2c(torch.stack(images).to(torch.complex64))
    masks = torch.stack([torch.from_numpy(snu_mask(width, acc)) for _ in widths]).view(
        len(widths), 1, 1, width
    )
    return kspace * masks, masks


def test_grappa_start_untrained_equals_grappa_and_adds_gates_only() -> None:
    from kspacelab.classical.grappa import grappa_kspace

    torch.manual_seed(0)
    model = VarNet(**SMALL, initial_kspace="grappa")
    plain = VarNet(**SMALL)
    extra = set(model.state_dict()) - set(plain.state_dict())
    assert extra == {f"cascades.{i}.reg_weight" for i in range(SMALL["num_cascades"])}
    assert set(plain.state_dict()) <= set(model.state_dict())
    kspace, mask = _snu_batch((64, 64), acc=4)
    mask[1, ..., 5] = True  # a different pattern for the second item: calibrated on its own mask
    kspace = kspace * mask
    with torch.no_grad():
        got = model(kspace, mask)
    for i in range(2):
        filled = grappa_kspace(kspace[i], mask[i].view(-1))
        expected = physics.rss_complex(physics.ifft2c(filled), dim=0)
        assert _rel_err(got[i], expected) < 1e-5
    # and it is not the zero-filled image: GRAPPA did fill the gaps
    zero_filled = physics.rss_complex(physics.ifft2c(kspace[0]), dim=0)
    assert _rel_err(got[0], zero_filled) > 1e-2


def test_grappa_start_trains_the_gates_and_the_unets() -> None:
    torch.manual_seed(0)
    model = VarNet(**SMALL, initial_kspace="grappa")
    kspace, mask = _snu_batch((48,), acc=8)
    target = physics.rss_complex(physics.ifft2c(kspace), dim=1)
    loss = (model(kspace, mask) - target).abs().mean()
    loss.backward()
    for cascade in model.cascades:
        assert cascade.reg_weight is not None and float(cascade.reg_weight.grad.abs()) > 0
    # the U-Nets get their gradient once the gates open
    with torch.no_grad():
        for cascade in model.cascades:
            cascade.reg_weight.fill_(0.5)
    model.zero_grad()
    (model(kspace, mask) - target).abs().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.cascades[0].model.parameters())


def test_grappa_start_rejects_bad_options_and_masks_without_acs() -> None:
    with pytest.raises(ValueError, match="initial_kspace"):
        VarNet(**SMALL, initial_kspace="sense")
    model = VarNet(**SMALL, initial_kspace="grappa")
    kspace, mask = _snu_batch((48,), acc=4)
    mask = torch.zeros_like(mask)
    mask[..., ::4] = True  # equispaced lines, no fully sampled centre
    with pytest.raises(ValueError, match=r"ACS|calibrat"):
        model(kspace * mask, mask, num_low_frequencies=2)
