"""Choose GRAPPA's regularisation on the demo validation split by leaderboard SSIM.

    python benchmarks/tune_grappa.py [--data DIR] [--lamdas 1e-4 3e-4 1e-3 3e-3] [--taps 3 5]

Simulates the demo dataset (seed 0) into a temporary folder unless ``--data`` names an existing SNU-layout root,
then prints, for every (lamda, readout taps) pair, the mean leaderboard SSIM per acceleration and anatomy on
``val/`` and the total (mean of acc4 and acc8). The chosen default is documented in
``kspacelab.classical.grappa``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from kspacelab import formats, metrics
from kspacelab.challenge import ACCELERATIONS, ANATOMIES, acc_folder
from kspacelab.classical.grappa import grappa_image
from kspacelab.data.synthetic import simulate_dataset


def _load_val(root: Path) -> list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray, float]]:
    volumes = []
    for vol in formats.discover_folder(root / "val", split="val", require_images=True):
        mask = formats.read_mask(vol.kspace_path)
        n_slices = formats.kspace_shape(vol.kspace_path)[0]
        kspace = np.stack([formats.read_kspace_slice(vol.kspace_path, i)[0] for i in range(n_slices)]) * mask
        assert vol.image_path is not None
        target = formats.read_image_volume(vol.image_path, "image_label")
        max_value = formats.read_image_attrs(vol.image_path)["max"]
        assert vol.acceleration is not None
        volumes.append((acc_folder(vol.acceleration), vol.anatomy, kspace, mask, target, max_value))
    return volumes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="SNU-layout root with val/ (default: simulate)"
    )
    parser.add_argument("--lamdas", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3])
    parser.add_argument("--taps", type=int, nargs="+", default=[3, 5])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            root = Path(tmp) / "demo"
            simulate_dataset(root, preset="demo", seed=0, progress=True)
        volumes = _load_val(root)
        groups = [acc_folder(acc) for acc in ACCELERATIONS]
        columns = [(a, n) for a in groups for n in ANATOMIES]
        print("| lamda | taps | " + "".join(f"{n} {a} | " for a, n in columns) + "total |")
        print("|---|---|" + "---|" * len(columns) + "---|")
        for lamda in args.lamdas:
            for taps in args.taps:
                scores: dict[tuple[str, str], list[float]] = {}
                for acc, anatomy, kspace, mask, target, max_value in volumes:
                    recon = grappa_image(
                        kspace, mask, crop=target.shape[-2:], lamda=lamda, kernel_readout=taps
                    )
                    per_slice = metrics.leaderboard_ssim_volume(recon, target, max_value, anatomy)
                    scores.setdefault((acc, anatomy), []).extend(per_slice.tolist())
                by_acc = {
                    a: np.mean([v for (acc, _), vs in scores.items() if acc == a for v in vs]) for a in groups
                }
                cells = [np.mean(scores.get(column, [np.nan])) for column in columns]
                total = sum(by_acc[a] for a in groups) / len(groups)
                print(
                    f"| {lamda:g} | {taps} | " + " | ".join(f"{c:.4f}" for c in cells) + f" | {total:.4f} |"
                )


if __name__ == "__main__":
    main()
