"""``kspacelab reconstruct --bundle``: route every volume to its expert, reconstruct it, keep to a time budget.

Writes the reconstruction files as :mod:`kspacelab.inference` does, with the same guarantees (inputs validated and
the output folder checked before anything is written; all outputs or none of the new ones), and ``OUT/routing.json``
(one :class:`~kspacelab.experts.routing.RoutingDecision` per volume).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from kspacelab import challenge, formats
from kspacelab.errors import KspacelabError
from kspacelab.experts.routing import RoutingDecision, load_bundle, route_volumes
from kspacelab.inference import (
    ReconOptions,
    ReconstructionSummary,
    reconstruct_with_model,
    run_volumes,
)
from kspacelab.timing import RunClock, check_timing_path, write_timing

__all__ = ["ROUTING_FILE", "check_routing_path", "reconstruct_with_bundle", "write_routing"]

ROUTING_FILE = "routing.json"


def reconstruct_with_bundle(
    data: str | Path | list[tuple[str, formats.Volume]],
    out: str | Path,
    bundle: str | Path,
    options: ReconOptions | None = None,
    time_budget: float | None = None,
    strict: bool = False,
    outputs: formats.OutputSet | None = None,
    clock: RunClock | None = None,
) -> tuple[ReconstructionSummary, list[RoutingDecision]]:
    """Route every volume under ``data`` to an expert of ``bundle`` and reconstruct it; write ``OUT/routing.json``.

    Args:
        data, out, options: as for :func:`kspacelab.inference.reconstruct_with_checkpoint`.
        bundle: manifest file (:mod:`kspacelab.experts.manifest`).
        time_budget: seconds allowed for the whole run (routing included), on the clock of ``OUT/timing.json``
            (from ``options.started``: the CLI starts it with the command, so loading counts). After every volume the total is
            projected from the time per slice so far; a projection over the budget prints a warning.
        strict: with ``time_budget``, stop with an error instead of warning (the files this run wrote are removed).
        outputs, clock: as for :func:`kspacelab.inference.reconstruct_with_model`; with ``outputs`` (part of a larger
            run: ``reconstruct --devices``) neither ``routing.json`` nor ``timing.json`` is written (the caller
            writes them from the returned decisions and the clock's laps).

    Returns:
        the summary (all volumes) and the routing decisions, in volume order.
    """
    options = options or ReconOptions()
    clock = clock or options.clock()
    if time_budget is not None and time_budget <= 0:
        raise KspacelabError(f"--time-budget must be > 0 seconds, got {time_budget}")
    device = options.torch_device()
    skipped: list[str] = []
    volumes, _ = run_volumes(data, out, options, skipped)
    out = Path(out)
    whole_run = outputs is None
    if whole_run:
        check_routing_path(out / ROUTING_FILE)
    timing_path = check_timing_path(out) if whole_run else None
    start = time.perf_counter()
    loaded = load_bundle(bundle, map_location=device)
    decisions = route_volumes(volumes, loaded, options.crop)
    total_slices = sum(formats.kspace_shape(vol.kspace_path)[0] for _, vol in volumes)
    done = 0
    warned = False
    quiet = dataclasses.replace(options, progress=False, loader_workers=0)  # one volume per call
    with (
        formats.all_or_nothing(outputs) as run,
        tqdm(
            total=total_slices, desc="reconstruct (bundle)", unit="slice", disable=not options.progress
        ) as bar,
    ):
        for (group, vol), decision in zip(volumes, decisions, strict=True):
            expert = loaded.bundle.route(decision.anatomy, decision.acc, decision.mask_rule)
            _, model = loaded.model_for(expert)
            part = reconstruct_with_model([(group, vol)], out, model, quiet, outputs=run)
            clock.lap(group, part.slices)
            done += part.slices
            bar.update(part.slices)
            elapsed = clock.elapsed()
            projected = elapsed / max(done, 1) * total_slices
            if options.progress:
                bar.write(
                    f"{decision.file}: {decision.anatomy} {challenge.acc_folder(decision.acc)} {decision.mask_rule} -> {decision.expert}"
                )
            if time_budget is not None and projected > time_budget:
                message = (
                    f"time budget: projected {projected:.0f} s for {total_slices} slices exceeds --time-budget "
                    f"{time_budget:.0f} s ({done}/{total_slices} slices done in {elapsed:.0f} s)"
                )
                if strict:
                    raise KspacelabError(message + "; stopped (--strict)")
                if not warned:
                    bar.write(f"warning: {message}")
                    warned = True
        report = None
        if timing_path is not None:
            write_routing(run.claim(out / ROUTING_FILE), decisions)
            report = clock.report(
                f"bundle {Path(bundle).name}", str(device), options.batch_size, options.tta, options.precision
            )
            write_timing(run.claim(timing_path), report)
    seconds = time.perf_counter() - start
    summary = ReconstructionSummary(
        out_dir=out,
        volumes=len(volumes),
        slices=total_slices,
        seconds=seconds,
        skipped=tuple(skipped),
        timing=report,
    )
    return summary, decisions


def check_routing_path(path: Path) -> None:
    """Refuse to replace ``OUT/routing.json`` unless it is a routing file of an earlier run (a JSON list)."""
    formats.check_replaceable_json(path, "routing file", lambda old: isinstance(old, list))


def write_routing(path: Path, decisions: list[RoutingDecision]) -> None:
    """``OUT/routing.json``: one object per volume, in volume order (atomic)."""
    formats.atomic_text(path, json.dumps([dataclasses.asdict(d) for d in decisions], indent=2) + "\n")
