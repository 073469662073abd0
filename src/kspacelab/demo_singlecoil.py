"""``kspacelab demo --singlecoil``: extreme single-coil undersampling (x4 to x32) end to end.

Steps: simulate the ``singlecoil-demo`` preset (NYU single-coil knee layout, an emulated single coil); train
fastMRI's U-Net baseline (recipe ``demo_singlecoil_unet``) and the generative texture model (recipe
``demo_singlecoil_stylish``) on every acceleration at once; reconstruct the validation files at x4, x8, x16 and x32
(fastMRI's random masks, seeded from the file names) with zero-filling and both models; score them with fastMRI's
NMSE / PSNR / SSIM and the hallucination index; write ``singlecoil_report.md``, ``singlecoil_results.json`` and
``figures/singlecoil.png`` (one row per acceleration: target, the three reconstructions and their error maps).
The simulated data and the trained models are reused when a later run asks for the same ones.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kspacelab import formats, metrics
from kspacelab.data.synthetic import PRESETS, SimulationPreset
from kspacelab.demo import MARKER, prepare_data
from kspacelab.evaluation import FASTMRI_SCORES, FastmriResult, evaluate_fastmri, read_nyu_target
from kspacelab.inference import ReconOptions, reconstruct_dataset, reconstruct_with_checkpoint
from kspacelab.masks import SINGLE_COIL_EXTREME
from kspacelab.report import ComparisonRow, comparison_grid
from kspacelab.training.run import fit_or_reuse

__all__ = [
    "SINGLECOIL_METHODS",
    "SingleCoilDemoResult",
    "method_folder",
    "run_singlecoil_demo",
    "singlecoil_table",
]

#: The recipes the demo trains (bundled recipes).
UNET_RECIPE = "demo_singlecoil_unet"
STYLISH_RECIPE = "demo_singlecoil_stylish"
ZERO_FILLED, UNET, GENERATIVE = "zero-filled", "U-Net", "generative"
#: The rows of the table and the columns of the figure, in order.
SINGLECOIL_METHODS = (ZERO_FILLED, UNET, GENERATIVE)
ACCELERATIONS = tuple(sorted(SINGLE_COIL_EXTREME))


@dataclass(frozen=True)
class SingleCoilDemoResult:
    """What ``kspacelab demo --singlecoil`` produced: the scores per method and acceleration and the files."""

    out: Path
    results: dict[str, dict[int, FastmriResult]]  # method -> acceleration -> scores of the validation files
    report: Path
    figure: Path


def singlecoil_table(results: dict[str, dict[int, FastmriResult]]) -> str:
    """Markdown table: one row per acceleration and method, the mean fastMRI scores and the hallucination index."""
    headings = " | ".join(FASTMRI_SCORES.values())
    lines = [f"| acceleration | method | {headings} |", "|---|---|" + "---:|" * len(FASTMRI_SCORES)]
    for acc in ACCELERATIONS:
        for method, per_acc in results.items():
            if acc not in per_acc:
                continue
            means = per_acc[acc].means
            cells = [f"{means['nmse']:.4f}", f"{means['psnr']:.2f}", f"{means['ssim']:.4f}"]
            cells.append(f"{means['hallucination']:.4f}")
            lines.append(f"| x{acc} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _figure_rows(val: Path, recon: Path) -> list[ComparisonRow]:
    """One row per acceleration: the middle slice of the first validation file, each method's reconstruction and
    its per-slice SSIM (data range = the target volume's maximum)."""
    path = formats.discover_nyu(val)[0]
    target_volume = read_nyu_target(path)
    index = target_volume.shape[0] // 2
    target = target_volume[index]
    data_range = float(target_volume.max())
    rows = []
    for acc in ACCELERATIONS:
        images = {
            method: formats.read_reconstruction(recon / method_folder(method) / f"x{acc}" / path.name)[index]
            for method in SINGLECOIL_METHODS
        }
        scores = {m: metrics.ssim(target[None], image[None], data_range) for m, image in images.items()}
        rows.append(ComparisonRow(f"x{acc}\n{path.name} [{index}]", target, images, scores))
    return rows


def method_folder(method: str) -> str:
    """The folder name of ``method``'s reconstructions under ``OUT/recon_singlecoil/`` (one per acceleration)."""
    return {ZERO_FILLED: "zero-filled", UNET: "unet", GENERATIVE: "generative"}[method]


def run_singlecoil_demo(
    out: Path,
    seed: int = 0,
    progress: bool = True,
    preset: SimulationPreset | str = "singlecoil-demo",
    unet_overrides: Sequence[str] = (),
    stylish_overrides: Sequence[str] = (),
) -> SingleCoilDemoResult:
    """Run the single-coil demo and print its table; returns what it wrote.

    Args:
        out: output folder (``data_singlecoil/``, ``runs/singlecoil_*/``, ``recon_singlecoil/``,
            ``figures/singlecoil.png``, ``singlecoil_report.md``, ``singlecoil_results.json``; the folder can be the
            one of ``kspacelab demo``: nothing is shared).
        seed: simulation seed.
        progress: show progress bars.
        preset: simulation preset of the single-coil layout (tests use a tiny one); the command uses
            ``"singlecoil-demo"``.
        unet_overrides, stylish_overrides: override words for training the two models, e.g.
            ``["--trainer.max_steps", "5"]``.
    """
    start = time.perf_counter()
    resolved = PRESETS[preset] if isinstance(preset, str) else preset
    if resolved.layout != "singlecoil":
        raise ValueError(f"preset {resolved.name!r} is not a single-coil preset")
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(out, seed, resolved, progress, folder="data_singlecoil")
    val = data / "singlecoil_val"
    described = json.loads((data / MARKER).read_text())
    checkpoints = {}
    for method, recipe, overrides, run in (
        (UNET, UNET_RECIPE, unet_overrides, "singlecoil_unet"),
        (GENERATIVE, STYLISH_RECIPE, stylish_overrides, "singlecoil_generative"),
    ):
        words = ["--data.root", str(data), "--trainer.enable_model_summary", "false", *overrides]
        began = time.perf_counter()
        checkpoints[method] = fit_or_reuse(
            [recipe], words, out / "runs" / run, f"the {method} model", extra=described, progress=progress
        )
        print(f"{method} model ready in {time.perf_counter() - began:.0f} s")

    recon = out / "recon_singlecoil"
    results: dict[str, dict[int, FastmriResult]] = {m: {} for m in SINGLECOIL_METHODS}
    for acc in ACCELERATIONS:
        options = ReconOptions(progress=progress, acceleration=acc)
        for method in SINGLECOIL_METHODS:
            folder = recon / method_folder(method) / f"x{acc}"
            if method == ZERO_FILLED:
                reconstruct_dataset(val, folder, "zero-filled", options)
            else:
                reconstruct_with_checkpoint(val, folder, checkpoints[method], options)
            results[method][acc] = evaluate_fastmri(val, folder, progress=False)

    figure = comparison_grid(_figure_rows(val, recon), out / "figures" / "singlecoil.png", error_gain=3.0)
    table = singlecoil_table(results)
    payload = {
        "seed": seed,
        "preset": resolved.name,
        "checkpoints": {m: str(p) for m, p in checkpoints.items()},
        "results": {
            m: {f"x{acc}": r.to_json_dict() for acc, r in per_acc.items()} for m, per_acc in results.items()
        },
    }
    (out / "singlecoil_results.json").write_text(json.dumps(payload, indent=2))
    report = out / "singlecoil_report.md"
    report.write_text(
        "# kspacelab demo --singlecoil\n\n"
        f"Dataset: `kspacelab simulate --preset {resolved.name} --seed {seed}` in `{data}`; scored on the "
        f"`singlecoil_val` files, each undersampled with fastMRI's random mask of the acceleration seeded from its "
        "file name. NMSE, PSNR (dB) and SSIM as fastMRI's evaluate script (per volume, data range = the target "
        "volume's maximum, means over volumes); HI: hallucination index, fine-detail energy beyond the target's "
        "relative to the target's (0 for a blurred output).\n\n"
        f"`{UNET}`: recipe `{UNET_RECIPE}`; `{GENERATIVE}`: recipe `{STYLISH_RECIPE}`; both trained on all four "
        f"accelerations at once (runs in `{out / 'runs'}`, best checkpoint by the mean validation SSIM).\n\n"
        f"{table}\n\n"
        f"![single-coil comparison]({figure.relative_to(out)})\n"
    )
    print()
    print(table)
    print(f"\nreport: {report}  (total {time.perf_counter() - start:.0f} s)")
    return SingleCoilDemoResult(out=out, results=results, report=report, figure=figure)
