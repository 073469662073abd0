"""Physics primitives against numpy, the fastmri package and analytic identities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kspacelab import physics

fastmri = pytest.importorskip("fastmri")
fastmri_transforms = pytest.importorskip("fastmri.data.transforms")


def _rand_complex(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g))


def _np_fft2c(x: np.ndarray) -> np.ndarray:
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=axes), norm="ortho"), axes=axes)


@pytest.mark.parametrize("shape", [(4, 8), (3, 7, 9), (2, 3, 16, 11)])
def test_fft2c_matches_numpy_for_even_and_odd_sizes(shape: tuple[int, ...]) -> None:
    x = _rand_complex(*shape)
    ours = physics.fft2c(x).numpy()
    np.testing.assert_allclose(ours, _np_fft2c(x.numpy()), rtol=1e-5, atol=1e-5)


def test_real_view_and_complex_agree_and_match_fastmri() -> None:
    x = _rand_complex(2, 5, 12, 10, seed=1)
    rv = torch.view_as_real(x)
    ours_rv = physics.fft2c(rv)
    assert ours_rv.shape == rv.shape and not ours_rv.is_complex()
    torch.testing.assert_close(torch.view_as_complex(ours_rv), physics.fft2c(x))
    torch.testing.assert_close(ours_rv, fastmri.fft2c(rv))
    torch.testing.assert_close(physics.ifft2c(rv), fastmri.ifft2c(rv))


def test_fft_is_unitary_and_inverse() -> None:
    x = _rand_complex(3, 16, 9, seed=2)
    k = physics.fft2c(x)
    torch.testing.assert_close(physics.ifft2c(k), x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k.abs().pow(2).sum(), x.abs().pow(2).sum(), rtol=1e-5, atol=1e-4)


def test_dc_sits_at_the_centre() -> None:
    x = torch.ones(8, 6, dtype=torch.complex64)
    k = physics.fft2c(x)
    assert torch.argmax(k.abs()).item() == 4 * 6 + 3


def test_complex_helpers_match_fastmri() -> None:
    a, b = _rand_complex(4, 5, seed=3), _rand_complex(4, 5, seed=4)
    ra, rb = torch.view_as_real(a), torch.view_as_real(b)
    torch.testing.assert_close(physics.complex_mul(ra, rb), fastmri.complex_mul(ra, rb))
    torch.testing.assert_close(physics.complex_mul(a, b), a * b)
    torch.testing.assert_close(physics.complex_conj(ra), fastmri.complex_conj(ra))
    torch.testing.assert_close(physics.complex_abs(ra), fastmri.complex_abs(ra))
    torch.testing.assert_close(physics.complex_abs(a), a.abs())
    torch.testing.assert_close(physics.complex_abs_sq(ra), fastmri.complex_abs_sq(ra))


def test_rss_matches_fastmri_and_numpy() -> None:
    coils = _rand_complex(6, 10, 8, seed=5)
    expected = np.sqrt((np.abs(coils.numpy()) ** 2).sum(0))
    np.testing.assert_allclose(physics.rss_complex(coils, dim=0).numpy(), expected, rtol=1e-5)
    rv = torch.view_as_real(coils)
    torch.testing.assert_close(physics.rss_complex(rv, dim=0), fastmri.rss_complex(rv, dim=0))
    torch.testing.assert_close(physics.rss(coils.abs(), dim=0), fastmri.rss(coils.abs(), dim=0))


def test_sens_expand_reduce_are_adjoint() -> None:
    """<E x, k> == <x, E^H k> for random x, k and sensitivity maps."""
    x = _rand_complex(2, 1, 12, 10, seed=6)
    k = _rand_complex(2, 4, 12, 10, seed=7)
    sens = _rand_complex(2, 4, 12, 10, seed=8)
    lhs = torch.vdot(physics.sens_expand(x, sens).flatten(), k.flatten())
    rhs = torch.vdot(x.flatten(), physics.sens_reduce(k, sens).flatten())
    torch.testing.assert_close(lhs, rhs, rtol=1e-4, atol=1e-3)
    # real view gives the same numbers
    rv = physics.sens_reduce(torch.view_as_real(k), torch.view_as_real(sens))
    torch.testing.assert_close(torch.view_as_complex(rv), physics.sens_reduce(k, sens), rtol=1e-5, atol=1e-5)


def test_soft_data_consistency_touches_only_sampled_lines() -> None:
    k = _rand_complex(1, 2, 6, 8, seed=9)
    k0 = _rand_complex(1, 2, 6, 8, seed=10)
    mask = torch.zeros(1, 1, 1, 8, dtype=torch.bool)
    mask[..., ::3] = True
    dc = physics.soft_data_consistency(k, k0, mask, 0.5)
    assert torch.all(dc[..., ~mask[0, 0, 0]] == 0)
    torch.testing.assert_close(dc[..., mask[0, 0, 0]], 0.5 * (k - k0)[..., mask[0, 0, 0]])


@pytest.mark.parametrize(("size", "target"), [((10, 12), (4, 6)), ((9, 11), (4, 5)), ((6, 5), (8, 9))])
def test_center_crop_matches_fastmri_and_pads_consistently(
    size: tuple[int, int], target: tuple[int, int]
) -> None:
    x = torch.arange(size[0] * size[1], dtype=torch.float32).reshape(1, *size) + 1
    out = physics.center_crop(x, target)
    assert out.shape == (1, *target)
    if target[0] <= size[0] and target[1] <= size[1]:
        torch.testing.assert_close(out, fastmri_transforms.center_crop(x, target))
    else:
        # padded: cropping back recovers the input exactly, and the pad is zero
        torch.testing.assert_close(physics.center_crop(out, size), x)
        assert out.sum() == x.sum()


def test_center_crop_mixed_crop_and_pad_and_complex() -> None:
    """Knee widths below 384 pad along W while H is cropped (SNU label geometry)."""
    x = _rand_complex(3, 20, 7, seed=11)
    out = physics.center_crop(x, (8, 12))
    assert out.shape == (3, 8, 12) and out.is_complex()
    torch.testing.assert_close(out[:, :, 2:9], x[:, 6:14, :])
    assert torch.all(out[:, :, :2] == 0) and torch.all(out[:, :, 9:] == 0)
    rv = physics.complex_center_crop(torch.view_as_real(x), (8, 12))
    torch.testing.assert_close(torch.view_as_complex(rv.contiguous()), out)


def test_bad_real_view_is_rejected() -> None:
    with pytest.raises(ValueError, match="last axis 2"):
        physics.to_complex(torch.zeros(3, 4))
