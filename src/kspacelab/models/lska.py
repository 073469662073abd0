"""Large Separable Kernel Attention (LSKA; Lau, Po and Rehman, 2023).

A ``k x k`` large-kernel attention (VAN's LKA) decomposed into a local depthwise convolution of size ``a`` and a
dilated depthwise convolution of size ``b`` with dilation ``d`` (effective size ``a + (b - 1) d = k``), each of
them split again into a ``1 x n`` and an ``n x 1`` depthwise convolution, followed by a 1 x 1 convolution that
mixes channels::

    attn = conv1x1(conv_{b x 1, d}(conv_{1 x b, d}(conv_{a x 1}(conv_{1 x a}(x)))))
    out  = x * attn

The cost per pixel is ``2 (a + b) C + C^2`` instead of ``k^2 C`` for a depthwise ``k x k`` kernel. The
decompositions of the paper, ``k: (a, b, d)``, are in :data:`LSKA_DECOMPOSITIONS`.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LSKA", "LSKA_DECOMPOSITIONS"]

#: Effective kernel size -> (local size, dilated size, dilation), as in the LSKA paper.
LSKA_DECOMPOSITIONS: dict[int, tuple[int, int, int]] = {
    7: (3, 3, 2),
    11: (3, 5, 2),
    23: (5, 7, 3),
    35: (5, 11, 3),
    53: (5, 17, 3),
}


def _depthwise(chans: int, size: int, horizontal: bool, dilation: int = 1) -> nn.Conv2d:
    """Depthwise ``1 x size`` (horizontal) or ``size x 1`` convolution with 'same' padding."""
    pad = (size // 2) * dilation
    kernel, padding = ((1, size), (0, pad)) if horizontal else ((size, 1), (pad, 0))
    return nn.Conv2d(chans, chans, kernel, padding=padding, dilation=dilation, groups=chans)


class LSKA(nn.Module):
    """``x * attention(x)`` with a separable large kernel; ``(B, C, H, W) -> (B, C, H, W)``.

    Submodule names follow the paper's code: ``conv0h``, ``conv0v`` (local), ``conv_spatial_h``,
    ``conv_spatial_v`` (dilated), ``conv1`` (1 x 1).
    """

    def __init__(self, chans: int, kernel_size: int = 7, clamp: float = 0.0) -> None:
        """Args:
        chans: channels ``C``.
        kernel_size: effective kernel size, a key of :data:`LSKA_DECOMPOSITIONS` (7, 11, 23, 35 or 53).
        clamp: when > 0, the attention map is clamped to ``[-clamp, clamp]`` (keeps the product bounded early
            in training); 0 leaves it as it is (the paper's).
        """
        super().__init__()
        if kernel_size not in LSKA_DECOMPOSITIONS:
            raise ValueError(
                f"LSKA kernel_size must be one of {sorted(LSKA_DECOMPOSITIONS)}, got {kernel_size}"
            )
        if clamp < 0:
            raise ValueError(f"LSKA clamp must be >= 0, got {clamp}")
        local, dilated, dilation = LSKA_DECOMPOSITIONS[kernel_size]
        self.kernel_size = kernel_size
        self.clamp = clamp
        self.conv0h = _depthwise(chans, local, horizontal=True)
        self.conv0v = _depthwise(chans, local, horizontal=False)
        self.conv_spatial_h = _depthwise(chans, dilated, horizontal=True, dilation=dilation)
        self.conv_spatial_v = _depthwise(chans, dilated, horizontal=False, dilation=dilation)
        self.conv1 = nn.Conv2d(chans, chans, 1)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map ``(B, C, H, W)`` (clamped when :attr:`clamp` > 0)."""
        attn = self.conv1(self.conv_spatial_v(self.conv_spatial_h(self.conv0v(self.conv0h(x)))))
        return attn.clamp(-self.clamp, self.clamp) if self.clamp > 0 else attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * attention(x)``."""
        return x * self.attention(x)
