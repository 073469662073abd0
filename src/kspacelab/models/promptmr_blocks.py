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

Convolutions have no bias except the down-sampling ones and the prompt-weight linear layer.

**State-dict names are those of the reference implementation** (hellopipu/PromptMR-plus, ``models/utils.py``
and ``models/promptmr.py``), so that its weights load with ``strict=True``: ``enc_level1..3``,
``skip_attn1..3.skip_attn``, ``bottleneck``, ``prompt_level1..3.{prompt_param, linear_layer, dec_conv3x3}``,
``dec_level1..3.{momentum, fuse, reduce, up.1, ca}``, ``conv_last``; a CAB is ``body.0/1/2`` (conv, PReLU,
conv) and ``CA.conv_du.0/2`` (squeeze, excite); a prompt bank has shape ``(1, len_prompt, prompt_dim, size,
size)``. The computation is reordered where it is cheaper (global means instead of pooling layers, the up
path's 1x1 convolution before the resize).

**PReLU sharing.** A CAB takes an optional ``act`` module: given one, every CAB that receives it uses (and
registers under ``body.1``) that same one-parameter PReLU; otherwise each CAB has its own. The reference passes
one PReLU, created once as a default argument, to every CAB of every U-Net of a model except the first CAB of
each U-Net's first encoder level (which always makes its own; that level therefore has at least one CAB).
:class:`kspacelab.models.PromptMR` reproduces this with ``shared_prelu=True``.
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
    "SkipBlock",
    "UpBlock",
]

#: Decoder features of the previous cascades, one tensor per decoder level (deepest first):
#: ``(N, n_history * C_l, H_l, W_l)`` with the most recent cascade's feature first.
History = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def conv(in_chans: int, out_chans: int, kernel_size: int, bias: bool = False, stride: int = 1) -> nn.Conv2d:
    """``kernel_size`` x ``kernel_size`` convolution with "same" padding (``kernel_size // 2``)."""
    return nn.Conv2d(in_chans, out_chans, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias)


class ChannelAttention(nn.Module):
    """Squeeze-excitation gate: ``x * sigmoid(W2 relu(W1 mean_hw(x)))`` with ``W1: C -> C // reduction``.

    ``conv_du`` holds the reference's layers (1x1 conv, ReLU, 1x1 conv, sigmoid); the global mean replaces its
    pooling layer.
    """

    def __init__(self, chans: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, chans // reduction)
        self.conv_du = nn.Sequential(
            nn.Conv2d(chans, hidden, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(hidden, chans, 1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> same shape."""
        return x * self.conv_du(x.mean(dim=(-2, -1), keepdim=True))


class ChannelAttentionBlock(nn.Module):
    """Residual block ``x + CA(conv(PReLU(conv(x))))`` (CAB); ``CA`` is the identity with ``use_ca=False``."""

    def __init__(
        self,
        chans: int,
        kernel_size: int = 3,
        reduction: int = 4,
        use_ca: bool = True,
        act: nn.Module | None = None,
    ) -> None:
        """Args:
        chans: channels in and out.
        kernel_size: size of the two convolutions.
        reduction: channel reduction of the attention's hidden layer.
        use_ca: apply channel attention to the residual.
        act: the activation to use (a PReLU shared with other blocks); None: a PReLU of this block's own.
        """
        super().__init__()
        self.body = nn.Sequential(
            conv(chans, chans, kernel_size),
            nn.PReLU() if act is None else act,
            conv(chans, chans, kernel_size),
        )
        self.CA: nn.Module = ChannelAttention(chans, reduction) if use_ca else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> same shape."""
        return x + self.CA(self.body(x))


class _CabSettings:
    """What every CAB of a U-Net is built with: kernel, reduction, attention and the (shared) activation."""

    def __init__(self, kernel_size: int, reduction: int, use_ca: bool, act: nn.Module | None) -> None:
        self.kernel_size, self.reduction, self.use_ca, self.act = kernel_size, reduction, use_ca, act

    def cab(self, chans: int, own_act: bool = False) -> ChannelAttentionBlock:
        """A CAB; with ``own_act`` it gets a PReLU of its own even when the others share one."""
        act = None if own_act else self.act
        return ChannelAttentionBlock(chans, self.kernel_size, self.reduction, self.use_ca, act)

    def stack(self, n: int, chans: int) -> nn.Sequential:
        """``n`` CABs in a row (an empty ``Sequential``, the identity, for ``n = 0``)."""
        return nn.Sequential(*(self.cab(chans) for _ in range(n)))


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
        self.prompt_param = nn.Parameter(
            torch.rand(1, len_prompt, prompt_dim, prompt_size, prompt_size), requires_grad=learnable
        )
        self.linear_layer = nn.Linear(feature_dim, len_prompt)
        self.dec_conv3x3 = conv(prompt_dim, prompt_dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, feature_dim, H, W)`` -> prompt ``(N, prompt_dim, H, W)``."""
        weights = torch.softmax(self.linear_layer(x.mean(dim=(-2, -1))), dim=1)  # (N, len_prompt)
        bank = self.prompt_param[0].to(x.dtype)
        prompt = torch.einsum("nl,lchw->nchw", weights, bank)
        prompt = F.interpolate(prompt, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.dec_conv3x3(prompt)


class DownBlock(nn.Module):
    """Encoder level: CABs at ``in_chans`` (the skip feature), then a stride-2 3x3 convolution.

    With ``first_own_act`` (the first level) the first CAB has a PReLU of its own and the level has
    ``max(n_cab, 1)`` CABs, as in the reference.
    """

    def __init__(
        self, in_chans: int, out_chans: int, n_cab: int, cabs: _CabSettings, first_own_act: bool = False
    ) -> None:
        super().__init__()
        if first_own_act:
            self.encoder = nn.Sequential(
                cabs.cab(in_chans, own_act=True), *(cabs.cab(in_chans) for _ in range(n_cab - 1))
            )
        else:
            self.encoder = cabs.stack(n_cab, in_chans)
        self.down = nn.Conv2d(in_chans, out_chans, 3, stride=2, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, in, H, W)`` -> ``(down (N, out, H/2, W/2), skip (N, in, H, W))``."""
        skip = self.encoder(x)
        return self.down(skip), skip


class SkipBlock(nn.Module):
    """Skip connection: ``n_cab`` CABs (the identity for 0)."""

    def __init__(self, chans: int, n_cab: int, cabs: _CabSettings) -> None:
        super().__init__()
        self.skip_attn: nn.Module = cabs.stack(n_cab, chans) if n_cab else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> same shape."""
        return self.skip_attn(x)


class UpBlock(nn.Module):
    """Decoder level: [momentum] -> concat prompt -> CABs -> 1x1 reduce -> x2 up + 1x1 -> + skip -> CAB.

    With ``n_history > 0`` the feature is first concatenated with the ``n_history`` stored features of the
    previous cascades (or ``n_history`` copies of itself in the first cascade) and fused back to ``in_dim``
    channels by a 1x1 convolution and a CAB (the "momentum" layer). ``up`` is the reference's
    ``(Upsample, 1x1 conv)`` pair; the convolution is applied before the bilinear resize (the two linear maps
    commute; 4x fewer operations).
    """

    def __init__(
        self, in_dim: int, out_dim: int, prompt_dim: int, n_cab: int, cabs: _CabSettings, n_history: int = 0
    ) -> None:
        super().__init__()
        self.n_history = n_history
        self.momentum: nn.Module | None = None
        if n_history > 0:
            self.momentum = nn.Sequential(
                nn.Conv2d(in_dim * (n_history + 1), in_dim, 1, bias=False), cabs.cab(in_dim)
            )
        self.fuse = cabs.stack(n_cab, in_dim + prompt_dim)
        self.reduce = nn.Conv2d(in_dim + prompt_dim, in_dim, 1, bias=False)
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False),
            nn.Conv2d(in_dim, out_dim, 1, bias=False),
        )
        self.ca = cabs.cab(out_dim)

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
        upsample, project = self.up[0], self.up[1]
        return self.ca(upsample(project(x)) + skip)


class PromptUnet(nn.Module):
    """Three-level U-Net of CABs with prompt blocks in the decoder (the PromptMR+ denoiser).

    Spatial sizes must be multiples of 8 (the caller pads). Feature sizes per level: ``n_feat0`` at full
    resolution, ``feature_dim[l]`` at ``1 / 2^(l+1)``. Level ``l`` (1 = shallowest) is ``enc_level{l}``,
    ``skip_attn{l}``, ``prompt_level{l}`` and ``dec_level{l}``.
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
        act: nn.Module | None = None,
    ) -> None:
        """Args:
        in_chans, out_chans: real channels in and out.
        n_feat0: channels at full resolution.
        feature_dim: channels of the three down-sampled levels.
        prompt_dim, len_prompt, prompt_size: prompt channels, bank length and size per decoder level
            (index 0 = the shallowest level).
        n_enc_cab, n_dec_cab, n_skip_cab: CABs per level in the encoder, decoder fusion and skips (the first
            encoder level has at least one).
        n_bottleneck_cab: CABs in the bottleneck.
        kernel_size: kernel of the CAB convolutions.
        reduction: channel-attention reduction.
        use_ca: channel attention in the CABs.
        learnable_prompt: train the prompt banks.
        n_history: decoder features of this many previous cascades fused in (0: none).
        act: one PReLU that every CAB but the first uses (the reference's sharing); None: one PReLU per CAB.
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
        cabs = _CabSettings(kernel_size, reduction, use_ca, act)

        self.feat_extract = conv(in_chans, n_feat0, kernel_size)
        widths = [n_feat0, *fd]
        self.enc_level1 = DownBlock(widths[0], widths[1], n_enc_cab[0], cabs, first_own_act=True)
        self.enc_level2 = DownBlock(widths[1], widths[2], n_enc_cab[1], cabs)
        self.enc_level3 = DownBlock(widths[2], widths[3], n_enc_cab[2], cabs)
        self.skip_attn1 = SkipBlock(widths[0], n_skip_cab[0], cabs)
        self.skip_attn2 = SkipBlock(widths[1], n_skip_cab[1], cabs)
        self.skip_attn3 = SkipBlock(widths[2], n_skip_cab[2], cabs)
        self.bottleneck = cabs.stack(n_bottleneck_cab, fd[2])
        # decoder level l maps widths[l] -> widths[l - 1]; built deepest first, as the reference registers them
        self.prompt_level3 = PromptBlock(pd[2], len_prompt[2], prompt_size[2], fd[2], learnable_prompt)
        self.dec_level3 = UpBlock(fd[2], widths[2], pd[2], n_dec_cab[2], cabs, self.n_history)
        self.prompt_level2 = PromptBlock(pd[1], len_prompt[1], prompt_size[1], fd[1], learnable_prompt)
        self.dec_level2 = UpBlock(fd[1], widths[1], pd[1], n_dec_cab[1], cabs, self.n_history)
        self.prompt_level1 = PromptBlock(pd[0], len_prompt[0], prompt_size[0], fd[0], learnable_prompt)
        self.dec_level1 = UpBlock(fd[0], widths[0], pd[0], n_dec_cab[0], cabs, self.n_history)
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
        x, skip1 = self.enc_level1(x)
        x, skip2 = self.enc_level2(x)
        x, skip3 = self.enc_level3(x)
        x = self.bottleneck(x)
        levels = (
            (self.prompt_level3, self.dec_level3, self.skip_attn3, skip3),
            (self.prompt_level2, self.dec_level2, self.skip_attn2, skip2),
            (self.prompt_level1, self.dec_level1, self.skip_attn1, skip1),
        )
        current = []
        for depth, (prompt, dec, skip_attn, skip) in enumerate(levels):
            current.append(x)
            past = None if history is None else history[depth]
            x = dec(x, prompt(x), skip_attn(skip), past)
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
