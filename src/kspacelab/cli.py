"""The ``kspacelab`` program: simulate | train | reconstruct | evaluate | demo.

User errors (bad files, bad arguments) print one line ``kspacelab: error: ...`` on stderr and exit with
status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from kspacelab import __version__
from kspacelab.errors import KspacelabError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


class _ClassicalMethods:
    """The names of ``kspacelab.inference.CLASSICAL_METHODS`` as argparse ``choices``, read on first use, so that
    building the parser (``--help``, ``--version``, other commands) does not import torch."""

    def _names(self) -> tuple[str, ...]:
        from kspacelab.inference import CLASSICAL_METHODS

        return tuple(CLASSICAL_METHODS)

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())


def _cmd_simulate(args: argparse.Namespace) -> int:
    from kspacelab.data.synthetic import simulate_dataset

    summary = simulate_dataset(
        args.out,
        preset=args.preset,
        volumes_per_group=args.volumes_per_group,
        seed=args.seed,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    print(f"wrote a {args.preset!r} SNU-layout dataset to {args.out} in {summary.seconds:.1f} s")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from kspacelab.training import train_main

    return train_main(args.train_args)


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    from kspacelab.inference import reconstruct_dataset, reconstruct_with_bundle, reconstruct_with_checkpoint

    if args.workers > 1 and args.method is None:
        raise KspacelabError("--workers applies to --method reconstructions only")
    if (args.time_budget is not None or args.strict) and args.bundle is None:
        raise KspacelabError("--time-budget and --strict apply to --bundle reconstructions only")
    if args.bundle is not None:
        summary, decisions = reconstruct_with_bundle(
            args.data,
            args.out,
            args.bundle,
            tta=args.tta,
            batch_size=args.batch_size,
            device=args.device,
            crop=args.crop,
            progress=not args.quiet,
            time_budget=args.time_budget,
            strict=args.strict,
        )
        counts: dict[str, int] = {}
        for decision in decisions:
            counts[decision.expert] = counts.get(decision.expert, 0) + 1
        print("volumes per expert: " + ", ".join(f"{name} {n}" for name, n in sorted(counts.items())))
        if args.time_budget is not None:
            verdict = "within" if summary.seconds <= args.time_budget else "OVER"
            print(f"total {summary.seconds:.1f} s: {verdict} the time budget of {args.time_budget:.0f} s")
        what = f"bundle {args.bundle.name}" + (" + flip TTA" if args.tta else "")
        print(f"routing: {args.out / 'routing.json'}")
    elif args.checkpoint is not None:
        summary = reconstruct_with_checkpoint(
            args.data,
            args.out,
            args.checkpoint,
            tta=args.tta,
            batch_size=args.batch_size,
            device=args.device,
            crop=args.crop,
            progress=not args.quiet,
        )
        what = f"checkpoint {args.checkpoint.name}" + (" + flip TTA" if args.tta else "")
    else:
        if args.tta:
            raise KspacelabError("--tta applies to --checkpoint and --bundle reconstructions only")
        summary = reconstruct_dataset(
            args.data,
            args.out,
            method=args.method,
            crop=args.crop,
            progress=not args.quiet,
            workers=args.workers,
        )
        what = args.method
    print(
        f"reconstructed {summary.volumes} volumes ({summary.slices} slices) with {what} into {args.out} "
        f"in {summary.seconds:.1f} s ({summary.slices_per_second:.2f} slices/s, "
        f"{summary.seconds / max(summary.slices, 1):.3f} s/slice)"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from kspacelab.evaluation import evaluate_leaderboard, write_json

    result = evaluate_leaderboard(args.leaderboard, args.recon, progress=not args.quiet)
    print(result.table())
    for group in ("acc4", "acc8"):
        if group in result.groups:
            print(f"SSIM {group}: {result.groups[group]:.4f}")
    if result.total is not None:
        print(f"SSIM total: {result.total:.4f}")
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from kspacelab.demo import run_demo

    if args.moe:
        from kspacelab.demo import run_moe_demo

        run_moe_demo(Path(args.out), seed=args.seed, progress=not args.quiet, recipe=args.config)
        return 0
    run_demo(Path(args.out), seed=args.seed, progress=not args.quiet, config=args.config)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kspacelab`` program."""
    parser = argparse.ArgumentParser(
        prog="kspacelab",
        description="Deep-learning reconstruction of accelerated multi-coil MRI (SNU FastMRI Challenge).",
    )
    parser.add_argument("--version", action="version", version=f"kspacelab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sim = sub.add_parser(
        "simulate",
        help="write a synthetic multi-coil dataset in the SNU challenge layout",
        description="Simulate multi-coil k-space from real anatomy (MNI152 brain, MSK stand-in for knee) and "
        "write train/val/leaderboard files exactly as the SNU challenge ships them.",
    )
    sim.add_argument("out", type=Path, help="output dataset root (must be empty or absent)")
    sim.add_argument(
        "--preset", choices=("demo", "snu"), default="demo", help="geometry preset (default: demo)"
    )
    sim.add_argument(
        "--volumes-per-group",
        type=_positive_int,
        default=None,
        help="training volumes per {brain,knee} x {acc4,acc8} group (default: the preset's)",
    )
    sim.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sim.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty folder")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.set_defaults(func=_cmd_simulate)

    # Everything after "train" goes to the Lightning CLI (jsonargparse): no option of its own here, and a
    # prefix character that never occurs, so argparse hands over every argument untouched.
    train = sub.add_parser(
        "train",
        help="train a model from a YAML recipe (Lightning); see kspacelab train --help",
        description="Train a reconstruction model with Lightning from a YAML config (model:, data:, trainer:).",
        add_help=False,
        prefix_chars="\x00",
    )
    train.add_argument(
        "train_args",
        nargs=argparse.REMAINDER,
        help="--config FILE [--run-dir DIR] [--seed N] [--ckpt_path CKPT] [--print_config] [--section.key VALUE]; "
        "or --bundle RECIPE --run-dir DIR [--section.key VALUE] to train a mixture of experts",
    )
    train.set_defaults(func=_cmd_train)

    rec = sub.add_parser(
        "reconstruct",
        help="reconstruct a leaderboard or k-space folder into reconstruction files",
        description="Reconstruct every k-space file of a leaderboard root (acc4/, acc8/) or of a folder with "
        "kspace/ into OUT (dataset 'reconstruction', float32, same file names).",
    )
    rec.add_argument("--data", type=Path, required=True, help="leaderboard root or folder with kspace/")
    rec.add_argument("--out", type=Path, required=True, help="output folder")
    how = rec.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--checkpoint", type=Path, help="trained model: kspacelab train checkpoint or fastMRI VarNet weights"
    )
    how.add_argument(
        "--method",
        choices=_ClassicalMethods(),
        help="classical reconstruction method",
    )
    how.add_argument(
        "--bundle", type=Path, help="mixture of experts: a bundle manifest (YAML/JSON) routing each volume"
    )
    rec.add_argument(
        "--tta", action="store_true", help="horizontal-flip self-ensemble (checkpoint or bundle only)"
    )
    rec.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --bundle: warn when the projected total time exceeds SECONDS (the challenge allowed 3600)",
    )
    rec.add_argument("--strict", action="store_true", help="with --time-budget: stop instead of warning")
    rec.add_argument(
        "--batch-size", type=_positive_int, default=1, help="slices per forward pass (default: 1)"
    )
    rec.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    rec.add_argument(
        "--crop", type=_positive_int, default=None, help="output size (default: label size or 384)"
    )
    rec.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="with --method: reconstruct slices in N worker processes (default: 1, in this process)",
    )
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    rec.set_defaults(func=_cmd_reconstruct)

    ev = sub.add_parser(
        "evaluate",
        help="score reconstructions with the exact SNU leaderboard SSIM",
        description="Foreground-masked SSIM per slice, averaged per acceleration folder; total = mean of acc4 "
        "and acc8.",
    )
    ev.add_argument(
        "--leaderboard", type=Path, required=True, help="folder with acc4/image, acc8/image (or image/)"
    )
    ev.add_argument(
        "--recon", type=Path, required=True, help="folder with acc4/, acc8/ reconstructions (or flat)"
    )
    ev.add_argument("--json", type=Path, default=None, help="also write the scores to this JSON file")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=_cmd_evaluate)

    demo = sub.add_parser(
        "demo",
        help="the main job end to end on the embedded synthetic dataset",
        description="Simulate the demo dataset, train a small VarNet per acceleration, reconstruct its leaderboard "
        "with zero-filling, GRAPPA and the models, evaluate and write a report.",
    )
    demo.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument(
        "--config",
        type=Path,
        default=None,
        help="training recipe for the VarNet experts (default: configs/demo.yaml of the checkout); "
        "with --moe the bundle recipe (default: configs/demo_moe.yaml)",
    )
    demo.add_argument(
        "--moe",
        action="store_true",
        help="mixture of experts instead: train four experts and an anatomy classifier, route the leaderboard, "
        "compare with a single model",
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KspacelabError as err:
        print(f"kspacelab: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kspacelab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
