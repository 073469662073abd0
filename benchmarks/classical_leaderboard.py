"""Leaderboard SSIM and speed of every classical method on the demo leaderboard.

Reconstructs ``DATA/leaderboard`` (acc4 and acc8) with each method through
:func:`kspacelab.inference.reconstruct_dataset` (the code behind ``kspacelab reconstruct --method``), scores it
with :func:`kspacelab.evaluation.evaluate_leaderboard` (``kspacelab evaluate``), prints a table (SSIM acc4, acc8,
total, seconds per slice) and appends a dated section to ``benchmarks/RESULTS.md`` unless ``--no-write``.
Seconds per slice = wall time of the reconstruction (reading, calibration, solving, writing) / slices.

Usage::

    kspacelab simulate /tmp/demo_data --preset demo --seed 0
    python benchmarks/classical_leaderboard.py --data /tmp/demo_data [--methods zero-filled grappa sense cs]
        [--workers N] [--threads N] [--no-write]

``--workers 2`` runs the slices in two processes (``kspacelab reconstruct --workers 2``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from pathlib import Path

import torch

from kspacelab.evaluation import ACCELERATION_FOLDERS, evaluate_leaderboard
from kspacelab.inference import CLASSICAL_METHODS, reconstruct_dataset


def run(data: Path, methods: list[str], workers: int, threads: int) -> dict[str, dict[str, float]]:
    """Reconstruct and score ``data/leaderboard`` with every method -> per method acc4, acc8, total, s/slice."""
    leaderboard = data / "leaderboard"
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            out = Path(tmp) / method
            summary = reconstruct_dataset(
                leaderboard, out, method=method, progress=False, workers=workers, threads=threads
            )
            result = evaluate_leaderboard(leaderboard, out, progress=False)
            groups = {g: result.groups[g] for g in ACCELERATION_FOLDERS}
            rows[method] = {
                **groups,
                "total": sum(groups.values()) / len(groups),
                "s_per_slice": summary.seconds / summary.slices,
                "slices": float(summary.slices),
            }
            print(f"{method}: {rows[method]}", file=sys.stderr)
    return rows


def table(rows: dict[str, dict[str, float]]) -> str:
    header = ["method", *(f"SSIM {g}" for g in ACCELERATION_FOLDERS), "total", "s / slice"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, r in rows.items():
        ssim = "".join(f"{r[g]:.4f} | " for g in ACCELERATION_FOLDERS)
        lines.append(f"| {method} | {ssim}{r['total']:.4f} | {r['s_per_slice']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="SNU-layout root with leaderboard/")
    parser.add_argument(
        "--methods", nargs="+", default=list(CLASSICAL_METHODS), choices=list(CLASSICAL_METHODS)
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="processes over slices (reconstruct --workers)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per process (reconstruct_dataset's default: 1)"
    )
    parser.add_argument("--no-write", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    rows = run(args.data, args.methods, args.workers, args.threads)
    load_after = os.getloadavg()[0]
    text = table(rows)
    print(text)
    if not args.no_write:
        slices = int(next(iter(rows.values()))["slices"])
        command = "python benchmarks/classical_leaderboard.py " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        section = (
            f"\n## Classical baselines on the demo leaderboard -- {dt.date.today().isoformat()}\n\n"
            f"Data: `kspacelab simulate DATA --preset demo --seed 0`, leaderboard acc4 + acc8 ({slices} slices). "
            f"Command: `{command.strip()}`; torch {torch.__version__}, CPU, {args.workers} process(es) with "
            f"{args.threads} torch thread(s) each. SSIM = exact leaderboard metric (`kspacelab evaluate`); "
            "s / slice = wall time of `reconstruct_dataset` (read, calibrate, solve, write) per slice. "
            f"1-min load average {load_before:.2f} before, {load_after:.2f} after.\n\n"
            f"{text}\n"
        )
        results = Path(__file__).resolve().parent / "RESULTS.md"
        if not results.exists():
            results.write_text("# Benchmark results\n")
        with results.open("a") as fh:
            fh.write(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
