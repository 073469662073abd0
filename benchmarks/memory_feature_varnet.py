"""Peak memory and time of one full-size training step of the 2025 GeekSeek Feature-VarNet with LSKA, beside an
E2E-VarNet of about the same parameter count, measured in the same run.

Models: ``feature_varnet`` built from ``snu2025_feature_varnet_lska.yaml`` (cascades [5, 10, 3], 74.4 M
parameters) and ``varnet`` with 12 cascades of 29 channels (76.9 M, the E2E-VarNet width closest to it), each with
and without checkpointing per cascade. Input: one brain slice of the challenge geometry, 768 x 396 k-space with 16
coils (no readout crop), the organiser's acc4 mask, output 384 x 384. Per configuration, in a fresh process:

* forward seconds: one call without gradients (``torch.no_grad``, eval mode; on a GPU after a warm-up call);
* one training step: forward, masked leaderboard-SSIM loss, backward, NAdam step (the optimiser state is created
  in it); its seconds and the peak memory: ``torch.cuda.max_memory_allocated`` on a GPU, on CPU the peak resident
  set size (``VmHWM``, interpreter and torch libraries included: a *proxy* of GPU memory; run with
  ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors leave the resident set). A CPU child is limited to
  ``--max-gb`` of address space: a configuration above it is reported as not measured instead of waking the
  kernel's OOM killer.

Run:  python benchmarks/memory_feature_varnet.py            (appends a table and the command to RESULTS.md)
      python benchmarks/memory_feature_varnet.py --configs feature_varnet:ckpt --no-write
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
from typing import Any

import yaml
from memory_promptmr import GEOMETRY, REPO, RESULTS, _status_kib

from kspacelab.challenge import BRAIN, TARGET_SHAPE

RECIPE = REPO / "src" / "kspacelab" / "configs" / "snu2025_feature_varnet_lska.yaml"
#: E2E-VarNet of about the Feature-VarNet's parameter count (12 cascades, chans 29: 76,928,702)
VARNET = {"num_cascades": 12, "chans": 29, "pools": 4, "sens_chans": 8, "sens_pools": 4}
CONFIGS = ["feature_varnet:ckpt", "feature_varnet:plain", "varnet:ckpt", "varnet:plain"]
HEADING = "## Feature-VarNet with LSKA (2025 GeekSeek) beside E2E-VarNet: one full-size training step"
MAX_VALUE = 5e-4


def _kwargs(config: str) -> tuple[str, dict[str, Any]]:
    name, variant = config.split(":")
    kwargs = (
        dict(yaml.safe_load(RECIPE.read_text())["model"]["model_kwargs"])
        if name == "feature_varnet"
        else {**VARNET}
    )
    kwargs["use_checkpoint"] = variant == "ckpt"
    if name == "varnet":
        kwargs["sens_checkpoint"] = variant == "ckpt"
    return name, kwargs


def _child(config: str, device_name: str, max_gb: float) -> dict[str, Any]:
    """Forward time and one training step of ``config`` in this process."""
    if device_name == "cpu" and max_gb > 0:
        limit = int(max_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch

    from kspacelab import masks, metrics
    from kspacelab.models import build_model

    torch.manual_seed(0)
    device = torch.device(device_name)
    name, kwargs = _kwargs(config)
    model = build_model(name, **kwargs).to(device)
    height, width, coils = GEOMETRY[BRAIN]
    lines = masks.snu_mask(width, 4)
    start, stop = masks.center_block(lines)
    mask = torch.from_numpy(lines).to(device).view(1, 1, 1, width)
    kspace = torch.randn(1, coils, height, width, dtype=torch.complex64, device=device) * 1e-4 * mask
    target = torch.rand(1, *TARGET_SHAPE, device=device) * MAX_VALUE
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    model.eval()
    with torch.no_grad():
        if cuda:  # CUDA kernels are loaded and tuned on the first call
            model(kspace, mask, int(stop - start), crop_size=TARGET_SHAPE)
        sync()
        begin = time.perf_counter()
        model(kspace, mask, int(stop - start), crop_size=TARGET_SHAPE)
        sync()
        forward = time.perf_counter() - begin
    model.train()
    optimizer = torch.optim.NAdam(model.parameters(), lr=1e-3)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:  # "5" resets VmHWM to the current resident size
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    begin = time.perf_counter()
    out = model(kspace, mask, int(stop - start), crop_size=TARGET_SHAPE)
    loss = metrics.masked_ssim_loss(out, target, MAX_VALUE, BRAIN)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sync()
    step = time.perf_counter() - begin
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _status_kib("VmHWM") / 1024
    params = sum(p.numel() for p in model.parameters())
    return {"forward_s": forward, "step_s": step, "peak_mib": peak, "params": params, "loss": loss.item()}


def _spawn(config: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
    }
    if args.device == "cpu":
        env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    cmd = [sys.executable, __file__, "--child", config, "--device", args.device, "--max-gb", str(args.max_gb)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"not finished within {args.timeout:.0f} s"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        oom = "alloc" in tail.lower() or "memory" in tail.lower()
        return {"error": f"above the {args.max_gb:g} GB limit ({tail[:100]})" if oom else tail[:200]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _table(results: dict[str, dict[str, Any]], cpu: bool) -> str:
    memory = "peak RSS MiB (CPU proxy)" if cpu else "peak allocated MiB"
    lines = [
        f"| model | parameters | checkpoint per cascade | forward s | training step s | {memory} |",
        "|---|---|---|---|---|---|",
    ]
    for config, res in results.items():
        name, variant = config.split(":")
        label = "Feature-VarNet + LSKA [5, 10, 3]" if name == "feature_varnet" else "E2E-VarNet 12 x 29 chans"
        head = f"| {label} | {res.get('params', 0):,} | {'yes' if variant == 'ckpt' else 'no'} | "
        if "error" in res:
            lines.append(head + f"not measured: {res['error']} | | |")
        else:
            lines.append(head + f"{res['forward_s']:.1f} | {res['step_s']:.1f} | {res['peak_mib']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=CONFIGS)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--max-gb", type=float, default=20.0, help="address-space limit of a CPU child (GB)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per configuration")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child:
        print(json.dumps(_child(args.child, args.device, args.max_gb)))
        return 0
    results = {}
    for config in args.configs:
        results[config] = _spawn(config, args)
        print(f"{config}: {results[config]}", flush=True)
    table = _table(results, args.device == "cpu")
    print(table)
    if args.no_write:
        return 0
    command = " ".join(
        ["python benchmarks/memory_feature_varnet.py", *(sys.argv[1:] if argv is None else argv)]
    )
    what = (
        "**CPU proxies, no GPU was available**: peak resident set size of a fresh process per configuration "
        "(interpreter and torch libraries included)"
        if args.device == "cpu"
        else f"GPU: torch.cuda.max_memory_allocated on {torch.cuda.get_device_name(0)}"
    )
    section = (
        f"\n{HEADING}\n\nDate {dt.date.today().isoformat()}. Command: `{command.strip()}`; torch {torch.__version__}, "
        f"{platform.machine()}, {torch.get_num_threads()} thread(s), float32, batch 1; brain 768 x 396 k-space, 16 "
        "coils, acc4 organiser mask, output 384 x 384; forward = one `no_grad` call (after a warm-up call on a GPU); step = forward + "
        f"masked-SSIM loss + backward + NAdam step. {what}.\n\n{table}\n"
    )
    with RESULTS.open("a") as out:
        out.write(section)
    print(f"section {HEADING[3:]!r} appended to {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
