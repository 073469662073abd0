"""Every recipe in configs/ parses and trains a few steps on simulated data (tiny model overrides)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from kspacelab.cli import main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
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
    return sorted(p.name for p in CONFIGS.glob("*.yaml") if "model" in (yaml.safe_load(p.read_text()) or {}))


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
        *_tiny_overrides(stages[0][1]),
        "--trainer.max_steps",
        "1",
        *COMMON,
    ]
    assert main(argv) == 0
    for name, _, _ in stages:
        assert (tmp_path / "run" / name / "checkpoints" / "best.ckpt").is_file()
