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
    rows: dict[tuple[int, int, float], list[dict[str, float]]] = {}
    seconds: dict[str, list[float]] = {name: [] for name in names}
    below: list[str] = []
    for acc in (4, 8):
        for coils in args.coils:
            for snr in args.snr:
                for anatomy in args.anatomies:
                    for seed in args.seeds:
                        result = score_methods(simulate_slice(anatomy, coils, snr, acc, seed), METHODS)
                        ssim = {name: result[name][0] for name in names}
                        for name in names:
                            seconds[name].append(result[name][1])
                        rows.setdefault((acc, coils, snr), []).append(ssim)
                        zero = ssim["zero-filled"]
                        case = f"{anatomy} acc{acc} {coils} coils SNR {snr:g} seed {seed}"
                        if acc == 4:
                            below += [f"{case} {n}" for n in names if ssim[n] < zero]
                        elif max(ssim[n] for n in names if n != "zero-filled") <= zero:
                            below.append(f"{case} (best method)")
    print(f"mean leaderboard SSIM over {', '.join(args.anatomies)} x seeds {args.seeds}")
    print()
    print("| acc | coils | SNR | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for (acc, coils, snr), results in rows.items():
        cells = " | ".join(f"{np.mean([r[n] for r in results]):.4f}" for n in names)
        print(f"| {acc} | {coils} | {snr:g} | {cells} |")
    for acc in (4, 8):
        means = [np.mean([r[n] for (a, _, _), rs in rows.items() if a == acc for r in rs]) for n in names]
        print(f"| {acc} | all | all | " + " | ".join(f"**{m:.4f}**" for m in means) + " |")
    print()
    print("seconds per slice: " + ", ".join(f"{n} {np.mean(seconds[n]):.3f}" for n in names))
    print("below zero-filling (acc4: any method; acc8: the best one):", ", ".join(below) if below else "none")


if __name__ == "__main__":
    main()
