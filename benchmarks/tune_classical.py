"""Choose the settings of SENSE and compressed sensing on the demo validation split by leaderboard SSIM.

    python benchmarks/tune_classical.py --data /tmp/demo_data --stage espirit|sense|cs

``--data`` is an SNU-layout root (``kspacelab simulate /tmp/demo_data --preset demo --seed 0``); without it the
demo dataset (seed 0) is simulated into a temporary folder. Only ``val/`` is read. Every stage prints a Markdown
table: mean leaderboard SSIM per acceleration and anatomy, the total (mean of acc4 and acc8) and the seconds
per slice (calibration = readout crop + ESPIRiT maps; solve = the iterations; both with the machine's default
torch threads). Iterates are scored on the way (CG and FISTA do not depend on the total iteration count), so
``--iterations 5 10 20`` costs one run of 20.

* ``espirit``: calibration settings (kernel, calibration rows, threshold, eigenvalue crop, power iterations),
  scored with SENSE at ``--sense-lamda`` and the largest ``--iterations``;
* ``sense``: Tikhonov weight x CG iterations x output (``dc`` = measured lines restored, RSS; ``mag`` = |x|);
* ``cs``: L1 weight x FISTA iterations x output, with ``--vanishing-moments`` and ``--levels``.

The chosen defaults and the numbers behind them are in the docstrings of ``kspacelab.classical.espirit``,
``kspacelab.classical.sense`` and ``kspacelab.classical.cs``.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from tune_grappa import _load_val as load_val_split  # benchmarks/ is on sys.path when run as a script

from kspacelab import metrics
from kspacelab.challenge import ACCELERATIONS, ANATOMIES, acc_folder
from kspacelab.classical.cs import solve_cs
from kspacelab.classical.espirit import DEFAULT_ESPIRIT, EspiritConfig, PreparedSlices, prepare
from kspacelab.classical.sense import solve_sense
from kspacelab.data.synthetic import simulate_dataset

Volume = tuple[str, str, np.ndarray, np.ndarray, np.ndarray, float]
Solver = Callable[[PreparedSlices, Callable[[int, torch.Tensor], None]], object]

#: Table columns (acceleration folder, anatomy): acc4 brain, acc4 knee, acc8 brain, acc8 knee.
CELLS = tuple((acc_folder(acc), anatomy) for acc in ACCELERATIONS for anatomy in ANATOMIES)


class Scores:
    """Per-slice SSIM grouped by (setting, acceleration, anatomy), plus timings."""

    def __init__(self) -> None:
        self.ssim: dict[tuple[object, ...], dict[tuple[str, str], list[float]]] = {}
        self.seconds: dict[tuple[object, ...], list[float]] = {}

    def add(self, key: tuple[object, ...], acc: str, anatomy: str, values: Iterable[float]) -> None:
        self.ssim.setdefault(key, {}).setdefault((acc, anatomy), []).extend(values)

    def row(self, key: tuple[object, ...]) -> tuple[list[float], float]:
        cells = self.ssim[key]
        per_acc = [
            np.mean([v for (a, _), vs in cells.items() if a == acc_folder(acc) for v in vs])
            for acc in ACCELERATIONS
        ]
        return [float(np.mean(cells.get(c, [np.nan]))) for c in CELLS], float(np.mean(per_acc))


def _score(recon: torch.Tensor, target: np.ndarray, max_value: float, anatomy: str) -> list[float]:
    return metrics.leaderboard_ssim_volume(recon.numpy(), target, max_value, anatomy).tolist()


def _recorder(
    scores: Scores,
    scoring: list[float],
    key: tuple[object, ...],
    iterations: list[int],
    prepared: PreparedSlices,
    acc: str,
    anatomy: str,
    target: np.ndarray,
    max_value: float,
) -> Callable[[int, torch.Tensor], None]:
    """Callback scoring the iterates ``i in iterations`` with both outputs; adds its own time to ``scoring``."""

    def record(i: int, x: torch.Tensor) -> None:
        if i not in iterations:
            return
        t0 = time.perf_counter()
        for output, dc in (("dc", True), ("mag", False)):
            recon = torch.as_tensor(
                prepared.finish(prepared.model.coil_combined_rss(x, prepared.coil_images, dc))
            )
            scores.add((*key, i, output), acc, anatomy, _score(recon, target, max_value, anatomy))
        scoring[0] += time.perf_counter() - t0

    return record


def run_grid(
    volumes: list[Volume],
    espirit_configs: list[EspiritConfig],
    solvers: dict[str, Solver],
    iterations: list[int],
) -> None:
    """Score every (ESPIRiT config, solver, iteration count, output) on every validation volume and print."""
    scores = Scores()
    calib_seconds: dict[EspiritConfig, float] = {}
    solve_seconds: dict[tuple[EspiritConfig, str], float] = {}
    n_slices = sum(v[2].shape[0] for v in volumes)
    for config in espirit_configs:
        for acc, anatomy, kspace, mask, target, max_value in volumes:
            t0 = time.perf_counter()
            prepared = prepare(kspace, mask, target.shape[-2:], config)
            calib_seconds[config] = calib_seconds.get(config, 0.0) + time.perf_counter() - t0
            for name, solver in solvers.items():
                scoring = [0.0]
                record = _recorder(
                    scores, scoring, (config, name), iterations, prepared, acc, anatomy, target, max_value
                )
                t0 = time.perf_counter()
                solver(prepared, record)
                elapsed = time.perf_counter() - t0 - scoring[0]
                solve_seconds[(config, name)] = solve_seconds.get((config, name), 0.0) + elapsed
    print(
        "| espirit (kernel, rows, thr, crop, power its) | solver | its | output | "
        + "".join(f"{anatomy} {acc} | " for acc, anatomy in CELLS)
        + "total | calib s/slice | solve s/slice (largest its) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key in scores.ssim:
        config, name, i, output = key
        assert isinstance(config, EspiritConfig)
        cells, total = scores.row(key)
        esp = f"{config.kernel}, {config.calib_rows}, {config.threshold:g}, {config.eig_crop:g}, {config.iterations}"
        print(
            f"| {esp} | {name} | {i} | {output} | "
            + " | ".join(f"{c:.4f}" for c in cells)
            + f" | {total:.4f} | {calib_seconds[config] / n_slices:.3f} | "
            f"{solve_seconds[(config, str(name))] / n_slices:.3f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="SNU-layout root with val/ (default: simulate)"
    )
    parser.add_argument("--stage", choices=("espirit", "sense", "cs"), required=True)
    parser.add_argument("--iterations", type=int, nargs="+", default=None, help="iteration counts to score")
    parser.add_argument("--lamdas", type=float, nargs="+", default=None, help="SENSE or CS weights")
    parser.add_argument("--sense-lamda", type=float, default=1e-2, help="SENSE weight of the espirit stage")
    parser.add_argument("--kernels", type=int, nargs="+", default=[6])
    parser.add_argument("--calib-rows", type=int, nargs="+", default=[24])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[DEFAULT_ESPIRIT.threshold])
    parser.add_argument("--eig-crops", type=float, nargs="+", default=[DEFAULT_ESPIRIT.eig_crop])
    parser.add_argument("--power-iterations", type=int, nargs="+", default=[DEFAULT_ESPIRIT.iterations])
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--vanishing-moments", type=int, nargs="+", default=[2])
    parser.add_argument(
        "--warm-starts", type=int, nargs="+", default=[0], help="CG-SENSE iterations before CS"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    espirit_configs = [
        EspiritConfig(kernel=k, calib_rows=r, threshold=t, eig_crop=c, iterations=p)
        for k, r, t, c, p in itertools.product(
            args.kernels, args.calib_rows, args.thresholds, args.eig_crops, args.power_iterations
        )
    ]
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            root = Path(tmp) / "demo"
            simulate_dataset(root, preset="demo", seed=0, progress=True)
        volumes = load_val_split(root)
        solvers: dict[str, Solver] = {}
        if args.stage in ("espirit", "sense"):
            iterations = args.iterations or ([20] if args.stage == "espirit" else [5, 10, 20, 40])
            lamdas = (
                [args.sense_lamda] if args.stage == "espirit" else (args.lamdas or [1e-3, 1e-2, 3e-2, 1e-1])
            )
            for lamda in lamdas:
                solvers[f"sense {lamda:g}"] = lambda p, cb, lamda=lamda: solve_sense(
                    p, lamda, max(iterations), cb
                )
        else:
            iterations = args.iterations or [10, 20, 40]
            grid = itertools.product(
                args.lamdas or [1e-3, 3e-3, 1e-2], args.vanishing_moments, args.warm_starts
            )
            for lamda, vm, warm in grid:
                solvers[f"cs {lamda:g} db{vm} warm {warm}"] = lambda p, cb, lamda=lamda, vm=vm, warm=warm: (
                    solve_cs(p, lamda, max(iterations), args.levels, vm, warm_start=warm, callback=cb)
                )
        run_grid(volumes, espirit_configs, solvers, iterations)


if __name__ == "__main__":
    main()
