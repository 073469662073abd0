"""Peak memory of one PromptMR+ training step at full challenge size, for the two 2025 team configurations.

One step = forward, masked leaderboard-SSIM loss, backward, AdamW step (the optimiser state is created in it), on
one slice (batch 1) of random k-space with the organiser's acc4 mask:

* brain: 768 x 396 k-space, 16 coils; knee: 640 x 372, 15 coils; the readout cropped to the team recipe's
  ``model.crop_height`` (EJ: 384 brain / 416 knee; sMaRtIfy: none), ``adj * coils`` channels for ``adj`` adjacent
  slices, output cropped to 384 x 384;
* variants: with and without activation checkpointing (``use_checkpoint``) and per-coil sensitivities
  (``compute_sens_per_coil``).

Every measurement runs in a fresh subprocess. On a CUDA device the figure is ``torch.cuda.max_memory_allocated``
(weights, gradients, optimiser state and activations); on CPU it is the process's peak resident set size
(``VmHWM``, which also holds the Python interpreter and the torch libraries: a *proxy* of GPU memory), and the
increase over the resident size just before the step; the child runs with ``MALLOC_MMAP_THRESHOLD_=65536`` so that
freed tensors leave the resident set (CPU convolutions also use im2col buffers that cuDNN does not need). A CPU child is limited to ``--max-gb`` of address space so
that a configuration that does not fit fails with an allocation error instead of waking the kernel's OOM killer.

Run:  python benchmarks/memory_promptmr.py            (appends a table and the command to benchmarks/RESULTS.md)
      python benchmarks/memory_promptmr.py --teams smartify --anatomies knee --variants ckpt --no-write
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from kspacelab.challenge import ACCELERATIONS, ANATOMIES, BRAIN, KNEE, TARGET_SHAPE

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
RECIPES = {
    "ej": REPO / "src" / "kspacelab" / "configs" / "snu2025_promptmr_ej.yaml",
    "smartify": REPO / "src" / "kspacelab" / "configs" / "snu2025_promptmr_smartify.yaml",
}
#: anatomy -> (k-space height, width, coils) of the challenge data
GEOMETRY = {BRAIN: (768, 396, 16), KNEE: (640, 372, 15)}
#: variant name -> (use_checkpoint, compute_sens_per_coil)
VARIANTS = {
    "plain": (False, False),
    "per-coil": (False, True),
    "ckpt": (True, False),
    "ckpt+per-coil": (True, True),
}
BUDGET_MIB = 8 * 1024


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _job(team: str, anatomy: str, variant: str) -> dict[str, Any]:
    recipe = yaml.safe_load(RECIPES[team].read_text())
    kwargs = dict(recipe["model"]["model_kwargs"])
    kwargs["use_checkpoint"], kwargs["compute_sens_per_coil"] = VARIANTS[variant]
    height, width, coils = GEOMETRY[anatomy]
    crop = (recipe["model"].get("crop_height") or {}).get(anatomy)
    return {
        "team": team,
        "anatomy": anatomy,
        "variant": variant,
        "kwargs": kwargs,
        "height": min(height, int(crop)) if crop else height,
        "width": width,
        "coils": coils,
        "adj": int(kwargs["num_adj_slices"]),
    }


def _child(job: dict[str, Any], device_name: str, max_gb: float) -> dict[str, Any]:
    """One training step of ``job`` in this process; returns the measured figures."""
    if device_name == "cpu" and max_gb > 0:
        limit = int(max_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch

    from kspacelab import masks, metrics
    from kspacelab.models import PromptMR

    torch.manual_seed(0)
    device = torch.device(device_name)
    model = PromptMR(**job["kwargs"]).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4)
    shape = (1, job["adj"] * job["coils"], job["height"], job["width"])
    kspace = torch.randn(shape, dtype=torch.complex64, device=device) * 1e-4
    lines = masks.snu_mask(job["width"], ACCELERATIONS[0])  # the organiser's acc4 mask
    start, stop = masks.center_block(lines)
    low = int(stop - start)
    mask = torch.from_numpy(lines).to(device).view(1, 1, 1, -1)
    kspace = kspace * mask
    target = torch.rand(1, *TARGET_SHAPE, device=device) * 5e-4
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before_kib = _status_kib("VmRSS") if device.type == "cpu" else 0
    start = time.perf_counter()
    out = model(kspace, mask, low, crop_size=TARGET_SHAPE)
    loss = metrics.masked_ssim_loss(out, target, 5e-4, job["anatomy"])
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {"seconds": seconds, "loss": loss.item()}
    if device.type == "cuda":
        result["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        result["measure"] = "torch.cuda.max_memory_allocated"
    else:
        peak_kib = _status_kib("VmHWM")
        result["peak_mib"] = peak_kib / 1024
        result["step_mib"] = (peak_kib - before_kib) / 1024
        result["measure"] = "CPU peak RSS (proxy)"
    return result


def _run_child(job: dict[str, Any], device: str, max_gb: float, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", json.dumps(job), "--device", device, "--max-gb", str(max_gb)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if device == "cpu":
        # every allocation of 64 KiB or more gets its own mapping and is returned to the system when freed, so
        # that the peak RSS follows the live tensors instead of the heap's fragmentation (glibc's default
        # threshold grows to 32 MiB and roughly doubled the figures of a test run)
        env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"not finished within {timeout:.0f} s"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        if "alloc" in tail.lower() or "memory" in tail.lower():
            return {"error": f"out of memory within the {max_gb:g} GB limit ({tail[:120]})"}
        return {"error": tail[:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(rows: list[tuple[dict[str, Any], dict[str, Any]]], device: str) -> str:
    cpu = device == "cpu"
    head = "| team | anatomy | k-space (adj x coils, H, W) | checkpoint | per-coil sens | "
    head += "peak RSS MiB (proxy) | step increase MiB | step s |" if cpu else "peak allocated MiB | step s |"
    lines = [head, "|" + "---|" * (8 if cpu else 7)]
    for job, res in rows:
        ckpt, per_coil = VARIANTS[job["variant"]]
        first = (
            f"| {job['team']} | {job['anatomy']} | {job['adj']} x {job['coils']}, {job['height']}, {job['width']} | "
            f"{'yes' if ckpt else 'no'} | {'yes' if per_coil else 'no'} | "
        )
        if "error" in res:
            lines.append(first + f"not measured: {res['error']} |" + " |" * (2 if cpu else 1))
        elif cpu:
            lines.append(first + f"{res['peak_mib']:.0f} | {res['step_mib']:.0f} | {res['seconds']:.1f} |")
        else:
            lines.append(first + f"{res['peak_mib']:.0f} | {res['seconds']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teams", nargs="+", choices=sorted(RECIPES), default=["ej", "smartify"])
    parser.add_argument("--anatomies", nargs="+", choices=sorted(GEOMETRY), default=list(ANATOMIES))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument(
        "--jobs",
        nargs="+",
        metavar="TEAM:ANATOMY:VARIANT",
        help="explicit list of configurations instead of the grid of --teams x --anatomies x --variants",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--max-gb", type=float, default=18.0, help="address-space limit of a CPU child (0: none)"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per configuration")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child:
        print(json.dumps(_child(json.loads(args.child), device, args.max_gb)))
        return 0

    if args.jobs:
        grid = [tuple(spec.split(":")) for spec in args.jobs]
        for spec in grid:
            if len(spec) != 3 or spec[0] not in RECIPES or spec[1] not in GEOMETRY or spec[2] not in VARIANTS:
                parser.error(f"--jobs: expected TEAM:ANATOMY:VARIANT, got {':'.join(spec)!r}")
    else:
        grid = [(t, a, v) for t in args.teams for a in args.anatomies for v in args.variants]
    rows = []
    for team, anatomy, variant in grid:
        job = _job(team, anatomy, variant)
        res = _run_child(job, device, args.max_gb, args.timeout)
        rows.append((job, res))
        shown = res.get("error") or f"{res['peak_mib']:.0f} MiB in {res['seconds']:.1f} s"
        print(f"{team} {anatomy} {variant}: {shown}", flush=True)
    table = _table(rows, device)
    print(table)
    if not args.no_write:
        import torch

        command = "python benchmarks/memory_promptmr.py " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        what = (
            "CPU proxy: peak resident set size (VmHWM) of a fresh process per row (glibc "
            "MALLOC_MMAP_THRESHOLD_=65536, so freed tensors leave the resident set), interpreter and torch "
            "libraries included; 'step increase' = VmHWM minus the resident size just before the step (model, "
            "inputs and the imported libraries were resident then). These are not GPU figures."
            if device == "cpu"
            else f"GPU: torch.cuda.max_memory_allocated on {torch.cuda.get_device_name(0)} (budget {BUDGET_MIB} MiB)."
        )
        section = (
            f"\n## PromptMR+ training-step memory -- {dt.date.today().isoformat()}\n\n"
            f"Command: `{command.strip()}`; torch {torch.__version__}, {platform.machine()}, float32, batch 1, "
            "one step = forward + masked-SSIM loss + backward + AdamW step. " + what + "\n\n" + table + "\n"
        )
        with open(RESULTS, "a") as fh:
            fh.write(section)
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
