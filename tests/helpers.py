"""Shared test helpers (importable from every test module: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from kspacelab import physics
from kspacelab.data.synthetic import SimulationPreset, with_overrides
from kspacelab.masks import fname_seed, single_coil_mask_func
from kspacelab.models.base import ReconSample
from kspacelab.models.varnet import VarNet

# A tiny simulation geometry: the whole SNU layout in a few seconds.
TINY: SimulationPreset = with_overrides(
    "demo",
    name="tiny",
    brain_height=256,
    brain_widths=(128,),
    knee_height=256,
    knee_widths=(120, 136),
    crop=128,
    brain_coils=(6,),
    knee_coils=(6,),
    brain_slices=(2, 2),
    knee_slices=(2, 2),
    train_volumes=1,
    val_volumes=1,
    leaderboard_volumes=1,
)

#: the single-coil layout at a geometry of a few milliseconds per volume; W >= 51 so that x32 keeps a centre line
TINY_SC: SimulationPreset = with_overrides(
    "singlecoil-demo",
    name="tiny-singlecoil",
    knee_height=96,
    knee_widths=(64, 68),
    crop=40,
    knee_coils=(4,),
    knee_slices=(2, 3),
    train_volumes=2,
    val_volumes=1,
    leaderboard_volumes=1,
)


def tiny_overrides(model_name: str) -> list[str]:
    """Override words that shrink a recipe's model to the registry's ``tiny`` configuration (the recipe's other
    model arguments, e.g. ``num_adj_slices``, stay), with the data settings a tiny run needs."""
    import yaml

    from kspacelab.models import MODEL_REGISTRY

    entry = MODEL_REGISTRY[model_name]
    words: list[str] = []
    for key, value in entry.tiny.items():
        words += [f"--model.model_kwargs.{key}", yaml.safe_dump(value, default_flow_style=True).strip()]
        words[-1] = words[-1].removesuffix("\n...").strip()
    if entry.task == "anatomy_classifier":
        words += ["--data.image_size", str(entry.tiny["image_size"])]
    elif entry.task == "generative":
        words += ["--model.discriminator_kwargs", "{chans: 4, num_layers: 2}", "--data.num_workers", "0"]
    else:
        words += ["--data.num_workers", "0"]
    return words


#: a VarNet small enough to run on the TINY data in well under a second
TINY_VARNET = {"num_cascades": 1, "sens_chans": 2, "sens_pools": 2, "chans": 4, "pools": 2}


def tiny_varnet_checkpoint(path: Path, crop_height: dict[str, int] | None = None) -> Path:
    """A kspacelab-style checkpoint of an untrained tiny VarNet (seeded; optionally the readout crop it was
    "trained" with)."""
    torch.manual_seed(0)
    model = VarNet(**TINY_VARNET)
    hparams: dict[str, Any] = {"model_name": "varnet", "model_kwargs": dict(TINY_VARNET)}
    if crop_height is not None:
        hparams["crop_height"] = crop_height
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": hparams}, path)
    return path


def _children_of() -> dict[int, list[int]]:
    """Parent pid -> child pids of every process (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), from /proc."""
    children, found, todo = _children_of(), [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """A running process (a zombie waiting for a parent to reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def many_volumes(tiny_root: Path, folder: Path, count: int) -> Path:
    """A folder ``folder/kspace`` of ``count`` links to one tiny leaderboard file (a run long enough to be
    interrupted); returns ``folder``."""
    source = tiny_root / "leaderboard" / "acc4" / "kspace" / "brain_test1.h5"
    (folder / "kspace").mkdir(parents=True)
    for i in range(1, count + 1):
        (folder / "kspace" / f"brain_test{i}.h5").symlink_to(source)
    return folder


#: k-space ``(H, W)`` and output size of the single-coil test batches
SC_SHAPE = (48, 40)
SC_CROP = (32, 32)


def _single_coil_image(seed: int = 0) -> torch.Tensor:
    """A positive ellipse with random texture and a phase ramp, complex ``SC_SHAPE``."""
    g = torch.Generator().manual_seed(seed)
    h, w = SC_SHAPE
    y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    body = ((x / 0.7) ** 2 + (y / 0.8) ** 2 < 1).float() * (1 + 0.3 * torch.rand(h, w, generator=g))
    return body * torch.polar(torch.ones(h, w), 0.5 * x + 0.2 * y)


def single_coil_batch(batch: int = 2, acceleration: int = 4, max_value: float = 0.0) -> ReconSample:
    """A collated single-coil batch at a raw NYU-like scale (~1e-4): ``masked_kspace (B, 1, H, W, 2)`` with
    ``(H, W) = SC_SHAPE``, a fastMRI random mask ``(B, 1, 1, W, 1)`` of ``acceleration`` seeded from the file name,
    the target magnitude ``(B, *SC_CROP)``, ``max_value`` ``(B,)``."""
    kspaces, masks, targets = [], [], []
    for i in range(batch):
        image = _single_coil_image(i) * 1e-4
        mask, _ = single_coil_mask_func(acceleration)((1, *SC_SHAPE, 2), seed=fname_seed(f"file{i}.h5"))
        kspaces.append(physics.to_real_view(physics.fft2c(image)).unsqueeze(0) * mask.bool())
        masks.append(mask.bool())
        targets.append(physics.center_crop(image.abs(), SC_CROP))
    return ReconSample(
        masked_kspace=torch.stack(kspaces),
        mask=torch.stack(masks),
        num_low_frequencies=0,
        target=torch.stack(targets),
        max_value=torch.full((batch,), max_value, dtype=torch.float64),  # type: ignore[arg-type]
        crop_size=torch.tensor([SC_CROP] * batch),
        anatomy=("knee",) * batch,  # type: ignore[arg-type]
        acceleration=torch.full((batch,), acceleration),  # type: ignore[arg-type]
        fname=tuple(f"file{i}.h5" for i in range(batch)),  # type: ignore[arg-type]
        slice_num=torch.arange(batch),  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------- runs killed and resumed (test_resume and others)
REPO = Path(__file__).resolve().parents[1]


def subprocess_env() -> dict[str, str]:
    """The environment of a kspacelab subprocess: this checkout's sources first, one thread per library."""
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def checkpoint_step(path: Path) -> int:
    """``global_step`` of a checkpoint file, -1 while it is not there (or not complete)."""
    try:
        return int(torch.load(path, weights_only=True)["global_step"])
    except Exception:  # not there yet
        return -1


# A driver that SIGKILLs its own process right after last.ckpt of step KILL_AFTER_STEP is on disk: a kill
# between a checkpoint write and the next step, exactly.
KILL_AFTER_WRITE = """
import os, signal, sys
from pathlib import Path
from kspacelab.training import resume
target = int(os.environ["KILL_AFTER_STEP"])
save = resume.AtomicCheckpointIO.save_checkpoint
def killing_save(self, checkpoint, path, storage_options=None):
    save(self, checkpoint, path, storage_options)
    if Path(path).name == "last.ckpt" and checkpoint["global_step"] == target:
        os.kill(os.getpid(), signal.SIGKILL)
resume.AtomicCheckpointIO.save_checkpoint = killing_save
from kspacelab.cli import main
sys.exit(main(sys.argv[1:]))
"""


def assert_same_run(reference: Path, run: Path, where: str) -> None:
    """Bitwise the same final weights, optimiser, schedule and loop progress, and the same best checkpoint."""
    a = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert (a["global_step"], a["epoch"]) == (b["global_step"], b["epoch"]), where
    assert a["state_dict"].keys() == b["state_dict"].keys()
    different = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not different, f"weights differ after {where}: {different[:5]}"
    for key in ("optimizer_states", "lr_schedulers", "loops"):
        assert repr(a[key]) == repr(b[key]), f"{key} differ after {where}"
    best_a = torch.load(reference / "checkpoints" / "best.ckpt", weights_only=True)
    best_b = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert best_a["global_step"] == best_b["global_step"], where
    assert all(torch.equal(best_a["state_dict"][k], best_b["state_dict"][k]) for k in best_a["state_dict"])
