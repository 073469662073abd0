"""Training: loss goes down, `kspacelab train` writes safe checkpoints, resume, determinism, the validation
metric equals the leaderboard SSIM, schedules, `load_model` (ours and fastMRI's weights), DDP on CPU."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import lightning.pytorch as L
import numpy as np
import pytest
import torch
import yaml

from kspacelab import formats
from kspacelab.cli import main
from kspacelab.data.dataset import SnuDataModule
from kspacelab.errors import KspacelabError
from kspacelab.masks import center_block
from kspacelab.metrics import foreground_mask, leaderboard_ssim_volume, masked_ssim_loss, ssim_per_slice
from kspacelab.physics import crop_readout, flip_width_kspace
from kspacelab.training import ReconModule, load_model, warmup_cosine_lr

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "src" / "kspacelab" / "configs" / "demo.yaml"
TINY_MODEL = {"num_cascades": 1, "chans": 4, "sens_chans": 2, "pools": 2, "sens_pools": 2}
TINY_MODEL_ARG = "{num_cascades: 1, chans: 4, sens_chans: 2, pools: 2, sens_pools: 2}"


def _train_args(root: Path, run_dir: Path, *extra: str, steps: int = 3) -> list[str]:
    return [
        "train",
        "--config",
        str(DEMO_CONFIG),
        "--data.root",
        str(root),
        "--model.model_kwargs",
        TINY_MODEL_ARG,
        "--trainer.max_steps",
        str(steps),
        "--trainer.limit_val_batches",
        "2",
        "--trainer.enable_model_summary",
        "false",
        "--run-dir",
        str(run_dir),
        *extra,
    ]


@pytest.fixture(scope="module")
def first_run(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`kspacelab train` on the demo config, tiny model, 3 steps, seed 0."""
    run_dir = tmp_path_factory.mktemp("runs") / "first"
    assert main(_train_args(tiny_root, run_dir, "--seed", "0")) == 0
    return run_dir


def _batches(root: Path, split: str = "val") -> list:
    dm = SnuDataModule(str(root))
    dm.setup("fit")
    loader = dm.val_dataloader() if split == "val" else dm.train_dataloader()
    return list(loader)


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_loss_decreases_on_a_repeated_batch(tiny_root: Path) -> None:
    batch = _batches(tiny_root, "train")[0]
    torch.manual_seed(0)
    module = ReconModule(model_kwargs=TINY_MODEL)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        loss = module.compute_loss(module(batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.01 and losses[-1] == min(losses), losses


def test_loss_terms_match_the_metric_functions(tiny_root: Path) -> None:
    batch = _batches(tiny_root, "train")[1]
    module = ReconModule(model_kwargs=TINY_MODEL, area_weighted_loss=True, l1_weight=0.5)
    with torch.no_grad():
        output = module(batch)
        got = module.compute_loss(output, batch)
    target, max_value = batch.target, batch.max_value
    masks = torch.stack([foreground_mask(target[i], a) for i, a in enumerate(batch.anatomy)])
    # the training set provides each volume's largest foreground area for the sqrt(area / max_area) weight
    assert bool((torch.as_tensor(batch.max_area) >= masks.flatten(1).sum(1)).all())
    ssim_term = masked_ssim_loss(
        output, target, max_value, masks, area_weighted=True, max_area=batch.max_area
    )
    l1_term = ((output - target).abs().mean(dim=(-2, -1)) / max_value).mean()
    assert float(got) == pytest.approx(float(ssim_term + 0.5 * l1_term), rel=1e-5)
    assert float(l1_term) > 0 and 0 < float(ssim_term) < 1
    batch_max = masked_ssim_loss(output, target, max_value, masks, area_weighted=True)
    if bool((torch.as_tensor(batch.max_area) > masks.flatten(1).sum(1).max()).any()):
        assert float(batch_max) != pytest.approx(float(ssim_term), rel=1e-9)


def test_background_weight_and_regulariser_options(tiny_root: Path) -> None:
    """sMaRtIfy's loss options: pixels outside the foreground weighted by ``background_weight``; an L1 or L2
    term on the weighted images, area-weighted, from ``regularizer_start_epoch`` on."""
    batch = _batches(tiny_root, "train")[1]
    base = ReconModule(model_kwargs=TINY_MODEL, area_weighted_loss=True)
    with torch.no_grad():
        output = base(batch)
        plain = base.compute_loss(output, batch)
    target, max_value = batch.target, torch.as_tensor(batch.max_value)
    masks = torch.stack([foreground_mask(target[i], a) for i, a in enumerate(batch.anatomy)])
    assert not bool(masks.all())  # the tiny slices have background, so the weight matters
    weights = masks.float() + 0.3 * (~masks).float()
    area = torch.sqrt(masks.flatten(1).sum(1) / torch.as_tensor(batch.max_area))
    ssim = ssim_per_slice(output * weights, target * weights, max_value)  # the images weighted, then SSIM
    shaded = ReconModule(model_kwargs=TINY_MODEL, area_weighted_loss=True, background_weight=0.3)
    got = shaded.compute_loss(output, batch)
    assert float(got) == pytest.approx(float(((1 - ssim) * area).mean()), rel=1e-5)
    assert float(got) != pytest.approx(float(plain), rel=1e-4)
    one = ReconModule(model_kwargs=TINY_MODEL, background_weight=1.0).compute_loss(output, batch)
    assert float(one) == pytest.approx(
        float((1 - ssim_per_slice(output, target, max_value)).mean()), rel=1e-5
    )

    diff = ((output - target) * weights).flatten(1) / max_value[:, None]
    for norm, term in (("l1", diff.abs().mean(1)), ("l2", diff.square().mean(1))):
        module = ReconModule(
            model_kwargs=TINY_MODEL,
            area_weighted_loss=True,
            background_weight=0.3,
            l1_weight=2.0,
            regularizer=norm,  # type: ignore[arg-type]
            regularizer_masked=True,
            regularizer_start_epoch=1,
        )
        assert float(module.compute_loss(output, batch)) == pytest.approx(
            float(got), rel=1e-6
        )  # epoch 0: off
        module._epoch = lambda: 1  # type: ignore[method-assign]
        expected = got + 2.0 * (term * area).mean()
        assert float(module.compute_loss(output, batch)) == pytest.approx(float(expected), rel=1e-5), norm
    for bad in ({"background_weight": 1.5}, {"regularizer": "l3"}, {"regularizer_start_epoch": -1}):
        with pytest.raises(KspacelabError, match="model\\."):
            ReconModule(model_kwargs=TINY_MODEL, **bad)  # type: ignore[arg-type]


def test_loss_log_and_a_checkpoint_per_epoch(tiny_root: Path, tmp_path: Path) -> None:
    """``loss_log.npy``: one row per epoch ``[epoch, mean training loss, 1 - val/ssim]``;
    ``checkpoint.keep_every_epoch`` keeps ``epoch{N:03d}.ckpt`` of every epoch."""
    run_dir = tmp_path / "run"
    argv = _train_args(tiny_root, run_dir, "--checkpoint.keep_every_epoch", "true", steps=-1)
    argv += [
        "--trainer.max_epochs",
        "2",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.log_every_n_steps",
        "1",
    ]
    assert main(argv) == 0
    log = np.load(run_dir / "loss_log.npy")
    assert log.shape == (2, 3) and log.dtype == np.float64 and log[:, 0].tolist() == [0.0, 1.0]
    with open(next((run_dir / "logs").glob("version_*/metrics.csv"))) as fh:
        rows = list(csv.DictReader(fh))
    ssim = [float(r["val/ssim"]) for r in rows if r.get("val/ssim")]
    np.testing.assert_allclose(log[:, 2], 1 - np.array(ssim), rtol=1e-6)
    per_step = [(int(r["epoch"]), float(r["train/loss"])) for r in rows if r.get("train/loss")]
    assert len(per_step) == 4  # every step logged
    means = [np.mean([loss for epoch, loss in per_step if epoch == e]) for e in (0, 1)]
    np.testing.assert_allclose(log[:, 1], means, rtol=1e-6)
    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("epoch*.ckpt")) == ["epoch000.ckpt", "epoch001.ckpt"]
    assert torch.load(checkpoints / "epoch000.ckpt", weights_only=True)["global_step"] == 2
    assert torch.load(checkpoints / "epoch001.ckpt", weights_only=True)["global_step"] == 4


def test_train_cli_writes_checkpoints_config_and_logs(first_run: Path) -> None:
    best = first_run / "checkpoints" / "best.ckpt"
    last = first_run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(best, weights_only=True)  # must not need unpickling of arbitrary objects
    assert ckpt["hyper_parameters"]["model_kwargs"] == TINY_MODEL
    assert torch.load(last, weights_only=True)["global_step"] == 3
    config = yaml.safe_load((first_run / "config.yaml").read_text())
    assert config["model"]["model_kwargs"] == TINY_MODEL and config["trainer"]["max_steps"] == 3
    assert config["seed_everything"] == 0 and config["model"]["crop_height"] == {"brain": 192, "knee": 192}
    with open(next((first_run / "logs").glob("version_*/metrics.csv"))) as fh:
        rows = list(csv.DictReader(fh))
    assert any(r.get("train/loss") for r in rows)
    ssim = [float(r["val/ssim"]) for r in rows if r.get("val/ssim")]
    assert len(ssim) == 1 and 0.0 < ssim[0] < 1.0
    seconds = [float(r["time/train_s"]) for r in rows if r.get("time/train_s")]
    assert len(seconds) == 1 and seconds[0] > 0  # training time beside the validation score


def test_load_model_equals_module_model(first_run: Path, tiny_root: Path) -> None:
    path = first_run / "checkpoints" / "best.ckpt"
    ckpt = torch.load(path, weights_only=True)
    hparams = {k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")}
    module = ReconModule(**hparams)
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    loaded = load_model(path)
    assert loaded.provenance.format == "lightning" and loaded.config == TINY_MODEL
    assert loaded.provenance.global_step == 3 and loaded.name == "varnet"
    assert loaded.input_spec == module.input_spec  # the demo config's readout crop travels with the weights
    model = loaded.model
    assert not model.training
    batch = _batches(tiny_root)[0]
    with torch.no_grad():
        expected = module(batch)
        got = model(
            batch.masked_kspace,
            batch.mask,
            batch.num_low_frequencies,
            crop_size=tuple(batch.target.shape[-2:]),
        )
    assert torch.equal(got, expected)


def test_resume_continues_from_last_checkpoint(
    first_run: Path, tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "resumed"
    shutil.copytree(first_run, run_dir)
    # Re-running into a run folder continues from its last.ckpt (no --ckpt_path needed) ...
    last = run_dir / "checkpoints" / "last.ckpt"
    extra = ("--trainer.log_every_n_steps", "1")
    assert main(_train_args(tiny_root, run_dir, *extra, steps=5)) == 0
    assert "resuming from" in capsys.readouterr().out
    assert torch.load(last, weights_only=True)["global_step"] == 5
    with open(run_dir / "logs" / "version_1" / "metrics.csv") as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh) if r.get("train/loss")]
    assert steps == [3, 4]  # only the two new steps were trained
    # ... and a folder with checkpoints but no last.ckpt is refused (one line, status 2)
    last.unlink()
    assert main(_train_args(tiny_root, run_dir, steps=6)) == 2
    err = capsys.readouterr().err.strip()
    assert "--ckpt_path" in err and len(err.splitlines()) == 1


def test_same_seed_gives_identical_weights(first_run: Path, tiny_root: Path, tmp_path: Path) -> None:
    assert main(_train_args(tiny_root, tmp_path / "again", "--seed", "0")) == 0
    a = _state(first_run / "checkpoints" / "last.ckpt")
    b = _state(tmp_path / "again" / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    initial = ReconModule(model_kwargs=TINY_MODEL).state_dict()
    assert not all(torch.equal(a[k], initial[k]) for k in a)  # and training did change them


def test_print_config_and_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["train", "--config", "demo", "--data.root", "elsewhere", "--model.lr", "1e-2", "--print-config"]
    )
    assert code == 0  # a bundled recipe by name; nothing trained, no run folder needed
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["root"] == "elsewhere" and printed["model"]["lr"] == 0.01
    assert printed["model"]["model_kwargs"]["num_cascades"] >= 1 and "max_epochs" in printed["trainer"]

    for bad in (["--model.no_such_key", "1"], ["--model.model_kwargs.num_cascade", "1"], ["--model.lr"]):
        assert main(["train", "--config", str(DEMO_CONFIG), *bad, "--run-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert bad[0].rsplit(".", 1)[-1] in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "checkpoints").exists()

    missing = tmp_path / "missing"
    assert (
        main(["train", "--config", str(DEMO_CONFIG), "--data.root", str(missing), "--run-dir", str(tmp_path)])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert str(missing) in err and len(err.splitlines()) == 1

    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code in (0, None) and "usage: kspacelab train" in capsys.readouterr().out


def test_validation_ssim_is_the_leaderboard_ssim(tiny_root: Path) -> None:
    torch.manual_seed(0)
    module = ReconModule(model_kwargs=TINY_MODEL)
    dm = SnuDataModule(str(tiny_root))
    trainer = L.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.validate(module, datamodule=dm)
    logged = trainer.callback_metrics

    # By hand: whole volumes through the leaderboard metric, slices pooled per acceleration.
    recon: dict[str, dict[int, torch.Tensor]] = {}
    meta: dict[str, tuple[torch.Tensor, dict[int, torch.Tensor], str, int]] = {}
    module.eval()
    with torch.no_grad():
        for batch in _batches(tiny_root):
            out = module(batch)
            for i, fname in enumerate(batch.fname):
                s = int(batch.slice_num[i])
                recon.setdefault(fname, {})[s] = out[i]
                targets = meta.setdefault(
                    fname, (batch.max_value[i], {}, batch.anatomy[i], int(batch.acceleration[i]))
                )[1]
                targets[s] = batch.target[i]
    pooled: dict[int, list[float]] = {}
    for fname, slices in recon.items():
        max_value, targets, anatomy, acc = meta[fname]
        order = sorted(slices)
        scores = leaderboard_ssim_volume(
            torch.stack([slices[s] for s in order]),
            torch.stack([targets[s] for s in order]),
            max_value,
            anatomy,
        )
        pooled.setdefault(acc, []).extend(scores.tolist())
    assert sorted(pooled) == [4, 8]
    means = {acc: sum(v) / len(v) for acc, v in pooled.items()}
    for acc, value in means.items():
        assert float(logged[f"val/ssim_acc{acc}"]) == pytest.approx(value, rel=1e-6, abs=1e-7)
    assert float(logged["val/ssim"]) == pytest.approx((means[4] + means[8]) / 2, rel=1e-6, abs=1e-7)


def _lrs(module: ReconModule, steps: int, per_epoch: int) -> tuple[list[float], str]:
    module.trainer = SimpleNamespace(  # type: ignore[assignment]
        estimated_stepping_batches=steps, num_training_batches=per_epoch, accumulate_grad_batches=1
    )
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    values = []
    for _ in range(steps + 1):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values, config["lr_scheduler"]["interval"]


def test_cosine_warmup_and_epoch_schedules() -> None:
    module = ReconModule(model_kwargs=TINY_MODEL, lr=1e-3, min_lr=1e-5, warmup_epochs=2, scheduler="cosine")
    lrs, interval = _lrs(module, steps=20, per_epoch=5)  # warmup 10 steps, 20 in all
    assert interval == "step"
    expected = {0: 1e-4, 4: 5e-4, 9: 1e-3, 10: 1e-3, 15: 1e-5 + (1e-3 - 1e-5) / 2, 20: 1e-5}
    for step, value in expected.items():
        assert lrs[step] == pytest.approx(value, rel=1e-9), step
    assert lrs[12] == pytest.approx(1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi * 0.2)) / 2, rel=1e-9)
    assert warmup_cosine_lr(25, 1.0, 10, 20, 0.01) == 0.01
    # schedule_epochs: a cosine longer than the run (EJ's stage 2: 20 epochs of schedule, stopped after 15)
    longer = ReconModule(
        model_kwargs=TINY_MODEL, lr=1.0, warmup_epochs=0, schedule_epochs=4, scheduler="cosine"
    )
    lrs, _ = _lrs(longer, steps=15, per_epoch=5)  # the run: 3 epochs = 15 steps; the schedule: 20 steps
    assert lrs[0] == 1.0 and lrs[10] == pytest.approx(0.5, rel=1e-9)
    assert lrs[15] == pytest.approx((1 + math.cos(math.pi * 15 / 20)) / 2, rel=1e-9) and lrs[15] > 0.1
    with pytest.raises(KspacelabError, match="schedule_epochs"):
        ReconModule(model_kwargs=TINY_MODEL, schedule_epochs=0)

    step = ReconModule(model_kwargs=TINY_MODEL, lr=1.0, scheduler="step", step_size=3, gamma=0.5)
    lrs, interval = _lrs(step, steps=7, per_epoch=1)
    assert interval == "epoch" and lrs == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25])
    offset = ReconModule(
        model_kwargs=TINY_MODEL, lr=1.0, scheduler="step", step_size=3, gamma=0.5, step_start_epoch=2
    )
    lrs, _ = _lrs(offset, steps=7, per_epoch=1)  # stepped from the end of epoch 2: drops in epochs 5 and 8
    assert lrs == pytest.approx([1, 1, 1, 1, 1, 0.5, 0.5, 0.5])
    exp = ReconModule(model_kwargs=TINY_MODEL, lr=1.0, scheduler="exponential", gamma=0.96)
    lrs, interval = _lrs(exp, steps=3, per_epoch=1)
    assert interval == "epoch" and lrs == pytest.approx([1, 0.96, 0.96**2, 0.96**3])
    with pytest.raises(KspacelabError, match="optimizer"):
        ReconModule(optimizer="sgd")  # type: ignore[arg-type]


def test_load_model_reads_fastmri_varnet_weights(tmp_path: Path) -> None:
    fastmri_models = pytest.importorskip("fastmri.models")
    torch.manual_seed(1)
    reference = fastmri_models.VarNet(num_cascades=2, chans=4, sens_chans=2).eval()
    with torch.no_grad():
        for i, cascade in enumerate(reference.cascades):
            cascade.dc_weight.fill_(0.5 + i)
    path = tmp_path / "varnet_fastmri.pt"
    torch.save(reference.state_dict(), path)

    loaded = load_model(path)
    model = loaded.model
    assert loaded.provenance.format == "state_dict" and loaded.input_spec.num_adj_slices == 1
    assert loaded.config == {
        "num_cascades": 2,
        "chans": 4,
        "pools": 4,
        "sens_chans": 2,
        "sens_pools": 4,
    }
    width = 24
    mask = torch.zeros(width, dtype=torch.bool)
    mask[::3] = True
    mask[10:14] = True
    mask = mask.reshape(1, 1, 1, width, 1)
    kspace = torch.randn(1, 4, 32, width, 2) * mask
    with torch.no_grad():
        expected = reference(kspace, mask)
        got = model(kspace, mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_bad_checkpoints_are_one_line_errors(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"this is not a checkpoint")
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {}, "callback": SimpleNamespace(a=1)}, unsafe)  # needs unpickling: refused
    unknown = tmp_path / "unknown.pt"
    torch.save({"encoder.weight": torch.zeros(3)}, unknown)
    for path in (corrupt, unsafe, unknown, tmp_path / "absent.ckpt"):
        with pytest.raises(KspacelabError) as exc:
            load_model(path)
        message = str(exc.value)
        assert str(path) in message and "\n" not in message


def test_ddp_two_cpu_processes(tiny_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    args = _train_args(tiny_root, run_dir, steps=2)[1:]
    args += ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "kspacelab.cli", "train", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and (run_dir / "config.yaml").is_file()
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2
    print(f"DDP (2 CPU processes, gloo) run took {elapsed:.1f} s")


def test_train_reconstruct_evaluate_end_to_end(
    first_run: Path, tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The trained checkpoint reconstructs the leaderboard into SPEC files that `evaluate` scores."""
    ckpt = first_run / "checkpoints" / "best.ckpt"
    leaderboard = tiny_root / "leaderboard"
    base = ["reconstruct", "--data", str(leaderboard), "--checkpoint", str(ckpt), "--quiet"]
    assert main([*base, "--out", str(tmp_path / "plain"), "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "slices/s" in out
    assert main([*base, "--out", str(tmp_path / "tta"), "--tta"]) == 0
    capsys.readouterr()

    loaded = load_model(ckpt)
    model = loaded.model
    assert loaded.input_spec.num_adj_slices == 1  # from the demo config:
    assert loaded.input_spec.crop_height == {"brain": 192, "knee": 192}
    for group in ("acc4", "acc8"):
        for kspace_path in sorted((leaderboard / group / "kspace").glob("*.h5")):
            kspace_np, mask_np = formats.read_kspace_slice(kspace_path, 0)
            label = formats.read_image_volume(leaderboard / group / "image" / kspace_path.name, "image_label")
            plain = formats.read_reconstruction(tmp_path / "plain" / group / kspace_path.name)
            tta = formats.read_reconstruction(tmp_path / "tta" / group / kspace_path.name)
            assert plain.shape == tta.shape == label.shape and plain.dtype == np.float32
            # the written volume is the model's output, slice by slice, with the file's own mask
            # the demo config crops the readout to 192 image rows before the network, as reconstruct must too
            kspace = crop_readout(torch.from_numpy(kspace_np)[None], 192)
            mask = torch.from_numpy(mask_np.astype(bool)).view(1, 1, 1, -1)
            start, stop = center_block(mask_np)
            low = torch.tensor([stop - start])
            with torch.no_grad():
                expected = model(kspace, mask, low, crop_size=label.shape[-2:])[0].numpy()
            np.testing.assert_allclose(plain[0], expected, rtol=1e-4, atol=1e-6 * float(expected.max()))
            # flip self-ensemble: mean of the direct pass and the un-flipped pass on flipped k-space
            fk, fm = flip_width_kspace(kspace, mask)
            with torch.no_grad():
                flipped = model(fk, fm, low, crop_size=label.shape[-2:])[0].flip(-1).numpy()
            np.testing.assert_allclose(
                tta[0], (expected + flipped) / 2, rtol=1e-4, atol=1e-6 * float(expected.max())
            )

    scores = tmp_path / "scores.json"
    assert (
        main(
            [
                "evaluate",
                "--leaderboard",
                str(leaderboard),
                "--recon",
                str(tmp_path / "plain"),
                "--json",
                str(scores),
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    result = json.loads(scores.read_text())
    assert 0.0 < result["total"] < 1.0 and str(round(result["total"], 4)) in printed


def test_reconstruct_with_checkpoint_refuses_bad_kspace(
    first_run: Path, tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "lb"
    shutil.copytree(tiny_root / "leaderboard" / "acc4", data)
    bad = sorted((data / "kspace").glob("*.h5"))[-1]
    with h5py.File(bad, "r+") as f:
        f["kspace"][0, 0, 0, 0] = np.nan
    code = main(
        [
            "reconstruct",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "rec"),
            "--checkpoint",
            str(first_run / "checkpoints" / "best.ckpt"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and bad.name in err and len(err.splitlines()) == 1
    assert not (tmp_path / "rec").exists() or not any((tmp_path / "rec").rglob("*.h5"))


# ------------------------------------------------------------------------- reliability (issue 13): training


def test_last_checkpoint_is_the_newest_state_even_without_improvement(
    tiny_root: Path, tmp_path: Path
) -> None:
    """last.ckpt is rewritten after every validation, not only when the score improved (Lightning's save_last):
    with a vanishing learning rate the score never improves, best.ckpt stays at the first validation and
    last.ckpt still holds the final step."""
    run_dir = tmp_path / "flat"
    extra = ("--model.lr", "1e-30", "--model.scheduler", "none", "--trainer.val_check_interval", "2")
    assert main(_train_args(tiny_root, run_dir, *extra, steps=5)) == 0
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5
    assert torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["global_step"] == 2
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_a_file_as_run_dir_is_one_line(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kspacelab.training.run import fit_or_reuse

    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    for run_dir, expected in ((afile, "is a file, not a folder"), (afile / "sub", f"lies under {afile}")):
        assert main(_train_args(tiny_root, run_dir)) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{run_dir}: --run-dir {expected}" in err, err
    with pytest.raises(KspacelabError, match="is a file, not a folder"):
        fit_or_reuse([DEMO_CONFIG], ["--data.root", str(tiny_root)], afile, "test")
    assert afile.read_text() == "keep me"  # nothing replaced


@pytest.mark.parametrize("workers", [0, 1])
def test_nan_in_the_training_kspace_names_file_and_slice(
    workers: int, tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    bad = sorted((root / "train" / "kspace").glob("*.h5"))[0]
    with h5py.File(bad, "r+") as f:
        width = f["kspace"].shape[-1]
        f["kspace"][1, 0, 3, width // 2] = np.nan  # the centre column: sampled by every mask
    extra = ("--data.num_workers", str(workers))
    assert main(_train_args(root, tmp_path / "run", *extra, steps=8)) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("kspacelab: error:")]
    assert errors == [f"kspacelab: error: {bad}: slice 1: the training k-space holds NaN or Inf values"], err
    assert "Traceback" not in err


def test_config_errors_name_the_yaml_file_and_key(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown key, a wrong type, a section that is not a mapping and a YAML syntax error: one line naming
    the recipe file (the one that introduced the key, of several) or the override, the key and what is allowed."""
    typo = tmp_path / "typo.yaml"
    typo.write_text("model:\n  lrr: 0.1\n")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("data:\n  batch_size: [1, 2]\n")
    flat = tmp_path / "flat.yaml"
    flat.write_text("trainer: 3\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  lr: [0.1\n")
    kwargs = tmp_path / "kwargs.yaml"
    kwargs.write_text("model:\n  model_kwargs:\n    chanz: 4\n")
    cases = [
        ([typo], [], f"{typo}: model.lrr: unknown key; allowed: area_weighted_loss,"),
        ([wrong], [], f"{wrong}: data.batch_size: expected int, got [1, 2]"),
        ([flat], [], f"{flat}: trainer: expected a mapping of options, got 3"),
        ([broken], [], f"{broken}: YAML syntax error at line 3, column 1:"),
        (
            [kwargs],
            [],
            f"{kwargs}: model.model_kwargs.chanz: unknown key(s) chanz for model 'varnet'; allowed:",
        ),
        ([], ["--model.lrr", "1"], "override --model.lrr: unknown key; allowed:"),
        ([], ["--trainer.max_steps", "many"], "override --trainer.max_steps: expected int, got 'many'"),
    ]
    for configs, overrides, expected in cases:
        argv = ["train", "--config", str(DEMO_CONFIG), *[w for c in configs for w in ("--config", str(c))]]
        argv += ["--data.root", str(tiny_root), *overrides, "--run-dir", str(tmp_path / "run")]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith(f"kspacelab: error: {expected}"), err
    # the file that introduced the key, not another one of the recipes
    argv = ["train", "--config", str(DEMO_CONFIG), "--config", str(typo), "--config", str(wrong)]
    assert main([*argv, "--data.root", str(tiny_root), "--run-dir", str(tmp_path / "run")]) == 2
    assert f"{typo}: model.lrr: unknown key" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
