"""Building blocks of PromptMR+ (Xin et al., ECCV 2024): channel-attention blocks, prompt blocks, PromptUnet.

Everything here works on real feature maps ``(N, C, H, W)`` float; the complex wrapper, the sensitivity net and
the unrolled k-space cascades are in :mod:`kspacelab.models.promptmr`.

* :class:`ChannelAttentionBlock` (CAB): ``x + CA(conv3x3(PReLU(conv3x3(x))))`` with squeeze-excitation channel
  attention ``CA`` (global mean -> 1x1 conv to ``C // reduction`` -> ReLU -> 1x1 conv -> sigmoid, a gate per
  channel), or no attention (``use_ca=False``, the ``no_use_ca`` option).
* :class:`PromptBlock`: a bank of ``len_prompt`` prompt tensors ``(prompt_dim, prompt_size, prompt_size)``,
  mixed by softmax weights predicted from the decoder feature's global mean, resized bilinearly to the feature
  size and passed through a 3x3 convolution. The bank is a ``Parameter`` that is fixed
  (``requires_grad=False``) unless ``learnable_prompt`` -- the "fixed prompts" of the parameter counts.
* :class:`PromptUnet`: three encoder levels (CABs + stride-2 3x3 convolution), CAB skip connections, a CAB
  bottleneck, three decoder levels that concatenate a prompt to the feature, fuse it with CABs, reduce it with
  a 1x1 convolution, upsample bilinearly (x2) with a 1x1 convolution and add the skip, plus an optional
  "momentum" layer per decoder level that fuses the feature with the same level's features of the previous
  ``n_history`` cascades.

Convolutions have no bias except the down-sampling ones and the prompt-weight linear layer. Each CAB has its own
one-parameter PReLU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ChannelAttention",
    "ChannelAttentionBlock",
    "DownBlock",
    "History",
    "PromptBlock",
    "PromptUnet",
    "UpBlock",
]

#: Decoder features of the previous cascades, one tensor per decoder level (deepest first):
#: ``(N, n_history * C_l, H_l, W_l)`` with the most recent cascade's feature first.
History = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def conv(in_chans: int, out_chans: int, kernel_size: int, bias: bool = False, stride: int = 1) -> nn.Conv2d:
    """``kernel_size`` x ``kernel_size`` convolution with "same" padding (``kernel_size // 2``)."""
    return nn.Conv2d(in_chans, out_chans, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias)


class ChannelAttention(nn.Module):
    """Squeeze-excitation gate: ``x * sigmoid(W2 relu(W1 mean_hw(x)))`` with ``W1: C -> C // reduction``."""

    def __init__(self, chans: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, chans // reduction)
        self.squeeze = nn.Conv2d(chans, hidden, 1, bias=False)
        self.excite = nn.Conv2d(hidden, chans, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> same shape."""
        gate = torch.sigmoid(self.excite(F.relu(self.squeeze(x.mean(dim=(-2, -1), keepdim=True)))))
        return x * gate


class ChannelAttentionBlock(nn.Module):
    """Residual block ``x + CA(conv(PReLU(conv(x))))`` (CAB); ``CA`` is the identity with ``use_ca=False``."""

    def __init__(self, chans: int, kernel_size: int = 3, reduction: int = 4, use_ca: bool = True) -> None:
        """Args:
        chans: channels in and out.
        kernel_size: size of the two convolutions.
        reduction: channel reduction of the attention's hidden layer.
        use_ca: apply channel attention to the residual.
        """
        super().__init__()
        self.conv1 = conv(chans, chans, kernel_size)
        self.act = nn.PReLU()
        self.conv2 = conv(chans, chans, kernel_size)
        self.ca: nn.Module = ChannelAttention(chans, reduction) if use_ca else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> same shape."""
        return x + self.ca(self.conv2(self.act(self.conv1(x))))


def cab_stack(n: int, chans: int, kernel_size: int, reduction: int, use_ca: bool) -> nn.Sequential:
    """``n`` CABs in a row (an empty ``Sequential``, the identity, for ``n = 0``)."""
    return nn.Sequential(*(ChannelAttentionBlock(chans, kernel_size, reduction, use_ca) for _ in range(n)))


class PromptBlock(nn.Module):
    """Input-adaptive prompt: softmax-weighted sum of a prompt bank, resized to the feature and convolved.

    ``weights = softmax(Linear(mean_hw(x)))`` over the ``len_prompt`` prompts; the weighted sum
    ``(N, prompt_dim, prompt_size, prompt_size)`` is resized bilinearly (``align_corners=False``) to the
    feature's ``(H, W)`` and passed through a 3x3 convolution.
    """

    def __init__(
        self, prompt_dim: int, len_prompt: int, prompt_size: int, feature_dim: int, learnable: bool = False
    ) -> None:
        """Args:
        prompt_dim: channels of a prompt.
        len_prompt: number of prompts in the bank.
        prompt_size: spatial size of each (square) prompt.
        feature_dim: channels of the feature the weights are predicted from.
        learnable: train the prompt bank (otherwise it keeps its random uniform [0, 1) initialisation).
        """
        super().__init__()
        self.prompt = nn.Parameter(
            torch.rand(len_prompt, prompt_dim, prompt_size, prompt_size), requires_grad=learnable
        )
        self.linear = nn.Linear(feature_dim, len_prompt)
        self.conv = conv(prompt_dim, prompt_dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, feature_dim, H, W)`` -> prompt ``(N, prompt_dim, H, W)``."""
        weights = torch.softmax(self.linear(x.mean(dim=(-2, -1))), dim=1)  # (N, len_prompt)
        bank = self.prompt.to(x.dtype)
        prompt = torch.einsum("nl,lchw->nchw", weights, bank)
        prompt = F.interpolate(prompt, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(prompt)


class DownBlock(nn.Module):
    """Encoder level: ``n_cab`` CABs at ``in_chans`` (the skip feature), then a stride-2 3x3 convolution."""

    def __init__(
        self, in_chans: int, out_chans: int, n_cab: int, kernel_size: int, reduction: int, use_ca: bool
    ) -> None:
        super().__init__()
        self.encoder = cab_stack(n_cab, in_chans, kernel_size, reduction, use_ca)
        self.down = nn.Conv2d(in_chans, out_chans, 3, stride=2, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, in, H, W)`` -> ``(down (N, out, H/2, W/2), skip (N, in, H, W))``."""
        skip = self.encoder(x)
        return self.down(skip), skip


class UpBlock(nn.Module):
    """Decoder level: [momentum] -> concat prompt -> CABs -> 1x1 reduce -> x2 up + 1x1 -> + skip -> CAB.

    With ``n_history > 0`` the feature is first concatenated with the ``n_history`` stored features of the
    previous cascades (or ``n_history`` copies of itself in the first cascade) and fused back to ``in_dim``
    channels by a 1x1 convolution and a CAB (the "momentum" layer). The 1x1 convolution of the up-sampling is
    applied before the bilinear resize (the two linear maps commute; 4x fewer operations).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        prompt_dim: int,
        n_cab: int,
        kernel_size: int,
        reduction: int,
        use_ca: bool,
        n_history: int = 0,
    ) -> None:
        super().__init__()
        self.n_history = n_history
        self.momentum: nn.Module | None = None
        if n_history > 0:
            self.momentum = nn.Sequential(
                nn.Conv2d(in_dim * (n_history + 1), in_dim, 1, bias=False),
                ChannelAttentionBlock(in_dim, kernel_size, reduction, use_ca),
            )
        self.fuse = cab_stack(n_cab, in_dim + prompt_dim, kernel_size, reduction, use_ca)
        self.reduce = nn.Conv2d(in_dim + prompt_dim, in_dim, 1, bias=False)
        self.up = nn.Conv2d(in_dim, out_dim, 1, bias=False)
        self.out = ChannelAttentionBlock(out_dim, kernel_size, reduction, use_ca)

    def forward(
        self, x: torch.Tensor, prompt: torch.Tensor, skip: torch.Tensor, history: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Args:
            x: ``(N, in_dim, h, w)``.
            prompt: ``(N, prompt_dim, h, w)``.
            skip: ``(N, out_dim, 2h, 2w)``.
            history: ``(N, n_history * in_dim, h, w)`` or None (first cascade).

        Returns:
            ``(N, out_dim, 2h, 2w)``.
        """
        if self.momentum is not None:
            past = x.repeat(1, self.n_history, 1, 1) if history is None else history
            x = self.momentum(torch.cat([x, past], dim=1))
        x = self.reduce(self.fuse(torch.cat([x, prompt], dim=1)))
        x = F.interpolate(self.up(x), scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.out(x + skip)


class PromptUnet(nn.Module):
    """Three-level U-Net of CABs with prompt blocks in the decoder (the PromptMR+ denoiser).

    Spatial sizes must be multiples of 8 (the caller pads). Feature sizes per level: ``n_feat0`` at full
    resolution, ``feature_dim[l]`` at ``1 / 2^(l+1)``.
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        n_feat0: int,
        feature_dim: Sequence[int],
        prompt_dim: Sequence[int],
        len_prompt: Sequence[int],
        prompt_size: Sequence[int],
        n_enc_cab: Sequence[int],
        n_dec_cab: Sequence[int],
        n_skip_cab: Sequence[int],
        n_bottleneck_cab: int,
        kernel_size: int = 3,
        reduction: int = 4,
        use_ca: bool = True,
        learnable_prompt: bool = False,
        n_history: int = 0,
    ) -> None:
        """Args:
        in_chans, out_chans: real channels in and out.
        n_feat0: channels at full resolution.
        feature_dim: channels of the three down-sampled levels.
        prompt_dim, len_prompt, prompt_size: prompt channels, bank length and size per decoder level
            (index 0 = the shallowest level).
        n_enc_cab, n_dec_cab, n_skip_cab: CABs per level in the encoder, decoder fusion and skips.
        n_bottleneck_cab: CABs in the bottleneck.
        kernel_size: kernel of the CAB convolutions.
        reduction: channel-attention reduction.
        use_ca: channel attention in the CABs.
        learnable_prompt: train the prompt banks.
        n_history: decoder features of this many previous cascades fused in (0: none).
        """
        super().__init__()
        for name, value in (
            ("feature_dim", feature_dim),
            ("prompt_dim", prompt_dim),
            ("len_prompt", len_prompt),
            ("prompt_size", prompt_size),
            ("n_enc_cab", n_enc_cab),
            ("n_dec_cab", n_dec_cab),
            ("n_skip_cab", n_skip_cab),
        ):
            if len(value) != 3:
                raise ValueError(f"{name} needs 3 values (one per level), got {list(value)}")
        fd, pd = [int(v) for v in feature_dim], [int(v) for v in prompt_dim]
        self.feature_dim = fd
        self.n_history = int(n_history)
        ks, red, ca = kernel_size, reduction, use_ca

        self.feat_extract = conv(in_chans, n_feat0, kernel_size)
        widths = [n_feat0, *fd]
        self.enc = nn.ModuleList(
            DownBlock(widths[i], widths[i + 1], n_enc_cab[i], ks, red, ca) for i in range(3)
        )
        self.skip = nn.ModuleList(cab_stack(n_skip_cab[i], widths[i], ks, red, ca) for i in range(3))
        self.bottleneck = cab_stack(n_bottleneck_cab, fd[2], ks, red, ca)
        # decoder level i maps widths[i + 1] -> widths[i]; listed shallow to deep like the encoder
        self.prompt = nn.ModuleList(
            PromptBlock(pd[i], len_prompt[i], prompt_size[i], fd[i], learnable_prompt) for i in range(3)
        )
        self.dec = nn.ModuleList(
            UpBlock(fd[i], widths[i], pd[i], n_dec_cab[i], ks, red, ca, self.n_history) for i in range(3)
        )
        self.conv_last = conv(n_feat0, out_chans, 5)

    def forward(self, x: torch.Tensor, history: History | None = None) -> tuple[torch.Tensor, History | None]:
        """Args:
            x: ``(N, in_chans, H, W)`` with ``H, W`` multiples of 8.
            history: the previous cascades' decoder-input features (deepest level first), or None.

        Returns:
            ``(out (N, out_chans, H, W), history)``; the returned history (None when ``n_history == 0``) has this
            cascade's features in front and the oldest dropped.
        """
        x = self.feat_extract(x)
        skips = []
        for level in self.enc:
            x, skip = level(x)
            skips.append(skip)
        x = self.bottleneck(x)
        current = []
        for i in (2, 1, 0):
            current.append(x)
            past = None if history is None else history[2 - i]
            x = self.dec[i](x, self.prompt[i](x), self.skip[i](skips[i]), past)
        out = self.conv_last(x)
        if self.n_history == 0:
            return out, None
        if history is None:
            new = tuple(f.repeat(1, self.n_history, 1, 1) for f in current)
        else:
            new = tuple(
                torch.cat([f, h[:, : h.shape[1] - f.shape[1]]], dim=1)
                for f, h in zip(current, history, strict=True)
            )
        return out, (new[0], new[1], new[2])
