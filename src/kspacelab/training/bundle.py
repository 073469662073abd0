"""``kspacelab train --bundle RECIPE``: train every expert (and the anatomy classifier) of a mixture, write its manifest.

A bundle recipe (YAML) lists what to train; config paths are relative to the recipe::

    classifier: {config: anatomy_classifier.yaml, args: ["--trainer.max_epochs", "3"]}
    anatomy_source: classifier
    experts:
      - {name: brain_acc4, anatomy: brain, acc: 4, mask_rule: any, config: snu2025_promptmr_ej.yaml, args: []}
      - ...
    fallback: {config: demo.yaml, args: []}      # optional: one model on all the data

``config`` may also be a list of files, applied in order as repeated ``--config`` options (later files override
earlier ones), e.g. ``[snu2025_promptmr_smartify.yaml, snu2025_smartify_helper.yaml]`` for a "helper" expert.
Instead of ``config``, a member may name a staged recipe, ``stages: snu2025_ej_stages.yaml``
(:mod:`kspacelab.training.stages`); a ``config`` next to it is then applied on top of every stage.
Each member is one ``kspacelab train`` run (or one staged run) in ``RUN_DIR/<name>/``. An expert's data are
restricted to its route
(``--data.only_anatomies [brain] --data.only_accelerations [4]``; ``any`` keeps everything); its ``args`` follow
(e.g. the mask-augmentation settings of a "helper" expert, ``mask_rule: other``). Extra command-line arguments
apply to every expert and the fallback, ``--data.root`` to the classifier as well. A member whose run folder
already holds a finished run of the same arguments is reused. The manifest is written to ``RUN_DIR/bundle.yaml``
(:func:`kspacelab.models.moe.write_bundle`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kspacelab.errors import KspacelabError
from kspacelab.models.moe import ANATOMIES, ANY, MASK_RULES, read_bundle, write_bundle

__all__ = [
    "BundleMember",
    "config_args",
    "load_recipe",
    "read_recipe",
    "recipe_args",
    "recipe_configs",
    "train_bundle",
    "train_or_reuse",
]

_RUN_MARKER = "kspacelab-run.json"


@dataclass(frozen=True)
class BundleMember:
    """One training run of a bundle recipe."""

    name: str
    role: str  # "expert" | "classifier" | "fallback"
    configs: tuple[Path, ...]  # applied in order (repeated --config); on top of every stage with ``stages``
    args: tuple[str, ...]
    anatomy: str = ANY
    acc: int | str = ANY
    mask_rule: str = ANY
    stages: Path | None = None  # a staged recipe instead of a single run

    def route_args(self) -> list[str]:
        """Data restrictions of an expert's route."""
        args = []
        if self.anatomy != ANY:
            args += ["--data.only_anatomies", f"[{self.anatomy}]"]
        if self.acc != ANY:
            args += ["--data.only_accelerations", f"[{self.acc}]"]
        return args


def _recipe_file(base: Path, name: str, where: str, what: str) -> Path:
    """``base / name`` resolved; a one-line error naming ``where`` when it is not a file."""
    path = (base / name).resolve()
    if not path.is_file():
        raise KspacelabError(f"{where}: {what} {name} not found")
    return path


def recipe_args(entry: Any, where: str) -> tuple[str, ...]:
    """The ``args`` of a recipe entry: a list of command-line words (strings or numbers), default none."""
    args = entry.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, (str, int, float)) for a in args):
        raise KspacelabError(f"{where}: 'args' must be a list of command-line words")
    return tuple(str(a) for a in args)


def recipe_configs(entry: Any, base: Path, where: str) -> tuple[Path, ...]:
    """The config files of a recipe entry: ``config`` is one path or a non-empty list of paths, relative to
    ``base`` (the recipe's folder); one-line errors naming ``where``."""
    raw = entry.get("config") if isinstance(entry, dict) else None
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise KspacelabError(f"{where}: needs a 'config' (a path relative to the recipe, or a list of them)")
    return tuple(_recipe_file(base, name, where, "config") for name in names)


def config_args(configs: Sequence[Path]) -> list[str]:
    """``--config FILE`` for every file, in order (later files override earlier ones)."""
    return [word for config in configs for word in ("--config", str(config))]


def _member(entry: Any, role: str, name: str, base: Path, where: str) -> BundleMember:
    stages: Path | None = None
    if isinstance(entry, dict) and entry.get("stages") is not None:
        if not isinstance(entry["stages"], str):
            raise KspacelabError(f"{where}: 'stages' must be the path of a staged recipe")
        stages = _recipe_file(base, entry["stages"], where, "staged recipe")
        configs = recipe_configs(entry, base, where) if entry.get("config") is not None else ()
    else:
        configs = recipe_configs(entry, base, where)
    args = recipe_args(entry, where)
    anatomy, acc, rule = entry.get("anatomy", ANY), entry.get("acc", ANY), entry.get("mask_rule", ANY)
    if anatomy != ANY and anatomy not in ANATOMIES:
        raise KspacelabError(f"{where}: anatomy must be brain | knee | any, got {anatomy!r}")
    if acc != ANY and acc not in (4, 8):
        raise KspacelabError(f"{where}: acc must be 4 | 8 | any, got {acc!r}")
    if rule != ANY and rule not in MASK_RULES:
        raise KspacelabError(f"{where}: mask_rule must be organiser | other | any, got {rule!r}")
    return BundleMember(str(entry.get("name") or name), role, configs, args, anatomy, acc, rule, stages)


def load_recipe(path: Path, list_key: str, kind: str) -> dict[str, Any]:
    """The mapping of a recipe YAML that must hold a non-empty list under ``list_key`` (one-line errors)."""
    if not path.is_file():
        raise KspacelabError(f"{path}: {kind} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise KspacelabError(f"{path}: not YAML: {str(err).strip().splitlines()[0]}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get(list_key), list) or not raw[list_key]:
        raise KspacelabError(f"{path}: a {kind} needs a non-empty '{list_key}' list")
    return raw


def read_recipe(path: str | Path) -> tuple[list[BundleMember], str]:
    """Parse a bundle recipe: its members (classifier first, then experts, then the fallback) and anatomy source."""
    path = Path(path)
    raw = load_recipe(path, "experts", "bundle recipe")
    base = path.parent
    members = []
    if raw.get("classifier"):
        members.append(_member(raw["classifier"], "classifier", "classifier", base, f"{path}: classifier"))
    for i, entry in enumerate(raw["experts"]):
        members.append(_member(entry, "expert", f"expert{i}", base, f"{path}: experts[{i}]"))
    if raw.get("fallback"):
        members.append(_member(raw["fallback"], "fallback", "fallback", base, f"{path}: fallback"))
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise KspacelabError(f"{path}: member names must be unique, got {names}")
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


def train_or_reuse(argv: list[str], run_dir: Path, label: str, extra: Any = None) -> Path:
    """``kspacelab train`` with ``argv`` into ``run_dir`` unless a finished run of the same ``argv``, the same texts
    of the files its ``--config`` options name and the same ``extra`` (e.g. a description of the data) is there;
    returns its best checkpoint. An unfinished run of the same arguments is resumed; any other content of
    ``run_dir`` is replaced."""
    from kspacelab.training.command import BEST_CHECKPOINT, LAST_CHECKPOINT, train_main

    checkpoint = run_dir / "checkpoints" / BEST_CHECKPOINT
    marker = run_dir / _RUN_MARKER
    configs = [Path(argv[i + 1]) for i, word in enumerate(argv[:-1]) if word == "--config"]
    wanted = {"argv": argv, "config": [config.read_text() for config in configs], "extra": extra}
    if checkpoint.is_file() and marker.is_file() and json.loads(marker.read_text()) == wanted:
        print(f"reusing {label} in {run_dir}")
        return checkpoint
    started = run_dir / (_RUN_MARKER + ".started")
    same_unfinished = started.is_file() and json.loads(started.read_text()) == wanted
    if run_dir.exists() and not (same_unfinished and (run_dir / "checkpoints" / LAST_CHECKPOINT).is_file()):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started.write_text(json.dumps(wanted))
    print(f"training {label}: kspacelab train {' '.join(argv)}")
    train_main(argv)
    if not checkpoint.is_file():
        raise KspacelabError(f"{run_dir}: training ended without a best checkpoint")
    marker.write_text(json.dumps(wanted))
    return checkpoint


def train_bundle(
    recipe: str | Path, run_dir: str | Path, overrides: Sequence[str] = (), progress: bool = True
) -> Path:
    """Train (or reuse) every member of ``recipe`` under ``run_dir`` and write ``run_dir/bundle.yaml``.

    Args:
        recipe: bundle recipe YAML (module docstring).
        run_dir: one sub-folder per member, plus the manifest.
        overrides: extra ``kspacelab train`` arguments for the experts and fallback (``--data.root`` also for
            the classifier).
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
        words = [*config_args(member.configs), *member.route_args(), *member.args, *extra]
        if member.stages is not None:
            from kspacelab.training.stages import train_stages

            print(f"training {member.role} {member.name} in stages ({member.stages.name})")
            best[member.name] = train_stages(member.stages, member_dir, words, progress)
            continue
        argv = [
            *words,
            "--run-dir",
            str(member_dir),
            *([] if progress else ["--trainer.enable_progress_bar", "false"]),
        ]
        best[member.name] = train_or_reuse(argv, member_dir, f"{member.role} {member.name}")

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
