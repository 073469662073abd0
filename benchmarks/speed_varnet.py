"""Speed of kspacelab's E2E-VarNet against fastMRI's reference ``VarNet`` with identical weights.

Times the forward pass (``no_grad``) and one training step (forward, backward of ``output.sum()``-like L1 loss,
Adam step) for both implementations, alternating between them in every repetition so that machine noise hits
both alike, and reports medians and the ratio ours / fastMRI (below 1 means ours is faster). Outputs are
checked to agree before timing. A dated section is appended to ``benchmarks/RESULTS.md`` unless ``--no-write``.

Usage::

    python benchmarks/speed_varnet.py [--reps 5] [--threads N] [--configs small,default] [--no-write]

Requires the ``fastmri`` package (the dev extra) as the reference.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from kspacelab.masks import create_mask_for_mask_type
from kspacelab.models import VarNet


@dataclass(frozen=True)
class Case:
    """One benchmark configuration: model hyper-parameters and the k-space shape ``(B, C, H, W)``."""

    name: str
    model: dict[str, int]
    shape: tuple[int, int, int, int]


CASES = {
    "small": Case("small", {"num_cascades": 4, "chans": 8, "sens_chans": 4}, (1, 8, 128, 96)),
    "default": Case("default", {"num_cascades": 2, "chans": 18, "sens_chans": 8}, (1, 16, 320, 320)),
}


def _inputs(case: Case, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real-view masked k-space ``(B, C, H, W, 2)``, bool mask ``(B, 1, 1, W, 1)`` and a target image."""
    b, c, h, w = case.shape
    mask_func = create_mask_for_mask_type("equispaced", [0.08], [4])
    mask, _ = mask_func((c, h, w, 2), seed=seed)
    mask = mask.bool().unsqueeze(0).expand(b, -1, -1, -1, -1)
    g = torch.Generator().manual_seed(seed)
    kspace = torch.randn(b, c, h, w, 2, generator=g) * mask
    target = torch.rand(b, h, w, generator=g)
    return kspace, mask, target


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_case(case: Case, reps: int) -> dict[str, float]:
    """Median seconds of forward and training step for both implementations, plus max relative error."""
    from fastmri.models import VarNet as FastMRIVarNet

    torch.manual_seed(0)
    reference = FastMRIVarNet(**case.model)
    ours = VarNet(**case.model)
    ours.load_state_dict(reference.state_dict(), strict=True)
    kspace, mask, target = _inputs(case)

    with torch.no_grad():
        expected = reference(kspace, mask)
        got = ours(kspace, mask)
    rel_err = float((got - expected).abs().max() / expected.abs().max())

    optimisers = {
        "ours": torch.optim.Adam(ours.parameters(), lr=1e-6),
        "fastmri": torch.optim.Adam(reference.parameters(), lr=1e-6),
    }
    models: dict[str, torch.nn.Module] = {"ours": ours, "fastmri": reference}

    def forward(name: str) -> None:
        with torch.no_grad():
            models[name](kspace, mask)

    def train_step(name: str) -> None:
        opt = optimisers[name]
        opt.zero_grad(set_to_none=True)
        loss = (models[name](kspace, mask) - target).abs().mean()
        loss.backward()
        opt.step()

    times: dict[str, list[float]] = {f"{k}_{n}": [] for k in ("fwd", "train") for n in models}
    for name in models:  # warm-up (allocator, oneDNN primitive caches)
        forward(name)
        train_step(name)
    for _ in range(reps):
        for name in models:
            times[f"fwd_{name}"].append(_timed(lambda name=name: forward(name)))
        for name in models:
            times[f"train_{name}"].append(_timed(lambda name=name: train_step(name)))
    result = {key: statistics.median(values) for key, values in times.items()}
    result["rel_err"] = rel_err
    return result


def _table(rows: dict[str, dict[str, float]]) -> str:
    lines = [
        "| config | shape (B,C,H,W) | fwd ours s | fwd fastMRI s | fwd ratio | train ours s | "
        "train fastMRI s | train ratio | max rel err |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        case = CASES[name]
        cfg = ", ".join(f"{k}={v}" for k, v in case.model.items())
        lines.append(
            f"| {name} ({cfg}) | {case.shape} | {r['fwd_ours']:.3f} | {r['fwd_fastmri']:.3f} | "
            f"{r['fwd_ours'] / r['fwd_fastmri']:.2f} | {r['train_ours']:.3f} | {r['train_fastmri']:.3f} | "
            f"{r['train_ours'] / r['train_fastmri']:.2f} | {r['rel_err']:.1e} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and append it to ``benchmarks/RESULTS.md``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per measurement (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--configs", default="small,default", help=f"comma list of {', '.join(CASES)}")
    parser.add_argument("--no-write", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; choose from {sorted(CASES)}")

    rows = {}
    for name in names:
        rows[name] = run_case(CASES[name], args.reps)
        print(f"{name}: {rows[name]}", file=sys.stderr)
    table = _table(rows)
    print(table)
    if not args.no_write:
        results = Path(__file__).resolve().parent / "RESULTS.md"
        command = "python benchmarks/speed_varnet.py " + " ".join(sys.argv[1:] if argv is None else argv)
        section = (
            f"\n## E2E-VarNet speed vs fastMRI -- {dt.date.today().isoformat()}\n\n"
            f"Command: `{command.strip()}`; torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"CPU, float32, median of {args.reps} alternating repetitions. Ratio = ours / fastMRI "
            "(below 1: ours faster). Train step = forward + L1 loss backward + Adam step.\n\n"
            f"{table}\n"
        )
        if not results.exists():
            results.write_text("# Benchmark results\n")
        with results.open("a") as fh:
            fh.write(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
