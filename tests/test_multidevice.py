"""``reconstruct --devices N``: volumes sharded over N processes (Lightning Fabric, DDP on the CPU here)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import alive, descendants, many_volumes, tiny_varnet_checkpoint
from kspacelab import formats
from kspacelab.cli import main
from kspacelab.inference import validated_volumes
from kspacelab.multidevice import shard_volumes


def _volumes(folder: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(folder)): formats.read_reconstruction(p) for p in sorted(folder.rglob("*.h5"))}


def _all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if not p.is_dir()) if folder.exists() else []


@pytest.mark.parametrize("kind", ["checkpoint", "method"])
def test_two_devices_write_the_files_of_one(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    target = (
        ["--checkpoint", str(tiny_varnet_checkpoint(tmp_path / "m.ckpt"))]
        if kind == "checkpoint"
        else ["--method", "zero-filled"]
    )
    argv = ["reconstruct", "--data", str(tiny_root / "leaderboard"), *target, "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    assert main([*argv, "--out", str(tmp_path / "two"), "--devices", "2"]) == 0
    printed = capsys.readouterr().out
    assert "on 2 devices" in printed
    one, two = _volumes(tmp_path / "one"), _volumes(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) == 4
    for name, volume in one.items():
        np.testing.assert_array_equal(two[name], volume)
    single = json.loads((tmp_path / "one" / "timing.json").read_text())
    merged = json.loads((tmp_path / "two" / "timing.json").read_text())
    assert merged["device"] == "cpu x 2" and merged["what"].endswith("on 2 devices")
    assert {g: (e["volumes"], e["slices"]) for g, e in merged["groups"].items()} == {
        g: (e["volumes"], e["slices"]) for g, e in single["groups"].items()
    }
    assert [p.name for p in _all_files(tmp_path / "two") if p.name.startswith(".")] == []


def test_shares_are_balanced_by_slices(tiny_root: Path) -> None:
    volumes = validated_volumes(tiny_root / "leaderboard")
    for devices in (2, 3, 5):
        shards = shard_volumes(volumes, devices)
        assert len(shards) == devices
        flat = [v for shard in shards for v in shard]
        assert sorted(v.name for _, v in flat) == sorted(v.name for _, v in volumes)
        loads = [sum(formats.kspace_shape(v.kspace_path)[0] for _, v in shard) for shard in shards]
        biggest = max(formats.kspace_shape(v.kspace_path)[0] for _, v in volumes)
        assert max(loads) - min(loads) <= biggest
        for shard in shards:  # each share keeps the input order
            order = [volumes.index(item) for item in shard]
            assert order == sorted(order)


def test_bad_device_options_are_refused_before_anything_runs(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rec"
    argv = ["reconstruct", "--data", str(tiny_root / "leaderboard"), "--out", str(out)]
    for extra in (
        ["--method", "grappa", "--devices", "2", "--workers", "2"],
        ["--bundle", str(tmp_path / "b.yaml"), "--devices", "2"],
        ["--method", "grappa", "--devices", "2", "--device", "cuda"],
    ):
        assert main([*argv, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("kspacelab: error:"), err
    assert not out.exists()


def test_kill_9_leaves_no_files_and_no_device_processes(tiny_root: Path, tmp_path: Path) -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc")
    data = many_volumes(tiny_root, tmp_path / "many", 200)
    out = tmp_path / "rec"
    argv = ["reconstruct", "--data", str(data), "--out", str(out), "--method", "grappa", "--devices", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kspacelab.cli", *argv, "--quiet"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(out.rglob("*.h5"))) >= 2:  # the device processes are writing
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
        children = descendants(proc.pid)
        assert children, "no device processes"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(alive(p) for p in children):
            time.sleep(0.2)
        left = [p for p in children if alive(p)]
    finally:
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert left == [], f"device processes still running 15 s after kill -9: {left}"
    time.sleep(0.5)
    assert _all_files(out) == []  # the device processes removed what they wrote, temporaries included
