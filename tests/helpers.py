"""Shared test helpers (importable from every test module: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from kspacelab.data.synthetic import SimulationPreset, with_overrides

# A tiny simulation geometry: the whole SNU layout in a few seconds.
TINY: SimulationPreset = with_overrides(
    "demo",
    name="tiny",
    brain_height=256,
    brain_widths=(128,),
    knee_height=256,
    knee_widths=(120, 136),
    crop=128,
    brain_coils=(6,),
    knee_coils=(6,),
    brain_slices=(2, 2),
    knee_slices=(2, 2),
    train_volumes=1,
    val_volumes=1,
    leaderboard_volumes=1,
)
