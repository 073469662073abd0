"""Wall-clock timing of a reconstruction run, as the challenges measure it, and its ``timing.json``.

The SNU challenges limit the wall time of the whole inference (model loading and preprocessing included: 3,600 s
for the 2025 leaderboard) and the 2026 challenge breaks ties by milliseconds per slice. A run's clock starts when
the ``reconstruct`` command starts (after the interpreter and kspacelab are imported) and stops after the last
output file is written; every volume is charged the wall time since the previous volume was written (the first
one also the loading of the model and the preparation before the loop), so the groups' seconds add up to the total.

``OUT/timing.json`` (written by every ``reconstruct_*`` function of :mod:`kspacelab.inference`, a JSON object)::

    {"kspacelab_timing": 1, "what": "checkpoint model.ckpt", "device": "cpu", "batch_size": 1, "tta": false,
     "precision": "32", "total_seconds": 12.3, "slices": 100, "ms_per_slice": 123.0,
     "groups": {"acc4": {"volumes": 2, "slices": 50, "seconds": 6.1, "ms_per_slice": 122.0}, ...}}

``groups`` are the output sub-folders (``acc4``, ``acc8``; ``all`` for a flat folder).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kspacelab import formats

TIMING_FILE = "timing.json"
FORMAT_VERSION = 1
#: the ``groups`` key of volumes written flat into the output folder (a single ``kspace/`` input folder)
FLAT_GROUP = "all"


@dataclass
class GroupTime:
    """Wall time charged to one output group."""

    volumes: int = 0
    slices: int = 0
    seconds: float = 0.0

    @property
    def ms_per_slice(self) -> float:
        return 1000.0 * self.seconds / self.slices if self.slices else 0.0


@dataclass
class RunClock:
    """The clock of one run: started at construction (``time.perf_counter``), one :meth:`lap` per volume written.

    Attributes:
        start: ``perf_counter`` time the run started.
        groups: group name (``""`` for a flat folder) -> its :class:`GroupTime`.
    """

    start: float = field(default_factory=lambda: time.perf_counter())
    groups: dict[str, GroupTime] = field(default_factory=dict)
    _last: float | None = None

    def lap(self, group: str, slices: int) -> None:
        """Charge the wall time since the previous lap (the first: since :attr:`start`) to ``group``."""
        now = time.perf_counter()
        self.add(group, 1, slices, now - (self.start if self._last is None else self._last))
        self._last = now

    def add(self, group: str, volumes: int, slices: int, seconds: float) -> None:
        """Charge ``group`` with volumes, slices and seconds: a lap, or the laps of another process
        (``reconstruct --devices``)."""
        entry = self.groups.setdefault(group, GroupTime())
        entry.volumes += volumes
        entry.slices += slices
        entry.seconds += seconds

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.start

    def report(
        self, what: str, device: str, batch_size: int, tta: bool, precision: str = "32"
    ) -> dict[str, Any]:
        """The ``timing.json`` content now (total = :meth:`elapsed`)."""
        total = self.elapsed()
        slices = sum(g.slices for g in self.groups.values())
        return {
            "kspacelab_timing": FORMAT_VERSION,
            "what": what,
            "device": device,
            "batch_size": batch_size,
            "tta": tta,
            "precision": precision,
            "total_seconds": round(total, 4),
            "slices": slices,
            "ms_per_slice": round(1000.0 * total / slices, 3) if slices else 0.0,
            "groups": {
                (name or FLAT_GROUP): {
                    "volumes": g.volumes,
                    "slices": g.slices,
                    "seconds": round(g.seconds, 4),
                    "ms_per_slice": round(g.ms_per_slice, 3),
                }
                for name, g in sorted(self.groups.items())
            },
        }


def is_timing(content: object) -> bool:
    """Whether parsed JSON is a timing report of :meth:`RunClock.report` (finite, non-negative numbers)."""
    if not isinstance(content, dict) or content.get("kspacelab_timing") != FORMAT_VERSION:
        return False
    groups = content.get("groups")
    if not isinstance(groups, dict):
        return False
    numbers = [content.get("total_seconds"), content.get("ms_per_slice")]
    for entry in groups.values():
        if not isinstance(entry, dict):
            return False
        numbers += [entry.get("seconds"), entry.get("ms_per_slice"), entry.get("slices")]
    return all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x >= 0
        for x in numbers
    )


def check_timing_path(out: str | Path) -> Path:
    """``OUT/timing.json``, refused (one-line KspacelabError) when it exists and is not a timing report."""
    path = Path(out) / TIMING_FILE
    formats.check_replaceable_json(path, "timing report", is_timing)
    return path


def write_timing(path: str | Path, report: dict[str, Any]) -> None:
    """Write ``report`` atomically (:func:`kspacelab.formats.atomic_text`)."""
    formats.atomic_text(path, json.dumps(report, indent=2) + "\n")


def read_timing(recon: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """The timing report of a reconstruction folder: ``(report, None)``, ``(None, None)`` when there is none, or
    ``(None, warning)`` (one line naming the file) when ``timing.json`` is unreadable or not a timing report."""
    path = Path(recon) / TIMING_FILE
    if not path.exists():
        return None, None
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return None, f"{path}: not read ({type(err).__name__}); no timing reported"
    if not is_timing(content):
        return None, f"{path}: not a kspacelab timing report; no timing reported"
    return content, None


def summary_line(report: dict[str, Any]) -> str:
    """One line: total seconds, ms per slice overall and per group."""
    parts = ", ".join(f"{name} {g['ms_per_slice']:.1f}" for name, g in report["groups"].items())
    return (
        f"timing: {report['total_seconds']:.1f} s in total for {report['slices']} slices, "
        f"{report['ms_per_slice']:.1f} ms/slice (loading included; per group: {parts} ms/slice)"
    )
