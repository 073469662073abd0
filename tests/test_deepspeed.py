"""DeepSpeed as Team EJ used it: ZeRO stage 1, optimiser state and step offloaded to the CPU (DeepSpeed's CPU
AdamW), through Lightning's DeepSpeed strategy (recipe snu2025_ej_deepspeed, extra ``kspacelab[deepspeed]``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import yaml

from helpers import tiny_overrides
from kspacelab.errors import KspacelabError
from kspacelab.training.module import ReconModule, configure_optimization
from kspacelab.training.run import fit

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "src" / "kspacelab" / "configs"
RECIPES = [CONFIGS / "snu2025_promptmr_ej.yaml", CONFIGS / "snu2025_ej_deepspeed.yaml"]
HAVE_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


def test_recipe_resolves_to_zero_stage_1_with_cpu_offload(capsys: pytest.CaptureFixture[str]) -> None:
    """Runs everywhere: the resolved configuration (as `kspacelab train --print_config` shows it)."""
    fit(RECIPES, print_config=True)
    config = yaml.safe_load(capsys.readouterr().out)
    strategy = config["trainer"]["strategy"]
    assert strategy["class_path"] == "lightning.pytorch.strategies.DeepSpeedStrategy"
    args = strategy["init_args"]
    assert args["stage"] == 1 and args["zero_optimization"] is True
    assert args["offload_optimizer"] is True and args["offload_optimizer_device"] == "cpu"
    assert args["offload_parameters"] is False and args["pin_memory"] is True
    assert config["model"]["optimizer"] == "deepspeed_cpu_adamw"
    assert config["trainer"]["accelerator"] == "gpu" and config["trainer"]["gradient_clip_val"] == 0.01
    # the rest is EJ's recipe, unchanged
    assert config["model"]["model_kwargs"]["num_cascades"] == 8
    assert config["trainer"]["accumulate_grad_batches"] == 2


@pytest.mark.skipif(HAVE_DEEPSPEED, reason="DeepSpeed is installed: the optimiser is built instead")
def test_cpu_adamw_without_deepspeed_is_one_line() -> None:
    tiny = {"num_cascades": 1, "chans": 4, "sens_chans": 2, "pools": 2, "sens_pools": 2}
    module = ReconModule(model_kwargs=tiny, optimizer="deepspeed_cpu_adamw")
    with pytest.raises(KspacelabError, match=r"pip install 'kspacelab\[deepspeed\]'") as err:
        configure_optimization(module)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(
    not HAVE_DEEPSPEED, reason="DeepSpeed is not installed (pip install 'kspacelab[deepspeed]')"
)
@pytest.mark.skipif(not torch.cuda.is_available(), reason="DeepSpeed's ZeRO strategy needs a CUDA GPU")
def test_zero_stage_1_offload_trains_two_steps(tiny_root: Path, tmp_path: Path) -> None:
    """Two optimiser steps of a tiny PromptMR+ under ZeRO-1 with the CPU-offloaded AdamW (not run where this
    was written: no CUDA there). DeepSpeed writes its checkpoints as folders."""
    words = [*tiny_overrides("promptmr"), "--data.root", str(tiny_root), "--trainer.max_steps", "2"]
    words += ["--trainer.limit_val_batches", "1", "--trainer.accumulate_grad_batches", "1"]
    words += ["--trainer.enable_progress_bar", "false", "--trainer.precision", "32-true"]
    fit(RECIPES, words, tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
