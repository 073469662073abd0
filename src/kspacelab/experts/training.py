"""``kspacelab train --bundle RECIPE``: train every expert (and the anatomy classifier) of a mixture, write its manifest.

Every member is one :func:`kspacelab.training.run.fit` (or one staged run, :mod:`kspacelab.training.stages`).

A bundle recipe (YAML) lists what to train; config paths are relative to the recipe::

    classifier: {config: anatomy_classifier.yaml, args: ["--trainer.max_epochs", "3"]}
    anatomy_source: classifier
    experts:
      - {name: brain_acc4, anatomy: brain, acc: 4, mask_rule: any, config: snu2025_promptmr_ej.yaml, args: []}
      - ...
    fallback: {config: demo.yaml, args: []}      # optional: one model on all the data

``shared`` (optional) lists models trained on all the data (no route) before the experts and left out of the
manifest; a member with ``init_from: NAME`` starts from the final weights (``last.ckpt``) of the shared member
``NAME`` with a fresh optimiser and schedule: sMaRtIfy's experts, each fine-tuned from one 30-epoch model::

    shared:
      - {name: base, config: snu2025_promptmr_smartify.yaml}
    experts:
      - {name: brain_acc4, anatomy: brain, acc: 4, init_from: base, config: [..., snu2025_smartify_expert.yaml]}

``config`` may also be a list of files (or names of bundled recipes), merged in order (later files override
earlier ones), e.g. ``[snu2025_promptmr_smartify.yaml, snu2025_smartify_helper.yaml]`` for a "helper" expert.
Instead of ``config``, a member may name a staged recipe, ``stages: snu2025_ej_stages.yaml``
(:mod:`kspacelab.training.stages`); a ``config`` next to it is then applied on top of every stage.
Each member trains in ``RUN_DIR/<name>/``. An expert's data are
restricted to its route
(``--data.only_anatomies [brain] --data.only_accelerations [4]``; ``any`` keeps everything); its ``args`` follow
(e.g. the mask-augmentation settings of a "helper" expert, ``mask_rule: other``). Extra command-line arguments
apply to every expert and the fallback, ``--data.root`` to the classifier as well. A member whose run folder
already holds a finished run of the same arguments is reused. The manifest is written to ``RUN_DIR/bundle.yaml``
(:func:`kspacelab.experts.manifest.write_bundle`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kspacelab.challenge import ACCELERATIONS, ANATOMIES
from kspacelab.errors import KspacelabError
from kspacelab.experts.manifest import ANY, MASK_RULES, read_bundle, write_bundle
from kspacelab.training.recipes import find_config, load_recipe, recipe_args, recipe_configs
from kspacelab.training.run import LAST_CHECKPOINT, fit_or_reuse
from kspacelab.training.stages import train_stages

__all__ = ["BundleMember", "read_recipe", "train_bundle"]


@dataclass(frozen=True)
class BundleMember:
    """One training run of a bundle recipe."""

    name: str
    role: str  # "expert" | "classifier" | "fallback" | "shared"
    configs: tuple[Path, ...]  # merged in order; on top of every stage with ``stages``
    args: tuple[str, ...]
    anatomy: str = ANY
    acc: int | str = ANY
    mask_rule: str = ANY
    stages: Path | None = None  # a staged recipe instead of a single run
    init_from: str | None = None  # the shared member whose final weights this member starts from

    def route_args(self) -> list[str]:
        """Data restrictions of an expert's route (override words)."""
        args = []
        if self.anatomy != ANY:
            args += ["--data.only_anatomies", f"[{self.anatomy}]"]
        if self.acc != ANY:
            args += ["--data.only_accelerations", f"[{self.acc}]"]
        return args


def _member(entry: Any, role: str, name: str, base: Path, where: str) -> BundleMember:
    stages: Path | None = None
    if isinstance(entry, dict) and entry.get("stages") is not None:
        if not isinstance(entry["stages"], str):
            raise KspacelabError(f"{where}: 'stages' must be the path of a staged recipe")
        try:
            stages = find_config(entry["stages"], base)
        except KspacelabError:
            raise KspacelabError(f"{where}: staged recipe {entry['stages']} not found") from None
        configs = recipe_configs(entry, base, where) if entry.get("config") is not None else ()
    else:
        configs = recipe_configs(entry, base, where)
    args = recipe_args(entry, where)
    anatomy, acc, rule = entry.get("anatomy", ANY), entry.get("acc", ANY), entry.get("mask_rule", ANY)
    if anatomy != ANY and anatomy not in ANATOMIES:
        raise KspacelabError(f"{where}: anatomy must be {' | '.join(ANATOMIES)} | any, got {anatomy!r}")
    if acc != ANY and acc not in ACCELERATIONS:
        raise KspacelabError(f"{where}: acc must be {' | '.join(map(str, ACCELERATIONS))} | any, got {acc!r}")
    if rule != ANY and rule not in MASK_RULES:
        raise KspacelabError(f"{where}: mask_rule must be organiser | other | any, got {rule!r}")
    init_from = entry.get("init_from")
    if init_from is not None and (not isinstance(init_from, str) or role in ("classifier", "shared")):
        raise KspacelabError(
            f"{where}: 'init_from' must name a shared member (experts and the fallback only)"
        )
    if role == "shared" and (anatomy, acc, rule) != (ANY, ANY, ANY):
        raise KspacelabError(
            f"{where}: a shared member trains on all the data (no anatomy, acc or mask_rule)"
        )
    return BundleMember(
        str(entry.get("name") or name), role, configs, args, anatomy, acc, rule, stages, init_from
    )


def read_recipe(path: str | Path) -> tuple[list[BundleMember], str]:
    """Parse a bundle recipe: its members (classifier first, then the shared models, the experts and the
    fallback) and anatomy source."""
    path = Path(path)
    raw = load_recipe(path, "experts", "bundle recipe")
    base = path.parent
    members = []
    if raw.get("classifier"):
        members.append(_member(raw["classifier"], "classifier", "classifier", base, f"{path}: classifier"))
    shared = raw.get("shared") or []
    if not isinstance(shared, list):
        raise KspacelabError(f"{path}: 'shared' must be a list of members")
    for i, entry in enumerate(shared):
        members.append(_member(entry, "shared", f"shared{i}", base, f"{path}: shared[{i}]"))
    for i, entry in enumerate(raw["experts"]):
        members.append(_member(entry, "expert", f"expert{i}", base, f"{path}: experts[{i}]"))
    if raw.get("fallback"):
        members.append(_member(raw["fallback"], "fallback", "fallback", base, f"{path}: fallback"))
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise KspacelabError(f"{path}: member names must be unique, got {names}")
    shared_names = [m.name for m in members if m.role == "shared"]
    for m in members:
        if m.init_from is not None and m.init_from not in shared_names:
            raise KspacelabError(
                f"{path}: {m.name}: init_from {m.init_from!r} is not a shared member (shared: {shared_names})"
            )
    source = str(raw.get("anatomy_source", "classifier"))
    return members, source


def _data_root_args(overrides: Sequence[str]) -> list[str]:
    """The ``--data.root`` words of ``overrides`` (they also apply to the classifier)."""
    out: list[str] = []
    words = list(overrides)
    for i, word in enumerate(words):
        if word == "--data.root" and i + 1 < len(words):
            out += [word, words[i + 1]]
        elif word.startswith("--data.root="):
            out.append(word)
    return out


def train_bundle(
    recipe: str | Path, run_dir: str | Path, overrides: Sequence[str] = (), progress: bool = True
) -> Path:
    """Train (or reuse) every member of ``recipe`` under ``run_dir`` and write ``run_dir/bundle.yaml``.

    Args:
        recipe: bundle recipe YAML (module docstring).
        run_dir: one sub-folder per member, plus the manifest.
        overrides: override words for the experts and the fallback (``--data.root`` also for the classifier),
            after each member's route and ``args``.
        progress: progress bars.

    Returns:
        the manifest path.
    """
    members, source = read_recipe(recipe)
    run_dir = Path(run_dir)
    best: dict[str, Path] = {}
    for member in members:
        member_dir = run_dir / member.name
        extra = _data_root_args(overrides) if member.role == "classifier" else list(overrides)
        words = [*member.route_args(), *member.args, *extra]
        # a shared member's final weights: last.ckpt beside its best checkpoint
        init = None if member.init_from is None else best[member.init_from].parent / LAST_CHECKPOINT
        if member.stages is not None:
            print(f"training {member.role} {member.name} in stages ({member.stages.name})")
            best[member.name] = train_stages(
                member.stages, member_dir, words, member.configs, progress, init_weights=init
            )
        else:
            best[member.name] = fit_or_reuse(
                member.configs,
                words,
                member_dir,
                f"{member.role} {member.name}",
                init_weights=init,
                progress=progress,
            )

    experts = [
        {
            "name": m.name,
            "anatomy": m.anatomy,
            "acc": m.acc,
            "mask_rule": m.mask_rule,
            "checkpoint": best[m.name],
        }
        for m in members
        if m.role == "expert"
    ]
    classifier = next((best[m.name] for m in members if m.role == "classifier"), None)
    fallback = next((best[m.name] for m in members if m.role == "fallback"), None)
    manifest = write_bundle(run_dir / "bundle.yaml", experts, classifier, source, fallback)
    read_bundle(manifest)  # every route served, files present
    print(f"bundle manifest: {manifest}")
    return manifest
