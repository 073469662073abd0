"""Peak memory of one full-size stage-2 training step of the 2022 3rd-place two-stage model (VarNet + RCAN).

One step = ``model.reconstruct(sample, (384, 384))`` of :class:`kspacelab.models.RefinedModel` built from the
recipe ``snu2022_varnet_rcan.yaml`` (first stage fastMRI's E2E-VarNet, refiner RCAN 4 groups x 25 bottleneck
blocks x 160 features), the masked leaderboard-SSIM loss against a random target, backward, and an Adam step over
the trainable parameters (the optimiser state is created in it), on one slice (batch 1) built by hand as a
:class:`~kspacelab.models.base.ReconSample`: random k-space with the organiser's acc4 mask
(``masks.snu_mask(W, 4)``), brain 768 x 396 with 16 coils or knee 640 x 372 with 15, and a random second image
(``extra_images`` of shape ``(1, 1, 384, 384)``). Configurations:

* ``recipe``: frozen first stage, a checkpoint per residual group (the team's);
* ``no-ckpt``: frozen first stage, no checkpointing;
* ``trainable``: first stage trained too (``freeze_first_stage: false``), with checkpointing.

Every measurement runs in a fresh subprocess (``--cache FILE`` keeps the finished ones, so that a rerun of a killed
run measures only what is missing), measured as in ``memory_promptmr.py``: on CUDA
``torch.cuda.max_memory_allocated``, on CPU the peak resident set size (``VmHWM``, interpreter and torch libraries
included: a *proxy* of GPU memory) with ``MALLOC_MMAP_THRESHOLD_=65536``. A CPU child is limited to ``--max-gb``
+ 2 GiB of address space, so that a bad estimate fails with an allocation error instead of the OOM killer.

**Estimate first.** With ``--max-gb`` > 0 every configuration is first run at two reduced sizes (k-space and
output shrunk by ``--probe-factors``, 4 and 2 per side), and the peak is extrapolated linearly in the number of
pixels to full size (constant terms such as weights, gradients and Adam state drop out of the fit; the probes are
large because the fit multiplies their noise: from 1/8 and 1/4 per side the trainable knee came out 3 GB low). A
configuration whose estimate is within ``--max-gb`` runs at full size. One above it runs at full size twice with
a smaller network and its peak is extrapolated linearly to the recipe's (the seconds are shown as measured):

* refiner not checkpointed (``no-ckpt``): every residual group stores its activations, so the peak grows by one
  group's activations per group; runs with 0 and 1 group (same 25 blocks per group) give
  ``peak(4) = peak(0) + 4 (peak(1) - peak(0))``, "extrapolated from 1 group";
* refiner checkpointed and first stage trainable (``trainable``): only one group's activations are live at a time
  (recomputed in the backward pass), so fewer groups would hardly lower the peak; the VarNet's cascades (not
  checkpointed) each store their activations until the backward pass, so runs with 1 and 2 cascades give
  ``peak(12) = peak(1) + 11 (peak(2) - peak(1))``, "extrapolated from 1 and 2 cascades";
* otherwise, or when the smaller network's estimate is still above the limit, the row says "not measured".

The peak is extrapolated per phase: a child reports the peak up to the refiner's forward (the first stage's forward,
which for the brain's 16 x 768 x 396 k-space can exceed a small refiner's whole step) and the peak from there to the
end of the step (``VmHWM`` reset through ``/proc/self/clear_refs``, or ``torch.cuda.reset_peak_memory_stats``); each
is extrapolated along its own line and the larger is the figure, so that the 0-group run's first-stage peak does not
flatten the refiner's line.

Run:  python benchmarks/memory_refined.py --jobs 1      (appends a table and the command to benchmarks/RESULTS.md)
      python benchmarks/memory_refined.py --configs recipe --anatomies knee --no-write
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from memory_promptmr import GEOMETRY, REPO, RESULTS, _status_kib

from kspacelab.challenge import ANATOMIES, TARGET_SHAPE

RECIPE = REPO / "src" / "kspacelab" / "configs" / "snu2022_varnet_rcan.yaml"
#: configuration -> (use_checkpoint, freeze_first_stage)
CONFIGS = {"recipe": (True, True), "no-ckpt": (False, True), "trainable": (True, False)}
HEADING = "## VarNet + RCAN (2022 3rd place): one full-size stage-2 training step"
MAX_VALUE = 5e-4  # data range of the random target (the scale of the challenge images)


def _job(config: str, anatomy: str, factor: int = 1, axis: str = "", size: int = 0) -> dict[str, Any]:
    """One child run: ``config`` at ``anatomy``'s geometry shrunk by ``factor`` per side; with ``axis``
    (``groups`` or ``cascades``) the refiner's residual groups or the first stage's cascades set to ``size``."""
    kwargs = dict(yaml.safe_load(RECIPE.read_text())["model"]["model_kwargs"])
    kwargs["use_checkpoint"], kwargs["freeze_first_stage"] = CONFIGS[config]
    if axis == "groups":
        kwargs["n_resgroups"] = size
    elif axis == "cascades":
        kwargs["first_stage_kwargs"] = {**kwargs["first_stage_kwargs"], "num_cascades": size}
    height, width, coils = GEOMETRY[anatomy]
    return {
        "config": config,
        "anatomy": anatomy,
        "kwargs": kwargs,
        "kspace": [coils, height // factor, width // factor],
        "size": [side // factor for side in TARGET_SHAPE],
    }


def _reduction(config: str) -> tuple[str, tuple[int, int], int, str] | None:
    """``(axis, (small, larger), recipe's size, label)`` of the smaller runs of ``config``; see the docstring."""
    ckpt, frozen = CONFIGS[config]
    kwargs = _job(config, ANATOMIES[0])["kwargs"]
    if not ckpt:
        return "groups", (0, 1), int(kwargs["n_resgroups"]), "extrapolated from 1 group"
    if not frozen:
        cascades = int(kwargs["first_stage_kwargs"]["num_cascades"])
        return "cascades", (1, 2), cascades, "extrapolated from 1 and 2 cascades"
    return None


def _child(job: dict[str, Any], device_name: str, max_gb: float, threads: int | None) -> dict[str, Any]:
    """One training step of ``job`` in this process; returns the measured figures."""
    if device_name == "cpu" and max_gb > 0:
        limit = int((max_gb + 2) * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch

    from kspacelab import masks, metrics
    from kspacelab.models import RefinedModel
    from kspacelab.models.base import ReconSample

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = torch.device(device_name)
    model = RefinedModel(**job["kwargs"]).to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-4)
    coils, height, width = job["kspace"]
    size = tuple(job["size"])
    lines = masks.snu_mask(width, 4)
    low, high = masks.center_block(lines)
    mask = torch.from_numpy(lines).to(device).view(1, 1, 1, width, 1)
    sample = ReconSample(
        masked_kspace=torch.randn(1, coils, height, width, 2, device=device) * 1e-4 * mask,
        mask=mask,
        num_low_frequencies=int(high - low),
        target=torch.rand(1, *size, device=device) * MAX_VALUE,
        max_value=MAX_VALUE,
        crop_size=torch.tensor([size]),
        anatomy=job["anatomy"],
        acceleration=4,
        fname=f"{job['anatomy']}_acc4_1.h5",
        slice_num=0,
        extra_images=torch.rand(1, 1, *size, device=device) * MAX_VALUE,
    )
    cuda = device.type == "cuda"

    def peak() -> float:
        return torch.cuda.max_memory_allocated() / 2**20 if cuda else _status_kib("VmHWM") / 1024

    def reset_peak() -> None:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        else:  # "5" resets VmHWM to the current resident size (Linux >= 4.0)
            with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")

    phases: dict[str, float] = {}

    def at_refiner(module: torch.nn.Module, inputs: Any) -> None:
        phases["first_mib"] = peak()  # the peak up to the refiner's forward (first stage included)
        reset_peak()

    model.refiner.register_forward_pre_hook(at_refiner)
    if cuda:
        torch.cuda.synchronize()
    reset_peak()
    before_mib = torch.cuda.memory_allocated() / 2**20 if cuda else _status_kib("VmRSS") / 1024
    start = time.perf_counter()
    loss = metrics.masked_ssim_loss(model.reconstruct(sample, size), sample.target, MAX_VALUE, job["anatomy"])
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    phases["refine_mib"] = peak()  # from the refiner's forward to the end of the step
    return {
        "peak_mib": max(phases.values()),
        **phases,
        "step_mib": max(phases.values()) - before_mib,
        "seconds": seconds,
        "loss": loss.item(),
        "trainable": sum(p.numel() for p in trainable),
    }


_CACHE_LOCK = threading.Lock()


def _spawn(job: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """``_child(job)`` in a fresh interpreter, or its result from ``--cache``; ``{"error": ...}`` when it fails."""
    key = json.dumps([job, args.device, args.threads], sort_keys=True)
    if args.cache and args.cache.exists():
        with _CACHE_LOCK:
            cached = json.loads(args.cache.read_text()).get(key)
        if cached is not None:
            return dict(cached)
    res = _run(job, args)
    if args.cache and "error" not in res:
        with _CACHE_LOCK:
            stored = json.loads(args.cache.read_text()) if args.cache.exists() else {}
            args.cache.write_text(json.dumps({**stored, key: res}, indent=1))
    return res


def _run(job: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    if args.device == "cpu":  # freed tensors leave the resident set (see memory_promptmr.py)
        env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    cmd = [sys.executable, __file__, "--child", json.dumps(job), "--device", args.device]
    cmd += ["--max-gb", str(args.max_gb)] + (["--threads", str(args.threads)] if args.threads else [])
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"not finished within {args.timeout:.0f} s"}
    if done.returncode == 0:
        return json.loads(done.stdout.strip().splitlines()[-1])
    last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    oom = any(word in last.lower() for word in ("alloc", "memory"))
    return {"error": f"out of memory within the address-space limit ({last[:120]})" if oom else last[:200]}


def _estimate(job: dict[str, Any], args: argparse.Namespace) -> float | str:
    """Full-size peak MiB of ``job`` extrapolated from the probes (linear in the pixel count), or an error."""
    points = []
    for factor in args.probe_factors:
        res = _spawn(_job(job["config"], job["anatomy"], factor, *job.get("reduced", ())), args)
        if "error" in res:
            return f"probe 1/{factor} failed: {res['error']}"
        points.append((1 / factor**2, res["peak_mib"]))
    (x0, y0), (x1, y1) = points
    return float(y1 + (1 - x1) * (y1 - y0) / (x1 - x0))


def _measure(config: str, anatomy: str, args: argparse.Namespace) -> dict[str, Any]:
    """Estimate, then measure at full size or with a smaller network; the row's figures for ``anatomy``."""
    if args.max_gb <= 0:
        return _spawn(_job(config, anatomy), args)
    limit = args.max_gb * 1024
    row: dict[str, Any] = {"estimate": _estimate({"config": config, "anatomy": anatomy}, args)}
    if isinstance(row["estimate"], str) or row["estimate"] <= limit:
        return {**row, **_spawn(_job(config, anatomy), args)}
    reduction = _reduction(config)
    if reduction is None:
        return {**row, "error": f"estimated {row['estimate']:.0f} MiB, above the {args.max_gb:g} GB limit"}
    axis, pair, full, label = reduction
    small = _estimate({"config": config, "anatomy": anatomy, "reduced": (axis, pair[1])}, args)
    if isinstance(small, str) or small > limit:
        shown = small if isinstance(small, str) else f"{small:.0f} MiB"
        return {**row, "error": f"above the {args.max_gb:g} GB limit with {axis} = {pair[1]} too: {shown}"}
    runs = [_spawn(_job(config, anatomy, 1, axis, n), args) for n in pair]
    failed = [run["error"] for run in runs if "error" in run]
    if failed:
        return {**row, "error": failed[0]}
    row.update(axis=axis, label=label, measured=dict(zip(pair, runs, strict=True)))
    for key in ("first_mib", "refine_mib"):  # the line through the two runs, at the recipe's size
        row[key] = runs[1][key] + (full - pair[1]) * (runs[1][key] - runs[0][key]) / (pair[1] - pair[0])
    row["peak_mib"] = max(row["first_mib"], row["refine_mib"])
    row["seconds"] = None  # timing differences of two runs are within the machine's noise: shown as measured
    return row


def _cell(res: dict[str, Any], key: str = "peak_mib", fmt: str = "{:.0f}") -> str:
    if "error" in res:
        return f"not measured: {res['error']}"
    if "measured" not in res:
        return fmt.format(res[key])
    parts = ", ".join(
        f"{n} {res['axis'].rstrip('s') if n == 1 else res['axis']}: {fmt.format(r[key])}"
        for n, r in res["measured"].items()
    )
    if res[key] is None:
        return f"measured {parts}"
    return f"{fmt.format(res[key])} ({res['label']}; measured {parts})"


def _table(results: dict[tuple[str, str], dict[str, Any]], configs: list[str], anatomies: list[str]) -> str:
    lines = [
        "| configuration | checkpointing | first stage | brain peak MiB | knee peak MiB | seconds per step |",
        "|---|---|---|---|---|---|",
    ]
    for config in configs:
        ckpt, frozen = CONFIGS[config]
        peaks = [_cell(results[config, a]) if a in anatomies else "-" for a in ("brain", "knee")]
        seconds = " / ".join(f"{a} {_cell(results[config, a], 'seconds', '{:.1f}')}" for a in anatomies)
        head = f"| {config} | {'per group' if ckpt else 'no'} | {'frozen' if frozen else 'trainable'} | "
        lines.append(head + " | ".join(peaks) + f" | {seconds} |")
    return "\n".join(lines)


def _estimates(results: dict[tuple[str, str], dict[str, Any]]) -> str:
    items = []
    for (config, anatomy), res in results.items():
        est = res.get("estimate")
        if est is not None:
            shown = est if isinstance(est, str) else f"{est:.0f}"
            items.append(f"{config} {anatomy} {shown}")
    return "; ".join(items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--anatomies", nargs="+", choices=sorted(GEOMETRY), default=list(ANATOMIES))
    parser.add_argument("--jobs", type=int, default=1, help="measurements run at the same time (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads of a child")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--max-gb",
        type=float,
        default=12.0,
        help="run at full size only what is estimated within this many GB, else a smaller network (0: no limit)",
    )
    parser.add_argument("--probe-factors", type=int, nargs=2, default=[4, 2], help="probe shrink per side")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per child process")
    parser.add_argument(
        "--cache",
        type=Path,
        help="JSON file of finished measurements: reused when the same one is asked again, so that a run that "
        "was killed resumes where it stopped",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child:
        print(json.dumps(_child(json.loads(args.child), args.device, args.max_gb, args.threads)))
        return 0
    if len(set(args.probe_factors)) != 2 or min(args.probe_factors) < 1:
        parser.error("--probe-factors: two different factors >= 1")

    grid = [(c, a) for c in args.configs for a in args.anatomies]

    def task(item: tuple[str, str]) -> dict[str, Any]:
        res = _measure(*item, args)
        est = res.get("estimate")
        note = f" (estimate {est:.0f} MiB)" if isinstance(est, float) else ""
        shown = _cell(res) if "error" in res else f"{_cell(res)} MiB, {_cell(res, 'seconds', '{:.1f}')} s"
        print(f"{item[0]} {item[1]}: {shown}{note}", flush=True)
        return res

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = dict(zip(grid, pool.map(task, grid), strict=True))
    table = _table(results, args.configs, args.anatomies)
    print(table)
    estimates = _estimates(results)
    if estimates:
        print("estimates (MiB): " + estimates)
    if args.no_write:
        return 0
    command = " ".join(["python benchmarks/memory_refined.py", *(sys.argv[1:] if argv is None else argv)])
    if args.device == "cpu":
        what = (
            "**CPU proxies, no GPU was available**: peak resident set size (VmHWM) of a fresh process per "
            "measurement (glibc MALLOC_MMAP_THRESHOLD_=65536), interpreter, torch libraries, weights and inputs "
            "included; CPU convolutions also use im2col buffers that cuDNN does not need."
        )
    else:
        what = f"GPU: torch.cuda.max_memory_allocated on {torch.cuda.get_device_name(0)}."
    section = (
        f"\n{HEADING}\n\n"
        f"Date {dt.date.today().isoformat()}. Command: `{command.strip()}`; torch {torch.__version__}, "
        f"{platform.machine()}, {torch.get_num_threads() if args.threads is None else args.threads} thread(s), "
        "float32, batch 1; recipe `snu2022_varnet_rcan.yaml`; one step = `reconstruct(sample, (384, 384))` + "
        "masked-SSIM loss + backward + Adam step over the trainable parameters. " + what + " Estimates from "
        f"probes at 1/{args.probe_factors[0]} and 1/{args.probe_factors[1]} per side, extrapolated linearly in "
        f"pixels; above {args.max_gb:g} GB a configuration is measured twice with a smaller network (residual "
        "groups without checkpointing, VarNet cascades with a trainable first stage) and extrapolated linearly to "
        "the recipe's size (the peak only; the seconds are those measured), the peak up to the refiner's forward and the peak after it each along its own line "
        "(see the script's docstring).\n\n" + table + "\n"
    )
    if estimates:
        section += f"\nFull-size estimates from the probes (MiB): {estimates}.\n"
    with RESULTS.open("a") as out:
        out.write(section)
    print(f"section {HEADING[3:]!r} appended to {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
