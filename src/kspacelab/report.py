"""Figures (PNG) and tables (Markdown/JSON) for ``evaluate`` and ``demo``.

Matplotlib runs with the non-interactive Agg backend; every figure is written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from kspacelab.challenge import ANATOMIES
from kspacelab.evaluation import ACCELERATION_FOLDERS, LeaderboardResult


@dataclass(frozen=True)
class ComparisonRow:
    """One row of a comparison grid: a target slice and each method's reconstruction of it."""

    title: str  # e.g. "brain acc4 (brain_test1.h5, slice 2)"
    target: np.ndarray  # (h, w) float
    reconstructions: Mapping[str, np.ndarray]  # method -> (h, w) float
    scores: Mapping[str, float]  # method -> leaderboard SSIM of this slice


def _save(fig: plt.Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def comparison_grid(rows: Sequence[ComparisonRow], path: str | Path, error_gain: float = 5.0) -> Path:
    """Grid: target | each method | each method's absolute error (x ``error_gain``), one row per case."""
    if not rows:
        raise ValueError("comparison_grid needs at least one row")
    methods = list(rows[0].reconstructions)
    n_cols = 1 + 2 * len(methods)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(2.1 * n_cols, 2.3 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        vmax = float(np.percentile(row.target, 99.5)) or 1.0
        panels: list[tuple[np.ndarray, str, float]] = [(row.target, "target", vmax)]
        panels += [(row.reconstructions[m], f"{m}\nSSIM {row.scores[m]:.4f}", vmax) for m in methods]
        panels += [
            (np.abs(row.reconstructions[m] - row.target), f"|error| x{error_gain:g}\n{m}", vmax / error_gain)
            for m in methods
        ]
        for c, (image, label, top) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(image, cmap="gray", vmin=0.0, vmax=top)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(label, fontsize=8)
        axes[r, 0].set_ylabel(row.title, fontsize=8)
    fig.tight_layout()
    out = Path(path)
    _save(fig, out)
    return out


def image_panel(
    images: Sequence[tuple[str, np.ndarray]], path: str | Path, columns: int = 4, title: str | None = None
) -> Path:
    """A simple panel of labelled grey-scale images (e.g. simulated slices)."""
    if not images:
        raise ValueError("image_panel needs at least one image")
    rows = (len(images) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, image) in zip(axes.flat, images, strict=False):
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=float(np.percentile(image, 99.5)) or 1.0)
        ax.set_title(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(path)
    _save(fig, out)
    return out


def results_table(results: Mapping[str, LeaderboardResult], seconds_per_slice: Mapping[str, float]) -> str:
    """Markdown table: one row per method with SSIM acc4 / acc8 / total, per anatomy and acceleration, and
    seconds per slice."""
    cells = [(anatomy, group) for anatomy in ANATOMIES for group in ACCELERATION_FOLDERS]
    header = [
        "method",
        *(f"SSIM {group}" for group in ACCELERATION_FOLDERS),
        "total",
        *(f"{anatomy} {group}" for anatomy, group in cells),
        "s / slice",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, res in results.items():

        def cell(value: float | None) -> str:
            return "–" if value is None else f"{value:.4f}"

        per = res.per_anatomy
        row = [
            method,
            *(cell(res.groups.get(group)) for group in ACCELERATION_FOLDERS),
            cell(res.total),
            *(cell(per.get(group, {}).get(anatomy)) for anatomy, group in cells),
            f"{seconds_per_slice[method]:.3f}" if method in seconds_per_slice else "–",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def robustness_figure(
    entries: Sequence[tuple[str, int, float]], path: str | Path, title: str | None = None
) -> Path:
    """Horizontal bars of SSIM per condition, one colour per acceleration, the first condition's SSIM at each
    acceleration (the organiser mask with all coils, for ``kspacelab robustness``) as a dotted reference line.

    Args:
        entries: ``(condition label, acceleration, SSIM)``, in the order the conditions are listed (top down).
        path: the PNG to write (atomically).
        title: figure title.
    """
    if not entries:
        raise ValueError("robustness_figure needs at least one entry")
    labels = list(dict.fromkeys(label for label, _, _ in entries))
    accs = sorted({acc for _, acc, _ in entries})
    score = {(label, acc): value for label, acc, value in entries}
    height = 0.8 / len(accs)
    fig, ax = plt.subplots(figsize=(6.4, 0.6 + 0.32 * len(labels) * max(1, len(accs) / 2)))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    low = min(value for _, _, value in entries)
    for k, acc in enumerate(accs):
        colour = colours[k % len(colours)]
        ys = [
            i + (k - (len(accs) - 1) / 2) * height for i, label in enumerate(labels) if (label, acc) in score
        ]
        values = [score[(label, acc)] for label in labels if (label, acc) in score]
        ax.barh(ys, values, height=height * 0.9, color=colour, label=f"acc{acc}")
        reference = next((score[(label, acc)] for label in labels if (label, acc) in score), None)
        if reference is not None:
            ax.axvline(reference, color=colour, linestyle=":", linewidth=1)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(max(0.0, low - 0.1 * (1.0 - low) - 0.01), 1.0)
    ax.set_xlabel(f"leaderboard SSIM (dotted: {labels[0]})", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=len(accs), frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    out = Path(path)
    _save(fig, out)
    return out
