"""Does the feature-domain design learn faster here? A small Feature-VarNet with LSKA against the demo's VarNet.

All train with the same step budget, optimiser and schedule on the same simulated data, one run per acceleration:
``demo`` (E2E-VarNet, 4 cascades of 8 channels, 2,060,866 parameters) as the demo trains it (cascades started from
the GRAPPA-filled k-space) and started from the zero-filled k-space like fastMRI's (the fair comparison: the
Feature-VarNet has no GRAPPA start), and ``demo_feature_varnet`` (cascades [1, 2, 1], 8 channels, 2,091,618
parameters). The trainer logs the validation leaderboard SSIM after every
epoch with ``time/train_s`` (seconds spent in training batches, validation excluded); this script reads the logs,
draws validation SSIM against steps and against seconds in one PNG and prints a table (appended to
benchmarks/RESULTS.md with the command). Finished runs of the same request are reused.

Run:  kspacelab simulate DATA --preset demo --seed 0
      python benchmarks/feature_varnet_vs_varnet.py --data DATA --runs RUNS --figure docs/feature_varnet_vs_varnet.png
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from kspacelab import challenge
from kspacelab.training.run import fit_or_reuse

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
#: label -> (recipe, override words, run-folder name)
MODELS: dict[str, tuple[str, list[str], str]] = {
    "E2E-VarNet, GRAPPA start (demo)": ("demo", [], "demo"),
    "E2E-VarNet, zero-filled start": (
        "demo",
        ["--model.model_kwargs.initial_kspace", "zero_filled"],
        "demo_zf",
    ),
    "Feature-VarNet + LSKA (demo_feature_varnet)": ("demo_feature_varnet", [], "demo_feature_varnet"),
}
HEADING = "## Feature-VarNet vs E2E-VarNet at demo scale: validation SSIM against steps and seconds"


def _curve(run_dir: Path) -> list[tuple[int, float, float]]:
    """``(step, seconds, val SSIM)`` after each validation of a run (the newest log version)."""
    logs = sorted(
        (run_dir / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1])
    )
    with open(logs[-1]) as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val/ssim")]
    return [(int(r["step"]) + 1, float(r["time/train_s"]), float(r["val/ssim"])) for r in rows]


def _parameters(best: Path) -> int:
    from kspacelab.training.checkpoint import load_model

    return sum(p.numel() for p in load_model(best).model.parameters())  # shared modules counted once


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, required=True, help="simulated root (kspacelab simulate --preset demo)"
    )
    parser.add_argument("--runs", type=Path, required=True, help="folder of the training runs")
    parser.add_argument("--steps", type=int, default=250, help="optimiser steps per run (the demo's budget)")
    parser.add_argument("--accelerations", type=int, nargs="+", default=list(challenge.ACCELERATIONS))
    parser.add_argument("--figure", type=Path, default=Path("feature_varnet_vs_varnet.png"))
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args(argv)

    curves: dict[tuple[str, int], list[tuple[int, float, float]]] = {}
    params: dict[str, int] = {}
    for acc in args.accelerations:
        for label, (recipe, extra, name) in MODELS.items():
            words = ["--data.root", str(args.data), "--data.only_accelerations", f"[{acc}]"]
            words += [
                "--trainer.max_steps",
                str(args.steps),
                "--trainer.enable_model_summary",
                "false",
                *extra,
            ]
            run_dir = args.runs / f"{name}_{challenge.acc_folder(acc)}"
            best = fit_or_reuse(
                [recipe], words, run_dir, f"{label} {challenge.acc_folder(acc)}", progress=False
            )
            curves[label, acc] = _curve(run_dir)
            params[label] = _parameters(best)
            print(f"{label} {challenge.acc_folder(acc)}: {curves[label, acc][-1]}", flush=True)

    fig, axes = plt.subplots(
        2, len(args.accelerations), figsize=(5 * len(args.accelerations), 7), squeeze=False
    )
    for col, acc in enumerate(args.accelerations):
        for label in MODELS:
            steps, seconds, ssim = zip(*curves[label, acc], strict=True)
            axes[0, col].plot(steps, ssim, marker="o", label=label)
            axes[1, col].plot(seconds, ssim, marker="o", label=label)
        axes[0, col].set(
            title=f"{challenge.acc_folder(acc)}", xlabel="optimiser steps", ylabel="validation SSIM"
        )
        axes[1, col].set(xlabel="training seconds (2 CPU cores)", ylabel="validation SSIM")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Same budget ({args.steps} steps), same data: leaderboard SSIM on the validation split")
    fig.tight_layout()
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=110)
    plt.close(fig)

    lines = [
        "| model | parameters | acceleration | final val SSIM | best val SSIM | training s | s per step |",
        "|---|---|---|---|---|---|---|",
    ]
    for acc in args.accelerations:
        for label in MODELS:
            curve = curves[label, acc]
            step, seconds, final = curve[-1]
            best = max(v for _, _, v in curve)
            lines.append(
                f"| {label} | {params[label]:,} | {challenge.acc_folder(acc)} | {final:.4f} | {best:.4f} | "
                f"{seconds:.0f} | {seconds / step:.2f} |"
            )
    table = "\n".join(lines)
    print(table)
    print(f"figure: {args.figure}")
    if not args.no_write:
        command = " ".join(
            ["python benchmarks/feature_varnet_vs_varnet.py", *(sys.argv[1:] if argv is None else argv)]
        )
        with RESULTS.open("a") as out:
            out.write(
                f"\n{HEADING}\n\nDate {dt.date.today().isoformat()}. Command: `{command}` (data: `kspacelab simulate "
                f"DATA --preset demo --seed 0`); torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
                f"{args.steps} steps per run, one run per acceleration; validation after every epoch.\n\n{table}\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
