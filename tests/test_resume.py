"""Exact resume: a training run killed with SIGKILL and restarted with the same command ends with bitwise the
same weights as an uninterrupted run (random masks, MRAugment, an epoch boundary and validation included)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from helpers import KILL_AFTER_WRITE, REPO, assert_same_run, checkpoint_step, subprocess_env
from kspacelab.cli import main

STEPS = 12  # the tiny train split has 8 slices: the run crosses one epoch boundary (and a validation)


def _train_args(root: Path, run_dir: Path, steps: int = STEPS, *extra: str) -> list[str]:
    return [
        "train",
        "--config", str(REPO / "src" / "kspacelab" / "configs" / "demo.yaml"),
        "--data.root", str(root),
        "--model.model_kwargs", "{num_cascades: 1, chans: 4, sens_chans: 2, pools: 2, sens_pools: 2}",
        "--data.use_file_mask", "false", "--data.mask_type", "random", "--data.accelerations", "[4, 8]",
        "--data.center_fractions", "[0.08, 0.04]",
        "--data.augment", "{schedule: {strength: 0.5, kind: constant}}",
        "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "2",
        "--trainer.deterministic", "true", "--trainer.enable_progress_bar", "false",
        "--seed", "7", "--run-dir", str(run_dir), *extra,
    ]  # fmt: skip


def _command(root: Path, run_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "kspacelab.cli",
        *_train_args(root, run_dir, STEPS, "--save_every_n_steps", "1"),
    ]


def test_kill_and_rerun_gives_bitwise_identical_weights(tiny_root: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    done = subprocess.run(
        _command(tiny_root, reference), env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]

    run = tmp_path / "killed"
    last = run / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        _command(tiny_root, run), env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    while checkpoint_step(last) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = checkpoint_step(last)
    assert 3 <= killed_at < STEPS, f"the run was not killed mid-way (last checkpoint at step {killed_at})"

    again = subprocess.run(
        _command(tiny_root, run), env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stdout
    a = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["global_step"] == b["global_step"] == STEPS
    assert a["state_dict"].keys() == b["state_dict"].keys()
    different = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not different, f"weights differ after resuming from step {killed_at}: {different[:5]}"
    for key in ("optimizer_states", "lr_schedulers"):
        assert repr(a[key]) == repr(b[key])


#: (settings, max_steps, kill points): "external" kills the process (SIGKILL) as soon as last.ckpt of that step
#: is seen, "after_write" from inside right after writing it. The tiny train split has 8 slices per epoch.
#: Default settings write last.ckpt after every end-of-epoch validation (steps 8, 16) and at the end (20); with
#: a validation every 3 batches also mid-epoch (3, 6, 11) and at the end of an epoch without validation (8).
_DEFAULT_KILLS = {
    "default": ((), 20, (("external", 8), ("external", 16), ("after_write", 8))),
    "val_every_3": (
        ("--trainer.val_check_interval", "3"),
        12,
        (("external", 3), ("external", 6), ("after_write", 8)),
    ),
}


@pytest.mark.parametrize("setting", sorted(_DEFAULT_KILLS))
def test_kill_with_default_checkpoints_gives_bitwise_identical_weights(
    setting: str, tiny_root: Path, tmp_path: Path
) -> None:
    """Without --save_every_n_steps (last.ckpt written by the validations and at the end of an epoch), a run
    killed with SIGKILL at three different points and rerun ends exactly as an uninterrupted one."""
    extra, steps, kills = _DEFAULT_KILLS[setting]
    cli = [sys.executable, "-m", "kspacelab.cli"]
    reference = tmp_path / "reference"
    done = subprocess.run(
        [*cli, *_train_args(tiny_root, reference, steps, *extra)],
        env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for i, (how, step) in enumerate(kills):
        run = tmp_path / f"killed{i}"
        last = run / "checkpoints" / "last.ckpt"
        args = _train_args(tiny_root, run, steps, *extra)
        if how == "external":
            proc = subprocess.Popen(
                [*cli, *args], env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            deadline = time.monotonic() + 240
            while checkpoint_step(last) < step and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            assert step <= checkpoint_step(last) < steps, (
                f"{how} kill at {step}: last checkpoint at step {checkpoint_step(last)}"
            )
        else:
            env = {**subprocess_env(), "KILL_AFTER_STEP": str(step)}
            killed = subprocess.run(
                [sys.executable, "-c", KILL_AFTER_WRITE, *args], env=env, capture_output=True, timeout=300
            )
            assert killed.returncode == -signal.SIGKILL and checkpoint_step(last) == step
        again = subprocess.run(
            [*cli, *args], env=subprocess_env(), capture_output=True, text=True, timeout=300
        )
        assert again.returncode == 0, again.stderr[-3000:]
        assert "resuming from" in again.stdout
        assert_same_run(reference, run, f"a {how} kill after step {step} ({setting})")


def test_rerun_of_a_different_model_into_the_same_folder_is_refused(tiny_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    base = [
        "train",
        "--config",
        str(REPO / "src" / "kspacelab" / "configs" / "demo.yaml"),
        "--data.root",
        str(tiny_root),
    ]
    base += ["--trainer.max_steps", "1", "--trainer.limit_val_batches", "1", "--run-dir", str(run)]
    tiny = ["--model.model_kwargs", "{num_cascades: 1, chans: 4, sens_chans: 2, pools: 2, sens_pools: 2}"]
    assert main([*base, *tiny]) == 0
    other = ["--model.model_kwargs", "{num_cascades: 1, chans: 6, sens_chans: 2, pools: 2, sens_pools: 2}"]
    assert main([*base, *other]) == 2


def test_staged_recipe_carries_the_weights_over(tiny_root: Path, tmp_path: Path) -> None:
    """Stage 2 starts from stage 1's final weights: with a zero learning rate it ends exactly there."""
    config = REPO / "src" / "kspacelab" / "configs" / "demo.yaml"
    recipe = tmp_path / "staged.yaml"
    recipe.write_text(
        f"stages:\n"
        f"  - {{name: one, config: {config}, args: ['--trainer.max_steps', '2']}}\n"
        f"  - {{name: two, config: {config}, args: ['--trainer.max_steps', '2', '--model.lr', '1e-30',"
        f" '--model.scheduler', 'none', '--model.weight_decay', '0']}}\n"
    )
    run = tmp_path / "staged"
    argv = ["train", "--stages", str(recipe), "--run-dir", str(run), "--data.root", str(tiny_root)]
    argv += ["--model.model_kwargs", "{num_cascades: 1, chans: 4, sens_chans: 2, pools: 2, sens_pools: 2}"]
    argv += ["--trainer.limit_val_batches", "1", "--quiet", "--use-val-for-final"]
    assert main(argv) == 0
    one = torch.load(run / "one" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    two = torch.load(run / "two" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.allclose(one[k], two[k], rtol=0, atol=1e-20) for k in one)
    saved = (run / "two" / "config.yaml").read_text()
    marker = json.loads((run / "two" / "kspacelab-run.json").read_text())
    assert "merge_val_into_train: true" in saved
    assert marker["init_weights"] == str(run / "one" / "checkpoints" / "last.ckpt")
    assert main(argv) == 0  # a second run reuses both finished stages


def _resolved(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    """The configuration ``kspacelab train ARGV --print_config`` resolves to."""
    capsys.readouterr()
    assert main(["train", *argv, "--print_config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def _config_args(configs: tuple[Path, ...]) -> list[str]:
    return [word for config in configs for word in ("--config", str(config))]


@pytest.mark.parametrize(
    "recipe", sorted(p.name for p in (REPO / "src" / "kspacelab" / "configs").glob("*_stages.yaml"))
)
def test_staged_recipes_parse(recipe: str, capsys: pytest.CaptureFixture[str]) -> None:
    from kspacelab.data.augment import augment_from_config, mask_augment_from_config
    from kspacelab.models import model_entry
    from kspacelab.training.stages import read_stages

    stages = read_stages(REPO / "src" / "kspacelab" / "configs" / recipe)
    assert len(stages) >= 2
    for stage in stages:
        resolved = _resolved([*_config_args(stage.configs), *stage.args], capsys)
        augment_from_config(resolved["data"]["augment"])  # valid (or None)
        mask_augment_from_config(resolved["data"]["mask_augment"])
        assert model_entry(resolved["model"]["model_name"]).task == "reconstruction"


def test_ej_stages_reproduce_the_team_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    """EJ's three stages (the team's public training scripts): 15 epochs each, cosine restarts at
    3e-4 / 2e-4 / 1e-4, MRAugment from stage 2, per-anatomy augmentation and knee masks in stage 3."""
    from kspacelab.data.augment import augment_from_config, mask_augment_from_config
    from kspacelab.training.stages import read_stages

    stages = read_stages(REPO / "src" / "kspacelab" / "configs" / "snu2025_ej_stages.yaml")
    resolved = [_resolved([*_config_args(s.configs), *s.args], capsys) for s in stages]
    assert [r["trainer"]["max_epochs"] for r in resolved] == [15, 15, 15]
    assert [r["model"]["lr"] for r in resolved] == [3e-4, 2e-4, 1e-4]
    assert [r["model"]["warmup_epochs"] for r in resolved] == [1.0, 0.0, 0.0]
    assert [r["model"]["schedule_epochs"] for r in resolved] == [20, 20, None]
    assert len({yaml.safe_dump(r["model"]["model_kwargs"]) for r in resolved}) == 1  # one architecture
    one, two, three = (augment_from_config(r["data"]["augment"]) for r in resolved)
    assert one is None and two is not None and three is not None
    assert two.params["default"].weight_flipv == 0.0 and three.params["brain"].weight_flipv == 0.5
    knee = three.params["knee"]
    assert all(
        getattr(knee, f"weight_{t}") == 0 for t in ("fliph", "flipv", "translation", "shear", "scaling")
    )
    masks3 = mask_augment_from_config(resolved[2]["data"]["mask_augment"])
    assert masks3 is not None and masks3.anatomies == ("knee",) and set(masks3.kinds) == {"random_offset"}
    assert all(mask_augment_from_config(r["data"]["mask_augment"]) is None for r in resolved[:2])


def test_linear_constant_step_schedule() -> None:
    from kspacelab.training.module import linear_constant_step_lr

    factors = [
        linear_constant_step_lr(s, warmup_steps=4, plateau_end=10, step_steps=5, gamma=0.5) for s in range(22)
    ]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4:10] == [1.0] * 6
    assert factors[10:15] == [1.0] * 5 and factors[15:20] == [0.5] * 5 and factors[20:] == [0.25] * 2
