"""Expert bundle manifests: which checkpoint serves which route (the SNU 2025 entries' mixtures of experts).

A *bundle* is a small YAML (or JSON) manifest naming expert checkpoints by route, with paths relative to the
manifest's folder::

    classifier: classifier/checkpoints/best.ckpt    # anatomy classifier; needed for anatomy-specific experts
    anatomy_source: classifier                      # or "filename" (brain_* / knee_* names)
    experts:
      - {name: brain_acc4, anatomy: brain, acc: 4, mask_rule: any, checkpoint: experts/brain_acc4/checkpoints/best.ckpt}
      - {name: knee_acc8_helper, anatomy: knee, acc: 8, mask_rule: other, checkpoint: ...}
    fallback: general/checkpoints/best.ckpt         # optional: serves every route no expert covers

A route is ``(anatomy, acc, mask_rule)`` with anatomy ``brain | knee``, acc ``4 | 8`` and mask rule
``organiser`` (the mask equals the organiser rule for its width: "hacker" experts) or ``other`` (any other
mask: "helper" experts). An expert field may be ``any``. A volume goes to the matching expert with the most
specific fields; :func:`load_bundle` refuses manifests where a route has no expert (unless a fallback is named)
or two equally specific experts (ambiguous).

This module reads and writes manifests only; it imports neither torch nor Lightning.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kspacelab.challenge import ACCELERATIONS, ANATOMIES, acc_folder
from kspacelab.errors import KspacelabError

__all__ = [
    "ANY",
    "MASK_RULES",
    "Bundle",
    "ExpertSpec",
    "read_bundle",
    "write_bundle",
]

ANY = "any"
MASK_RULES = ("organiser", "other")
ANATOMY_SOURCES = ("classifier", "filename")


@dataclass(frozen=True)
class ExpertSpec:
    """One expert of a bundle: its route fields (each may be ``"any"``) and its checkpoint (absolute path)."""

    name: str
    anatomy: str
    acc: int | str
    mask_rule: str
    checkpoint: Path

    def matches(self, anatomy: str, acc: int, mask_rule: str) -> bool:
        """Does this expert serve the route?"""
        return (
            self.anatomy in (ANY, anatomy)
            and (self.acc == ANY or self.acc == acc)
            and self.mask_rule in (ANY, mask_rule)
        )

    @property
    def specificity(self) -> int:
        """Number of route fields this expert fixes (0..3)."""
        return sum(value != ANY for value in (self.anatomy, self.acc, self.mask_rule))


@dataclass(frozen=True)
class Bundle:
    """A parsed, validated manifest (no weights loaded)."""

    path: Path
    experts: tuple[ExpertSpec, ...]
    classifier: Path | None = None
    anatomy_source: str = "classifier"
    fallback: Path | None = None

    @property
    def needs_anatomy(self) -> bool:
        """True when some expert is anatomy-specific (the router must know each volume's anatomy)."""
        return any(e.anatomy != ANY for e in self.experts)

    def route(self, anatomy: str, acc: int, mask_rule: str) -> ExpertSpec | None:
        """The expert for a route (most specific match), or None when only the fallback serves it."""
        matches = [e for e in self.experts if e.matches(anatomy, acc, mask_rule)]
        if not matches:
            return None
        best = max(e.specificity for e in matches)
        chosen = [e for e in matches if e.specificity == best]
        if len(chosen) > 1:  # excluded by read_bundle; kept as a guard
            raise KspacelabError(f"{self.path}: route {anatomy}/{acc_folder(acc)}/{mask_rule} is ambiguous")
        return chosen[0]

    def all_routes(self) -> list[tuple[str, int, str]]:
        """Every ``(anatomy, acc, mask_rule)`` a volume can take."""
        return list(itertools.product(ANATOMIES, ACCELERATIONS, MASK_RULES))


def _field(entry: dict[str, Any], key: str, allowed: tuple[Any, ...], where: str) -> Any:
    value = entry.get(key, ANY)
    if value != ANY and value not in allowed:
        choices = " | ".join(str(a) for a in (*allowed, ANY))
        raise KspacelabError(f"{where}: {key} must be {choices}, got {value!r}")
    return value


def read_bundle(path: str | Path) -> Bundle:
    """Parse and validate a manifest (YAML or JSON); checkpoints must exist, every route must be served.

    Raises:
        KspacelabError: one line naming the manifest and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise KspacelabError(f"{path}: bundle manifest not found")
    try:
        raw = yaml.safe_load(path.read_text())  # JSON is YAML too
    except yaml.YAMLError as err:
        first = str(err).strip().splitlines()[0]
        raise KspacelabError(f"{path}: not a YAML/JSON bundle manifest: {first}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("experts"), list) or not raw["experts"]:
        raise KspacelabError(f"{path}: a bundle needs a non-empty 'experts' list")
    base = path.parent

    def checkpoint(value: Any, where: str) -> Path:
        if not isinstance(value, str) or not value:
            raise KspacelabError(f"{where}: 'checkpoint' must be a path")
        resolved = (base / value).resolve()
        if not resolved.is_file():
            raise KspacelabError(
                f"{where}: checkpoint {value} not found (paths are relative to the manifest)"
            )
        return resolved

    experts = []
    for i, entry in enumerate(raw["experts"]):
        where = f"{path}: experts[{i}]"
        if not isinstance(entry, dict):
            raise KspacelabError(f"{where}: must be a mapping")
        name = str(entry.get("name") or f"expert{i}")
        experts.append(
            ExpertSpec(
                name=name,
                anatomy=_field(entry, "anatomy", ANATOMIES, where),
                acc=_field(entry, "acc", ACCELERATIONS, where),
                mask_rule=_field(entry, "mask_rule", MASK_RULES, where),
                checkpoint=checkpoint(entry.get("checkpoint"), where),
            )
        )
    names = [e.name for e in experts]
    if len(set(names)) != len(names):
        raise KspacelabError(f"{path}: expert names must be unique, got {names}")
    source = raw.get("anatomy_source", "classifier")
    if source not in ANATOMY_SOURCES:
        raise KspacelabError(f"{path}: anatomy_source must be {' | '.join(ANATOMY_SOURCES)}, got {source!r}")
    classifier = checkpoint(raw["classifier"], f"{path}: classifier") if raw.get("classifier") else None
    fallback = checkpoint(raw["fallback"], f"{path}: fallback") if raw.get("fallback") else None
    bundle = Bundle(path, tuple(experts), classifier, source, fallback)
    if bundle.needs_anatomy and source == "classifier" and classifier is None:
        raise KspacelabError(
            f"{path}: anatomy-specific experts need a 'classifier' (or anatomy_source: filename)"
        )
    for route in bundle.all_routes():
        matches = [e for e in experts if e.matches(*route)]
        if not matches and fallback is None:
            anatomy, acc, rule = route
            raise KspacelabError(
                f"{path}: no expert for route anatomy={anatomy} acc={acc} mask_rule={rule} and no fallback"
            )
        if matches:
            best = max(e.specificity for e in matches)
            tied = [e.name for e in matches if e.specificity == best]
            if len(tied) > 1:
                raise KspacelabError(f"{path}: experts {tied} both serve route {'/'.join(map(str, route))}")
    return bundle


def write_bundle(
    path: str | Path,
    experts: list[dict[str, Any]],
    classifier: str | Path | None = None,
    anatomy_source: str = "classifier",
    fallback: str | Path | None = None,
) -> Path:
    """Write a manifest with checkpoint paths relative to its folder; returns the path.

    Args:
        path: ``.yaml``/``.yml`` or ``.json`` file.
        experts: dicts with ``name``, ``anatomy``, ``acc``, ``mask_rule`` and an absolute or relative
            ``checkpoint``.
        classifier, fallback: checkpoint paths, or None.
        anatomy_source: ``classifier`` or ``filename``.
    """
    path = Path(path)
    base = path.parent.resolve()

    def rel(p: str | Path) -> str:
        resolved = Path(p).resolve()
        try:
            return resolved.relative_to(base).as_posix()
        except ValueError:
            return str(resolved)

    manifest: dict[str, Any] = {"anatomy_source": anatomy_source}
    if classifier is not None:
        manifest["classifier"] = rel(classifier)
    manifest["experts"] = [{**e, "checkpoint": rel(e["checkpoint"])} for e in experts]
    if fallback is not None:
        manifest["fallback"] = rel(fallback)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".json":
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    else:
        tmp.write_text(
            "# kspacelab expert bundle (paths relative to this file)\n"
            + yaml.safe_dump(manifest, sort_keys=False)
        )
    tmp.replace(path)
    return path
