"""The generative texture model's two remedies, measured: the demo's generative recipe trained six times on the
single-coil demo data (no switch, ``spatial_modulation``, ``proxy_guidance``, both; to separate the losses' effect
from the architecture's, without the texture and GAN terms; and with the images scaled to [0, 1] per volume, as the
seed scaled them, instead of fastMRI's mean/std normalisation), each validation file
reconstructed at x4 / x8 / x16 / x32 and scored with fastMRI's NMSE / PSNR / SSIM and the hallucination index.

Needs the demo's data (``kspacelab demo --singlecoil --out DIR`` makes ``DIR/data_singlecoil``; or ``kspacelab
simulate DIR --preset singlecoil-demo``). Trains into ``--out`` (reusing finished runs of the same request), prints
one Markdown row per variant and acceleration and, with ``--append``, adds the table to benchmarks/RESULTS.md.

Usage::

    python benchmarks/singlecoil_remedies.py --data demo_out/data_singlecoil [--out bench_out/remedies]
        [--steps 4000] [--append]
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from kspacelab.demo_singlecoil import ACCELERATIONS, STYLISH_RECIPE, singlecoil_table
from kspacelab.evaluation import FastmriResult, evaluate_fastmri
from kspacelab.inference import ReconOptions, reconstruct_with_checkpoint
from kspacelab.training.run import fit_or_reuse

VARIANTS = {
    "generative": [],
    "+ spatial modulation": ["--model.model_kwargs.spatial_modulation", "true"],
    "+ proxy guidance": ["--model.model_kwargs.proxy_guidance", "true"],
    "+ both": [
        "--model.model_kwargs.spatial_modulation",
        "true",
        "--model.model_kwargs.proxy_guidance",
        "true",
    ],
    "L1 + KL only": ["--model.texture_weight", "0", "--model.gan_weight", "0"],
    "[0, 1] per volume": ["--model.model_kwargs.normalization", "volume_max"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, required=True, help="single-coil dataset root (singlecoil_train/val)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("bench_out/remedies"), help="runs and reconstructions"
    )
    parser.add_argument("--steps", type=int, default=4000, help="trainer.max_steps (2 per batch; demo: 4000)")
    parser.add_argument("--append", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    val = args.data / "singlecoil_val"
    results: dict[str, dict[int, FastmriResult]] = {}
    seconds: dict[str, float] = {}
    for name, switches in VARIANTS.items():
        slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        words = ["--data.root", str(args.data), "--trainer.max_steps", str(args.steps), *switches]
        words += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
        start = time.perf_counter()
        best = fit_or_reuse([STYLISH_RECIPE], words, args.out / "runs" / slug, name, progress=False)
        seconds[name] = time.perf_counter() - start
        results[name] = {}
        for acc in ACCELERATIONS:
            folder = args.out / "recon" / slug / f"x{acc}"
            reconstruct_with_checkpoint(val, folder, best, ReconOptions(progress=False, acceleration=acc))
            results[name][acc] = evaluate_fastmri(val, folder, progress=False)
    table = singlecoil_table(results)
    print(table)
    print("\ntraining seconds: " + ", ".join(f"{n} {s:.0f}" for n, s in seconds.items()))
    if args.append:
        command = f"python benchmarks/singlecoil_remedies.py --data {args.data} --steps {args.steps} --append"
        with open(Path(__file__).with_name("RESULTS.md"), "a") as results_file:
            results_file.write(
                f"\n## Single-coil generative model: the two remedies\n\n`{command}` (recipe {STYLISH_RECIPE}, "
                f"{args.steps} optimiser steps each, the data's validation files)\n\n{table}\n"
            )


if __name__ == "__main__":
    main()
