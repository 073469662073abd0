"""``kspacelab demo``: the main job end to end on the embedded synthetic dataset.

Steps: simulate the ``demo`` preset (SNU layout); train one small VarNet per acceleration (experts, as the top
SNU teams did) with the bundled recipe ``demo`` (:func:`kspacelab.training.run.fit`); reconstruct the leaderboard with
zero-filling, GRAPPA, SENSE, compressed sensing and the trained models; score each with the exact leaderboard
SSIM; write ``report.md``, ``results.json`` and PNG figures. Simulated data and trained models are reused when
a later run asks for the same ones.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kspacelab import challenge, formats, metrics
from kspacelab.data.synthetic import PRESETS, SimulationPreset, simulate_dataset
from kspacelab.errors import KspacelabError
from kspacelab.evaluation import LeaderboardResult, evaluate_leaderboard
from kspacelab.inference import (
    CACHED_METHODS,
    ReconOptions,
    ReconstructionSummary,
    reconstruct_dataset,
    reconstruct_with_checkpoint,
    reconstruct_with_model,
)
from kspacelab.report import ComparisonRow, comparison_grid, image_panel, results_table
from kspacelab.training.recipes import compose, find_config
from kspacelab.training.run import fit_or_reuse

CLASSICAL_DEMO_METHODS = ("zero-filled", "grappa", "sense", "cs")
LEARNED = "varnet"
#: The two-stage model: the demo VarNet frozen, a small RCAN refiner on [VarNet image, CS image].
REFINED = "varnet + refiner"
#: The learned rows the verdict compares with the classical ones.
LEARNED_METHODS = (LEARNED, REFINED)
#: The methods of the comparison figure (SENSE is left out: its images look like CS's at this size).
FIGURE_METHODS = ("zero-filled", "grappa", "cs", LEARNED, REFINED)
UNTRAINED = "varnet untrained (GRAPPA start)"
#: The demo's training recipe (a bundled recipe); ``kspacelab demo --config`` takes another.
DEMO_CONFIG = "demo"
#: The recipe of the refiner trained on top of each demo VarNet.
DEMO_REFINER_CONFIG = "demo_refined"
#: The bundle recipe of ``kspacelab demo --moe`` (a bundled recipe).
DEMO_MOE_RECIPE = "demo_moe"
MARKER = "kspacelab-demo.json"


@dataclass(frozen=True)
class DemoResult:
    """Paths and numbers the demo produced."""

    out: Path
    results: dict[str, LeaderboardResult]
    seconds_per_slice: dict[str, float]
    report: Path


def prepare_data(
    out: Path, seed: int, preset: SimulationPreset, progress: bool, folder: str = "data"
) -> Path:
    """Simulate the demo dataset into ``out/FOLDER``, reusing it when an identical earlier run made it."""
    data = out / folder
    marker = data / MARKER
    wanted = {"preset": dataclasses.asdict(preset), "seed": seed}
    if marker.is_file():
        if json.loads(marker.read_text()) == json.loads(json.dumps(wanted)):
            print(f"reusing the simulated dataset in {data}")
            return data
        shutil.rmtree(data)
    elif data.exists() and any(data.iterdir()):
        raise KspacelabError(f"{data}: exists and was not written by `kspacelab demo`; choose another --out")
    summary = simulate_dataset(data, preset=preset, seed=seed, progress=progress, overwrite=True)
    print(f"simulated the demo dataset in {summary.seconds:.1f} s -> {data}")
    marker.write_text(json.dumps(wanted))
    return data


def _train_expert(
    data: Path, run_dir: Path, config: Path, acceleration: int, overrides: Sequence[str], progress: bool
) -> Path:
    """Train the expert for one acceleration; reuse an identical earlier run.

    Returns:
        the best checkpoint (by validation leaderboard SSIM).
    """
    words = [
        "--data.root",
        str(data),
        "--data.only_accelerations",
        f"[{acceleration}]",
        "--trainer.enable_model_summary",
        "false",
        *overrides,
    ]
    start = time.perf_counter()
    data_description = json.loads((data / MARKER).read_text())
    label = f"the {challenge.acc_folder(acceleration)} VarNet"
    best = fit_or_reuse([config], words, run_dir, label, extra=data_description, progress=progress)
    print(f"{challenge.acc_folder(acceleration)} VarNet ready in {time.perf_counter() - start:.0f} s")
    return best


def _reconstruct_learned(
    leaderboard: Path,
    recon: Path,
    checkpoints: dict[int, Path],
    progress: bool,
) -> dict[str, ReconstructionSummary]:
    """Each acceleration folder with its expert; plus the untrained GRAPPA-start model when that is the recipe.

    Returns:
        method name -> summary over both folders.
    """
    from kspacelab.models import build_model
    from kspacelab.training.checkpoint import load_model

    options = ReconOptions(progress=progress)
    summaries: dict[str, list[ReconstructionSummary]] = {}
    for acc, checkpoint in checkpoints.items():
        folder = leaderboard / challenge.acc_folder(acc)
        summaries.setdefault(LEARNED, []).append(
            reconstruct_with_checkpoint(folder, recon / LEARNED / folder.name, checkpoint, options)
        )
        loaded = load_model(checkpoint)
        if loaded.config.get("initial_kspace") == "grappa":
            # gates at 0: the network's starting point, to show what training added
            untrained = dataclasses.replace(loaded, model=build_model(loaded.name, **loaded.config))
            summaries.setdefault(UNTRAINED, []).append(
                reconstruct_with_model(folder, recon / UNTRAINED / folder.name, untrained, options)
            )
    return {
        method: ReconstructionSummary(
            out_dir=recon / method,
            volumes=sum(p.volumes for p in parts),
            slices=sum(p.slices for p in parts),
            seconds=sum(p.seconds for p in parts),
        )
        for method, parts in summaries.items()
    }


def _verdict(results: dict[str, LeaderboardResult]) -> str:
    """One line per learned model and acceleration: does it beat every classical baseline there?"""
    lines = []
    for method in (m for m in LEARNED_METHODS if m in results):
        for group in map(challenge.acc_folder, challenge.ACCELERATIONS):
            learned = results[method].groups.get(group)
            baselines = {m: results[m].groups.get(group) for m in CLASSICAL_DEMO_METHODS if m in results}
            if learned is None or any(v is None for v in baselines.values()):
                continue
            best_method, best = max(baselines.items(), key=lambda kv: float(kv[1] or 0.0))
            margin = learned - float(best or 0.0)
            verdict = "beats" if margin > 0 else "is below"
            lines.append(
                f"{group}: {method} {learned:.4f} {verdict} the best classical baseline ({best_method} "
                f"{best:.4f}) by {abs(margin):.4f}"
            )
    return "\n".join(f"- {line}" for line in lines)


def _train_refiner(
    data: Path,
    run_dir: Path,
    expert: Path,
    acceleration: int,
    config: str | Path,
    overrides: Sequence[str],
    progress: bool,
) -> Path:
    """Train the refiner on top of one acceleration's VarNet (frozen, its weights and configuration from its
    checkpoint); reuse an identical earlier run. Returns the best checkpoint."""
    from kspacelab.training.checkpoint import load_model

    first = load_model(expert)
    words = [
        "--data.root",
        str(data),
        "--data.only_accelerations",
        f"[{acceleration}]",
        "--model.model_kwargs.first_stage",
        first.name,
        "--model.model_kwargs.first_stage_kwargs",
        json.dumps(first.config),
        "--model.model_kwargs.init_from",
        str(expert),
        "--model.crop_height",
        json.dumps(dict(first.input_spec.crop_height)),
        "--trainer.enable_model_summary",
        "false",
        *overrides,
    ]
    start = time.perf_counter()
    description = {"data": json.loads((data / MARKER).read_text()), "expert": _file_digest(expert)}
    label = f"the {challenge.acc_folder(acceleration)} refiner"
    best = fit_or_reuse([config], words, run_dir, label, extra=description, progress=progress)
    print(f"{challenge.acc_folder(acceleration)} refiner ready in {time.perf_counter() - start:.0f} s")
    return best


def _prefill_second_images(data: Path, recon: Path, overrides: Sequence[str], progress: bool) -> None:
    """Compute the refiners' classical second images of every training and validation slice in two processes
    (``reconstruct`` keeps SENSE and CS slices in the classical cache, where training then finds them; computed
    one at a time inside the training loop they took a third of the refiner time). Also written to
    ``recon/<method>_train`` and ``recon/<method>_val``."""
    method = compose([find_config(DEMO_REFINER_CONFIG)], overrides)["model"]["model_kwargs"].get(
        "second_image"
    )
    if method not in CACHED_METHODS:
        return
    for split in ("train", "val"):
        reconstruct_dataset(
            data / split, recon / f"{method}_{split}", method, ReconOptions(progress=progress), workers=2
        )


def _file_digest(path: Path) -> str:
    """SHA-256 of a file (a retrained expert invalidates the refiner trained on it)."""
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _comparison_rows(leaderboard: Path, recon_root: Path, methods: tuple[str, ...]) -> list[ComparisonRow]:
    """One row per (anatomy, acceleration): the middle slice of the first volume of that kind."""
    rows = []
    for group in map(challenge.acc_folder, challenge.ACCELERATIONS):
        for anatomy in challenge.ANATOMIES:
            images = sorted(
                (leaderboard / group / "image").glob(f"{anatomy}_*.h5"),
                key=lambda p: formats.natural_key(p.name),
            )
            if not images:
                continue
            path = images[0]
            target_volume = formats.read_image_volume(path, "image_label")
            index = target_volume.shape[0] // 2
            target = target_volume[index]
            max_value = float(formats.read_image_attrs(path)["max"])
            recons = {
                m: formats.read_reconstruction(recon_root / m / group / path.name)[index] for m in methods
            }
            scores = {m: metrics.leaderboard_ssim(r, target, max_value, anatomy) for m, r in recons.items()}
            rows.append(ComparisonRow(f"{anatomy} {group}\n{path.name} [{index}]", target, recons, scores))
    return rows


def _dataset_preview(data: Path, path: Path) -> Path:
    """Simulated slices: label, zero-filled input and GRAPPA image for one brain and one knee-class volume."""
    panels: list[tuple[str, np.ndarray]] = []
    first_acc = challenge.acc_folder(challenge.ACCELERATIONS[0])
    for anatomy in challenge.ANATOMIES:
        files = sorted(
            (data / "train" / "image").glob(f"{anatomy}_{first_acc}_*.h5"),
            key=lambda p: formats.natural_key(p.name),
        )
        if not files:
            continue
        volume = formats.read_image_volume(files[0], "image_label")
        index = volume.shape[0] // 2
        for key, label in (
            ("image_label", "label"),
            ("image_input", f"zero-filled {first_acc}"),
            ("image_grappa", f"GRAPPA {first_acc}"),
        ):
            panels.append((f"{anatomy}: {label}", formats.read_image_volume(files[0], key)[index]))
        mask = metrics.foreground_mask(volume[index], anatomy)
        panels.append((f"{anatomy}: leaderboard foreground", mask.astype(np.float32)))
    return image_panel(panels, path, columns=4, title="kspacelab simulate --preset demo (train split)")


def run_demo(
    out: Path,
    seed: int = 0,
    progress: bool = True,
    preset: SimulationPreset | str = "demo",
    config: str | Path | None = None,
    train_overrides: Sequence[str] = (),
    refiner_overrides: Sequence[str] = (),
) -> DemoResult:
    """Run the demo and print the results table; returns what it wrote.

    Args:
        out: output folder (``data/``, ``runs/``, ``recon/``, ``figures/``, ``report.md``, ``results.json``).
        seed: simulation seed.
        progress: show progress bars.
        preset: simulation preset (tests use a tiny one); the command uses ``"demo"``.
        config: training recipe, a path or the name of a bundled recipe (default :data:`DEMO_CONFIG`).
        train_overrides: override words for training the VarNets, e.g. ``["--trainer.max_steps", "5"]``.
        refiner_overrides: override words for training the refiners (recipe :data:`DEMO_REFINER_CONFIG`).
    """
    start = time.perf_counter()
    config = find_config(DEMO_CONFIG if config is None else config)
    out.mkdir(parents=True, exist_ok=True)
    resolved = PRESETS[preset] if isinstance(preset, str) else preset
    data = prepare_data(out, seed, resolved, progress)
    leaderboard = data / "leaderboard"
    recon = out / "recon"

    checkpoints = {
        acc: _train_expert(
            data, out / "runs" / f"varnet_{challenge.acc_folder(acc)}", config, acc, train_overrides, progress
        )
        for acc in challenge.ACCELERATIONS
    }
    summaries = {
        method: reconstruct_dataset(leaderboard, recon / method, method, ReconOptions(progress=progress))
        for method in CLASSICAL_DEMO_METHODS
    }
    summaries.update(_reconstruct_learned(leaderboard, recon, checkpoints, progress))
    _prefill_second_images(data, recon, refiner_overrides, progress)
    refiners = {
        acc: _train_refiner(
            data,
            out / "runs" / f"refined_{challenge.acc_folder(acc)}",
            checkpoints[acc],
            acc,
            DEMO_REFINER_CONFIG,
            refiner_overrides,
            progress,
        )
        for acc in challenge.ACCELERATIONS
    }
    parts = [
        reconstruct_with_checkpoint(
            leaderboard / challenge.acc_folder(acc),
            recon / REFINED / challenge.acc_folder(acc),
            refiner,
            ReconOptions(progress=progress),
        )
        for acc, refiner in refiners.items()
    ]
    summaries[REFINED] = ReconstructionSummary(
        out_dir=recon / REFINED,
        volumes=sum(p.volumes for p in parts),
        slices=sum(p.slices for p in parts),
        seconds=sum(p.seconds for p in parts),
    )
    methods = [*CLASSICAL_DEMO_METHODS, *(m for m in (UNTRAINED, LEARNED, REFINED) if m in summaries)]
    results: dict[str, LeaderboardResult] = {}
    seconds_per_slice: dict[str, float] = {}
    for method in methods:
        seconds_per_slice[method] = summaries[method].seconds / max(summaries[method].slices, 1)
        results[method] = evaluate_leaderboard(leaderboard, recon / method, progress=progress)

    figures = out / "figures"
    comparison = comparison_grid(
        _comparison_rows(leaderboard, recon, FIGURE_METHODS), figures / "comparison.png"
    )
    preview = _dataset_preview(data, figures / "dataset.png")
    table = results_table(results, seconds_per_slice) + "\n\n" + _verdict(results)

    payload = {
        "seed": seed,
        "config": str(config),
        "checkpoints": {challenge.acc_folder(acc): str(path) for acc, path in checkpoints.items()},
        "refiner_checkpoints": {challenge.acc_folder(acc): str(path) for acc, path in refiners.items()},
        "methods": {
            m: {**r.to_json_dict(), "seconds_per_slice": seconds_per_slice[m]} for m, r in results.items()
        },
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    report = out / "report.md"
    report.write_text(
        "# kspacelab demo report\n\n"
        f"Dataset: `kspacelab simulate --preset {resolved.name} --seed {seed}` in `{data}`; leaderboard SSIM as the SNU "
        "challenge computes it (foreground-masked, per slice, pooled per acceleration).\n\n"
        f"`{LEARNED}`: one model per acceleration trained with `{config.name}` (runs in `{out / 'runs'}`), "
        "best checkpoint by validation leaderboard SSIM.\n\n"
        f"`{REFINED}`: that VarNet frozen and a small RCAN refiner trained on top of it with `{DEMO_REFINER_CONFIG}` "
        "on the stack [VarNet image, CS image], its residual added to the CS image (CS: the strongest classical method "
        "on these data).\n\n"
        f"{table}\n\n"
        f"![comparison]({comparison.relative_to(out)})\n\n"
        f"![simulated data]({preview.relative_to(out)})\n"
    )
    print()
    print(table)
    print(f"\nreport: {report}  (total {time.perf_counter() - start:.0f} s)")
    return DemoResult(out=out, results=results, seconds_per_slice=seconds_per_slice, report=report)


# ----------------------------------------------------------------------------------------------------
# kspacelab demo --moe
# ----------------------------------------------------------------------------------------------------
def _classifier_validation(run_dir: Path) -> dict[str, float]:
    """Validation metrics of the classifier's best epoch (highest ``val/score``) from its CSV log."""
    import csv

    rows = []
    for log in sorted((run_dir / "logs").glob("version_*/metrics.csv")):
        with open(log) as fh:
            rows += [r for r in csv.DictReader(fh) if r.get("val/score")]
    if not rows:
        return {}
    best = max(rows, key=lambda r: float(r["val/score"]))
    return {key: float(best[f"val/{key}"]) for key in ("accuracy", "slice_accuracy", "loss")}


def run_moe_demo(
    out: Path,
    seed: int = 0,
    progress: bool = True,
    preset: SimulationPreset | str = "demo",
    recipe: str | Path | None = None,
    train_overrides: Sequence[str] = (),
) -> dict[str, LeaderboardResult]:
    """``kspacelab demo --moe``: train a bundle of experts and a classifier, route the leaderboard, compare.

    Trains the members of ``recipe`` (default :data:`DEMO_MOE_RECIPE`) as ``kspacelab train --bundle`` does into
    ``out/moe`` (manifest ``out/moe/bundle.yaml``), reconstructs the demo leaderboard with the bundle
    (``out/recon/moe``, routing in ``out/recon/moe/routing.json``) and with the recipe's fallback model alone
    (the single-model baseline, ``out/recon/single``), evaluates both and writes ``out/moe_report.md`` and
    ``out/moe_results.json``.

    Returns:
        method -> leaderboard result (``single model``, ``mixture``).
    """
    from kspacelab.experts.manifest import read_bundle
    from kspacelab.experts.reconstruct import reconstruct_with_bundle
    from kspacelab.experts.training import train_bundle

    start = time.perf_counter()
    recipe = find_config(DEMO_MOE_RECIPE if recipe is None else recipe)
    out.mkdir(parents=True, exist_ok=True)
    resolved = PRESETS[preset] if isinstance(preset, str) else preset
    data = prepare_data(out, seed, resolved, progress)
    leaderboard = data / "leaderboard"
    manifest = train_bundle(recipe, out / "moe", ["--data.root", str(data), *train_overrides], progress)
    bundle = read_bundle(manifest)
    if bundle.fallback is None:
        raise KspacelabError(f"{recipe}: the demo needs a 'fallback' member (the single-model baseline)")

    recon = out / "recon"
    options = ReconOptions(progress=progress)
    single = reconstruct_with_checkpoint(leaderboard, recon / "single", bundle.fallback, options)
    mixture, decisions = reconstruct_with_bundle(leaderboard, recon / "moe", manifest, options)
    results = {
        "single model": evaluate_leaderboard(leaderboard, recon / "single", progress=progress),
        "mixture": evaluate_leaderboard(leaderboard, recon / "moe", progress=progress),
    }
    seconds = {
        "single model": single.seconds / max(single.slices, 1),
        "mixture": mixture.seconds / max(mixture.slices, 1),
    }
    correct = sum(d.anatomy == formats.anatomy_from_name(Path(d.file).name) for d in decisions)
    per_expert: dict[str, int] = {}
    for d in decisions:
        per_expert[d.expert] = per_expert.get(d.expert, 0) + 1
    classifier = _classifier_validation(out / "moe" / "classifier") if bundle.classifier else {}
    table = results_table(results, seconds)
    lines = [
        "# kspacelab demo --moe",
        "",
        f"Bundle `{manifest}` trained from `{recipe.name}`; single model = the recipe's fallback (same recipe, "
        "all the data, as many steps as the experts together).",
        "",
        table,
        "",
        f"- routing: {correct} of {len(decisions)} leaderboard volumes got the anatomy of their file name; "
        + ", ".join(f"{name} {n}" for name, n in sorted(per_expert.items())),
    ]
    if classifier:
        lines.append(
            f"- anatomy classifier on the validation split (best epoch): volume accuracy "
            f"{classifier['accuracy']:.3f}, slice accuracy {classifier['slice_accuracy']:.3f}"
        )
    report = "\n".join(lines) + "\n"
    (out / "moe_report.md").write_text(report)
    payload = {
        "seed": seed,
        "recipe": str(recipe),
        "bundle": str(manifest),
        "methods": {m: {**r.to_json_dict(), "seconds_per_slice": seconds[m]} for m, r in results.items()},
        "routing_correct": correct,
        "routing_total": len(decisions),
        "classifier_validation": classifier,
    }
    (out / "moe_results.json").write_text(json.dumps(payload, indent=2))
    print()
    print(report)
    print(f"report: {out / 'moe_report.md'}  (total {time.perf_counter() - start:.0f} s)")
    return results
