"""Classical methods against zero-filling over coil counts and noise levels, on a coil and noise model that is not
the demo simulator's (:mod:`kspacelab.data.wire_coils`: straight-wire coils, correlated noise, real anatomy).

For every anatomy, acceleration, coil count and image SNR one slice (k-space 256 x 160, 2x oversampled readout,
organiser mask, 128 x 128 output) is reconstructed by every method of :data:`kspacelab.classical.METHODS` and
scored with the leaderboard SSIM. Prints one row per slice, then the mean per method and acceleration, the rows
where a method is below zero-filling, and the seconds per slice. One torch thread.

Usage::

    python benchmarks/classical_noise.py [--coils 4 6 8 16] [--snr 20 35 50 100] [--anatomies brain knee]
        [--seeds 0]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from kspacelab.classical import METHODS
from kspacelab.data.wire_coils import score_methods, simulate_slice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coils", type=int, nargs="+", default=[4, 6, 8, 16])
    parser.add_argument("--snr", type=float, nargs="+", default=[20.0, 35.0, 50.0, 100.0])
    parser.add_argument("--anatomies", nargs="+", default=["brain", "knee"], choices=["brain", "knee"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = list(METHODS)
    print("| anatomy | acc | coils | SNR | " + " | ".join(names) + " |")
    print("|---|---|---|---|" + "---|" * len(names))
    scores: dict[tuple[int, str], list[float]] = {}
    seconds: dict[str, list[float]] = {name: [] for name in names}
    below: list[str] = []
    for anatomy in args.anatomies:
        for acc in (4, 8):
            for coils in args.coils:
                for snr in args.snr:
                    for seed in args.seeds:
                        result = score_methods(simulate_slice(anatomy, coils, snr, acc, seed), METHODS)
                        cells = []
                        for name in names:
                            ssim, secs = result[name]
                            scores.setdefault((acc, name), []).append(ssim)
                            seconds[name].append(secs)
                            cells.append(f"{ssim:.4f}")
                        zero = result["zero-filled"][0]
                        best = max(result[n][0] for n in names if n != "zero-filled")
                        if acc == 4:
                            below += [
                                f"{anatomy} acc4 {coils}c SNR {snr:g} {n}"
                                for n in names
                                if result[n][0] < zero
                            ]
                        elif best <= zero:
                            below.append(f"{anatomy} acc8 {coils}c SNR {snr:g}: best method")
                        print(
                            f"| {anatomy} | {acc} | {coils} | {snr:g} | " + " | ".join(cells) + " |",
                            flush=True,
                        )
    print()
    print("| mean | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for acc in (4, 8):
        print(f"| acc{acc} | " + " | ".join(f"{np.mean(scores[(acc, n)]):.4f}" for n in names) + " |")
    print("| s / slice | " + " | ".join(f"{np.mean(seconds[n]):.3f}" for n in names) + " |")
    print()
    print("below zero-filling (acc4: any method; acc8: the best one):", ", ".join(below) if below else "none")


if __name__ == "__main__":
    main()
