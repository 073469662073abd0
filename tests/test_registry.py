"""Every registered model, end to end: built from its recipe with the registry's tiny configuration, a forward
pass on a simulated slice, one training step, a checkpoint round trip through the loader that reproduces the
output exactly, and `reconstruct --checkpoint` writing valid files. A new model gets this by being registered."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import tiny_overrides
from kspacelab import formats
from kspacelab.cli import main
from kspacelab.data.anatomy import AnatomyDataModule
from kspacelab.data.dataset import SliceDataset
from kspacelab.data.singlecoil import SingleCoilDataModule
from kspacelab.data.transforms import SliceTransform
from kspacelab.models import MODEL_REGISTRY, ReconModel, build_model
from kspacelab.models.base import ReconSample, check_config
from kspacelab.training import LoadedModel, ReconModule, load_model
from kspacelab.training.classifier import ClassifierModule
from kspacelab.training.recipes import compose, find_config
from kspacelab.training.run import fit
from kspacelab.training.singlecoil import GenerativeModule, SingleCoilModule

SINGLE_COIL_TASKS = ("singlecoil", "generative")
COMMON = [
    "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false", "--trainer.accumulate_grad_batches", "1",
]  # fmt: skip


#: the Lightning module of each task (training.run picks them the same way)
MODULES = {
    "reconstruction": ReconModule,
    "anatomy_classifier": ClassifierModule,
    "singlecoil": SingleCoilModule,
    "generative": GenerativeModule,
}


def _module_from_checkpoint(path: Path) -> torch.nn.Module:
    """The trained Lightning module rebuilt from the checkpoint's hyper-parameters and weights."""
    ckpt = torch.load(path, weights_only=True)
    hparams = {k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")}
    module_class = MODULES[MODEL_REGISTRY[hparams["model_name"]].task]
    names = inspect.signature(module_class.__init__).parameters
    module = module_class(**{k: v for k, v in hparams.items() if k in names})
    module.load_state_dict(ckpt["state_dict"])
    return module.eval()


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_registered_model_end_to_end(
    name: str,
    tiny_root: Path,
    tiny_singlecoil_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    entry = MODEL_REGISTRY[name]
    single_coil = entry.task in SINGLE_COIL_TASKS
    if single_coil:
        tiny_root = tiny_singlecoil_root
    # the recipe names the model, and its model arguments (and the tiny ones) are valid configuration keys
    recipe = compose([entry.recipe], tiny_overrides(name))
    assert recipe["model"]["model_name"] == name
    kwargs = recipe["model"]["model_kwargs"]
    check_config(name, entry.config, kwargs)
    assert entry.config(**kwargs) is not None
    model = build_model(name, **kwargs)
    assert isinstance(model, entry.cls)

    # one training step from the recipe (tiny model, tiny data): checkpoints written, weights changed
    run = tmp_path / "run"
    result = fit([entry.recipe], [*tiny_overrides(name), "--data.root", str(tiny_root), *COMMON], run)
    assert result.best is not None and result.last is not None
    last = torch.load(result.last, weights_only=True)
    steps = 2 if entry.task == "generative" else 1  # a generative batch: a discriminator and a generator step
    assert last["global_step"] == steps
    trained = _module_from_checkpoint(result.best)
    loaded = load_model(result.best)
    assert loaded.name == name and loaded.config == kwargs and not loaded.model.training
    assert loaded.provenance.format == "lightning" and loaded.provenance.global_step == steps
    if single_coil:
        _single_coil_end_to_end(tiny_root, tmp_path, result.best, loaded, trained)
        capsys.readouterr()
        return

    if entry.task == "anatomy_classifier":
        dm = AnatomyDataModule(str(tiny_root), image_size=int(entry.tiny["image_size"]))
        dm.setup("validate")
        images = next(iter(dm.val_dataloader())).image
        with torch.no_grad():
            logits = loaded.model(images)
            assert torch.equal(logits, trained(images))
        assert logits.dtype == torch.float32 and bool(torch.isfinite(logits).all())
        return

    # a forward pass on a simulated slice, prepared as the model declares (its InputSpec)
    assert isinstance(loaded.model, ReconModel)
    assert loaded.input_spec == trained.input_spec  # type: ignore[union-attr]
    assert loaded.input_spec.num_adj_slices == loaded.model.input_spec().num_adj_slices
    volume = formats.discover_folder(tiny_root / "val", split="val")[0]
    dataset = SliceDataset([volume], SliceTransform(loaded.input_spec))
    batch: ReconSample = torch.utils.data.default_collate([dataset[0]])
    with torch.no_grad():
        image = loaded.model.reconstruct(batch)
        expected = trained(batch)
    assert image.shape == (1, *batch.target.shape[-2:]) and image.dtype == torch.float32
    assert bool(torch.isfinite(image).all()) and float(image.abs().max()) > 0
    assert torch.equal(image, expected)  # the checkpoint reproduces the trained model exactly

    # reconstruct --checkpoint writes one valid file per k-space file
    out = tmp_path / "recon"
    leaderboard = tiny_root / "leaderboard"
    args = ["reconstruct", "--data", str(leaderboard), "--out", str(out), "--checkpoint", str(result.best)]
    assert main([*args, "--quiet"]) == 0
    capsys.readouterr()
    for kspace in sorted(leaderboard.glob("acc*/kspace/*.h5")):
        written = formats.read_reconstruction(out / kspace.parent.parent.name / kspace.name)
        label = formats.read_image_volume(kspace.parent.parent / "image" / kspace.name, "image_label")
        assert written.shape == label.shape and written.dtype == np.float32
        assert np.isfinite(written).all() and written.max() > 0

    # reconstruct --tta writes the model's own self-ensemble
    assert main([*args[:-4], "--out", str(tmp_path / "tta"), *args[-2:], "--tta", "--quiet"]) == 0
    board = formats.discover_folder(leaderboard / "acc4", split="leaderboard", acceleration=4)[0]
    item = SliceDataset([board], SliceTransform(loaded.input_spec))[0]
    with torch.no_grad():
        ensemble = loaded.model.reconstruct_ensemble(torch.utils.data.default_collate([item]))[0].numpy()
    written = formats.read_reconstruction(tmp_path / "tta" / "acc4" / board.name)[0]
    np.testing.assert_allclose(written, ensemble, rtol=1e-5, atol=1e-6 * float(np.abs(ensemble).max()))


def _single_coil_end_to_end(
    root: Path, tmp_path: Path, checkpoint: Path, loaded: LoadedModel, trained: torch.nn.Module
) -> None:
    """A single-coil model: a validation slice as the data module prepares it, and `reconstruct --checkpoint
    --acceleration 8` (plain and with --tta) on the single-coil validation folder."""
    assert isinstance(loaded.model, ReconModel) and not loaded.input_spec.multicoil
    data = SingleCoilDataModule(str(root), accelerations=[8])
    data.set_input_spec(loaded.input_spec)
    data.setup("validate")
    batch: ReconSample = next(iter(data.val_dataloader()))
    with torch.no_grad():
        image = loaded.model.reconstruct(batch)
        expected = trained(batch)
    assert image.shape == batch.target.shape and image.dtype == torch.float32
    assert bool(torch.isfinite(image).all()) and float(image.abs().max()) > 0
    assert torch.equal(image, expected)  # the checkpoint reproduces the trained model exactly
    val = root / "singlecoil_val"
    for extra in ([], ["--tta"]):
        out = tmp_path / ("recon" + "".join(extra))
        args = ["reconstruct", "--data", str(val), "--out", str(out), "--checkpoint", str(checkpoint)]
        assert main([*args, "--acceleration", "8", *extra, "--quiet"]) == 0
        for path in sorted(val.glob("*.h5")):
            target = formats.read_nyu_slice(path, 0)[2]
            written = formats.read_reconstruction(out / path.name)
            assert written.shape[1:] == target.shape and written.dtype == np.float32
            assert np.isfinite(written).all() and written.max() > 0


def test_every_recipe_of_the_registry_is_bundled() -> None:
    for entry in MODEL_REGISTRY.values():
        assert find_config(entry.recipe).is_file()
        assert set(entry.tiny) <= {f for f in entry.config.__dataclass_fields__}
