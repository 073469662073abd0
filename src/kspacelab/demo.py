"""``kspacelab demo``: the main job end to end on the embedded synthetic dataset.

Steps: simulate the ``demo`` preset (SNU layout), reconstruct its leaderboard with every available method,
score each with the exact leaderboard SSIM, and write ``report.md``, ``results.json`` and PNG figures.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kspacelab import formats, metrics
from kspacelab.data.synthetic import PRESETS, SimulationPreset, simulate_dataset
from kspacelab.errors import KspacelabError
from kspacelab.evaluation import LeaderboardResult, evaluate_leaderboard
from kspacelab.inference import reconstruct_dataset
from kspacelab.report import ComparisonRow, comparison_grid, image_panel, results_table

DEMO_METHODS = ("zero-filled", "grappa")
_MARKER = "kspacelab-demo.json"


@dataclass(frozen=True)
class DemoResult:
    """Paths and numbers the demo produced."""

    out: Path
    results: dict[str, LeaderboardResult]
    seconds_per_slice: dict[str, float]
    report: Path


def _prepare_data(out: Path, seed: int, preset: SimulationPreset, progress: bool) -> Path:
    """Simulate the demo dataset into ``out/data``, reusing it when an identical earlier run made it."""
    data = out / "data"
    marker = data / _MARKER
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


def _comparison_rows(leaderboard: Path, recon_root: Path, methods: tuple[str, ...]) -> list[ComparisonRow]:
    """One row per (anatomy, acceleration): the middle slice of the first volume of that kind."""
    rows = []
    for group in ("acc4", "acc8"):
        for anatomy in ("brain", "knee"):
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
    for anatomy in ("brain", "knee"):
        files = sorted(
            (data / "train" / "image").glob(f"{anatomy}_acc4_*.h5"), key=lambda p: formats.natural_key(p.name)
        )
        if not files:
            continue
        volume = formats.read_image_volume(files[0], "image_label")
        index = volume.shape[0] // 2
        for key, label in (
            ("image_label", "label"),
            ("image_input", "zero-filled acc4"),
            ("image_grappa", "GRAPPA acc4"),
        ):
            panels.append((f"{anatomy}: {label}", formats.read_image_volume(files[0], key)[index]))
        mask = metrics.foreground_mask(volume[index], anatomy)
        panels.append((f"{anatomy}: leaderboard foreground", mask.astype(np.float32)))
    return image_panel(panels, path, columns=4, title="kspacelab simulate --preset demo (train split)")


def run_demo(
    out: Path, seed: int = 0, progress: bool = True, preset: SimulationPreset | str = "demo"
) -> DemoResult:
    """Run the demo and print the results table; returns what it wrote.

    Args:
        out: output folder (``data/``, ``recon/``, ``figures/``, ``report.md``, ``results.json``).
        seed: simulation seed.
        progress: show progress bars.
        preset: simulation preset (tests use a tiny one); the command uses ``"demo"``.
    """
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    resolved = PRESETS[preset] if isinstance(preset, str) else preset
    data = _prepare_data(out, seed, resolved, progress)
    leaderboard = data / "leaderboard"

    results: dict[str, LeaderboardResult] = {}
    seconds_per_slice: dict[str, float] = {}
    for method in DEMO_METHODS:
        summary = reconstruct_dataset(leaderboard, out / "recon" / method, method=method, progress=progress)
        seconds_per_slice[method] = summary.seconds / max(summary.slices, 1)
        results[method] = evaluate_leaderboard(leaderboard, out / "recon" / method, progress=progress)

    figures = out / "figures"
    comparison = comparison_grid(
        _comparison_rows(leaderboard, out / "recon", DEMO_METHODS), figures / "comparison.png"
    )
    preview = _dataset_preview(data, figures / "dataset.png")
    table = results_table(results, seconds_per_slice)

    payload = {
        "seed": seed,
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
        f"{table}\n\n"
        f"![comparison]({comparison.relative_to(out)})\n\n"
        f"![simulated data]({preview.relative_to(out)})\n"
    )
    print()
    print(table)
    print(f"\nreport: {report}  (total {time.perf_counter() - start:.0f} s)")
    return DemoResult(out=out, results=results, seconds_per_slice=seconds_per_slice, report=report)
