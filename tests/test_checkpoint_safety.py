"""Checkpoints never run code: a pickle whose unpickling writes a marker file is refused by every path that reads
checkpoints (`reconstruct --checkpoint`, `reconstruct --bundle`, `train --ckpt_path`, a planted `last.ckpt`,
`--init-weights`, `load_model`, Lightning's resume IO), with `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` in the
environment, in one line; corrupt files and broken settings are one-line errors too."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from kspacelab.errors import KspacelabError
from kspacelab.training import ReconModule, load_model, read_state_dict
from kspacelab.training import checkpoint as checkpoint_module
from kspacelab.training.resume import AtomicCheckpointIO

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "src" / "kspacelab" / "configs" / "demo.yaml"
TINY_MODEL = {"num_cascades": 1, "chans": 4, "sens_chans": 2, "pools": 2, "sens_pools": 2}
TINY_MODEL_ARG = "{num_cascades: 1, chans: 4, sens_chans: 2, pools: 2, sens_pools: 2}"


class Payload:
    """Unpickling this writes ``marker`` (what an attacker's checkpoint would do with a shell command)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def _training_checkpoint() -> dict[str, Any]:
    """A checkpoint shaped like `kspacelab train`'s (tiny VarNet)."""
    module = ReconModule(model_kwargs=TINY_MODEL)
    return {
        "epoch": 0,
        "global_step": 1,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": module.state_dict(),
        "loops": {"fit_loop": {}},
        "optimizer_states": [],
        "lr_schedulers": [],
        "callbacks": {},
        "hyper_parameters": {"model_name": "varnet", "model_kwargs": dict(TINY_MODEL)},
    }


@pytest.fixture(scope="module")
def evil(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(checkpoint, marker)``: a training checkpoint carrying the payload, and the file the payload writes."""
    folder = tmp_path_factory.mktemp("evil")
    marker = folder / "MARKER"
    checkpoint = _training_checkpoint()
    checkpoint["hyper_parameters"]["note"] = Payload(marker)
    path = folder / "evil.ckpt"
    torch.save(checkpoint, path)
    return path, marker


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
    return {**env, **extra}


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=_env(**env), capture_output=True, text=True, timeout=300
    )


def _train(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "-m", "kspacelab.cli", "train", "--config", str(DEMO_CONFIG), "--data.root", str(root),
        "--model.model_kwargs", TINY_MODEL_ARG, "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1",
        "--quiet", "--run-dir", str(run_dir), *extra,
    ]  # fmt: skip


def _one_line_error(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The process failed with exactly one line on stderr, ``kspacelab: error: ...`` containing ``expected``."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("kspacelab: error: "), lines
    assert "Traceback" not in done.stderr and "weights_only=False" not in done.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def test_the_payload_really_runs_when_loaded_unsafely(evil: tuple[Path, Path]) -> None:
    """The test checkpoint is a real attack: an unsafe load (as torch does with the environment variable and
    no explicit weights_only) runs it."""
    path, marker = evil
    code = f"import torch; torch.load({str(path)!r})"
    done = _run(["-c", code], TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert marker.read_text() == "code ran"
    marker.unlink()


@pytest.mark.parametrize(
    "path_kind",
    ["reconstruct_checkpoint", "reconstruct_bundle", "train_ckpt_path", "planted_last", "init_weights"],
)
def test_every_cli_path_refuses_the_payload(
    path_kind: str, evil: tuple[Path, Path], tiny_root: Path, tmp_path: Path
) -> None:
    path, marker = evil
    if path_kind == "reconstruct_checkpoint":
        args = ["-m", "kspacelab.cli", "reconstruct", "--data", str(tiny_root / "leaderboard")]
        args += ["--out", str(tmp_path / "out"), "--checkpoint", str(path), "--quiet"]
    elif path_kind == "reconstruct_bundle":
        manifest = tmp_path / "bundle.yaml"
        manifest.write_text(
            "anatomy_source: filename\n"
            f"experts:\n  - {{name: all, anatomy: any, acc: any, mask_rule: any, checkpoint: {path}}}\n"
        )
        args = ["-m", "kspacelab.cli", "reconstruct", "--data", str(tiny_root / "leaderboard")]
        args += ["--out", str(tmp_path / "out"), "--bundle", str(manifest), "--quiet"]
    elif path_kind == "train_ckpt_path":
        args = _train(tiny_root, tmp_path / "run", "--ckpt_path", str(path))
    elif path_kind == "planted_last":
        run = tmp_path / "run"
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "last.ckpt").write_bytes(path.read_bytes())
        args = _train(tiny_root, run)
    else:
        args = _train(tiny_root, tmp_path / "run", "--init-weights", str(path))
    done = _run(args, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    _one_line_error(done, "refused", "nothing was run", "kspacelab training checkpoint or a fastMRI-style")
    assert not marker.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.h5"))


def test_the_python_api_refuses_the_payload(evil: tuple[Path, Path]) -> None:
    """`load_model`, `read_state_dict` and the IO Lightning resumes through (even when asked for
    weights_only=False), in a process with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1."""
    path, marker = evil
    code = (
        "import sys\n"
        "from kspacelab.errors import KspacelabError\n"
        "from kspacelab.training import load_model, read_state_dict\n"
        "from kspacelab.training.resume import AtomicCheckpointIO\n"
        "calls = [load_model, read_state_dict, lambda p: AtomicCheckpointIO().load_checkpoint(p, weights_only=False)]\n"
        "for call in calls:\n"
        "    try:\n"
        "        call(sys.argv[1])\n"
        "    except KspacelabError as err:\n"
        "        print(err)\n"
        "    else:\n"
        "        print('LOADED')\n"
    )
    done = _run(["-c", code, str(path)], TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3 and all("refused" in line for line in lines), done.stdout
    assert not marker.exists()
    assert "Traceback" not in done.stderr and "weights_only=False" not in done.stdout


def test_a_torch_that_ignores_weights_only_is_refused_before_loading(
    evil: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were torch to let the environment override an explicit weights_only=True, kspacelab would notice (a
    harmless probe) and refuse to load anything rather than run the payload."""
    path, marker = evil
    real_load = torch.load

    def unsafe_load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = False
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", unsafe_load)
    checkpoint_module._unsafe_loading.cache_clear()
    try:
        with pytest.raises(KspacelabError, match=r"refusing to load a checkpoint: torch .* unpickles"):
            load_model(path)
    finally:
        checkpoint_module._unsafe_loading.cache_clear()
    assert not marker.exists()


# ------------------------------------------------------------------------------------- corrupt checkpoints


@pytest.mark.parametrize("content", [b"", b"hello\n", os.urandom(4096)], ids=["empty", "text", "random"])
def test_corrupt_files_are_one_line_errors(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    for call in (load_model, read_state_dict, AtomicCheckpointIO().load_checkpoint):
        with pytest.raises(KspacelabError) as info:
            call(path)
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{path}: not a readable torch checkpoint")
        assert "weights_only" not in message and "kspacelab training checkpoint or a fastMRI-style" in message


def test_train_with_a_corrupt_checkpoint_is_one_line(tiny_root: Path, tmp_path: Path) -> None:
    """`train --ckpt_path` with random bytes, and a run folder whose `last.ckpt` is random bytes or a plain state
    dict, end with one line each (before Lightning starts)."""
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(os.urandom(2048))
    done = _run(_train(tiny_root, tmp_path / "one", "--ckpt_path", str(junk)))
    _one_line_error(done, str(junk), "not a readable torch checkpoint")

    run = tmp_path / "two"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(os.urandom(2048))
    _one_line_error(_run(_train(tiny_root, run)), "last.ckpt: not a readable torch checkpoint")

    weights = tmp_path / "weights.pt"
    torch.save(_training_checkpoint()["state_dict"], weights)
    done = _run(_train(tiny_root, tmp_path / "three", "--ckpt_path", str(weights)))
    _one_line_error(done, "not a kspacelab training checkpoint", "--init-weights")


# ---------------------------------------------------------------------------- broken settings in a checkpoint


def _edited(tmp_path: Path, name: str, edit: Any) -> Path:
    checkpoint = copy.deepcopy(_training_checkpoint())
    edit(checkpoint)
    path = tmp_path / f"{name}.ckpt"
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize(
    ("name", "edit", "expected"),
    [
        (
            "kwargs_list",
            lambda c: c["hyper_parameters"].update(model_kwargs=[1, 2]),
            "model_kwargs must be a mapping",
        ),
        (
            "kwargs_text",
            lambda c: c["hyper_parameters"].update(model_kwargs="abc"),
            "model_kwargs must be a mapping",
        ),
        ("name_int", lambda c: c["hyper_parameters"].update(model_name=3), "model_name must be a string"),
        (
            "crop_text",
            lambda c: c["hyper_parameters"].update(crop_height="abc"),
            "crop_height must be a mapping",
        ),
        (
            "crop_negative",
            lambda c: c["hyper_parameters"].update(crop_height={"brain": -4}),
            "positive integer",
        ),
        (
            "crop_float",
            lambda c: c["hyper_parameters"].update(crop_height={"brain": 3.5}),
            "positive integer",
        ),
        ("crop_anatomy", lambda c: c["hyper_parameters"].update(crop_height={"lung": 4}), "unknown anatomy"),
        ("kwargs_type", lambda c: c["hyper_parameters"]["model_kwargs"].update(chans="4"), "chans = '4'"),
        (
            "kwargs_key",
            lambda c: c["hyper_parameters"]["model_kwargs"].update(chanz=4),
            "unknown key(s) chanz",
        ),
    ],
)
def test_broken_settings_in_a_checkpoint_are_one_line(
    name: str, edit: Any, expected: str, tmp_path: Path
) -> None:
    path = _edited(tmp_path, name, edit)
    with pytest.raises(KspacelabError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: broken settings in the checkpoint")
    assert expected in message


@pytest.mark.parametrize(
    ("value", "expected"), [(2, "positive odd integer"), ("3", "does not have the type int")]
)
def test_num_adj_slices_of_the_wrong_kind_is_one_line(value: Any, expected: str, tmp_path: Path) -> None:
    from kspacelab.models import MODEL_REGISTRY, build_model

    tiny = dict(MODEL_REGISTRY["promptmr"].tiny)
    model = build_model("promptmr", **tiny)
    checkpoint = {
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "hyper_parameters": {"model_name": "promptmr", "model_kwargs": {**tiny, "num_adj_slices": value}},
    }
    path = tmp_path / "promptmr.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(
        KspacelabError, match=f"broken settings in the checkpoint: model 'promptmr': .*{expected}"
    ):
        load_model(path)
