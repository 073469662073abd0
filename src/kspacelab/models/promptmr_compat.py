"""PromptMR+ state dicts from elsewhere: the reference implementation's weights and kspacelab's older names.

* :func:`promptmr_kwargs` reads a :class:`kspacelab.models.PromptMR` configuration off the tensor shapes of a
  state dict in the reference implementation's names (hellopipu/PromptMR-plus; the published weights and the
  checkpoints of the teams that started from it): cascades, channels, prompt banks, CABs per level, channel
  attention and its reduction, history, adjacent slices and the adaptive-input buffer.
* :func:`upgrade_legacy_keys` renames the parameters of kspacelab checkpoints written before the model took the
  reference's names (``enc.0.`` -> ``enc_level1.``, ``skip.0.`` -> ``skip_attn1.skip_attn.``, ``dec.0.`` ->
  ``dec_level1.``, ``prompt.0.{prompt, linear, conv}`` -> ``prompt_level1.{prompt_param, linear_layer,
  dec_conv3x3}``, a CAB's ``conv1/act/conv2`` -> ``body.0/1/2`` and ``ca.squeeze/excite`` ->
  ``CA.conv_du.0/2``, a decoder's ``up``/``out`` -> ``up.1``/``ca``) and gives the prompt banks their leading
  axis of 1. Those models had one PReLU per CAB: they load into ``PromptMR(shared_prelu=False)``.
* :func:`shared_prelu_conflict` says whether weights with a PReLU slope per CAB would be merged wrongly into a
  model that shares one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

__all__ = [
    "is_legacy_state_dict",
    "promptmr_kwargs",
    "shared_prelu_conflict",
    "upgrade_legacy_keys",
]

_LEGACY = re.compile(r"(?:^|\.)unet\.(?:enc|skip|prompt|dec)\.\d+\.")
#: (pattern, replacement) applied in order to every key of a legacy state dict
_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"\.conv1\.", ".body.0."),
        (r"\.act\.weight$", ".body.1.weight"),
        (r"\.conv2\.", ".body.2."),
        (r"\.ca\.squeeze\.", ".CA.conv_du.0."),
        (r"\.ca\.excite\.", ".CA.conv_du.2."),
        (r"\.unet\.enc\.(\d)\.", r".unet.enc_level<\1>."),
        (r"\.unet\.skip\.(\d)\.", r".unet.skip_attn<\1>.skip_attn."),
        (r"\.unet\.prompt\.(\d)\.prompt$", r".unet.prompt_level<\1>.prompt_param"),
        (r"\.unet\.prompt\.(\d)\.linear\.", r".unet.prompt_level<\1>.linear_layer."),
        (r"\.unet\.prompt\.(\d)\.conv\.", r".unet.prompt_level<\1>.dec_conv3x3."),
        (r"\.unet\.dec\.(\d)\.up\.weight$", r".unet.dec_level<\1>.up.1.weight"),
        (r"\.unet\.dec\.(\d)\.out\.", r".unet.dec_level<\1>.ca."),
        (r"\.unet\.dec\.(\d)\.", r".unet.dec_level<\1>."),
    )
)
_LEVEL = re.compile(r"<(\d)>")
_CASCADE = re.compile(r"^cascades\.(\d+)\.dc_weight$")
_SENS = "sens_net.norm_unet.unet."
_CASC = "cascades.0.model.unet."
#: the first CAB of a U-Net's first encoder level always has a PReLU of its own
_OWN_PRELU = "enc_level1.encoder.0.body.1.weight"


def is_legacy_state_dict(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` holds PromptMR+ weights under kspacelab's names before the reference's (``unet.enc.0.``)."""
    return any(_LEGACY.search(key) for key in state)


def _rename(key: str) -> str:
    text = "." + key
    for pattern, replacement in _RENAMES:
        text = pattern.sub(replacement, text)
    return _LEVEL.sub(lambda m: str(int(m.group(1)) + 1), text)[1:]


def upgrade_legacy_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with kspacelab's old PromptMR+ names replaced by the reference's (other keys unchanged).

    Prompt banks ``(L, D, S, S)`` become ``(1, L, D, S, S)``. A state dict without the old names (see
    :func:`is_legacy_state_dict`) is returned as it is.
    """
    if not is_legacy_state_dict(state):
        return dict(state)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = _rename(key)
        if new.endswith(".prompt_param") and value.ndim == 4:
            value = value.unsqueeze(0)
        out[new] = value
    return out


def shared_prelu_conflict(state: Mapping[str, torch.Tensor], prefix: str = "") -> str | None:
    """Why ``state`` cannot load into a model whose CABs share one PReLU (None when it can).

    In such a model every ``body.1.weight`` under ``prefix`` but each U-Net's first is the same parameter; the
    weights must then hold one value for all of them (as the reference's do).
    """
    slopes = [
        value
        for key, value in state.items()
        if key.startswith(prefix) and key.endswith(".body.1.weight") and not key.endswith(_OWN_PRELU)
    ]
    if len(slopes) < 2 or all(torch.equal(slopes[0], s) for s in slopes[1:]):
        return None
    distinct = len({tuple(s.flatten().tolist()) for s in slopes})
    return (
        f"the weights have {distinct} different PReLU slopes where a model with shared_prelu=True has one "
        "(they were trained with a PReLU per block: build the model with shared_prelu=False)"
    )


def _count(state: Mapping[str, Any], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for key in state if (m := regex.match(key))})


def _reduction(shapes: list[tuple[int, int]]) -> int:
    """The channel-attention reduction ``r`` with ``max(1, chans // r) == hidden`` for every ``(chans, hidden)``
    (4, the reference's, without channel attention)."""
    if not shapes:
        return 4
    for r in (4, *range(1, max(chans for chans, _ in shapes) + 1)):  # the reference's 4 when it fits
        if all(max(1, chans // r) == hidden for chans, hidden in shapes):
            return r
    raise ValueError(
        f"no channel-attention reduction fits the attention layers' shapes {sorted(set(shapes))}"
    )


def _unet_settings(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    """The U-Net under ``prefix``: channels, prompts, CABs per level, attention, history, real channels in."""
    p = re.escape(prefix)
    first = state[prefix + "feat_extract.weight"]
    banks = [state[f"{prefix}prompt_level{level}.prompt_param"] for level in (1, 2, 3)]
    for bank in banks:
        if bank.ndim != 5 or bank.shape[0] != 1 or bank.shape[-1] != bank.shape[-2]:
            raise ValueError(f"prompt bank of shape {tuple(bank.shape)}, expected (1, L, D, S, S)")
    squeezes = [v for k, v in state.items() if k.startswith(prefix) and k.endswith(".CA.conv_du.0.weight")]
    momentum = state.get(prefix + "dec_level1.momentum.0.weight")
    return {
        "in_chans": int(first.shape[1]),
        "n_feat0": int(first.shape[0]),
        "feature_dim": [int(state[f"{prefix}enc_level{i}.down.weight"].shape[0]) for i in (1, 2, 3)],
        "prompt_dim": [int(b.shape[2]) for b in banks],
        "len_prompt": [int(b.shape[1]) for b in banks],
        "prompt_size": [int(b.shape[-1]) for b in banks],
        "n_enc_cab": [_count(state, rf"{p}enc_level{i}\.encoder\.(\d+)\.") for i in (1, 2, 3)],
        "n_dec_cab": [_count(state, rf"{p}dec_level{i}\.fuse\.(\d+)\.") for i in (1, 2, 3)],
        "n_skip_cab": [_count(state, rf"{p}skip_attn{i}\.skip_attn\.(\d+)\.") for i in (1, 2, 3)],
        "n_bottleneck_cab": _count(state, rf"{p}bottleneck\.(\d+)\."),
        "no_use_ca": not squeezes,
        "reduction": _reduction([(int(w.shape[1]), int(w.shape[0])) for w in squeezes]),
        "n_history": 0 if momentum is None else int(momentum.shape[1]) // int(momentum.shape[0]) - 1,
    }


#: settings the sensitivity U-Net and the cascades' U-Nets share in kspacelab's PromptMR
_SHARED = (
    "len_prompt",
    "prompt_size",
    "n_enc_cab",
    "n_dec_cab",
    "n_skip_cab",
    "n_bottleneck_cab",
    "no_use_ca",
)


def promptmr_kwargs(state: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """:class:`kspacelab.models.PromptMR` arguments read off a state dict in the reference's names.

    Returns None when ``state`` is not a PromptMR+ state dict (no ``cascades.{i}.dc_weight`` with a prompt
    U-Net and a sensitivity prompt U-Net). ``num_adj_slices`` comes from the sensitivity net's input channels
    (``2 * num_adj_slices`` with ``use_sens_adj``); a sensitivity net of one slice is read as
    ``num_adj_slices = 1`` (a model trained with ``use_sens_adj=False`` and several slices needs its
    configuration given). ``learnable_prompt`` does not show in the tensors and is left False;
    ``shared_prelu`` is True when every shared slope holds one value.

    Raises:
        ValueError: a PromptMR+ state dict that kspacelab's model cannot express (one line).
    """
    cascades = {int(m.group(1)) for key in state if (m := _CASCADE.match(key))}
    needed = ("feat_extract.weight", "prompt_level1.prompt_param")
    if not cascades or not all(prefix + k in state for prefix in (_SENS, _CASC) for k in needed):
        return None
    casc, sens = _unet_settings(state, _CASC), _unet_settings(state, _SENS)
    differing = [k for k in _SHARED if casc[k] != sens[k]]
    if differing:
        names = ", ".join(differing)
        raise ValueError(
            f"the sensitivity net and the cascades differ in {names} (kspacelab's PromptMR uses the same values "
            "for both)"
        )
    adj = sens["in_chans"] // 2
    blocks, rest = divmod(casc["in_chans"], 2 * adj)
    if rest or sens["in_chans"] % 2:
        raise ValueError(
            f"input channels {casc['in_chans']} (cascades) and {sens['in_chans']} (sensitivities) do not fit "
            "2 x adjacent slices x (1 + n_buffer)"
        )
    n_buffer = blocks - 1
    return {
        "num_cascades": len(cascades),
        "num_adj_slices": adj,
        "n_feat0": casc["n_feat0"],
        "feature_dim": casc["feature_dim"],
        "prompt_dim": casc["prompt_dim"],
        "sens_n_feat0": sens["n_feat0"],
        "sens_feature_dim": sens["feature_dim"],
        "sens_prompt_dim": sens["prompt_dim"],
        **{k: casc[k] for k in _SHARED},
        "reduction": casc["reduction"],
        "adaptive_input": n_buffer > 0,
        "n_buffer": n_buffer if n_buffer > 0 else 4,
        "n_history": casc["n_history"],
        "use_sens_adj": True,
        "shared_prelu": shared_prelu_conflict(state) is None,
    }
