"""Our torch SENSE and CS against sigpy's ``EspiritCalib`` + ``SenseRecon`` / ``L1WaveletRecon`` (speed, SSIM).

Both get the same input: the readout-cropped k-space of the first ``--slices`` slices of every demo leaderboard
volume (acc4 and acc8), the same ESPIRiT threshold and crop, the same Tikhonov weight / iterations (SENSE) and
L1 weight (relative to the 99th percentile of the coil-combined zero-filled image) / iterations (CS), with the
sampling mask passed as sigpy's ``weights``. Differences that remain: sigpy's calibration block is square
(``calib_width`` = the ACS width rounded down to even, all of it used along the readout too), its maps are not
phase-aligned, its CS uses its own wavelet (db4) and step size without a warm start, and it outputs ``|x|``
(ours: RSS with the measured lines restored). One torch thread; sigpy runs on numpy.

Usage::

    python benchmarks/classical_vs_sigpy.py --data /tmp/demo_data [--slices 1] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import torch

from kspacelab import formats, metrics
from kspacelab.challenge import ACCELERATIONS, acc_folder
from kspacelab.classical import cs, sense
from kspacelab.classical.espirit import DEFAULT_ESPIRIT
from kspacelab.classical.grappa import detect_acs
from kspacelab.physics import center_crop, crop_readout, ifft2c


def _sigpy_maps(kspace: np.ndarray, calib_width: int) -> np.ndarray:
    """sigpy's ESPIRiT maps with our threshold and eigenvalue crop."""
    import sigpy.mri as mr

    return mr.app.EspiritCalib(
        kspace,
        calib_width=calib_width,
        thresh=DEFAULT_ESPIRIT.threshold,
        crop=DEFAULT_ESPIRIT.eig_crop,
        show_pbar=False,
    ).run()


def _sigpy_sense(kspace: np.ndarray, mask: np.ndarray, calib_width: int, crop: tuple[int, int]) -> np.ndarray:
    import sigpy.mri as mr

    maps = _sigpy_maps(kspace, calib_width)
    weights = np.broadcast_to(mask.astype(np.float32), kspace.shape[1:])
    image = mr.app.SenseRecon(
        kspace,
        maps,
        lamda=sense.DEFAULT_LAMDA,
        weights=weights,
        max_iter=sense.DEFAULT_ITERATIONS,
        show_pbar=False,
    ).run()
    return center_crop(torch.from_numpy(np.abs(image)), crop).numpy().astype(np.float32)


def _sigpy_cs(kspace: np.ndarray, mask: np.ndarray, calib_width: int, crop: tuple[int, int]) -> np.ndarray:
    import sigpy.mri as mr

    maps = _sigpy_maps(kspace, calib_width)
    combined = (np.conj(maps) * ifft2c(torch.from_numpy(kspace)).numpy()).sum(0)
    lamda = cs.DEFAULT_LAMDA * float(np.quantile(np.abs(combined), cs.SCALE_QUANTILE))
    weights = np.broadcast_to(mask.astype(np.float32), kspace.shape[1:])
    image = mr.app.L1WaveletRecon(
        kspace, maps, lamda=lamda, weights=weights, max_iter=cs.DEFAULT_ITERATIONS, show_pbar=False
    ).run()
    return center_crop(torch.from_numpy(np.abs(image)), crop).numpy().astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="SNU-layout root with leaderboard/")
    parser.add_argument("--slices", type=int, default=1, help="first slices of every volume (default: 1)")
    parser.add_argument("--no-write", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    methods = {
        "sense (ours)": lambda k, m, cw, c: sense.sense_image(k, m, crop=c),
        "sense (sigpy)": None,
        "cs (ours)": lambda k, m, cw, c: cs.cs_image(k, m, crop=c),
        "cs (sigpy)": None,
    }
    scores: dict[str, list[float]] = {name: [] for name in methods}
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    for acc in ACCELERATIONS:
        folder = args.data / "leaderboard" / acc_folder(acc)
        for vol in formats.discover_folder(folder, split="leaderboard", require_images=True):
            assert vol.image_path is not None
            targets = formats.read_image_volume(vol.image_path, "image_label")
            max_value = float(formats.read_image_attrs(vol.image_path)["max"])
            crop = (int(targets.shape[-2]), int(targets.shape[-1]))
            for index in range(min(args.slices, targets.shape[0])):
                kspace, mask = formats.read_kspace_slice(vol.kspace_path, index)
                kspace = kspace * mask
                start, stop = detect_acs(mask)
                calib_width = (stop - start) // 2 * 2
                cropped = crop_readout(torch.from_numpy(kspace)[None], crop[0])[0].numpy()
                for name, fn in methods.items():
                    t0 = time.perf_counter()
                    if name == "sense (sigpy)":
                        recon = _sigpy_sense(cropped, mask, calib_width, crop)
                    elif name == "cs (sigpy)":
                        recon = _sigpy_cs(cropped, mask, calib_width, crop)
                    else:
                        assert fn is not None
                        recon = np.asarray(fn(kspace, mask, calib_width, crop))
                    seconds[name].append(time.perf_counter() - t0)
                    scores[name].append(
                        metrics.leaderboard_ssim(recon, targets[index], max_value, vol.anatomy)
                    )
                print(vol.name, {n: round(v[-1], 4) for n, v in scores.items()}, file=sys.stderr)
    lines = ["| method | mean SSIM | s / slice |", "|---|---|---|"]
    for name in methods:
        lines.append(f"| {name} | {np.mean(scores[name]):.4f} | {np.mean(seconds[name]):.3f} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        command = "python benchmarks/classical_vs_sigpy.py " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        section = (
            f"\n## SENSE and CS: ours (torch) vs sigpy -- {dt.date.today().isoformat()}\n\n"
            f"Command: `{command.strip()}`; {len(scores['cs (ours)'])} demo leaderboard slices (acc4 + acc8), "
            f"readout-cropped input for both, our defaults for both, torch {torch.__version__} with 1 thread; "
            "leaderboard SSIM per slice, averaged. See the script's docstring for what still differs.\n\n"
            f"{table}\n"
        )
        with (Path(__file__).resolve().parent / "RESULTS.md").open("a") as fh:
            fh.write(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
