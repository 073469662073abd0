"""Shared test helpers (importable from every test module: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kspacelab.data.synthetic import SimulationPreset, with_overrides
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
