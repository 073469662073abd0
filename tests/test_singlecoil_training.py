"""Training the single-coil models: the baselines' validation equals `evaluate --metric fastmri` of their
reconstructions, the generative model's two optimisers each move only their own network, and a generative run
killed with SIGKILL resumes to bitwise the same generator, discriminator and both optimiser states."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch

from helpers import KILL_AFTER_WRITE, assert_same_run, checkpoint_step, subprocess_env
from kspacelab import metrics
from kspacelab.cli import main
from kspacelab.data.singlecoil import SingleCoilDataModule
from kspacelab.errors import KspacelabError
from kspacelab.evaluation import evaluate_fastmri
from kspacelab.models import MODEL_REGISTRY
from kspacelab.training import load_model
from kspacelab.training.run import fit
from kspacelab.training.singlecoil import GenerativeModule, SingleCoilModule

TINY_UNET = "{chans: 4, num_pool_layers: 2}"
TINY_STYLISH = "{chans: 4, num_pool_layers: 2, style_dim: 8, encoder_chans: 4}"
TINY_DISCRIMINATOR = "{chans: 4, num_layers: 2}"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def _last_validation(run: Path) -> dict[str, float]:
    """The last row of the run's CSV log that holds validation metrics."""
    rows = list(csv.DictReader((run / "logs" / "version_0" / "metrics.csv").open()))
    return {k: float(v) for k, v in [r for r in rows if r.get("val/ssim")][-1].items() if v}


def test_validation_logs_the_scores_evaluate_gives_the_reconstructions(
    tiny_singlecoil_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "unet"
    overrides = [
        "--data.root",
        str(tiny_singlecoil_root),
        "--data.num_workers",
        "0",
        "--trainer.max_steps",
        "3",
    ]
    result = fit(["fastmri_singlecoil_unet"], ["--model.model_kwargs", TINY_UNET, *overrides, *QUIET], run)
    assert result.best is not None
    logged = _last_validation(run)
    val = tiny_singlecoil_root / "singlecoil_val"
    means = []
    for acc in (4, 8, 16, 32):
        out = tmp_path / f"x{acc}"
        args = ["reconstruct", "--data", str(val), "--out", str(out), "--checkpoint", str(result.best)]
        assert main([*args, "--acceleration", str(acc), "--quiet"]) == 0
        scores = evaluate_fastmri(val, out, progress=False).means
        for name in ("nmse", "psnr", "ssim", "hallucination"):
            assert logged[f"val/{name}_x{acc}"] == pytest.approx(scores[name], rel=1e-5, abs=1e-7), (
                name,
                acc,
            )
        means.append(scores["ssim"])
    assert logged["val/ssim"] == pytest.approx(sum(means) / 4, rel=1e-5)
    capsys.readouterr()


def test_the_module_refuses_a_model_of_another_task() -> None:
    with pytest.raises(KspacelabError, match="not a model of the 'singlecoil' task"):
        SingleCoilModule(model_name="varnet")
    with pytest.raises(KspacelabError, match="not a model of the 'generative' task"):
        GenerativeModule(model_name="singlecoil_unet")
    with pytest.raises(KspacelabError, match=r"model\.loss"):
        SingleCoilModule(loss="l2")  # type: ignore[arg-type]
    with pytest.raises(KspacelabError, match="kl_weight"):
        GenerativeModule(kl_weight=-1.0)
    assert {e.task for e in MODEL_REGISTRY.values()} >= {"singlecoil", "generative"}


def test_each_optimiser_moves_only_its_own_network(tiny_singlecoil_root: Path) -> None:
    torch.manual_seed(0)
    module = GenerativeModule(
        model_kwargs={"chans": 4, "num_pool_layers": 2, "style_dim": 8, "encoder_chans": 4},
        discriminator_kwargs={"chans": 4, "num_layers": 2},
    )
    data = SingleCoilDataModule(str(tiny_singlecoil_root), seed=1)
    data.set_input_spec(module.input_spec)
    g_before = {k: v.clone() for k, v in module.model.state_dict().items()}
    d_before = {k: v.clone() for k, v in module.discriminator.state_dict().items()}
    trainer = L.Trainer(
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 2  # one batch: a discriminator step and a generator step
    g_changed = [k for k, v in module.model.state_dict().items() if not torch.equal(v, g_before[k])]
    d_changed = [k for k, v in module.discriminator.state_dict().items() if not torch.equal(v, d_before[k])]
    assert g_changed and d_changed
    g_opt, d_opt = trainer.optimizers
    g_params = {id(p) for group in g_opt.param_groups for p in group["params"]}
    d_params = {id(p) for group in d_opt.param_groups for p in group["params"]}
    assert g_params == {id(p) for p in module.model.parameters()}
    assert d_params == {id(p) for p in module.discriminator.parameters()}
    assert len(g_opt.state) == len(g_params) and len(d_opt.state) == len(d_params)  # both stepped once
    assert all(p.requires_grad for p in module.parameters())  # untoggled after the generator step


def _generative_command(root: Path, run: Path, steps: int) -> list[str]:
    return [
        "train", "--config", "singlecoil_stylish", "--data.root", str(root), "--data.num_workers", "0",
        "--model.model_kwargs", TINY_STYLISH, "--model.discriminator_kwargs", TINY_DISCRIMINATOR,
        "--trainer.max_steps", str(steps), "--trainer.deterministic", "true", *QUIET,
        "--seed", "5", "--run-dir", str(run), "--save_every_n_steps", "2",
    ]  # fmt: skip


@pytest.mark.parametrize("kill_after", [4, 10])  # inside the first epoch; after the first epoch's validation
def test_a_generative_run_killed_and_rerun_ends_bitwise_as_an_uninterrupted_one(
    tiny_singlecoil_root: Path, tmp_path: Path, kill_after: int
) -> None:
    """The tiny train split has 5 slices: 10 optimiser steps per epoch (discriminator + generator per batch); 14
    steps cross the epoch boundary and its validation."""
    steps = 14
    reference = tmp_path / "reference"
    cli = ["-m", "kspacelab.cli"]

    def train(run: Path, how: list[str], **env: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, *how, *_generative_command(tiny_singlecoil_root, run, steps)]
        return subprocess.run(
            argv, env={**subprocess_env(), **env}, capture_output=True, text=True, timeout=300
        )

    done = train(reference, cli)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "killed"
    killed = train(run, ["-c", KILL_AFTER_WRITE], KILL_AFTER_STEP=str(kill_after))
    last = run / "checkpoints" / "last.ckpt"
    assert killed.returncode == -9 and checkpoint_step(last) == kill_after, killed.stderr[-3000:]
    again = train(run, cli)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_same_run(reference, run, f"a kill after step {kill_after}")
    state = torch.load(last, weights_only=True)
    assert any(k.startswith("discriminator.") for k in state["state_dict"])
    assert len(state["optimizer_states"]) == 2 and all(s["state"] for s in state["optimizer_states"])


@pytest.mark.parametrize("wrapper", ["plain", "lightning"])
def test_fastmri_unet_weights_load_as_the_single_coil_unet(tmp_path: Path, wrapper: str) -> None:
    """fastMRI's published single-coil U-Net is a plain ``Unet(1, 1, 256, 4)`` state dict; its ``UnetModule``
    checkpoints hold the same under ``unet.``. Both load with the configuration read off the shapes."""
    fastmri_models = pytest.importorskip("fastmri.models")
    torch.manual_seed(3)
    reference = fastmri_models.Unet(in_chans=1, out_chans=1, chans=6, num_pool_layers=3, drop_prob=0.0)
    state = reference.state_dict()
    payload = state if wrapper == "plain" else {"state_dict": {"unet." + k: v for k, v in state.items()}}
    path = tmp_path / "unet.pt"
    torch.save(payload, path)
    loaded = load_model(path)
    assert loaded.name == "singlecoil_unet" and loaded.provenance.format == "state_dict"
    assert loaded.config == {"chans": 6, "num_pool_layers": 3, "normalization": "meanstd"}
    ours = loaded.model.state_dict()
    assert all(torch.equal(ours["unet." + k], v) for k, v in state.items()) and len(ours) == len(state)
    image = torch.rand(2, 1, 32, 24)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.unet(image), reference(image), rtol=1e-5, atol=1e-5)


def test_singlecoil_demo_end_to_end_and_reused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from helpers import TINY_SC
    from kspacelab.demo_singlecoil import SINGLECOIL_METHODS, method_folder, run_singlecoil_demo

    few = ["--trainer.max_steps", "4", "--trainer.val_check_interval", "2", *QUIET[:2]]
    unet = ["--model.model_kwargs", TINY_UNET, *few]
    stylish = ["--model.model_kwargs", TINY_STYLISH, "--model.discriminator_kwargs", TINY_DISCRIMINATOR, *few]
    result = run_singlecoil_demo(
        tmp_path, preset=TINY_SC, progress=False, unet_overrides=unet, stylish_overrides=stylish
    )
    assert set(result.results) == set(SINGLECOIL_METHODS)
    val = tmp_path / "data_singlecoil" / "singlecoil_val"
    for method, per_acc in result.results.items():
        assert sorted(per_acc) == [4, 8, 16, 32]
        for acc, scores in per_acc.items():  # the table's numbers are evaluate's numbers of the written files
            folder = method_folder(method)
            again = evaluate_fastmri(val, tmp_path / "recon_singlecoil" / folder / f"x{acc}", progress=False)
            assert again.means == scores.means
    zero_filled = [result.results["zero-filled"][acc].means["ssim"] for acc in (4, 8, 16, 32)]
    assert zero_filled == sorted(zero_filled, reverse=True)  # fewer lines, worse zero-filled images
    report = result.report.read_text()
    assert report.count("| x") == 12 and "singlecoil.png" in report and result.figure.stat().st_size > 10_000
    printed = capsys.readouterr().out
    run_singlecoil_demo(
        tmp_path, preset=TINY_SC, progress=False, unet_overrides=unet, stylish_overrides=stylish
    )
    printed = capsys.readouterr().out
    assert "reusing the simulated dataset" in printed and printed.count("reusing the") == 3


@pytest.mark.parametrize(
    ("setting", "value", "words"),
    [("accumulate_grad_batches", "2", "accumulation"), ("gradient_clip_val", "1.0", "gradient clipping")],
)
def test_trainer_settings_manual_optimisation_cannot_use_are_one_line(
    tiny_singlecoil_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    setting: str,
    value: str,
    words: str,
) -> None:
    argv = _generative_command(tiny_singlecoil_root, tmp_path / "run", 2)
    assert main([*argv, f"--trainer.{setting}", value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kspacelab: error: train:") and words in err and "\n" not in err, err


def test_the_losses_are_those_documented_and_scale_free(tiny_singlecoil_root: Path) -> None:
    data = SingleCoilDataModule(str(tiny_singlecoil_root), accelerations=[8])
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))
    output = batch.target * 0.9 + 0.05 * batch.target.mean()
    scale = torch.as_tensor(batch.max_value, dtype=torch.float32)[:, None, None]
    l1 = SingleCoilModule(loss="l1", model_kwargs={"chans": 4, "num_pool_layers": 2})
    ssim = SingleCoilModule(loss="ssim", model_kwargs={"chans": 4, "num_pool_layers": 2})
    expected_l1 = ((output - batch.target).abs() / scale).mean()
    torch.testing.assert_close(l1.compute_loss(output, batch), expected_l1)
    expected_ssim = 1 - metrics.ssim_per_slice(output / scale, batch.target / scale, 1.0).mean()
    torch.testing.assert_close(ssim.compute_loss(output, batch), expected_ssim)
    scaled = batch._replace(target=batch.target * 7, max_value=batch.max_value * 7)
    for module in (l1, ssim):  # both images and the volume maximum x 7: the same loss
        torch.testing.assert_close(
            module.compute_loss(output * 7, scaled), module.compute_loss(output, batch)
        )


def test_a_batch_with_nan_is_one_line_naming_the_volume(tiny_singlecoil_root: Path) -> None:
    data = SingleCoilDataModule(str(tiny_singlecoil_root), accelerations=[4])
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))
    bad = batch._replace(
        masked_kspace=batch.masked_kspace.clone().index_fill_(3, torch.tensor([0]), float("nan"))
    )
    for module in (SingleCoilModule(model_kwargs={"chans": 4, "num_pool_layers": 2}), GenerativeModule()):
        with pytest.raises(
            KspacelabError, match=rf"{batch.fname[0]}: slice \d+: the validation k-space holds NaN"
        ):
            module.validation_step(bad, 0)
