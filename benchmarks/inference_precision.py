"""Accuracy and speed of ``reconstruct --precision`` (bf16, 16) against float32 for one checkpoint, in one run.

For each precision: reconstruct the leaderboard, score it with the leaderboard metric, and compare every
reconstruction with the float32 one (largest pixel difference relative to the volume's float32 maximum).

    kspacelab simulate data/demo --preset demo
    kspacelab train --config demo --data.root data/demo --run-dir runs/demo
    python benchmarks/inference_precision.py --data data/demo/leaderboard --checkpoint runs/demo/checkpoints/best.ckpt
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from kspacelab import formats
from kspacelab.evaluation import evaluate_leaderboard
from kspacelab.inference import ReconOptions, reconstruct_with_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="leaderboard root (acc4/, acc8/)")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="add a float32 row with torch.compile")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="kspacelab-precision-") as tmp:
        volumes: dict[str, dict[str, np.ndarray]] = {}
        for precision in ("32", "bf16", "16") + (("32 + compile",) if args.compile else ()):
            out = Path(tmp) / precision.replace(" + ", "_")
            options = ReconOptions(
                device=args.device,
                batch_size=args.batch_size,
                precision=precision.split()[0],
                compile=precision.endswith("compile"),
                progress=False,
            )
            summary = reconstruct_with_checkpoint(args.data, out, args.checkpoint, options)
            scores = evaluate_leaderboard(args.data, out, progress=False)
            volumes[precision] = {
                str(p.relative_to(out)): formats.read_reconstruction(p) for p in sorted(out.rglob("*.h5"))
            }
            reference = volumes["32"]
            worst = max(
                float(np.abs(v - reference[k]).max() / np.abs(reference[k]).max())
                for k, v in volumes[precision].items()
            )
            assert summary.timing is not None
            rows.append((precision, scores.groups, scores.total, worst, summary.timing["ms_per_slice"]))
    base = rows[0][2] or 0.0
    print(
        "| precision | SSIM acc4 | SSIM acc8 | total | total - float32 | max pixel diff (of max) | ms / slice |"
    )
    print("|---|---|---|---|---|---|---|")
    for precision, groups, total, worst, ms in rows:
        print(
            f"| {precision} | {groups.get('acc4', float('nan')):.5f} | {groups.get('acc8', float('nan')):.5f} | "
            f"{total:.5f} | {total - base:+.6f} | {100 * worst:.3f} % | {ms:.0f} |"
        )


if __name__ == "__main__":
    main()
