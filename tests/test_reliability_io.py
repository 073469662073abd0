"""Issue 13, inputs and outputs: inputs are never overwritten, every input is validated before the first output,
a run writes all of its outputs or none of the new ones, user and OS errors are one line, worker processes end
with their parent, a training readout crop never breaks inference, and VarNet takes every mask shape fastMRI takes.

The bad inputs are made from copies of the tiny simulated dataset (``tiny_root``); nothing binary is committed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

import kspacelab.data.synthetic as synthetic
from helpers import TINY, TINY_VARNET, alive, descendants, many_volumes, tiny_varnet_checkpoint
from kspacelab import formats, physics
from kspacelab.cli import main
from kspacelab.data.transforms import SliceTransform
from kspacelab.errors import KspacelabError
from kspacelab.masks import center_block
from kspacelab.models.base import InputSpec
from kspacelab.models.varnet import VarNet

# --------------------------------------------------------------------------------------------- helpers


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kspacelab: error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])


def _leaderboard(tiny_root: Path, dest: Path) -> Path:
    """A private copy of the tiny leaderboard (acc4/, acc8/ with kspace/ and image/)."""
    shutil.copytree(tiny_root / "leaderboard", dest)
    return dest


def _digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (links not followed) with the hash of its content."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _files(folder: Path) -> list[Path]:
    """Every file and link under ``folder`` (empty when it does not exist)."""
    return sorted(p for p in folder.rglob("*") if not p.is_dir()) if folder.exists() else []


def _last_kspace(data: Path) -> Path:
    """The k-space file reconstructed last (acc8, natural order), so earlier outputs would come first."""
    return sorted((data / "acc8" / "kspace").glob("*.h5"), key=lambda p: formats.natural_key(p.name))[-1]


def _rewrite(path: Path, **datasets: np.ndarray) -> None:
    """Replace datasets of an HDF5 file in place (the copy of a tiny file)."""
    with h5py.File(path, "r+") as f:
        for key, value in datasets.items():
            del f[key]
            f[key] = value


def _fail_on_call(real: Any, n: int, error: int = errno.ENOSPC) -> Any:
    """Replacement for a write step (a function or method) that raises an OSError on its ``n``-th call (1-based)
    and calls through otherwise."""
    calls = [0]

    def replacement(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == n:
            raise OSError(error, os.strerror(error))
        return real(*args, **kwargs)

    return replacement


# ------------------------------------------------------------------------- item 2: inputs never overwritten


@pytest.mark.parametrize(
    "where",
    ["acc4/image", "acc4/kspace", "acc4", "root", "acc4/kspace/new", "parent", "link-inside", "link-to-root"],
)
def test_output_folder_inside_or_around_the_input_is_refused(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    data = _leaderboard(tiny_root, tmp_path / "sub" / "lb")
    if where == "root":
        out = data
    elif where == "parent":
        out = tmp_path / "sub"
    elif where == "link-inside":  # a link elsewhere that points into the input folder
        (tmp_path / "elsewhere").symlink_to(data / "acc4")
        out = tmp_path / "elsewhere" / "recon"
    elif where == "link-to-root":  # the data given through a link, the output inside the real folder
        (tmp_path / "data-link").symlink_to(data)
        out = data / "recon"
        data = tmp_path / "data-link"
    else:
        out = data / where
    before = _digest(tmp_path)
    code, _, err = _run(
        ["reconstruct", "--data", str(data), "--out", str(out), "--method", "zero-filled", "--quiet"], capsys
    )
    assert code == 2
    _one_line_error(err, str(out), "input folder")
    assert _digest(tmp_path) == before  # nothing replaced, nothing written


def test_existing_foreign_file_is_never_replaced(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _leaderboard(tiny_root, tmp_path / "lb")
    out = tmp_path / "rec"
    argv = ["reconstruct", "--data", str(data), "--out", str(out), "--method", "zero-filled", "--quiet"]
    # an image file (no 'reconstruction' dataset) where an output would go
    foreign = out / "acc8" / "knee_test1.h5"
    foreign.parent.mkdir(parents=True)
    shutil.copy(data / "acc8" / "image" / "knee_test1.h5", foreign)
    before = _digest(tmp_path)
    code, _, err = _run(argv, capsys)
    assert code == 2
    _one_line_error(err, str(foreign), "not a kspacelab reconstruction")
    assert _digest(tmp_path) == before
    # a folder in place of an output file, a file in place of the output folder
    foreign.unlink()
    foreign.mkdir()
    code, _, err = _run(argv, capsys)
    assert code == 2
    _one_line_error(err, str(foreign), "folder")
    shutil.rmtree(out)
    out.write_text("not a folder")
    code, _, err = _run(argv, capsys)
    assert code == 2
    _one_line_error(err, str(out), "is a file")
    # the outputs of an earlier run are kspacelab's own: a new run replaces them
    out.unlink()
    assert _run(argv, capsys)[0] == 0
    assert _run(argv, capsys)[0] == 0
    assert len(_files(out)) == 5  # 4 reconstructions and timing.json, each replaced by the second run


def test_bundle_gets_the_same_output_checks(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The output folder is checked before the bundle is even read (this manifest does not exist)."""
    data = _leaderboard(tiny_root, tmp_path / "lb")
    before = _digest(tmp_path)
    code, _, err = _run(
        [
            "reconstruct",
            "--data",
            str(data),
            "--out",
            str(data / "acc4"),
            "--bundle",
            str(tmp_path / "no.yaml"),
        ],
        capsys,
    )
    assert code == 2
    _one_line_error(err, "input folder")
    assert _digest(tmp_path) == before


def test_evaluate_json_never_replaces_an_input_or_foreign_file(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _leaderboard(tiny_root, tmp_path / "lb")
    rec = tmp_path / "rec"
    assert (
        _run(
            ["reconstruct", "--data", str(data), "--out", str(rec), "--method", "zero-filled", "--quiet"],
            capsys,
        )[0]
        == 0
    )
    evaluate = ["evaluate", "--leaderboard", str(data), "--recon", str(rec), "--quiet", "--json"]
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    before = _digest(tmp_path)
    for target in (data / "acc4" / "image" / "brain_test1.h5", rec / "acc8" / "knee_test1.h5", notes):
        code, _, err = _run([*evaluate, str(target)], capsys)
        assert code == 2
        _one_line_error(err, str(target), "refusing to replace it")
    for target in (data / "acc4", notes / "scores.json"):  # a folder; a path under a file
        code, _, err = _run([*evaluate, str(target)], capsys)
        assert code == 2
        _one_line_error(err, str(target))
    assert _digest(tmp_path) == before
    scores = tmp_path / "scores.json"
    assert _run([*evaluate, str(scores)], capsys)[0] == 0
    assert _run([*evaluate, str(scores)], capsys)[0] == 0  # its own scores file is replaced
    assert 0 < json.loads(scores.read_text())["total"] <= 1


# ------------------------------------------------------------ items 4, 7, 8: inputs validated before writing


def _damage(data: Path, problem: str) -> Path:
    """Damage the copy ``data`` and return the file the error must name."""
    last = _last_kspace(data)
    with h5py.File(last, "r") as f:
        kspace, mask = f["kspace"][()], f["mask"][()]
    if problem == "zero-coils":
        _rewrite(last, kspace=kspace[:, :0])
        return last
    if problem == "zero-mask":
        _rewrite(last, mask=np.zeros_like(mask))
        return last
    if problem == "mask-length":
        _rewrite(last, mask=np.ones(mask.shape[0] - 2, mask.dtype))
        return last
    if problem == "slice-mismatch":
        image = data / "acc8" / "image" / last.name
        with h5py.File(image, "r") as f:
            arrays = {key: f[key][()][:1] for key in ("image_input", "image_grappa", "image_label")}
        _rewrite(image, **arrays)
        return image
    if problem == "nan-image":
        image = data / "acc8" / "image" / last.name
        with h5py.File(image, "r+") as f:
            f["image_label"][0, 0, 0] = np.nan
        return image
    bad = data / "acc8" / "kspace" / "knee_test9.h5"
    if problem == "dangling-link":
        bad.symlink_to(data / "acc8" / "kspace" / "gone.h5")
    elif problem == "link-loop":
        bad.symlink_to(data / "acc8" / "kspace" / "knee_test10.h5")
        (data / "acc8" / "kspace" / "knee_test10.h5").symlink_to(bad)
    return bad


PROBLEMS = {
    "zero-coils": "no coils",
    "zero-mask": "samples no k-space line",
    "mask-length": "'mask' has length",
    "slice-mismatch": "slices",
    "nan-image": "NaN",
    "dangling-link": "broken symbolic link",
    "link-loop": "symbolic link loop",
}


@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_bad_input_stops_the_run_before_any_output(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    data = _leaderboard(tiny_root, tmp_path / "lb")
    bad = _damage(data, problem)
    argv = ["reconstruct", "--data", str(data), "--method", "zero-filled", "--quiet"]
    code, _, err = _run([*argv, "--out", str(tmp_path / "rec")], capsys)
    assert code == 2
    _one_line_error(err, str(bad), PROBLEMS[problem])
    assert not (tmp_path / "rec").exists()
    # --skip-bad: the others are reconstructed, the bad file is named in a warning of the summary
    code, out, err = _run([*argv, "--out", str(tmp_path / "skip"), "--skip-bad"], capsys)
    assert code == 0, err
    warnings = [line for line in out.splitlines() if line.startswith("warning: skipped")]
    assert any(str(bad) in line and PROBLEMS[problem] in line for line in warnings), out
    written = {p.name for p in _files(tmp_path / "skip" / "acc8")}
    assert bad.name not in written
    assert len(_files(tmp_path / "skip" / "acc4") + _files(tmp_path / "skip" / "acc8")) == (
        4 if "link" in problem else 3
    )  # every good volume


@pytest.mark.parametrize("problem", ["zero-mask", "zero-coils", "slice-mismatch"])
def test_bad_input_with_a_checkpoint_is_one_line(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    data = _leaderboard(tiny_root, tmp_path / "lb")
    bad = _damage(data, problem)
    ckpt = tiny_varnet_checkpoint(tmp_path / "model.ckpt")
    argv = [
        "reconstruct",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "rec"),
        "--checkpoint",
        str(ckpt),
        "--quiet",
    ]
    code, _, err = _run(argv, capsys)
    assert code == 2
    _one_line_error(err, str(bad), PROBLEMS[problem])
    assert not (tmp_path / "rec").exists()


def test_symlink_loops_of_folders_are_reported_as_loops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "kspace").symlink_to(data / "kspace2")
    (data / "kspace2").symlink_to(data / "kspace")
    code, _, err = _run(
        ["reconstruct", "--data", str(data), "--out", str(tmp_path / "rec"), "--method", "zero-filled"],
        capsys,
    )
    assert code == 2
    _one_line_error(err, str(data / "kspace"), "symbolic link loop")
    (tmp_path / "self").symlink_to(tmp_path / "self")
    code, _, err = _run(
        [
            "reconstruct",
            "--data",
            str(tmp_path / "self"),
            "--out",
            str(tmp_path / "rec"),
            "--method",
            "grappa",
        ],
        capsys,
    )
    assert code == 2
    _one_line_error(err, "symbolic link loop")
    # every .h5 of a folder a link loop: the loop is named, not "no .h5 files"
    kdir = tmp_path / "loops" / "kspace"
    kdir.mkdir(parents=True)
    (kdir / "brain_test1.h5").symlink_to(kdir / "brain_test2.h5")
    (kdir / "brain_test2.h5").symlink_to(kdir / "brain_test1.h5")
    code, _, err = _run(
        [
            "reconstruct",
            "--data",
            str(kdir.parent),
            "--out",
            str(tmp_path / "rec"),
            "--method",
            "zero-filled",
        ],
        capsys,
    )
    assert code == 2
    _one_line_error(err, "brain_test1.h5", "symbolic link loop")
    assert "no .h5 files" not in err


# ------------------------------------------------ items 4, 6: all outputs or none; OS errors are one line


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS])
def test_reconstruct_failing_mid_run_removes_its_outputs(
    tiny_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    error: int,
) -> None:
    data = _leaderboard(tiny_root, tmp_path / "lb")
    out = tmp_path / "rec"
    earlier = out / "acc4" / "brain_test1.h5"  # a reconstruction of an earlier run stays
    formats.write_reconstruction(earlier, np.ones((2, 4, 4), np.float32))
    # the third file's data cannot be written (disk full / read-only file system)
    monkeypatch.setattr(h5py.File, "flush", _fail_on_call(h5py.File.flush, 3, error))
    code, _, err = _run(
        ["reconstruct", "--data", str(data), "--out", str(out), "--method", "zero-filled", "--quiet"], capsys
    )
    assert code == 2
    _one_line_error(err, "cannot write", os.strerror(error))
    assert _files(out) == [earlier]  # the new files of the failed run are gone, no temporary is left
    assert not (out / "acc8").exists()


def test_reconstruct_output_errors_are_one_line(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _leaderboard(tiny_root, tmp_path / "lb")
    argv = ["reconstruct", "--data", str(data), "--method", "zero-filled", "--quiet"]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _run([*argv, "--out", str(blocker / "rec")], capsys)  # a file on the way to the folder
    assert code == 2
    _one_line_error(err, str(blocker))
    # a read-only output folder (simulated: the tests may run as root, who may write anyway)
    real = h5py.File

    def read_only(name: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if mode != "r":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(name))
        return real(name, mode, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", read_only)
    code, _, err = _run([*argv, "--out", str(tmp_path / "rec")], capsys)
    assert code == 2
    _one_line_error(err, "cannot write", os.strerror(errno.EACCES))
    assert _files(tmp_path / "rec") == []


def test_model_run_failing_mid_run_removes_its_outputs(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _leaderboard(tiny_root, tmp_path / "lb")
    ckpt = tiny_varnet_checkpoint(tmp_path / "model.ckpt")
    monkeypatch.setattr(h5py.File, "flush", _fail_on_call(h5py.File.flush, 2))
    code, _, err = _run(
        [
            "reconstruct",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "rec"),
            "--checkpoint",
            str(ckpt),
            "--quiet",
        ],
        capsys,
    )
    assert code == 2
    _one_line_error(err, "No space left on device")
    assert not (tmp_path / "rec").exists()


def test_evaluate_json_disk_full_leaves_no_temporary(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _leaderboard(tiny_root, tmp_path / "lb")
    rec = tmp_path / "rec"
    assert (
        _run(
            ["reconstruct", "--data", str(data), "--out", str(rec), "--method", "zero-filled", "--quiet"],
            capsys,
        )[0]
        == 0
    )
    out = tmp_path / "scores"
    out.mkdir()
    monkeypatch.setattr(formats, "_fsync_file", _fail_on_call(formats._fsync_file, 1))
    code, _, err = _run(
        [
            "evaluate",
            "--leaderboard",
            str(data),
            "--recon",
            str(rec),
            "--quiet",
            "--json",
            str(out / "s.json"),
        ],
        capsys,
    )
    assert code == 2
    _one_line_error(err, str(out / "s.json"), "No space left on device")
    assert _files(out) == []


def test_atomic_writers_remove_their_temporary_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(formats, "_fsync_file", _fail_on_call(formats._fsync_file, 1))
    with pytest.raises(KspacelabError, match="cannot write"):
        formats.atomic_text(tmp_path / "a.json", "{}")
    with pytest.raises(ValueError, match="boom"), formats.atomic_h5(tmp_path / "b.h5") as f:
        f["x"] = np.zeros(3)
        raise ValueError("boom")
    assert _files(tmp_path) == []


def test_simulate_output_errors_are_one_line_and_leave_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _run(["simulate", str(blocker / "data"), "--quiet"], capsys)
    assert code == 2
    _one_line_error(err, str(blocker))
    code, _, err = _run(["simulate", str(blocker), "--quiet"], capsys)
    assert code == 2
    _one_line_error(err, str(blocker), "not a directory")
    # disk full at the third file: the files written so far and the new folders are removed
    real_simulate = synthetic.simulate_dataset
    monkeypatch.setattr(
        synthetic, "simulate_dataset", lambda out, preset="demo", **kw: real_simulate(out, preset=TINY, **kw)
    )
    monkeypatch.setattr(h5py.File, "flush", _fail_on_call(h5py.File.flush, 3))
    out = tmp_path / "new"
    code, _, err = _run(["simulate", str(out), "--quiet"], capsys)
    assert code == 2
    _one_line_error(err, "cannot write", "No space left on device")
    assert not out.exists()


# ----------------------------------------------------------------------------- item 5: no orphan workers


def _start_long_run(tiny_root: Path, tmp_path: Path) -> tuple[subprocess.Popen[bytes], list[int], Path]:
    """``reconstruct --method grappa --workers 2`` on 300 volumes (links to one tiny file), in its own session;
    returns once the workers and the resource tracker are running."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc")
    data = many_volumes(tiny_root, tmp_path / "many", 300)
    out = tmp_path / "rec"
    argv = ["reconstruct", "--data", str(data), "--out", str(out), "--method", "grappa", "--workers", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kspacelab.cli", *argv, "--quiet"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while len(descendants(proc.pid)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)  # let the workers come up
    children = descendants(proc.pid)
    if proc.poll() is not None or len(children) < 3:
        proc.kill()
        pytest.fail(f"the run ended or started no workers: {proc.returncode}, {children}")
    return proc, children, out


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def test_workers_end_when_the_parent_is_killed(tiny_root: Path, tmp_path: Path) -> None:
    proc, children, _ = _start_long_run(tiny_root, tmp_path)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        left = _gone_within(children, 10.0)
    finally:
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert left == [], f"orphans still running after 10 s: {left}"


def test_ctrl_c_stops_everything_within_seconds(tiny_root: Path, tmp_path: Path) -> None:
    proc, children, out = _start_long_run(tiny_root, tmp_path)
    try:
        start = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C goes to the whole process group
        code = proc.wait(timeout=10)
        seconds = time.monotonic() - start
        left = _gone_within(children, 5.0)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert code == 130 and seconds < 10, (code, seconds, err)
    assert err.strip() == "kspacelab: interrupted", err
    assert left == []
    assert _files(out) == []  # an interrupted run leaves none of its new files


_RESULTS_IN_FLIGHT = """
import multiprocessing, os, sys, threading, time
from concurrent.futures import ProcessPoolExecutor
import numpy as np
from kspacelab.inference import _close_pool, _init_worker

if __name__ == "__main__":
    for trial in range(3):
        pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                                   initargs=(1, os.getpid()))
        futures = [pool.submit(np.ones, (1024, 1024)) for _ in range(2000)]  # 8 MB results: workers mostly write
        futures[0].result()
        time.sleep(0.05 * trial)
        closing = threading.Thread(target=_close_pool(pool), args=(KeyboardInterrupt, None, None), daemon=True)
        closing.start()
        closing.join(10)
        if closing.is_alive():
            print(f"trial {trial}: the pool did not close within 10 s", flush=True)
            os._exit(3)
    print("closed")
"""


def test_an_interrupt_while_workers_send_results_closes_the_pool(tmp_path: Path) -> None:
    """A worker ended in the middle of sending a result left the pool's manager thread waiting for the rest of
    the message forever (a hang after Ctrl-C seen in CI): the pool must close even then."""
    script = tmp_path / "results_in_flight.py"
    script.write_text(_RESULTS_IN_FLIGHT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "closed", (done.stdout, done.stderr[-2000:])


# ------------------------------------------------------- item 9: a training readout crop never breaks inference


def test_a_training_crop_smaller_than_the_target_is_widened_at_inference(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tiny data has H=256 and 128-row targets; the model was trained with a 64-row readout crop."""
    from kspacelab.training.checkpoint import load_model

    ckpt = tiny_varnet_checkpoint(tmp_path / "model.ckpt", crop_height={"brain": 64, "knee": 64})
    data = tiny_root / "leaderboard"
    code, _, err = _run(
        [
            "reconstruct",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "rec"),
            "--checkpoint",
            str(ckpt),
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "64" in notes[0] and "128" in notes[0]
    # the output is the model's on k-space cropped to the target height (the smallest crop that holds it)
    loaded = load_model(ckpt)
    kspace, mask = formats.read_kspace_slice(data / "acc4" / "kspace" / "brain_test1.h5", 0)
    k = physics.crop_readout(torch.from_numpy(kspace)[None], 128)
    start, stop = center_block(mask)
    with torch.no_grad():
        expected = loaded.model(
            k, torch.from_numpy(mask).view(1, 1, 1, -1), torch.tensor([stop - start]), (128, 128)
        )
    got = formats.read_reconstruction(tmp_path / "rec" / "acc4" / "brain_test1.h5")[0]
    np.testing.assert_allclose(got, expected[0].numpy(), rtol=1e-4, atol=1e-6 * float(expected.max()))
    # training keeps the strict error
    train = SliceTransform(InputSpec(crop_height={"brain": 64}))
    target = np.zeros((128, 128), np.float32)
    with pytest.raises(ValueError, match="smaller than the target height 128"):
        train(kspace, mask, target, {}, "brain_test1.h5", 0, anatomy="brain")
    sample = SliceTransform(InputSpec(crop_height={"brain": 64}), inference=True)(
        kspace, mask, target, {}, "brain_test1.h5", 0, anatomy="brain"
    )
    assert sample.masked_kspace.shape[-3] == 128


@pytest.mark.parametrize(
    ("height", "crop", "target", "expected"),
    [
        (256, 64, 128, 128),
        (257, 64, 128, 128),
        (257, 129, 128, 129),
        (256, 129, 128, 130),
        (100, 64, 128, 100),
        (256, 200, 128, 200),
    ],
)
def test_inference_crop_holds_the_target(height: int, crop: int, target: int, expected: int) -> None:
    transform = SliceTransform(InputSpec(crop_height={"knee": crop}), inference=True)
    assert transform.output_height(height, "knee", target) == expected
    assert transform.output_height(height, "brain", target) == height  # no crop for this anatomy


# ----------------------------------------------------------------- item 10: every mask shape fastMRI takes


@pytest.mark.parametrize(
    "shape",
    [
        "B,1,1,W,1",
        "1,1,1,W,1",
        "1,1,W,1",
        "1,W,1",
        "W,1",
        "B,1,H,W,1",
        "1,C,1,W,1",
        "B,C,H,W,1",
        "1,1,1,1,W,1",
        "B,1,1,W",
        "B,1,1,W,2",
    ],
)
@pytest.mark.parametrize("num_low", [None, "given"])
def test_varnet_takes_every_mask_shape_fastmri_takes(shape: str, num_low: str | None) -> None:
    fastmri_models = pytest.importorskip("fastmri.models")
    from kspacelab.masks import create_mask_for_mask_type

    b, c, h, w = 2, 3, 32, 24
    names = shape.split(",")
    dims = tuple({"B": b, "C": c, "H": h, "W": w}.get(n) or int(n) for n in names)
    torch.manual_seed(0)
    reference = fastmri_models.VarNet(**TINY_VARNET).eval()
    ours = VarNet(**TINY_VARNET).eval()
    ours.load_state_dict(reference.state_dict())
    line, low = create_mask_for_mask_type("equispaced_fraction", [0.08], [4])((c, h, w, 2), seed=3)
    line = line.bool().view(w)
    # the lines along the mask's W axis; a mask with an H axis varies along it too (a 2-D mask)
    mask = line.view([w if n == "W" else 1 for n in names]).expand(dims).clone()
    if "H" in names:
        mask.select(names.index("H"), 5).fill_(False)
    kspace = torch.randn(b, c, h, w, 2)
    masked = kspace * line.view(1, 1, 1, w, 1)  # the measured k-space; each model reads its own mask shape
    low_arg = int(low) if num_low else None
    with torch.no_grad():
        try:
            expected = reference(masked, mask, low_arg)
        except (IndexError, ValueError, RuntimeError):
            expected = None
        if expected is not None and expected.shape != (b, h, w):  # fastMRI runs but mixes up the batch
            expected = None
        try:
            got = ours(masked, mask, low_arg)
        except ValueError as err:
            assert expected is None, f"fastMRI accepts mask {tuple(mask.shape)} but kspacelab raised: {err}"
            assert (
                len(str(err).splitlines()) == 1
                and "expected" in str(err)
                and str(tuple(mask.shape)) in str(err)
            )
            return
    if expected is not None:
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    else:  # fastMRI cannot take it; kspacelab reads it as the line mask it is
        canonical = ours(masked, line.view(1, 1, 1, w, 1).expand(b, 1, 1, w, 1), low_arg)
        torch.testing.assert_close(got, canonical)
