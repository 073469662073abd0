"""The ``kspacelab`` program: simulate | train | reconstruct | evaluate | robustness | demo.

User errors (bad files, bad arguments) print one line ``kspacelab: error: ...`` on stderr and exit with
status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from kspacelab import __version__, challenge
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
    from kspacelab.data.synthetic import PRESETS, simulate_dataset

    summary = simulate_dataset(
        args.out,
        preset=args.preset,
        volumes_per_group=args.volumes_per_group,
        seed=args.seed,
        progress=not args.quiet,
        overwrite=args.overwrite,
        annotations=args.annotations,
    )
    layout = "NYU single-coil knee" if PRESETS[args.preset].layout == "singlecoil" else "SNU"
    print(f"wrote a {args.preset!r} {layout}-layout dataset to {args.out} in {summary.seconds:.1f} s")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    progress = not args.quiet
    overrides = list(args.overrides)
    if args.use_val_for_final:
        overrides += ["--data.merge_val_into_train", "true"]
    if args.bundle is not None or args.stages is not None:
        if args.run_dir is None:
            raise KspacelabError(f"train: {'--bundle' if args.bundle else '--stages'} needs --run-dir DIR")
        if args.config:
            raise KspacelabError(
                "train: --config does not go with --bundle/--stages (the recipe names its configs)"
            )
        for option in ("seed", "ckpt_path", "init_weights", "save_every_n_steps"):
            if getattr(args, option) is not None:
                raise KspacelabError(f"train: --{option} does not go with --bundle/--stages")
    if args.bundle is not None:
        from kspacelab.experts.training import train_bundle
        from kspacelab.training.recipes import find_config

        train_bundle(find_config(args.bundle), args.run_dir, overrides, progress=progress)
        return 0
    if args.stages is not None:
        from kspacelab.training.recipes import find_config
        from kspacelab.training.stages import train_stages

        train_stages(find_config(args.stages), args.run_dir, overrides, progress=progress)
        return 0
    if not args.config:
        raise KspacelabError("train: --config RECIPE is required (or --stages / --bundle)")
    from kspacelab.training.run import fit

    fit(
        args.config,
        overrides,
        run_dir=args.run_dir,
        seed=args.seed,
        ckpt_path=args.ckpt_path,
        init_weights=args.init_weights,
        save_every_n_steps=args.save_every_n_steps,
        print_config=args.print_config,
        progress=progress,
    )
    return 0


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    started = time.perf_counter()  # the clock of timing.json: loading and validation count
    from kspacelab import timing
    from kspacelab.inference import ReconOptions, reconstruct_dataset, reconstruct_with_checkpoint

    if args.workers > 1 and args.method is None:
        raise KspacelabError("--workers applies to --method reconstructions only")
    if (args.time_budget is not None or args.strict) and args.bundle is None:
        raise KspacelabError("--time-budget and --strict apply to --bundle reconstructions only")
    if args.method is not None and (
        args.tta or args.precision != "32" or args.compile or args.loader_workers
    ):
        raise KspacelabError(
            "--tta, --precision, --compile and --loader-workers apply to --checkpoint and --bundle reconstructions"
        )
    if args.devices > 1 and args.workers > 1:
        raise KspacelabError("--devices and --workers do not go together: choose one")
    if args.model_config is not None and args.checkpoint is None:
        raise KspacelabError("--model-config applies to --checkpoint reconstructions only")
    if args.acceleration is not None and (args.bundle is not None or args.devices > 1):
        raise KspacelabError(
            "--acceleration applies to --method zero-filled and --checkpoint reconstructions on one device"
        )
    options = ReconOptions(
        device=args.device,
        batch_size=args.batch_size,
        tta=args.tta,
        crop=args.crop,
        progress=not args.quiet,
        skip_bad=args.skip_bad,
        precision=args.precision,
        compile=args.compile,
        loader_workers=args.loader_workers,
        started=started,
        acceleration=args.acceleration,
    )
    decisions = None
    if args.devices > 1:
        from kspacelab.multidevice import reconstruct_on_devices

        summary, decisions = reconstruct_on_devices(
            args.data,
            args.out,
            args.devices,
            options,
            method=args.method,
            checkpoint=args.checkpoint,
            model_config=args.model_config,
            bundle=args.bundle,
            time_budget=args.time_budget,
            strict=args.strict,
        )
        what = (
            (
                args.method
                or (f"checkpoint {args.checkpoint.name}" if args.checkpoint else f"bundle {args.bundle.name}")
            )
            + (" + flip TTA" if args.tta else "")
            + f" on {args.devices} devices"
        )
    elif args.bundle is not None:
        from kspacelab.experts.reconstruct import reconstruct_with_bundle

        summary, decisions = reconstruct_with_bundle(
            args.data, args.out, args.bundle, options, time_budget=args.time_budget, strict=args.strict
        )
        what = f"bundle {args.bundle.name}" + (" + flip TTA" if args.tta else "")
    elif args.checkpoint is not None:
        summary = reconstruct_with_checkpoint(
            args.data, args.out, args.checkpoint, options, model_config=args.model_config
        )
        what = f"checkpoint {args.checkpoint.name}" + (" + flip TTA" if args.tta else "")
    else:
        summary = reconstruct_dataset(args.data, args.out, args.method, options, workers=args.workers)
        what = args.method
    if args.acceleration is not None:
        what += f" at x{args.acceleration}"
    print(
        f"reconstructed {summary.volumes} volumes ({summary.slices} slices) with {what} into {args.out} "
        f"in {summary.seconds:.1f} s ({summary.slices_per_second:.2f} slices/s, "
        f"{summary.seconds / max(summary.slices, 1):.3f} s/slice)"
    )
    if decisions is not None:
        counts: dict[str, int] = {}
        for decision in decisions:
            counts[decision.expert] = counts.get(decision.expert, 0) + 1
        print("volumes per expert: " + ", ".join(f"{name} {n}" for name, n in sorted(counts.items())))
        if args.time_budget is not None and summary.timing is not None:
            total = summary.timing["total_seconds"]
            verdict = "within" if total <= args.time_budget else "OVER"
            print(f"total {total:.1f} s: {verdict} the time budget of {args.time_budget:.0f} s")
        print(f"routing: {args.out / 'routing.json'}")
    if summary.timing is not None:
        print(f"{timing.summary_line(summary.timing)}: {Path(args.out) / timing.TIMING_FILE}")
    for problem in summary.skipped:
        print(f"warning: skipped {problem}")
    if summary.skipped:
        print(f"warning: {len(summary.skipped)} bad input file(s) skipped (--skip-bad)")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from kspacelab.evaluation import (
        check_json_path,
        evaluate_fastmri,
        evaluate_leaderboard,
        evaluate_snu2026,
        write_json,
    )

    if args.json:
        check_json_path(args.json)  # before the evaluation: never replace an input or a foreign file
    if args.metric == "fastmri":
        fastmri = evaluate_fastmri(args.leaderboard, args.recon, progress=not args.quiet)
        if fastmri.timing_note is not None:
            print(f"warning: {fastmri.timing_note}", file=sys.stderr)
        print(fastmri.table())
        means = fastmri.means
        print(
            f"mean over {len(fastmri.per_volume)} volumes: NMSE {means['nmse']:.4f}, PSNR {means['psnr']:.2f} dB, "
            f"SSIM {means['ssim']:.4f}, hallucination index {means['hallucination']:.4f}"
        )
        if args.json:
            write_json(fastmri, args.json)
            print(f"wrote {args.json}")
        return 0
    if args.metric == "snu2026":
        scores = evaluate_snu2026(args.leaderboard, args.recon, progress=not args.quiet)
        if scores.timing_note is not None:
            print(f"warning: {scores.timing_note}", file=sys.stderr)
        print(scores.table())
        for name, value in (
            ("SSIM_full", scores.ssim_full),
            ("SSIM_bbox", scores.ssim_bbox),
            ("quality", scores.quality),
        ):
            if value is not None:
                print(f"{name}: {value:.4f}")
        if scores.timing is not None:
            print(f"ms/slice: {scores.timing['ms_per_slice']:.1f} (reconstruction, loading included)")
        if args.json:
            write_json(scores, args.json)
            print(f"wrote {args.json}")
        return 0
    result = evaluate_leaderboard(args.leaderboard, args.recon, progress=not args.quiet)
    if result.timing_note is not None:
        print(f"warning: {result.timing_note}", file=sys.stderr)
    print(result.table())
    for group in map(challenge.acc_folder, challenge.ACCELERATIONS):
        if group in result.groups:
            print(f"SSIM {group}: {result.groups[group]:.4f}")
    if result.total is not None:
        print(f"SSIM total: {result.total:.4f}")
    if result.timing is not None:
        print(f"ms/slice: {result.timing['ms_per_slice']:.1f} (reconstruction, loading included)")
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0


def _cmd_robustness(args: argparse.Namespace) -> int:
    from kspacelab.inference import ReconOptions
    from kspacelab.robustness import FAMILIES, OUTPUT_FILES, run_robustness

    options = ReconOptions(
        device=args.device, batch_size=args.batch_size, tta=args.tta, progress=not args.quiet
    )
    result = run_robustness(
        args.data,
        args.out,
        method=args.method,
        checkpoint=args.checkpoint,
        bundle=args.bundle,
        families=tuple(FAMILIES) if args.families is None else args.families,
        accelerations=args.accelerations,
        coils=args.coils,
        coil_modes=args.coil_modes,
        split=args.split,
        max_volumes=args.max_volumes,
        max_slices=args.max_slices,
        seed=args.seed,
        options=options,
    )
    slices = result.rows[0].slices if result.rows else 0
    print(f"{result.what} on {len(result.volumes)} volumes ({slices} slices) of {args.data}:")
    print(result.table())
    print("wrote " + ", ".join(str(args.out / name) for name in OUTPUT_FILES))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from kspacelab.demo import run_demo

    if args.moe and args.singlecoil:
        raise KspacelabError("demo: --moe and --singlecoil are two different demos; choose one")
    if args.singlecoil:
        from kspacelab.demo_singlecoil import run_singlecoil_demo

        if args.config is not None:
            raise KspacelabError("demo --singlecoil trains its own two recipes; --config does not apply")
        run_singlecoil_demo(Path(args.out), seed=args.seed, progress=not args.quiet)
        return 0
    if args.moe:
        from kspacelab.demo import run_moe_demo

        run_moe_demo(Path(args.out), seed=args.seed, progress=not args.quiet, recipe=args.config)
        return 0
    run_demo(Path(args.out), seed=args.seed, progress=not args.quiet, config=args.config)
    return 0


def _add_reconstructor(parser: argparse.ArgumentParser) -> None:
    """What reconstructs (one of --checkpoint, --method, --bundle) and how a model runs (--tta, --batch-size,
    --device): the options ``reconstruct`` and ``robustness`` share."""
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--checkpoint",
        type=Path,
        help="trained model: kspacelab train checkpoint, fastMRI VarNet or PromptMR+ weights (state dict, "
        "Lightning checkpoint or DeepSpeed mp_rank_00_model_states.pt)",
    )
    how.add_argument(
        "--method",
        choices=_ClassicalMethods(),
        help="classical reconstruction method",
    )
    how.add_argument(
        "--bundle", type=Path, help="mixture of experts: a bundle manifest (YAML/JSON) routing each volume"
    )
    parser.add_argument(
        "--tta", action="store_true", help="horizontal-flip self-ensemble (checkpoint or bundle only)"
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, default=1, help="slices per forward pass (default: 1)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")


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
        help="write a synthetic multi-coil (SNU layout) or single-coil (NYU fastMRI knee layout) dataset",
        description="Simulate multi-coil k-space from real anatomy (MNI152 brain, MSK stand-in for knee) and "
        "write train/val/leaderboard files exactly as the SNU challenge ships them; or, with --preset singlecoil "
        "or singlecoil-demo, write NYU single-coil knee files (singlecoil_train/val/test) of an emulated single "
        "coil: the simulated multi-coil knee data combined with its coil sensitivities before undersampling.",
    )
    sim.add_argument("out", type=Path, help="output dataset root (must be empty or absent)")
    sim.add_argument(
        "--preset",
        choices=("demo", "snu", "singlecoil", "singlecoil-demo"),
        default="demo",
        help="geometry and layout preset: demo, snu (SNU layout); singlecoil (k-space S x 640 x 368, 320 x 320 "
        "targets), singlecoil-demo (S x 128 x 80..84, 64 x 64) in the NYU single-coil layout (default: demo)",
    )
    sim.add_argument(
        "--volumes-per-group",
        type=_positive_int,
        default=None,
        help="training volumes per {brain,knee} x {acc4,acc8} group, or of singlecoil_train (default: the "
        "preset's)",
    )
    sim.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sim.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty folder")
    sim.add_argument(
        "--annotations",
        action="store_true",
        help="lesion boxes over bright structures in the knee-class image files (attrs['annotations'], the 2026 "
        "challenge's format) for evaluate --metric snu2026",
    )
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.set_defaults(func=_cmd_simulate)

    train = sub.add_parser(
        "train",
        help="train a model from YAML recipes (Lightning)",
        description="Train a model with Lightning from YAML recipes (sections model:, data:, trainer:). Recipes "
        "are paths or names of bundled recipes (e.g. demo, snu2025_promptmr_ej); several --config are merged in "
        "order. Any key can be overridden with --section.key VALUE (e.g. --model.lr 1e-3 --data.root DIR); "
        "--print-config shows every key with its value. Running the same command again resumes exactly.",
        allow_abbrev=False,
    )
    what = train.add_mutually_exclusive_group()
    what.add_argument(
        "--stages", metavar="RECIPE", help="a staged recipe: one run per stage, each from the last"
    )
    what.add_argument(
        "--bundle",
        metavar="RECIPE",
        help="a bundle recipe: train every expert and the classifier of a mixture",
    )
    train.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="RECIPE",
        help="training recipe (repeatable, merged in order)",
    )
    train.add_argument(
        "--run-dir",
        "--run_dir",
        dest="run_dir",
        type=Path,
        help="run folder: checkpoints/{last,best}.ckpt, logs/, config.yaml (required)",
    )
    train.add_argument("--seed", type=int, default=None, help="global seed (default: the recipe's, else 0)")
    train.add_argument(
        "--ckpt-path",
        "--ckpt_path",
        dest="ckpt_path",
        type=Path,
        default=None,
        help="resume from this checkpoint (default: RUN_DIR/checkpoints/last.ckpt when it exists)",
    )
    train.add_argument(
        "--init-weights",
        "--init_weights",
        dest="init_weights",
        type=Path,
        default=None,
        help="start from these model weights with a fresh optimiser and schedule (ignored when resuming)",
    )
    train.add_argument(
        "--save-every-n-steps",
        "--save_every_n_steps",
        dest="save_every_n_steps",
        type=_positive_int,
        default=None,
        help="also write last.ckpt every N optimiser steps (default: after every validation)",
    )
    train.add_argument(
        "--use-val-for-final",
        action="store_true",
        help="also train on the validation split (final model; validation still runs on it)",
    )
    train.add_argument(
        "--print-config",
        "--print_config",
        dest="print_config",
        action="store_true",
        help="print the resolved configuration (every key) and exit",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=_cmd_train, overrides=[])

    rec = sub.add_parser(
        "reconstruct",
        help="reconstruct a leaderboard or k-space folder into reconstruction files",
        description="Reconstruct every k-space file of a leaderboard root (acc4/, acc8/) or of a folder with "
        "kspace/ into OUT (dataset 'reconstruction', float32, same file names). A folder of single-coil NYU "
        "fastMRI files (--method zero-filled or --checkpoint) goes to flat OUT/NAME.h5 at the target size: fully "
        "sampled files are undersampled with --acceleration, test files use their own mask.",
    )
    rec.add_argument(
        "--data",
        type=Path,
        required=True,
        help="leaderboard root, folder with kspace/, or folder of single-coil NYU .h5 files",
    )
    rec.add_argument("--out", type=Path, required=True, help="output folder")
    _add_reconstructor(rec)
    rec.add_argument(
        "--model-config",
        type=Path,
        default=None,
        metavar="YAML",
        help="with --checkpoint of PromptMR+ weights from elsewhere: their configuration (PromptMR arguments, the "
        "reference's model.init_args or a kspacelab recipe's model.model_kwargs) instead of reading it off the "
        "tensor shapes",
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
        "--acceleration",
        type=_positive_int,
        default=None,
        metavar="N",
        help="single-coil NYU folders of fully sampled files: undersample with the fastMRI random mask of "
        "acceleration N (4, 8, 16 or 32; centre fraction 0.08, 0.04, 0.02, 0.01) seeded from the file name; "
        "refused for files with their own mask (test files) and for SNU data",
    )
    rec.add_argument(
        "--precision",
        choices=("32", "bf16", "16"),
        default="32",
        help="network layers in float32, bfloat16 or float16 (autocast; FFTs and data consistency stay float32; "
        "checkpoint or bundle only; default: 32)",
    )
    rec.add_argument(
        "--compile", action="store_true", help="torch.compile the model (checkpoint or bundle only)"
    )
    rec.add_argument(
        "--devices",
        type=_positive_int,
        default=1,
        help="shard the volumes over N devices: GPUs cuda:0..N-1 with --device cuda, else N processes on the CPU "
        "(Lightning Fabric, DDP; default: 1)",
    )
    rec.add_argument(
        "--loader-workers",
        type=int,
        default=0,
        help="processes that read and prepare slices while the model runs (checkpoint only; default: 0)",
    )
    rec.add_argument(
        "--crop",
        type=_positive_int,
        default=None,
        help=f"output size (default: label size or {challenge.TARGET_SIZE})",
    )
    rec.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="with --method: reconstruct slices in N worker processes (default: 1, in this process)",
    )
    rec.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out input files that fail validation (each named in a warning) instead of stopping",
    )
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    rec.set_defaults(func=_cmd_reconstruct)

    ev = sub.add_parser(
        "evaluate",
        help="score reconstructions with the exact SNU leaderboard SSIM (or fastMRI's metrics)",
        description="Foreground-masked SSIM per slice, averaged per acceleration folder; total = mean of acc4 "
        "and acc8. With --metric fastmri: NMSE, PSNR, SSIM and the hallucination index of NYU volumes.",
    )
    ev.add_argument(
        "--leaderboard",
        type=Path,
        required=True,
        help="folder with acc4/image, acc8/image (or image/); with --metric fastmri a folder of NYU files with "
        "targets (reconstruction_esc or reconstruction_rss)",
    )
    ev.add_argument(
        "--recon", type=Path, required=True, help="folder with acc4/, acc8/ reconstructions (or flat)"
    )
    ev.add_argument(
        "--metric",
        choices=["snu2025", "snu2026", "fastmri"],
        default="snu2025",
        help="snu2025: the leaderboard SSIM (default); snu2026: SSIM_full over the foreground pixels and SSIM_bbox "
        "in the image files' lesion boxes (attrs['annotations']), quality = their mean; fastmri: NMSE, PSNR, SSIM "
        "per volume (fastMRI's evaluate: data range the volume's target maximum) and the hallucination index, "
        "averaged over the volumes",
    )
    ev.add_argument("--json", type=Path, default=None, help="also write the scores to this JSON file")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=_cmd_evaluate)

    rob = sub.add_parser(
        "robustness",
        help="score a model or method on other masks and fewer coils (unknown private mask or scanner)",
        description="Undersample fully sampled files (a dataset root's val split, or a folder with kspace/ and "
        "image/) again with every mask family at every acceleration, and with fewer coils (a subset, or "
        "compressed to virtual coils), reconstruct as `reconstruct` does and score with the leaderboard SSIM. "
        "Writes OUT/robustness.csv, robustness.json and robustness.png and prints the table.",
    )
    rob.add_argument(
        "--data", type=Path, required=True, help="dataset root or folder with fully sampled kspace/"
    )
    rob.add_argument("--out", type=Path, required=True, help="output folder for the report")
    _add_reconstructor(rob)
    rob.add_argument(
        "--families",
        nargs="+",
        default=None,
        metavar="FAMILY",
        help="mask families (default: all: organiser random_offset random_spaced random_lines fastmri_random "
        "fastmri_equispaced)",
    )
    rob.add_argument(
        "--accelerations",
        nargs="+",
        type=_positive_int,
        default=[4, 8],
        metavar="ACC",
        help="accelerations (default: 4 8)",
    )
    rob.add_argument(
        "--coils",
        nargs="*",
        type=_positive_int,
        default=[2, 4],
        metavar="N",
        help="coil counts scored with the organiser mask (default: 2 4; none: no coil rows); at most every "
        "file's coil count",
    )
    rob.add_argument(
        "--coil-modes",
        nargs="+",
        default=["subset", "compressed"],
        metavar="MODE",
        help="subset: coils spread evenly over the array; compressed: PCA virtual coils (default: both)",
    )
    rob.add_argument("--split", default="val", help="split of a dataset root (default: val)")
    rob.add_argument(
        "--max-volumes",
        type=_positive_int,
        default=4,
        help="volumes scored, brain and knee in turn (default: 4)",
    )
    rob.add_argument(
        "--max-slices", type=_positive_int, default=2, help="central slices per volume (default: 2)"
    )
    rob.add_argument("--seed", type=int, default=0, help="seed of the random masks (default: 0)")
    rob.add_argument("--quiet", action="store_true", help="no progress bar")
    rob.set_defaults(func=_cmd_robustness)

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
        type=str,
        default=None,
        help="training recipe for the VarNet experts, a path or a bundled recipe's name (default: demo); "
        "with --moe the bundle recipe (default: demo_moe)",
    )
    demo.add_argument(
        "--moe",
        action="store_true",
        help="mixture of experts instead: train four experts and an anatomy classifier, route the leaderboard, "
        "compare with a single model",
    )
    demo.add_argument(
        "--singlecoil",
        action="store_true",
        help="extreme single-coil undersampling instead: simulate NYU single-coil knee files, train fastMRI's U-Net "
        "and the generative texture model, score x4 / x8 / x16 / x32 (fastMRI metrics and the hallucination index)",
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "train":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = extra
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
