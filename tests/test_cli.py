"""The program's surface: --help everywhere, simulate errors, and the demo end to end on a tiny preset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import TINY
from kspacelab.cli import build_parser, main
from kspacelab.demo import run_demo


@pytest.mark.parametrize("command", ["simulate", "train", "reconstruct", "evaluate", "robustness", "demo"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: kspacelab " + command in capsys.readouterr().out


def test_console_script_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kspacelab.cli", "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stdout.startswith("kspacelab ")


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "required" in capsys.readouterr().err


def test_simulate_refuses_non_empty_folder_and_bad_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    assert main(["simulate", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "keep.txt").read_text() == "precious"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["simulate", str(tmp_path / "x"), "--volumes-per-group", "0"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["simulate", str(tmp_path / "x"), "--preset", "huge"])


TINY_TRAINING = [
    "--model.model_kwargs",
    "{num_cascades: 1, chans: 4, sens_chans: 2, pools: 2, sens_pools: 2, initial_kspace: grappa}",
    "--trainer.max_steps",
    "2",
]
TINY_REFINER = [
    "--model.model_kwargs.n_feats",
    "8",
    "--model.model_kwargs.n_resblocks",
    "1",
    "--trainer.max_steps",
    "2",
]


def test_demo_end_to_end_on_tiny_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny = {"train_overrides": TINY_TRAINING, "refiner_overrides": TINY_REFINER}
    result = run_demo(tmp_path / "demo", seed=3, progress=False, preset=TINY, **tiny)
    out = capsys.readouterr().out
    methods = (
        "zero-filled",
        "grappa",
        "sense",
        "cs",
        "varnet untrained (GRAPPA start)",
        "varnet",
        "varnet + refiner",
    )
    for method in methods:
        assert f"| {method} |" in out
    assert "acc4: varnet " in out and "acc8: varnet " in out  # the verdict lines
    assert "acc4: varnet + refiner" in out and "acc8: varnet + refiner" in out
    payload = json.loads((tmp_path / "demo" / "results.json").read_text())
    for method in methods:
        scores = payload["methods"][method]
        assert 0.0 < scores["acc4"] < 1.0 and 0.0 < scores["acc8"] < 1.0
        assert scores["total"] == pytest.approx((scores["acc4"] + scores["acc8"]) / 2)
        assert result.results[method].groups["acc4"] == scores["acc4"]
    for acc in (4, 8):
        run = tmp_path / "demo" / "runs" / f"varnet_acc{acc}"
        assert payload["checkpoints"][f"acc{acc}"] == str(run / "checkpoints" / "best.ckpt")
        # each expert saw only its own acceleration
        data = yaml.safe_load((run / "config.yaml").read_text())["data"]
        assert data["only_accelerations"] == [acc]
        # its refiner starts from it, frozen, with the expert's own configuration
        refiner = yaml.safe_load(
            (tmp_path / "demo" / "runs" / f"refined_acc{acc}" / "config.yaml").read_text()
        )
        kwargs = refiner["model"]["model_kwargs"]
        assert kwargs["init_from"] == str(run / "checkpoints" / "best.ckpt") and kwargs["freeze_first_stage"]
        assert kwargs["first_stage_kwargs"]["num_cascades"] == 1 and refiner["data"][
            "only_accelerations"
        ] == [acc]
    for split in ("train", "val"):  # the refiners' CS images, computed before training (and cached)
        assert sorted((tmp_path / "demo" / "recon" / f"cs_{split}").rglob("*.h5"))
    for figure in ("comparison.png", "dataset.png"):
        path = tmp_path / "demo" / "figures" / figure
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "figures/comparison.png" in report and "| varnet |" in report
    # a second run reuses the simulated data and the trained models and gives the same scores
    again = run_demo(tmp_path / "demo", seed=3, progress=False, preset=TINY, **tiny)
    printed = capsys.readouterr().out
    assert "reusing the simulated dataset" in printed and "reusing the acc8 VarNet" in printed
    assert "reusing the acc8 refiner" in printed
    for method in methods:
        assert again.results[method].groups == result.results[method].groups


def test_demo_refuses_foreign_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.h5").write_bytes(b"x")
    assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 2
    assert "not written by" in capsys.readouterr().err
