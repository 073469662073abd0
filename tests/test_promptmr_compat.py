"""PromptMR+ weights from the reference implementation and from older kspacelab: names, shapes, the shared
PReLU, the configuration read off the tensors, the wrappers teams saved them in, and `reconstruct --checkpoint`.

tests/fixtures/promptmr_tiny.pt was written once by the reference implementation
(tests/fixtures/make_promptmr_fixture.py); tests/fixtures/promptmr_legacy_tiny.pt by kspacelab before it took
the reference's names (tests/fixtures/make_promptmr_legacy_fixture.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from kspacelab import formats
from kspacelab.cli import main
from kspacelab.errors import KspacelabError
from kspacelab.models import PromptMR
from kspacelab.models.promptmr_compat import is_legacy_state_dict, promptmr_kwargs, upgrade_legacy_keys
from kspacelab.training import load_model, read_state_dict

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = FIXTURES / "promptmr_tiny.pt"
LEGACY = FIXTURES / "promptmr_legacy_tiny.pt"


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    fixture: dict[str, Any] = torch.load(REFERENCE, weights_only=True)
    return fixture


@pytest.fixture(scope="module")
def legacy() -> dict[str, Any]:
    fixture: dict[str, Any] = torch.load(LEGACY, weights_only=True)
    return fixture


def _run(model: nn.Module, fixture: dict[str, Any]) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model.eval()(fixture["masked_kspace"], fixture["mask"], None)
    return out


def _cabs(model: nn.Module) -> list[nn.Module]:
    return [m for name, m in model.named_modules(remove_duplicate=False) if name.endswith(".body")]


# ----------------------------------------------------------------------------------------------------------
# The reference implementation's weights
# ----------------------------------------------------------------------------------------------------------
def test_reference_weights_load_strictly_and_give_its_output(reference: dict[str, Any]) -> None:
    model = PromptMR(**reference["config"])
    model.load_state_dict(reference["state_dict"], strict=True)
    out = _run(model, reference)
    torch.testing.assert_close(out, reference["output"], rtol=1e-5, atol=1e-5)
    # the centre slice's sensitivity maps too (the reference returns them as a second output)
    adj = reference["config"]["num_adj_slices"]
    kspace = torch.view_as_complex(reference["masked_kspace"])
    with torch.no_grad():
        maps = model.sensitivity_maps(kspace, reference["mask"][..., 0], None)
    coils = kspace.shape[1] // adj
    centre = maps[:, adj // 2 * coils : (adj // 2 + 1) * coils]
    torch.testing.assert_close(centre, reference["sens_maps_centre"], rtol=1e-5, atol=1e-5)


def test_names_shapes_and_parameter_count_are_the_references(reference: dict[str, Any]) -> None:
    model = PromptMR(**reference["config"])
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in reference["state_dict"].items()}
    assert sum(p.numel() for p in model.parameters()) == reference["parameters"]


def test_shared_prelu_is_one_parameter_except_each_unets_first(reference: dict[str, Any]) -> None:
    config = reference["config"]
    shared, separate = PromptMR(**config), PromptMR(**config, shared_prelu=False)
    unets = 1 + config["num_cascades"]
    cabs = _cabs(separate)
    assert len(cabs) == len(_cabs(shared)) > 2 * unets
    # one slope for the whole model, plus one of its own in the first CAB of every U-Net
    assert len({id(body[1]) for body in _cabs(shared)}) == unets + 1
    assert len({id(body[1]) for body in cabs}) == len(cabs)
    first = shared.sens_net.norm_unet.unet.enc_level1.encoder
    assert first[1].body[1] is shared.cascades[-1].model.unet.bottleneck[0].body[1]
    assert first[0].body[1] is not first[1].body[1]
    count = sum(p.numel() for p in shared.parameters())
    assert sum(p.numel() for p in separate.parameters()) - count == len(cabs) - unets - 1
    # a training step moves the one shared slope by the gradient summed over every block that uses it
    out = shared(reference["masked_kspace"], reference["mask"], None)
    out.mean().backward()
    slope = first[1].body[1].weight
    assert slope.grad is not None and slope.grad.abs().sum() > 0


def test_configuration_is_read_off_the_tensors(reference: dict[str, Any]) -> None:
    inferred = promptmr_kwargs(reference["state_dict"])
    assert inferred is not None
    readable = {k: v for k, v in reference["config"].items() if k != "learnable_prompt"}  # not in the tensors
    assert {k: inferred[k] for k in readable} == readable
    assert inferred["shared_prelu"] and inferred["reduction"] == 4  # the reference's fixed reduction
    model = PromptMR(**inferred)
    model.load_state_dict(reference["state_dict"], strict=True)
    torch.testing.assert_close(_run(model, reference), reference["output"], rtol=1e-5, atol=1e-5)
    assert promptmr_kwargs({"cascades.0.dc_weight": torch.ones(1)}) is None


@pytest.mark.parametrize(
    "options",
    [
        {"reduction": 2, "n_history": 0, "no_use_ca": False},  # sMaRtIfy's reduction
        {"reduction": 4, "no_use_ca": True, "n_buffer": 3},  # EJ's attention off
        {"adaptive_input": False, "n_skip_cab": [0, 0, 0], "n_bottleneck_cab": 2},
    ],
    ids=["reduction-2", "no-ca", "no-buffer"],
)
def test_other_configurations_are_read_off_their_tensors(
    reference: dict[str, Any], options: dict[str, Any]
) -> None:
    config = {**reference["config"], **options}
    original = PromptMR(**config)
    inferred = promptmr_kwargs(original.state_dict())
    assert inferred is not None
    rebuilt = PromptMR(**inferred)
    rebuilt.load_state_dict(original.state_dict(), strict=True)
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in original.parameters())
    torch.testing.assert_close(_run(rebuilt, reference), _run(original, reference), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------
# kspacelab's older names
# ----------------------------------------------------------------------------------------------------------
def test_older_kspacelab_weights_are_renamed_on_load(legacy: dict[str, Any]) -> None:
    state = legacy["state_dict"]
    assert is_legacy_state_dict(state) and not is_legacy_state_dict(upgrade_legacy_keys(state))
    model = PromptMR(**legacy["config"], shared_prelu=False)
    model.load_state_dict(state, strict=True)
    torch.testing.assert_close(_run(model, legacy), legacy["output"], rtol=0, atol=1e-6)
    # their PReLU slopes differ per block: a model sharing one refuses them instead of keeping the last
    with pytest.raises(RuntimeError, match=r"PReLU slopes .* build the model with shared_prelu=False"):
        PromptMR(**legacy["config"]).load_state_dict(state)


def test_an_older_kspacelab_training_checkpoint_loads(legacy: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "old.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in legacy["state_dict"].items()},
            "hyper_parameters": {"model_name": "promptmr", "model_kwargs": dict(legacy["config"])},
        },
        path,
    )
    loaded = load_model(path)
    assert loaded.config == {**legacy["config"], "shared_prelu": False}
    torch.testing.assert_close(_run(loaded.model, legacy), legacy["output"], rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Wrappers: plain, Lightning (promptmr. / model. prefix, other entries), DeepSpeed (module)
# ----------------------------------------------------------------------------------------------------------
def _plain(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    return dict(state)


def _lightning(prefix: str) -> Callable[[dict[str, torch.Tensor]], dict[str, Any]]:
    def wrap(state: dict[str, torch.Tensor]) -> dict[str, Any]:
        weights = {f"{prefix}{k}": v for k, v in state.items()}
        weights["loss.w"] = torch.ones(1, 1, 7, 7) / 49  # a training module's own buffer (an SSIM window)
        return {"epoch": 3, "global_step": 120, "state_dict": weights}

    return wrap


def _deepspeed(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {
        "module": {f"promptmr.{k}": v for k, v in state.items()},
        "buffer_names": [],
        "optimizer": None,
        "param_shapes": [{"promptmr.cascades.0.dc_weight": torch.Size([1])}],
        "ds_config": {"zero_optimization": {"stage": 1}},
        "ds_version": "0.14.0",
        "global_steps": 120,
    }


@pytest.mark.parametrize(
    "wrap",
    [_plain, _lightning("promptmr."), _lightning("model."), _lightning("net.module."), _deepspeed],
    ids=["plain", "lightning-promptmr", "lightning-model", "lightning-other", "deepspeed"],
)
def test_load_model_takes_the_wrappers_teams_used(
    wrap: Callable[[dict[str, torch.Tensor]], dict[str, Any]], reference: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "mp_rank_00_model_states.pt"
    torch.save(wrap(reference["state_dict"]), path)
    loaded = load_model(path)
    assert loaded.name == "promptmr" and loaded.provenance.format == "state_dict"
    assert loaded.input_spec.num_adj_slices == reference["config"]["num_adj_slices"]
    torch.testing.assert_close(_run(loaded.model, reference), reference["output"], rtol=1e-5, atol=1e-5)


def test_a_stage_can_start_from_reference_weights(reference: dict[str, Any], tmp_path: Path) -> None:
    """`train --init-weights` reads weights through read_state_dict: a reference Lightning checkpoint works."""
    path = tmp_path / "epoch=49.ckpt"
    torch.save(_lightning("promptmr.")(reference["state_dict"]), path)
    model = PromptMR(**reference["config"])
    model.load_state_dict(read_state_dict(path), strict=True)
    torch.testing.assert_close(_run(model, reference), reference["output"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            {"encoder.weight": torch.ones(2)},
            "unknown weights (neither a fastMRI VarNet or U-Net nor a PromptMR+",
        ),
        ({"epoch": 3, "state_dict": {"loss.w": torch.ones(1)}}, "unknown weights"),
        ({"module": {"a": 1}, "ds_version": "0.14.0"}, "no model weights found"),
    ],
    ids=["state-dict", "lightning", "deepspeed-without-tensors"],
)
def test_other_files_are_refused_in_one_line(content: dict[str, Any], expected: str, tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(content, path)
    with pytest.raises(KspacelabError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and expected in message


def test_weights_that_do_not_fit_the_given_configuration_are_one_line(
    reference: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "weights.pt"
    torch.save(reference["state_dict"], path)
    config = tmp_path / "model.yaml"
    config.write_text(yaml.safe_dump({**reference["config"], "n_feat0": 8}))
    with pytest.raises(KspacelabError) as info:
        load_model(path, model_config=config)
    message = str(info.value)
    assert (
        "\n" not in message
        and "weights do not fit model 'promptmr'" in message
        and "size mismatch" in message
    )
    with pytest.raises(KspacelabError, match="no model configuration"):
        config.write_text("[1, 2]\n")
        load_model(path, model_config=config)


# ----------------------------------------------------------------------------------------------------------
# reconstruct --checkpoint with such a file (and the reference's own configuration file)
# ----------------------------------------------------------------------------------------------------------
def test_reconstruct_takes_reference_weights_and_configuration(
    reference: dict[str, Any], tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "mp_rank_00_model_states.pt"
    torch.save(_deepspeed(reference["state_dict"]), weights)
    config = tmp_path / "pmr-plus.yaml"  # laid out as the reference's configs/model/*.yaml
    init_args = {**reference["config"], "lr_gamma": 0.1, "weight_decay": 0.01}
    config.write_text(
        yaml.safe_dump({"model": {"class_path": "pl_modules.PromptMrModule", "init_args": init_args}})
    )
    leaderboard = tiny_root / "leaderboard"
    out = tmp_path / "recon"
    args = [
        "reconstruct",
        "--data",
        str(leaderboard),
        "--out",
        str(out),
        "--checkpoint",
        str(weights),
        "--quiet",
    ]
    assert main([*args, "--model-config", str(config)]) == 0
    expected = sorted(leaderboard.glob("acc*/kspace/*.h5"))
    assert expected
    for path in expected:
        recon = formats.read_reconstruction(out / path.parent.parent.name / path.name)
        assert recon.dtype == np.float32 and np.isfinite(recon).all() and recon.max() > 0
    capsys.readouterr()
    assert main(["reconstruct", "--data", str(leaderboard), "--out", str(tmp_path / "x"), "--method", "zero-filled",
                 "--model-config", str(config), "--quiet"]) == 2  # fmt: skip
    assert "--model-config applies to --checkpoint" in capsys.readouterr().err
