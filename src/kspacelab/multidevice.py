"""``reconstruct --devices N``: volumes sharded over N devices (GPUs, or N processes on a CPU) with Lightning Fabric.

Fabric's ``ddp_spawn`` strategy starts one process per device (``torch.distributed``: NCCL on GPUs, gloo on a
CPU); every process reconstructs its share of the volumes with the single-device code
(:func:`kspacelab.inference.reconstruct_with_model` or :func:`kspacelab.inference.reconstruct_dataset`), so the
files equal a one-device run's. The shares are balanced by slice count (largest volumes first, each to the process
with the fewest slices so far). After the last volume the processes exchange their laps, new files and errors
(``all_gather_object``): when any process failed, every process removes the files it wrote and the first error is
raised; otherwise the parent merges the timing into one ``OUT/timing.json`` (groups: the summed device-seconds and
slices; total: the wall clock of the command).

Guarantees as for one device: inputs and the output folder are checked before the processes start; a failure
anywhere leaves none of the run's new files; each process ends as soon as the command's process is gone (even
after ``kill -9``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from kspacelab import formats
from kspacelab.errors import KspacelabError
from kspacelab.experts.manifest import read_bundle
from kspacelab.experts.reconstruct import (
    ROUTING_FILE,
    check_routing_path,
    reconstruct_with_bundle,
    write_routing,
)
from kspacelab.experts.routing import RoutingDecision
from kspacelab.inference import (
    CLASSICAL_METHODS,
    ReconOptions,
    ReconstructionSummary,
    calibration_check,
    check_output_folder,
    end_with_parent,
    reconstruct_dataset,
    reconstruct_with_model,
    validated_volumes,
)
from kspacelab.timing import RunClock, check_timing_path, write_timing

__all__ = ["reconstruct_on_devices", "shard_volumes"]

Shard = list[tuple[str, formats.Volume]]

# No start-up banners from Fabric (the CLI prints its own summary); at import, so that the device processes,
# which import this module to run their share, are quiet too.
for _name in (
    "lightning.fabric.utilities.distributed",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",  # rank_zero_info logs here once lightning.pytorch is imported
):
    logging.getLogger(_name).setLevel(logging.WARNING)


def shard_volumes(volumes: Sequence[tuple[str, formats.Volume]], devices: int) -> list[Shard]:
    """Split ``volumes`` into ``devices`` shares of about equal slice counts (largest volume first, each to the
    share with the fewest slices; ties to the lowest rank); each share keeps the input order."""
    sizes = [formats.kspace_shape(vol.kspace_path)[0] for _, vol in volumes]
    loads = [0] * devices
    owner = [0] * len(volumes)
    for index in sorted(range(len(volumes)), key=lambda i: (-sizes[i], i)):
        rank = min(range(devices), key=lambda r: (loads[r], r))
        owner[index] = rank
        loads[rank] += sizes[index]
    return [[volumes[i] for i in range(len(volumes)) if owner[i] == rank] for rank in range(devices)]


def _rank_main(
    fabric: Any,
    shards: list[Shard],
    out: str,
    method: str | None,
    checkpoint: str | None,
    model_config: str | None,
    options: ReconOptions,
    parent: int,
    bundle: str | None = None,
    time_budget: float | None = None,
    strict: bool = False,
) -> list[dict[str, Any]]:
    """One device's share (runs in a process Fabric started); returns every rank's report (rank 0's reaches the
    parent)."""
    outputs = formats.OutputSet()
    end_with_parent(parent, outputs.rollback)  # kill -9 of the command: this process's files go, then it ends
    rank, world = fabric.global_rank, fabric.world_size
    if fabric.device.type == "cpu":  # the cores shared between the processes
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    shard = shards[rank]
    device = str(fabric.device)
    clock = RunClock()
    error: str | None = None
    decisions: list[Any] = []
    try:
        if shard:
            local = dataclasses.replace(options, device=device, progress=options.progress and rank == 0)
            if bundle is not None:
                _, decisions = reconstruct_with_bundle(
                    shard, out, bundle, local, time_budget, strict, outputs=outputs, clock=clock
                )
            elif method is not None:
                reconstruct_dataset(shard, out, method, local, outputs=outputs, clock=clock)
            else:
                from kspacelab.training.checkpoint import load_model

                assert checkpoint is not None
                loaded = load_model(checkpoint, map_location=device, model_config=model_config)
                reconstruct_with_model(shard, out, loaded, local, outputs=outputs, clock=clock)
    except KspacelabError as err:
        error = str(err)
    except Exception as err:  # reported by the parent as one line; the traceback is of no use to a user
        error = f"device {rank}: {type(err).__name__}: {err}"
    report = {
        "error": error,
        "groups": {g: (t.volumes, t.slices, t.seconds) for g, t in clock.groups.items()},
        "created": [str(p) for p in outputs.created],
        "folders": [str(p) for p in outputs.folders],
        "decisions": [dataclasses.asdict(d) for d in decisions],  # plain data: Fabric copies the result
    }
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, report)
    if any(r["error"] for r in gathered):
        outputs.rollback()
    return gathered


def reconstruct_on_devices(
    data: str | Path,
    out: str | Path,
    devices: int,
    options: ReconOptions,
    method: str | None = None,
    checkpoint: str | Path | None = None,
    model_config: str | Path | None = None,
    bundle: str | Path | None = None,
    time_budget: float | None = None,
    strict: bool = False,
) -> tuple[ReconstructionSummary, list[RoutingDecision] | None]:
    """Reconstruct ``data`` into ``out`` on ``devices`` devices of ``options.device``'s kind (GPUs ``cuda:0..N-1``,
    or N processes on a CPU) with a classical ``method``, a ``checkpoint`` or a mixture-of-experts ``bundle`` (as
    the ``reconstruct_*`` functions with one device; a bundle's ``time_budget`` is checked per device on its
    share). Returns the summary and, for a bundle, the routing decisions in volume order (also in
    ``OUT/routing.json``).

    Raises:
        KspacelabError: bad arguments or inputs (before any process starts), or the first error of any process
            (after every process removed its files).
    """
    if devices < 2:
        raise KspacelabError(f"--devices must be >= 2 here (1 runs on one device), got {devices}")
    if sum(x is not None for x in (method, checkpoint, bundle)) != 1:
        raise KspacelabError("--devices needs exactly one of --checkpoint, --bundle and --method")
    if time_budget is not None and time_budget <= 0:
        raise KspacelabError(f"--time-budget must be > 0 seconds, got {time_budget}")
    if method is not None and method not in CLASSICAL_METHODS:
        raise KspacelabError(f"unknown method {method!r}; choose one of {', '.join(CLASSICAL_METHODS)}")
    gpu = options.device.startswith("cuda")
    if gpu:
        options.torch_device()  # CUDA present
        if torch.cuda.device_count() < devices:
            raise KspacelabError(
                f"--devices {devices} asked for, but {torch.cuda.device_count()} GPUs are visible"
            )
    clock = options.clock()
    skipped: list[str] = []
    check = calibration_check(method) if method is not None else None
    volumes = validated_volumes(data, skipped if options.skip_bad else None, check)
    check_output_folder(out, volumes, data)
    timing_path = check_timing_path(out)
    if bundle is not None:
        check_routing_path(Path(out) / ROUTING_FILE)
        read_bundle(bundle)  # a bad manifest: one line before any process starts
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise KspacelabError(f"{checkpoint}: checkpoint not found")
    shards = shard_volumes(volumes, devices)

    from lightning.fabric import Fabric

    fabric = Fabric(accelerator="cuda" if gpu else "cpu", devices=devices, strategy="ddp_spawn")
    start = time.perf_counter()
    work = functools.partial(
        _rank_main,
        shards=shards,
        out=str(out),
        method=method,
        checkpoint=None if checkpoint is None else str(checkpoint),
        model_config=None if model_config is None else str(model_config),
        options=dataclasses.replace(options, started=None),
        parent=os.getpid(),
        bundle=None if bundle is None else str(bundle),
        time_budget=time_budget,
        strict=strict,
    )
    try:
        reports = fabric.launch(work)
    except KspacelabError:
        raise
    except Exception as err:  # a device process died outside its own error handling (killed, out of memory)
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise KspacelabError(
            f"a device process failed: {lines[-1] if lines else type(err).__name__}"
        ) from err
    errors = [r["error"] for r in reports if r["error"]]
    if errors:
        raise KspacelabError(errors[0])
    run = formats.OutputSet()
    for report in reports:
        run.created.extend(Path(p) for p in report["created"])
        run.folders.extend(Path(p) for p in report["folders"])
        for group, (n_volumes, n_slices, seconds) in report["groups"].items():
            clock.add(group, n_volumes, n_slices, seconds)
    decisions: list[RoutingDecision] | None = None
    if bundle is not None:
        position = {(group, str(vol.kspace_path)): i for i, (group, vol) in enumerate(volumes)}
        placed = [
            (position[(group, str(vol.kspace_path))], decision)
            for shard, report in zip(shards, reports, strict=True)
            for (group, vol), decision in zip(
                shard, (RoutingDecision(**d) for d in report["decisions"]), strict=True
            )
        ]
        decisions = [decision for _, decision in sorted(placed, key=lambda pair: pair[0])]
    what = (
        method
        if method is not None
        else f"checkpoint {Path(str(checkpoint)).name}"
        if checkpoint is not None
        else f"bundle {Path(str(bundle)).name}"
    )
    with formats.all_or_nothing(run):
        if decisions is not None:
            write_routing(run.claim(Path(out) / ROUTING_FILE), decisions)
        report_json = clock.report(
            f"{what} on {devices} devices",
            f"{'cuda' if gpu else 'cpu'} x {devices}",
            options.batch_size,
            options.tta,
            options.precision,
        )
        write_timing(run.claim(timing_path), report_json)
    slices = sum(g.slices for g in clock.groups.values())
    summary = ReconstructionSummary(
        out_dir=Path(out),
        volumes=len(volumes),
        slices=slices,
        seconds=time.perf_counter() - start,
        skipped=tuple(skipped),
        timing=report_json,
    )
    return summary, decisions
