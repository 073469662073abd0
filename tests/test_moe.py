"""Mixtures of experts: anatomy classifier training, bundle manifests, routing, `reconstruct --bundle`."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from helpers import TINY
from kspacelab import formats
from kspacelab.cli import main
from kspacelab.errors import KspacelabError
from kspacelab.experts.manifest import read_bundle, write_bundle
from kspacelab.masks import random_offset_mask
from kspacelab.models import AnatomyClassifier
from kspacelab.models.classifier import classify_volume, normalise_images
from kspacelab.training import load_model

REPO = Path(__file__).resolve().parents[1]
TINY_VARNET = "{num_cascades: 1, chans: 4, sens_chans: 2, pools: 2, sens_pools: 2}"
TINY_CLASSIFIER = [
    "--model.model_kwargs",
    "{chans: 4, num_blocks: 2, image_size: 32}",
    "--data.image_size",
    "32",
    "--model.lr",
    "0.01",
]


@pytest.fixture(scope="module")
def classifier_run(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "classifier"
    args = [
        "train",
        "--config",
        str(REPO / "src" / "kspacelab" / "configs" / "anatomy_classifier.yaml"),
        "--data.root",
        str(tiny_root),
    ]
    args += [*TINY_CLASSIFIER, "--trainer.max_epochs", "10", "--data.batch_size", "4", "--run-dir", str(run)]
    args += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    assert main(args) == 0
    return run


@pytest.fixture(scope="module")
def bundle_run(tiny_root: Path, classifier_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle recipe trained with `kspacelab train --bundle`: acc4/acc8 experts for brain, one knee expert."""
    folder = tmp_path_factory.mktemp("bundle")
    recipe = folder / "recipe.yaml"
    varnet = REPO / "src" / "kspacelab" / "configs" / "demo.yaml"
    steps = ["--trainer.max_steps", "1", "--trainer.limit_val_batches", "1"]
    recipe.write_text(
        json.dumps(
            {
                "classifier": {
                    "config": str(REPO / "src" / "kspacelab" / "configs" / "anatomy_classifier.yaml"),
                    "args": [*TINY_CLASSIFIER, "--trainer.max_epochs", "10", "--data.batch_size", "4"],
                },
                "experts": [
                    {
                        "name": "brain_acc4",
                        "anatomy": "brain",
                        "acc": 4,
                        "config": str(varnet),
                        "args": steps,
                    },
                    {
                        "name": "brain_acc8",
                        "anatomy": "brain",
                        "acc": 8,
                        "config": str(varnet),
                        "args": steps,
                    },
                    {"name": "knee_any", "anatomy": "knee", "config": str(varnet), "args": steps},
                ],
            }
        )
    )
    run = folder / "run"
    argv = ["train", "--bundle", str(recipe), "--run-dir", str(run), "--data.root", str(tiny_root)]
    argv += ["--model.model_kwargs", TINY_VARNET, "--trainer.enable_progress_bar", "false"]
    assert main(argv) == 0
    return run


# ----------------------------------------------------------------------------------------------- classifier


def test_classifier_shapes_and_scale_invariance() -> None:
    torch.manual_seed(0)
    model = AnatomyClassifier(chans=4, num_blocks=2, image_size=32).eval()
    images = torch.rand(3, 50, 40)
    logits = model(images)
    assert logits.shape == (3, 2) and logits.dtype == torch.float32
    torch.testing.assert_close(model(images * 1e-4), logits)  # intensity scale is divided out
    normalised = normalise_images(images, 32)
    assert normalised.shape == (3, 1, 32, 32) and torch.allclose(normalised.flatten(1).amax(1), torch.ones(3))
    anatomy, probability = classify_volume(model, images)
    assert anatomy in ("brain", "knee") and 0.5 <= probability <= 1.0
    with pytest.raises(ValueError, match="classifier size"):
        AnatomyClassifier(num_blocks=6, image_size=32)


def test_classifier_trains_with_kspacelab_train(classifier_run: Path, tiny_root: Path) -> None:
    loaded = load_model(classifier_run / "checkpoints" / "best.ckpt")
    model = loaded.model
    assert isinstance(model, AnatomyClassifier) and loaded.name == "anatomy_classifier"
    assert loaded.data_hyper_parameters["image_key"] == "image_grappa"  # what the router reads
    rows = (next((classifier_run / "logs").glob("version_*/metrics.csv"))).read_text().splitlines()
    header = rows[0].split(",")
    assert {"val/accuracy", "val/slice_accuracy", "val/loss", "train/loss"} <= set(header)
    # the trained classifier gets the anatomy of every validation volume right
    for volume in formats.discover_folder(tiny_root / "val", split="val", require_images=True):
        assert volume.image_path is not None
        images = torch.from_numpy(formats.read_image_volume(volume.image_path, "image_grappa"))
        assert classify_volume(model, images)[0] == volume.anatomy, volume.name


# ------------------------------------------------------------------------------------------------- bundles


def _fake_checkpoints(folder: Path, names: list[str]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names:
        paths[name] = folder / f"{name}.ckpt"
        paths[name].write_bytes(b"weights")
    return paths


def test_bundle_manifest_validation(tmp_path: Path) -> None:
    ck = _fake_checkpoints(tmp_path / "ck", ["b4", "b8", "k", "clf", "fb"])
    experts = [
        {"name": "b4", "anatomy": "brain", "acc": 4, "mask_rule": "any", "checkpoint": ck["b4"]},
        {"name": "b8", "anatomy": "brain", "acc": 8, "mask_rule": "any", "checkpoint": ck["b8"]},
    ]
    # knee routes are missing: a clear error naming the route, unless a fallback is named
    path = write_bundle(tmp_path / "bundle.yaml", experts, classifier=ck["clf"])
    with pytest.raises(KspacelabError, match="no expert for route anatomy=knee acc=4") as err:
        read_bundle(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    path = write_bundle(tmp_path / "bundle.yaml", experts, classifier=ck["clf"], fallback=ck["fb"])
    bundle = read_bundle(path)
    assert bundle.route("knee", 4, "organiser") is None and bundle.route("brain", 8, "other").name == "b8"  # type: ignore[union-attr]
    assert "ck/b4.ckpt" in path.read_text()  # relative paths
    # the most specific expert wins; equally specific overlapping experts are refused
    full = [*experts, {"name": "k", "anatomy": "knee", "checkpoint": ck["k"]}]
    helper = {"name": "b4h", "anatomy": "brain", "acc": 4, "mask_rule": "other", "checkpoint": ck["b4"]}
    bundle = read_bundle(write_bundle(tmp_path / "b2.json", [*full, helper], classifier=ck["clf"]))
    assert (
        bundle.route("brain", 4, "other").name == "b4h" and bundle.route("brain", 4, "organiser").name == "b4"
    )  # type: ignore[union-attr]
    assert bundle.route("knee", 8, "other").name == "k"  # type: ignore[union-attr]
    clash = {"name": "k2", "anatomy": "knee", "checkpoint": ck["k"]}
    with pytest.raises(KspacelabError, match="both serve"):
        read_bundle(write_bundle(tmp_path / "b3.yaml", [*full, clash], classifier=ck["clf"]))
    # anatomy-specific experts need a classifier unless the file names are trusted
    with pytest.raises(KspacelabError, match="classifier"):
        read_bundle(write_bundle(tmp_path / "b4.yaml", full))
    assert read_bundle(write_bundle(tmp_path / "b5.yaml", full, anatomy_source="filename")).needs_anatomy
    # missing files and bad fields
    (tmp_path / "ck" / "k.ckpt").unlink()
    with pytest.raises(KspacelabError, match=r"k\.ckpt not found"):
        read_bundle(tmp_path / "b5.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("experts:\n  - {name: x, anatomy: liver, checkpoint: ck/b4.ckpt}\n")
    with pytest.raises(KspacelabError, match="anatomy must be"):
        read_bundle(bad)


def _leaderboard_with_redrawn_masks(src: Path, dst: Path, names: set[str]) -> None:
    """Copy a leaderboard; for ``names`` re-draw the mask as a random-offset mask (never the organiser's)."""
    shutil.copytree(src, dst)
    rng = np.random.default_rng(0)
    for group in ("acc4", "acc8"):
        acc = int(group[3:])
        for path in (dst / group / "kspace").glob("*.h5"):
            if path.name not in names:
                continue
            with h5py.File(path, "r+") as f:
                width = f["kspace"].shape[-1]
                mask = random_offset_mask(width, acc, rng, exclude_organiser_offset=True)
                full = f["kspace"][()]
                del f["kspace"], f["mask"]
                f["kspace"] = full * mask
                f["mask"] = mask.astype(np.float32)


def test_reconstruct_with_bundle_routes_and_writes_routing(
    bundle_run: Path, tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = bundle_run / "bundle.yaml"
    bundle = read_bundle(manifest)
    assert [e.name for e in bundle.experts] == ["brain_acc4", "brain_acc8", "knee_any"]
    assert bundle.classifier is not None
    # add helper experts for brain masks that do not follow the organiser rule
    helpers = "".join(
        f"- name: brain_helper{acc}\n  anatomy: brain\n  acc: {acc}\n  mask_rule: other\n"
        f"  checkpoint: brain_acc{acc}/checkpoints/best.ckpt\n"
        for acc in (4, 8)
    )
    text = manifest.read_text().replace("experts:\n", "experts:\n" + helpers, 1)
    helper_manifest = bundle_run / "bundle_helpers.yaml"
    helper_manifest.write_text(text)
    leaderboard = tmp_path / "lb"
    brain_files = {p.name for p in (tiny_root / "leaderboard" / "acc4" / "kspace").glob("brain_*.h5")}
    _leaderboard_with_redrawn_masks(tiny_root / "leaderboard", leaderboard, brain_files)

    out = tmp_path / "rec"
    argv = ["reconstruct", "--data", str(leaderboard), "--out", str(out), "--bundle", str(helper_manifest)]
    assert main([*argv, "--quiet", "--time-budget", "3600"]) == 0
    printed = capsys.readouterr().out
    assert "volumes per expert:" in printed and "within the time budget" in printed
    routing = json.loads((out / "routing.json").read_text())
    files = sorted(
        str(p.relative_to(leaderboard)).replace("/kspace", "") for p in leaderboard.rglob("kspace/*.h5")
    )
    assert sorted(r["file"] for r in routing) == files
    for r in routing:
        assert set(r) == {"file", "anatomy", "anatomy_probability", "acc", "mask_rule", "expert"}
        group, name = r["file"].split("/")
        assert r["acc"] == int(group[3:])
        assert r["anatomy"] == formats.anatomy_from_name(name)  # the classifier got it right
        if name in brain_files:
            assert r["mask_rule"] == "other" and r["expert"] == f"brain_helper{r['acc']}"
        else:
            assert r["mask_rule"] == "organiser"
            assert r["expert"] == ("knee_any" if name.startswith("knee") else f"brain_{group}")
        recon = formats.read_reconstruction(out / r["file"])
        assert recon.dtype == np.float32 and recon.ndim == 3
    report = json.loads((out / "timing.json").read_text())
    assert report["what"] == f"bundle {helper_manifest.name}"
    assert report["slices"] == sum(formats.kspace_shape(p)[0] for p in leaderboard.rglob("kspace/*.h5"))
    assert {g: e["volumes"] for g, e in report["groups"].items()} == {
        g: len(list((leaderboard / g / "kspace").glob("*.h5"))) for g in ("acc4", "acc8")
    }


def test_bundle_time_budget_strict_and_bad_options(
    bundle_run: Path, tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "reconstruct",
        "--data",
        str(tiny_root / "leaderboard"),
        "--bundle",
        str(bundle_run / "bundle.yaml"),
    ]
    assert main([*argv, "--out", str(tmp_path / "a"), "--quiet", "--time-budget", "1e-6"]) == 0
    assert "warning: time budget: projected" in capsys.readouterr().out
    assert main([*argv, "--out", str(tmp_path / "b"), "--quiet", "--time-budget", "1e-6", "--strict"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--strict" in err and len(err.splitlines()) == 1
    # the budget runs on the clock of timing.json, which the command starts before loading anything: a run
    # that started 100 s before its first volume is over a 50 s budget
    from kspacelab.experts.reconstruct import reconstruct_with_bundle
    from kspacelab.inference import ReconOptions

    late = ReconOptions(progress=False, started=time.perf_counter() - 100.0)
    with pytest.raises(KspacelabError, match="--strict"):
        reconstruct_with_bundle(
            tiny_root / "leaderboard", tmp_path / "late", bundle_run / "bundle.yaml", late, 50.0, strict=True
        )
    assert not (tmp_path / "late").exists() or not any((tmp_path / "late").rglob("*.*"))
    assert main([*argv, "--out", str(tmp_path / "c"), "--time-budget", "-1"]) == 2
    capsys.readouterr()
    code = main(
        [
            "reconstruct",
            "--data",
            str(tiny_root / "leaderboard"),
            "--out",
            str(tmp_path / "d"),
            "--method",
            "grappa",
            "--time-budget",
            "10",
        ]
    )
    assert code == 2 and "--bundle" in capsys.readouterr().err
    missing = tmp_path / "missing.yaml"
    missing.write_text((bundle_run / "bundle.yaml").read_text().replace("knee_any/checkpoints", "nowhere"))
    assert (
        main(
            [
                "reconstruct",
                "--data",
                str(tiny_root / "leaderboard"),
                "--out",
                str(tmp_path / "e"),
                "--bundle",
                str(missing),
            ]
        )
        == 2
    )
    assert "not found" in capsys.readouterr().err


def test_demo_moe_on_tiny_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kspacelab.demo import run_moe_demo

    overrides = [
        "--model.model_kwargs",
        TINY_VARNET,
        "--trainer.max_steps",
        "2",
        "--trainer.limit_val_batches",
        "1",
    ]
    results = run_moe_demo(tmp_path / "demo", seed=1, progress=False, preset=TINY, train_overrides=overrides)
    printed = capsys.readouterr().out
    assert set(results) == {"single model", "mixture"} and "| mixture |" in printed
    manifest = tmp_path / "demo" / "moe" / "bundle.yaml"
    bundle = read_bundle(manifest)
    assert {(e.anatomy, e.acc) for e in bundle.experts} == {(a, r) for a in ("brain", "knee") for r in (4, 8)}
    assert bundle.classifier is not None and bundle.fallback is not None
    payload = json.loads((tmp_path / "demo" / "moe_results.json").read_text())
    for method in ("single model", "mixture"):
        assert 0.0 < payload["methods"][method]["total"] < 1.0
    assert payload["routing_total"] == len(
        json.loads((tmp_path / "demo" / "recon" / "moe" / "routing.json").read_text())
    )
    assert 0.0 <= payload["classifier_validation"]["accuracy"] <= 1.0
    assert "routing:" in (tmp_path / "demo" / "moe_report.md").read_text()


@pytest.mark.parametrize(
    "recipe", sorted(p.name for p in (REPO / "src" / "kspacelab" / "configs").glob("*moe*.yaml"))
)
def test_bundle_recipes_parse_and_cover_every_route(
    recipe: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kspacelab.experts.manifest import ANY, Bundle, ExpertSpec
    from kspacelab.experts.training import read_recipe

    def config_args(configs: tuple[Path, ...]) -> list[str]:
        return [word for config in configs for word in ("--config", str(config))]

    members, source = read_recipe(REPO / "src" / "kspacelab" / "configs" / recipe)
    experts = [m for m in members if m.role == "expert"]
    specs = tuple(ExpertSpec(m.name, m.anatomy, m.acc, m.mask_rule, tmp_path) for m in experts)
    has_fallback = any(m.role == "fallback" for m in members)
    bundle = Bundle(tmp_path / recipe, specs, anatomy_source=source)
    for route in bundle.all_routes():
        assert bundle.route(*route) is not None or has_fallback, route
    assert any(m.role == "classifier" for m in members) or all(e.anatomy == ANY for e in experts)
    # every member's training command line parses (config files, route restrictions and extra args included);
    # experts of "other" masks (helpers) train with mask augmentation, experts of organiser masks without
    from kspacelab.data.augment import mask_augment_from_config
    from kspacelab.training.stages import read_stages

    for member in members:
        words = [*member.route_args(), *member.args]
        runs = (
            [
                [*config_args(stage.configs), *config_args(member.configs), *stage.args, *words]
                for stage in read_stages(member.stages)
            ]
            if member.stages is not None
            else [[*config_args(member.configs), *words]]
        )
        for argv in runs:  # one command line per stage
            capsys.readouterr()
            assert main(["train", *argv, "--print_config"]) == 0, member.name
            resolved = yaml.safe_load(capsys.readouterr().out)
            augment = mask_augment_from_config(resolved["data"].get("mask_augment"))
            if member.mask_rule == "other":
                assert augment is not None and augment.schedule.probability(1000) > 0, member.name
            elif member.mask_rule == "organiser":
                assert augment is None, member.name
            if member.role == "expert" and member.anatomy != ANY:
                assert resolved["data"]["only_anatomies"] == [member.anatomy]
                assert resolved["data"]["only_accelerations"] == [member.acc]


def test_bundle_member_trained_in_stages(tiny_root: Path, tmp_path: Path) -> None:
    """A member with `stages:` runs the staged recipe (the route and extra args apply to every stage); the
    manifest names the last stage's best checkpoint; a second run reuses every stage."""
    from kspacelab.experts.training import read_recipe, train_bundle

    demo = REPO / "src" / "kspacelab" / "configs" / "demo.yaml"
    (tmp_path / "stages.yaml").write_text(
        f"stages:\n  - {{name: one, config: {demo}}}\n"
        f"  - {{name: two, config: {demo}, args: ['--model.lr', '0.0005']}}\n"
    )
    (tmp_path / "bundle.yaml").write_text(
        "anatomy_source: filename\nexperts:\n"
        "  - {name: all4, anatomy: any, acc: 4, mask_rule: any, stages: stages.yaml}\n"
        f"  - {{name: all8, anatomy: any, acc: 8, mask_rule: any, config: {demo}}}\n"
    )
    members, _ = read_recipe(tmp_path / "bundle.yaml")
    assert members[0].stages == tmp_path / "stages.yaml" and members[0].configs == ()
    tiny = [
        "--model.model_kwargs",
        TINY_VARNET,
        "--trainer.max_steps",
        "1",
        "--trainer.limit_val_batches",
        "1",
    ]
    manifest = train_bundle(
        tmp_path / "bundle.yaml", tmp_path / "run", ["--data.root", str(tiny_root), *tiny], False
    )
    bundle = read_bundle(manifest)
    staged = next(e for e in bundle.experts if e.name == "all4")
    assert staged.checkpoint == (tmp_path / "run" / "all4" / "two" / "checkpoints" / "best.ckpt").resolve()
    saved = yaml.safe_load((tmp_path / "run" / "all4" / "two" / "config.yaml").read_text())
    assert saved["data"]["only_accelerations"] == [4] and saved["model"]["lr"] == 0.0005
    marker = json.loads((tmp_path / "run" / "all4" / "two" / "kspacelab-run.json").read_text())
    assert marker["init_weights"] == str(tmp_path / "run" / "all4" / "one" / "checkpoints" / "last.ckpt")
    before = staged.checkpoint.stat().st_mtime_ns
    train_bundle(tmp_path / "bundle.yaml", tmp_path / "run", ["--data.root", str(tiny_root), *tiny], False)
    assert staged.checkpoint.stat().st_mtime_ns == before  # reused
    (tmp_path / "bad.yaml").write_text("experts:\n  - {name: x, stages: missing.yaml}\n")
    with pytest.raises(KspacelabError, match=r"staged recipe missing\.yaml not found"):
        read_recipe(tmp_path / "bad.yaml")


def test_experts_fine_tuned_from_a_shared_member(tiny_root: Path, tmp_path: Path) -> None:
    """``shared`` members train on all the data first, outside the manifest; ``init_from`` starts an expert (a
    single run or the first stage of a staged one) from the shared member's final weights."""
    demo = REPO / "src" / "kspacelab" / "configs" / "demo.yaml"
    steps = ["--trainer.max_steps", "1", "--trainer.limit_val_batches", "1"]
    stages = tmp_path / "stages.yaml"
    stages.write_text(yaml.safe_dump({"stages": [{"name": "one", "config": str(demo)}]}))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "anatomy_source": "filename",
                "shared": [{"name": "base", "config": str(demo), "args": steps}],
                "experts": [
                    {
                        "name": "brain",
                        "anatomy": "brain",
                        "init_from": "base",
                        "config": str(demo),
                        "args": steps,
                    },
                    {
                        "name": "knee",
                        "anatomy": "knee",
                        "init_from": "base",
                        "stages": str(stages),
                        "args": steps,
                    },
                ],
            }
        )
    )
    run = tmp_path / "run"
    argv = ["train", "--bundle", str(recipe), "--run-dir", str(run), "--data.root", str(tiny_root)]
    argv += ["--model.model_kwargs", TINY_VARNET, "--trainer.enable_progress_bar", "false"]
    assert main(argv) == 0
    base_last = run / "base" / "checkpoints" / "last.ckpt"
    assert base_last.is_file()
    for marker in (run / "brain" / "kspacelab-run.json", run / "knee" / "one" / "kspacelab-run.json"):
        assert json.loads(marker.read_text())["init_weights"] == str(base_last)
    manifest = read_bundle(run / "bundle.yaml")
    assert [e.name for e in manifest.experts] == ["brain", "knee"]  # the shared model is no expert
    # the shared model trained on both anatomies; the experts only on their own
    base_config = yaml.safe_load((run / "base" / "config.yaml").read_text())
    assert base_config["data"]["only_anatomies"] is None
    assert yaml.safe_load((run / "brain" / "config.yaml").read_text())["data"]["only_anatomies"] == ["brain"]
    # a fine-tuned expert differs from where it started, which differs from a fresh start
    start = torch.load(base_last, weights_only=True)["state_dict"]
    tuned = torch.load(run / "brain" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert start.keys() == tuned.keys() and any(not torch.equal(start[k], tuned[k]) for k in start)
    from kspacelab.experts.training import read_recipe

    expert = {"name": "e", "config": str(demo)}
    for raw, message in (
        ({"experts": [{**expert, "init_from": "nowhere"}]}, "is not a shared member"),
        (
            {"shared": [{**expert, "name": "s", "anatomy": "brain"}], "experts": [expert]},
            "trains on all the data",
        ),
        (
            {"shared": [{**expert, "name": "s", "init_from": "s"}], "experts": [expert]},
            "'init_from' must name",
        ),
    ):
        recipe.write_text(yaml.safe_dump(raw))
        with pytest.raises(KspacelabError, match=message) as err:
            read_recipe(recipe)
        assert "\n" not in str(err.value) and str(recipe) in str(err.value)


def test_bundle_on_two_devices_writes_the_files_and_routing_of_one(
    bundle_run: Path, tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "reconstruct",
        "--data",
        str(tiny_root / "leaderboard"),
        "--bundle",
        str(bundle_run / "bundle.yaml"),
    ]
    assert main([*argv, "--out", str(tmp_path / "one"), "--quiet"]) == 0
    assert (
        main([*argv, "--out", str(tmp_path / "two"), "--quiet", "--devices", "2", "--time-budget", "3600"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "volumes per expert:" in printed and "within the time budget" in printed
    assert json.loads((tmp_path / "two" / "routing.json").read_text()) == json.loads(
        (tmp_path / "one" / "routing.json").read_text()
    )
    one = sorted((tmp_path / "one").rglob("*.h5"))
    assert len(one) == 4
    for path in one:
        twin = tmp_path / "two" / path.relative_to(tmp_path / "one")
        np.testing.assert_array_equal(formats.read_reconstruction(twin), formats.read_reconstruction(path))
    merged = json.loads((tmp_path / "two" / "timing.json").read_text())
    assert merged["what"] == "bundle bundle.yaml on 2 devices" and merged["slices"] == sum(
        formats.kspace_shape(p)[0] for p in (tiny_root / "leaderboard").rglob("kspace/*.h5")
    )
