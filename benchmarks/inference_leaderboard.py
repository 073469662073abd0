"""Leaderboard-scale inference time and memory of the 2025 teams' mixtures of experts, per precision.

Builds, with untrained weights (speed does not depend on them), (a) Team EJ's bundle: four 34.2M PromptMR+ experts
(brain/knee x acc4/acc8, ``snu2025_promptmr_ej``), run with the flip self-ensemble (``--tta``) as the team did, and
(b) Team sMaRtIfy's bundle: eight 6.0M PromptMR+ experts (hacker/helper x brain/knee x acc4/acc8,
``snu2025_promptmr_smartify``); simulates a leaderboard of the real geometry (brain 768 x 396 with 16 coils, knee
640 x W with 15 coils; one brain and one knee volume per acceleration, ``--slices`` slices each), and runs
``kspacelab reconstruct --bundle`` on it once per precision in a fresh process. Experts are chosen from the file
names (``anatomy_source: filename``; the teams' anatomy classifiers are small next to the experts).

The whole leaderboard (116 volumes, about 1,810 slices, half brain and half knee assumed) is extrapolated from the
run's ``timing.json``: the acc8 folder's milliseconds per slice (the clock charges model loading to the first,
acc4, volume) times 1,810, plus the run's fixed cost (its total minus its slices at that rate). The fraction of the
leaderboard actually reconstructed is printed. Peak memory: the process's peak RSS on a CPU,
``torch.cuda.max_memory_allocated`` on a GPU.

    python benchmarks/inference_leaderboard.py                       # CPU, float32, 1 slice per volume
    python benchmarks/inference_leaderboard.py --device cuda --precisions 32 bf16 16 --slices 4 --append
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from kspacelab.data.synthetic import simulate_dataset, with_overrides
from kspacelab.experts.manifest import write_bundle
from kspacelab.training import ReconModule

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "kspacelab" / "configs"
LEADERBOARD_SLICES = 1810
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

#: bundle -> (recipe with the experts' model, expert (name, anatomy, acc, mask_rule) list, flip TTA)
BUNDLES: dict[str, tuple[str, list[tuple[str, str, int, str]], bool]] = {
    "ej": (
        "snu2025_promptmr_ej.yaml",
        [(f"{a}_acc{acc}", a, acc, "any") for a in ("brain", "knee") for acc in (4, 8)],
        True,
    ),
    "smartify": (
        "snu2025_promptmr_smartify.yaml",
        [
            (f"{a}_acc{acc}_{role}", a, acc, rule)
            for a in ("brain", "knee")
            for acc in (4, 8)
            for role, rule in (("hacker", "organiser"), ("helper", "other"))
        ],
        False,
    ),
}

#: run in a fresh process: the CLI, then its peak memory as JSON on the last line
_CHILD = """
import json, resource, sys, torch
from kspacelab.cli import main
code = main(sys.argv[1:])
peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available() and "cuda" in sys.argv else
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
print(json.dumps({"code": code, "peak_mib": peak / 2**20}))
"""


def _expert_checkpoint(recipe: str, path: Path) -> None:
    """An untrained expert of ``recipe`` (its model section), saved as a kspacelab training checkpoint."""
    model = yaml.safe_load((CONFIGS / recipe).read_text())["model"]
    keep = ("model_name", "model_kwargs", "crop_height")
    module = ReconModule(**{k: v for k, v in model.items() if k in keep})
    state = {f"model.{k}": v for k, v in module.model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": dict(module.hparams)}, path)


def _bundle(name: str, folder: Path) -> Path:
    recipe, experts, _ = BUNDLES[name]
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = (
        folder / "expert.ckpt"
    )  # every expert has the same (untrained) weights: one file, loaded per expert
    _expert_checkpoint(recipe, ckpt)
    entries = [
        {"name": n, "anatomy": a, "acc": acc, "mask_rule": rule, "checkpoint": str(ckpt)}
        for n, a, acc, rule in experts
    ]
    return write_bundle(folder / "bundle.yaml", entries, anatomy_source="filename")


def _run(bundle: Path, data: Path, out: Path, precision: str, device: str, tta: bool) -> dict[str, Any]:
    argv = ["reconstruct", "--data", str(data), "--out", str(out), "--bundle", str(bundle), "--quiet"]
    argv += ["--precision", precision, "--device", device] + (["--tta"] if tta else [])
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _CHILD, *argv], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"reconstruct failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    child = json.loads(done.stdout.strip().splitlines()[-1])
    timing = json.loads((out / "timing.json").read_text())
    per_slice = timing["groups"]["acc8"]["seconds"] / timing["groups"]["acc8"]["slices"]
    fixed = max(0.0, timing["total_seconds"] - per_slice * timing["slices"])
    return {
        "slices": timing["slices"],
        "total_s": timing["total_seconds"],
        "process_s": wall,
        "per_slice_s": per_slice,
        "fixed_s": fixed,
        "leaderboard_s": fixed + per_slice * LEADERBOARD_SLICES,
        "peak_mib": child["peak_mib"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", nargs="+", choices=sorted(BUNDLES), default=["ej", "smartify"])
    parser.add_argument("--precisions", nargs="+", choices=("32", "bf16", "16"), default=["32"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--slices", type=int, default=1, help="slices per simulated volume (default 1)")
    parser.add_argument("--append", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kspacelab-bench-") as tmp:
        root = Path(tmp)
        preset = with_overrides(
            "snu",
            name="snu_bench",
            brain_widths=(396,),
            brain_coils=(16,),
            knee_widths=(372, 372),
            brain_slices=(args.slices, args.slices),
            knee_slices=(args.slices, args.slices),
            train_volumes=1,
            val_volumes=1,
            leaderboard_volumes=1,
        )
        simulate_dataset(root / "data", preset=preset, progress=False)
        board = root / "data" / "leaderboard"
        rows = []
        for name in args.bundles:
            bundle = _bundle(name, root / name)
            for precision in args.precisions:
                out = root / f"out_{name}_{precision}"
                result = _run(bundle, board, out, precision, args.device, BUNDLES[name][2])
                rows.append((name, precision, result))
                print(
                    f"{name} {precision}: {json.dumps({k: round(v, 3) for k, v in result.items()})}",
                    flush=True,
                )

    fraction = rows[0][2]["slices"] / LEADERBOARD_SLICES if rows else 0.0
    device = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    lines = [
        f"Device: {device}; reconstructed {rows[0][2]['slices'] if rows else 0} of {LEADERBOARD_SLICES} leaderboard "
        f"slices ({100 * fraction:.2f} %), the rest extrapolated.",
        "",
        "| bundle | precision | s / slice | fixed s | leaderboard s (extrapolated) | slices / s | peak MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, precision, r in rows:
        label = "EJ, 4 x 34.2M, TTA" if name == "ej" else "sMaRtIfy, 8 x 6.0M"
        lines.append(
            f"| {label} | {precision} | {r['per_slice_s']:.2f} | {r['fixed_s']:.1f} | {r['leaderboard_s']:,.0f} | "
            f"{1 / r['per_slice_s']:.2f} | {r['peak_mib']:,.0f} |"
        )
    table = "\n".join(lines)
    print()
    print(table)
    if args.append:
        command = "python benchmarks/inference_leaderboard.py " + " ".join(sys.argv[1:])
        stamp = time.strftime("%Y-%m-%d")
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write(f"\n## Leaderboard-scale inference ({stamp})\n\n`{command.strip()}`\n\n{table}\n")
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
