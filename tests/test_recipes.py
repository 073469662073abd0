"""Every recipe in configs/ parses and trains a few steps on simulated data (tiny model overrides)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from kspacelab.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "src" / "kspacelab" / "configs"
TINY_MODELS: dict[str, dict[str, object]] = {
    "varnet": {"num_cascades": 1, "chans": 4, "sens_chans": 2, "pools": 2, "sens_pools": 2},
    "anatomy_classifier": {"chans": 4, "num_blocks": 2, "image_size": 32},
    "promptmr": {
        "num_cascades": 2, "n_feat0": 4, "feature_dim": [6, 8, 10], "prompt_dim": [2, 4, 6], "sens_n_feat0": 4,
        "sens_feature_dim": [4, 6, 8], "sens_prompt_dim": [2, 2, 2], "len_prompt": [2, 2, 2],
        "prompt_size": [8, 4, 2], "n_enc_cab": [1, 1, 1], "n_dec_cab": [1, 1, 1], "n_skip_cab": [1, 0, 1],
        "n_bottleneck_cab": 1, "n_history": 0,
    },
}  # fmt: skip


def _training_configs() -> list[str]:
    """Complete training configs (a model name); partial ones that go on top of another are left out."""
    return sorted(
        p.name
        for p in CONFIGS.glob("*.yaml")
        if "model_name" in ((yaml.safe_load(p.read_text()) or {}).get("model") or {})
    )


def _tiny_overrides(config: Path) -> list[str]:
    raw = yaml.safe_load(config.read_text())
    name = raw["model"]["model_name"]
    kwargs = dict(TINY_MODELS[name])
    if name == "promptmr":
        kwargs["num_adj_slices"] = int(raw.get("data", {}).get("num_adj_slices", 1))
    args = ["--model.model_kwargs", yaml.safe_dump(kwargs, default_flow_style=True).strip()]
    if name == "anatomy_classifier":
        args += ["--data.image_size", "32"]
    else:
        args += ["--data.num_workers", "0"]
    return args


COMMON = ["--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
          "--trainer.enable_model_summary", "false", "--trainer.accumulate_grad_batches", "1"]  # fmt: skip


@pytest.mark.parametrize("config", _training_configs())
def test_training_config_trains_two_steps(config: str, tiny_root: Path, tmp_path: Path) -> None:
    path = CONFIGS / config
    argv = ["train", "--config", str(path), "--data.root", str(tiny_root), *_tiny_overrides(path)]
    argv += ["--trainer.max_steps", "2", "--run-dir", str(tmp_path / "run"), *COMMON]
    assert main(argv) == 0
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


@pytest.mark.parametrize("recipe", sorted(p.name for p in CONFIGS.glob("*_stages.yaml")))
def test_staged_recipe_trains_one_step_per_stage(recipe: str, tiny_root: Path, tmp_path: Path) -> None:
    from kspacelab.training.stages import read_stages

    stages = read_stages(CONFIGS / recipe)
    argv = ["train", "--stages", str(CONFIGS / recipe), "--run-dir", str(tmp_path / "run"), "--quiet"]
    argv += [
        "--data.root",
        str(tiny_root),
        *_tiny_overrides(stages[0].configs[0]),
        "--trainer.max_steps",
        "1",
        *COMMON,
    ]
    assert main(argv) == 0
    for stage in stages:
        assert (tmp_path / "run" / stage.name / "checkpoints" / "best.ckpt").is_file()


def test_helper_variant_composes_with_the_model_recipe(tiny_root: Path, tmp_path: Path) -> None:
    """configs/snu2025_smartify_helper.yaml on top of the sMaRtIfy recipe: same model, mask augmentation on."""
    model, helper = CONFIGS / "snu2025_promptmr_smartify.yaml", CONFIGS / "snu2025_smartify_helper.yaml"
    argv = ["train", "--config", str(model), "--config", str(helper), "--data.root", str(tiny_root)]
    argv += [*_tiny_overrides(model), "--trainer.max_steps", "2", "--run-dir", str(tmp_path / "run"), *COMMON]
    assert main(argv) == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"]["mask_augment"] == yaml.safe_load(helper.read_text())["data"]["mask_augment"]
    assert saved["model"]["lr"] == yaml.safe_load(model.read_text())["model"]["lr"]


def test_recipe_members_take_a_list_of_configs_and_report_bad_ones(tmp_path: Path) -> None:
    from kspacelab.errors import KspacelabError
    from kspacelab.experts.training import read_recipe
    from kspacelab.training.recipes import compose
    from kspacelab.training.stages import read_stages

    (tmp_path / "a.yaml").write_text("model: {lr: 0.1}\n")
    (tmp_path / "b.yaml").write_text("model: {lr: 0.2}\n")
    stages = tmp_path / "stages.yaml"
    stages.write_text("stages:\n  - {name: one, config: [a.yaml, b.yaml]}\n  - {config: a.yaml}\n")
    first, second = read_stages(stages)
    assert (first.name, second.name) == ("one", "stage2")
    assert first.configs == (tmp_path / "a.yaml", tmp_path / "b.yaml")
    assert second.configs == (tmp_path / "a.yaml",)
    assert compose(first.configs) == {"model": {"lr": 0.2}}  # later configs override earlier ones
    assert compose(first.configs, ["--model.lr", "1e-3"]) == {"model": {"lr": 0.001}}
    bundle = tmp_path / "bundle.yaml"
    for bad, message in (
        ("[a.yaml, missing.yaml]", "config missing.yaml not found"),
        ("[]", "needs a 'config'"),
        ("{x: 1}", "needs a 'config'"),
    ):
        bundle.write_text(f"experts:\n  - {{name: e, config: {bad}}}\n")
        with pytest.raises(KspacelabError, match=message) as err:
            read_recipe(bundle)
        assert str(bundle) in str(err.value) and "\n" not in str(err.value)
