"""RCAN (Zhang et al., ECCV 2018): residual channel-attention network, here as an image-to-image refiner.

Layout: a 3x3 head convolution, ``n_resgroups`` residual groups (each ``n_resblocks`` residual channel-attention
blocks and a closing 3x3 convolution, with a skip over the group), a 3x3 convolution after the groups with a long
skip from the head, and a 3x3 tail convolution to ``out_chans`` (no upsampler: the output has the input's size).

A block is ``x + res_scale * CA(body(x))``. The body is plain (3x3 -> ReLU -> 3x3, the paper's) or a bottleneck
(1x1 to ``n_feats // 4`` -> PReLU -> 3x3 -> PReLU -> 1x1 back to ``n_feats``, the 2022 SNU 3rd-place refiner's).
Channel attention (CA): global average pool -> 1x1 to ``n_feats // reduction`` -> ReLU -> 1x1 -> sigmoid, a
per-channel gain. ``use_checkpoint`` recomputes each residual group in the backward pass (activations of one group
at a time); ``inplace`` runs the ReLUs in place.
"""

from __future__ import annotations

import torch
from torch import nn

from kspacelab.models.base import maybe_checkpoint

__all__ = ["RCAN", "ChannelAttention", "ResidualBlock", "ResidualGroup"]


def _conv(in_chans: int, out_chans: int, kernel_size: int) -> nn.Conv2d:
    return nn.Conv2d(in_chans, out_chans, kernel_size, padding=kernel_size // 2, bias=True)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation gain per channel: ``x * sigmoid(W2 relu(W1 mean_hw(x)))``."""

    def __init__(self, chans: int, reduction: int = 16, inplace: bool = True) -> None:
        super().__init__()
        hidden = max(1, chans // reduction)
        self.squeeze = nn.Conv2d(chans, hidden, 1)
        self.act = nn.ReLU(inplace=inplace)
        self.excite = nn.Conv2d(hidden, chans, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> same shape."""
        gain = torch.sigmoid(self.excite(self.act(self.squeeze(x.mean(dim=(-2, -1), keepdim=True)))))
        return x * gain


class ResidualBlock(nn.Module):
    """Residual channel-attention block: ``x + res_scale * CA(body(x))`` (plain or bottleneck body)."""

    def __init__(
        self, n_feats: int, reduction: int, res_scale: float, bottleneck: bool, inplace: bool = True
    ) -> None:
        super().__init__()
        if bottleneck:
            mid = max(1, n_feats // 4)
            self.body: nn.Module = nn.Sequential(
                _conv(n_feats, mid, 1), nn.PReLU(), _conv(mid, mid, 3), nn.PReLU(), _conv(mid, n_feats, 1)
            )
        else:
            self.body = nn.Sequential(
                _conv(n_feats, n_feats, 3), nn.ReLU(inplace=inplace), _conv(n_feats, n_feats, 3)
            )
        self.attention = ChannelAttention(n_feats, reduction, inplace)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.attention(self.body(x))


class ResidualGroup(nn.Module):
    """``n_resblocks`` residual blocks and a 3x3 convolution, with a skip over the group."""

    def __init__(
        self,
        n_feats: int,
        n_resblocks: int,
        reduction: int,
        res_scale: float,
        bottleneck: bool,
        inplace: bool,
    ) -> None:
        super().__init__()
        blocks = [
            ResidualBlock(n_feats, reduction, res_scale, bottleneck, inplace) for _ in range(n_resblocks)
        ]
        self.body = nn.Sequential(*blocks, _conv(n_feats, n_feats, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class RCAN(nn.Module):
    """Residual channel-attention network mapping ``(B, in_chans, H, W)`` to ``(B, out_chans, H, W)``."""

    def __init__(
        self,
        in_chans: int = 2,
        out_chans: int = 1,
        n_feats: int = 64,
        n_resgroups: int = 10,
        n_resblocks: int = 20,
        reduction: int = 16,
        res_scale: float = 1.0,
        bottleneck: bool = False,
        use_checkpoint: bool = False,
        inplace: bool = True,
    ) -> None:
        """Args:
        in_chans, out_chans: image channels in and out.
        n_feats: feature channels.
        n_resgroups: residual groups.
        n_resblocks: residual blocks per group.
        reduction: channel-attention reduction.
        res_scale: scale of each block's residual branch.
        bottleneck: bottleneck blocks (1x1 -> n/4 -> 3x3 -> 1x1, PReLU) instead of plain ones (3x3 -> ReLU -> 3x3).
        use_checkpoint: recompute each residual group in the backward pass.
        inplace: in-place ReLUs.
        """
        super().__init__()
        if min(in_chans, out_chans, n_feats, reduction) < 1 or n_resgroups < 0 or n_resblocks < 0:
            raise ValueError("RCAN sizes must be positive (groups and blocks may be 0)")
        self.use_checkpoint = use_checkpoint
        self.head = _conv(in_chans, n_feats, 3)
        self.groups = nn.ModuleList(
            ResidualGroup(n_feats, n_resblocks, reduction, res_scale, bottleneck, inplace)
            for _ in range(n_resgroups)
        )
        self.body_end = _conv(n_feats, n_feats, 3)
        self.tail = _conv(n_feats, out_chans, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W)`` float -> ``(B, out_chans, H, W)``."""
        head = self.head(x)
        features = head
        for group in self.groups:
            features = maybe_checkpoint(group, features, enabled=self.use_checkpoint)
        out: torch.Tensor = self.tail(self.body_end(features) + head)
        return out
