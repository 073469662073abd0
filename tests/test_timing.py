"""``OUT/timing.json``: the run's wall time as the challenges measure it, and its report beside the scores."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import tiny_varnet_checkpoint
from kspacelab import formats, timing
from kspacelab.cli import main
from kspacelab.inference import ReconOptions, reconstruct_with_checkpoint


def _slices_per_group(leaderboard: Path) -> dict[str, tuple[int, int]]:
    """group -> (volumes, slices) of the k-space files under ``leaderboard``."""
    counts = {}
    for group in ("acc4", "acc8"):
        files = sorted((leaderboard / group / "kspace").glob("*.h5"))
        counts[group] = (len(files), sum(formats.kspace_shape(f)[0] for f in files))
    return counts


def test_reconstruct_writes_timing_json(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leaderboard = tiny_root / "leaderboard"
    out = tmp_path / "rec"
    assert (
        main(["reconstruct", "--data", str(leaderboard), "--out", str(out), "--method", "zero-filled"]) == 0
    )
    printed = capsys.readouterr().out
    report = json.loads((out / "timing.json").read_text())
    assert timing.is_timing(report)
    assert report["what"] == "zero-filled" and report["device"] == "cpu"
    expected = _slices_per_group(leaderboard)
    assert {g: (e["volumes"], e["slices"]) for g, e in report["groups"].items()} == expected
    assert report["slices"] == sum(s for _, s in expected.values())
    # every volume is charged the time since the previous one: the groups add up to the whole run
    group_seconds = sum(e["seconds"] for e in report["groups"].values())
    assert group_seconds == pytest.approx(report["total_seconds"], abs=0.05, rel=0.05)
    assert report["ms_per_slice"] == pytest.approx(
        1000 * report["total_seconds"] / report["slices"], rel=1e-3
    )
    for entry in report["groups"].values():
        assert entry["ms_per_slice"] == pytest.approx(1000 * entry["seconds"] / entry["slices"], rel=1e-2)
    line = next(line for line in printed.splitlines() if line.startswith("timing:"))
    assert str(out / "timing.json") in line and "ms/slice" in line


def test_the_clock_starts_before_loading_and_counts_it(tiny_root: Path, tmp_path: Path) -> None:
    """A run started 60 s ago (the CLI starts the clock with the command) is charged those 60 s, on its first
    volume, and the timing names the checkpoint and the options."""
    ckpt = tiny_varnet_checkpoint(tmp_path / "model.ckpt")
    options = ReconOptions(progress=False, batch_size=2, started=time.perf_counter() - 60.0)
    summary = reconstruct_with_checkpoint(tiny_root / "leaderboard", tmp_path / "rec", ckpt, options)
    report = json.loads((tmp_path / "rec" / "timing.json").read_text())
    assert summary.timing == report
    assert report["what"] == "checkpoint model.ckpt" and report["batch_size"] == 2 and report["tta"] is False
    assert report["total_seconds"] >= 60.0
    assert report["groups"]["acc4"]["seconds"] >= 60.0 > report["groups"]["acc8"]["seconds"]
    assert report["total_seconds"] >= summary.seconds


def test_a_foreign_timing_file_is_refused_before_anything_is_written(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rec"
    out.mkdir()
    (out / "timing.json").write_text('{"my": "notes"}')
    argv = [
        "reconstruct",
        "--data",
        str(tiny_root / "leaderboard"),
        "--out",
        str(out),
        "--method",
        "zero-filled",
    ]
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "timing.json" in err and "refusing" in err
    assert sorted(p.name for p in out.rglob("*")) == ["timing.json"]
    assert json.loads((out / "timing.json").read_text()) == {"my": "notes"}


def test_scores_carry_the_milliseconds_per_slice(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leaderboard = tiny_root / "leaderboard"
    out = tmp_path / "rec"
    assert (
        main(
            [
                "reconstruct",
                "--data",
                str(leaderboard),
                "--out",
                str(out),
                "--method",
                "zero-filled",
                "--quiet",
            ]
        )
        == 0
    )
    report = json.loads((out / "timing.json").read_text())
    capsys.readouterr()
    for metric in ("snu2025", "snu2026"):
        scores = tmp_path / f"{metric}.json"
        argv = ["evaluate", "--leaderboard", str(leaderboard), "--recon", str(out), "--metric", metric]
        assert main([*argv, "--json", str(scores), "--quiet"]) == 0
        printed = capsys.readouterr().out
        row = next(line for line in printed.splitlines() if line.startswith("| ms/slice |"))
        cells = [c.strip() for c in row.strip("|").split("|")[1:]]
        assert cells[:2] == [f"{report['groups'][g]['ms_per_slice']:.1f}" for g in ("acc4", "acc8")]
        assert f"ms/slice: {report['ms_per_slice']:.1f}" in printed
        assert json.loads(scores.read_text())["timing"] == report

    # an unusable timing file: the scores stand, a one-line warning names it, no timing is reported
    (out / "timing.json").write_text('{"kspacelab_timing": 1, "total_seconds": NaN, "groups": {}}')
    scores = tmp_path / "bad.json"
    argv = ["evaluate", "--leaderboard", str(leaderboard), "--recon", str(out), "--json", str(scores)]
    assert main([*argv, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert (
        captured.err.strip()
        == f"warning: {out / 'timing.json'}: not a kspacelab timing report; no timing reported"
    )
    assert "ms/slice" not in captured.out
    result = json.loads(scores.read_text())
    assert result["timing"] is None and result["total"] is not None


def test_run_clock_charges_each_volume_the_time_since_the_last(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    clock = timing.RunClock()
    now[0] = 103.0  # loading: charged to the first volume
    clock.lap("acc4", 10)
    now[0] = 104.0
    clock.lap("acc8", 5)
    now[0] = 106.0
    clock.lap("acc4", 10)
    report = clock.report("m", "cpu", 1, False)
    assert report["total_seconds"] == 6.0 and report["slices"] == 25 and report["ms_per_slice"] == 240.0
    assert report["groups"] == {
        "acc4": {"volumes": 2, "slices": 20, "seconds": 5.0, "ms_per_slice": 250.0},
        "acc8": {"volumes": 1, "slices": 5, "seconds": 1.0, "ms_per_slice": 200.0},
    }
    flat = timing.RunClock(start=100.0)
    flat.lap("", 4)
    assert list(flat.report("m", "cpu", 1, False)["groups"]) == [timing.FLAT_GROUP]


@pytest.mark.parametrize(
    "change",
    [
        {"kspacelab_timing": 2},
        {"total_seconds": -1.0},
        {"total_seconds": math.inf},
        {"ms_per_slice": True},
        {"groups": []},
        {"groups": {"acc4": {"seconds": 1.0, "ms_per_slice": 1.0}}},
    ],
)
def test_is_timing_rejects_what_the_clock_never_writes(change: dict[str, Any]) -> None:
    clock = timing.RunClock(start=time.perf_counter())
    clock.lap("acc4", 3)
    good = clock.report("m", "cpu", 1, False)
    assert timing.is_timing(good)
    assert not timing.is_timing({**good, **change})
