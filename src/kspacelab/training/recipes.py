"""Recipe files (YAML): finding them, merging them, command-line overrides, staged and bundle recipe entries.

Pure YAML handling, no Lightning: the result is a plain nested dict that :func:`kspacelab.training.run.fit` hands
to LightningCLI.

* A *config* is a training recipe (sections ``model:``, ``data:``, ``trainer:``, optional ``seed_everything:``).
  :func:`find_config` finds one by path or by the name of a recipe bundled with kspacelab (``demo``,
  ``snu2025_promptmr_ej``, ...; :func:`bundled_configs` lists them). Several configs are merged in order, later
  ones overriding earlier ones key by key (:func:`compose`).
* *Overrides* are ``--section.key VALUE`` (or ``--section.key=VALUE``) words; a value is read as YAML
  (``[4]``, ``true``, ``null``) and numbers like ``1e-3`` as numbers (:func:`parse_overrides`).
* Staged and bundle recipes list entries with ``config`` (one path or a list, relative to the recipe or a bundled
  name) and ``args`` (override words): :func:`load_recipe`, :func:`recipe_configs`, :func:`recipe_args`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from kspacelab.errors import KspacelabError

__all__ = [
    "Sources",
    "bundled_configs",
    "compose",
    "compose_with_sources",
    "find_config",
    "load_recipe",
    "parse_overrides",
    "read_config",
    "recipe_args",
    "recipe_configs",
    "set_dotted",
]

_SUFFIXES = (".yaml", ".yml")


def _bundled_dir() -> Path:
    """The folder of the recipes shipped inside the package (``kspacelab/configs``)."""
    return Path(str(resources.files("kspacelab").joinpath("configs")))


def bundled_configs() -> list[str]:
    """Names (without ``.yaml``) of the recipes shipped with kspacelab, sorted."""
    return sorted(p.stem for p in _bundled_dir().iterdir() if p.suffix in _SUFFIXES)


def find_config(name: str | Path, base: Path | None = None) -> Path:
    """The recipe file ``name``: a path (relative to ``base`` when given, else to the working directory), or
    the name of a bundled recipe with or without ``.yaml`` (``snu2025_promptmr_ej``).

    Raises:
        KspacelabError: neither a file nor a bundled recipe (the message lists the bundled names).
    """
    path = Path(name)
    candidates = [base / path if base is not None else path]
    if not path.is_absolute() and len(path.parts) == 1:
        stem = path.name if path.suffix in _SUFFIXES else path.name + ".yaml"
        candidates.append(_bundled_dir() / stem)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise KspacelabError(
        f"{name}: recipe not found (neither a file nor a bundled recipe: {', '.join(bundled_configs())})"
    )


def read_config(path: Path) -> dict[str, Any]:
    """The mapping of one YAML recipe (empty file: ``{}``); one-line errors naming the file."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as err:
        raise KspacelabError(f"{path}: cannot read the recipe: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise KspacelabError(f"{path}: YAML syntax error{where}: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise KspacelabError(f"{path}: a recipe must be a mapping (model:, data:, trainer:)")
    return loaded


def _merge(into: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Deep-merge ``update`` into ``into``: mappings merge key by key, anything else replaces."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _parse_value(text: str) -> Any:
    """A command-line value: an int or float when it reads as one (``1e-3``), else YAML (``[4]``, ``null``)."""
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_overrides(words: Sequence[str]) -> dict[str, Any]:
    """``["--model.lr", "1e-3", "--data.root=X"]`` -> ``{"model.lr": 0.001, "data.root": "X"}`` (in order).

    Raises:
        KspacelabError: a word that is not ``--section.key``, or a key without a value.
    """
    out: dict[str, Any] = {}
    items = list(words)
    i = 0
    while i < len(items):
        word = items[i]
        key, eq, inline = word.partition("=")
        if not key.startswith("--") or "." not in key or len(key) < 4:
            raise KspacelabError(f"train: unexpected argument {word!r} (overrides are --section.key VALUE)")
        if eq:
            out[key[2:]] = _parse_value(inline)
            i += 1
            continue
        if i + 1 >= len(items):
            raise KspacelabError(f"train: {key} needs a value")
        out[key[2:]] = _parse_value(items[i + 1])
        i += 2
    return out


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """Set ``config["a"]["b"] = value`` for ``key = "a.b"``, creating mappings on the way."""
    *parents, last = key.split(".")
    node = config
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[last] = copy.deepcopy(value)


class Sources:
    """Which recipe file or override set each dotted key of a composed configuration (the last one that did)."""

    def __init__(self) -> None:
        self._by_key: dict[str, tuple[str, str]] = {}  # dotted key -> ("file", path) or ("override", key)

    def record(self, node: Any, origin: tuple[str, str], prefix: str = "") -> None:
        """Note ``origin`` for ``prefix`` and, in a mapping, every key below it."""
        if prefix:
            self._by_key[prefix] = origin
        if isinstance(node, Mapping):
            for key, value in node.items():
                self.record(value, origin, f"{prefix}.{key}" if prefix else str(key))

    def where(self, key: str) -> str:
        """``FILE: KEY`` or ``override --KEY`` for the setting ``key`` (a parent's origin when ``key`` itself was
        not recorded); just ``KEY`` when nothing set it."""
        parts = key.split(".")
        for end in range(len(parts), 0, -1):
            origin = self._by_key.get(".".join(parts[:end]))
            if origin is None:
                continue
            kind, name = origin
            if kind == "file":
                return f"{name}: {key}"
            return f"override --{name}" if name == key else f"override --{name}: {key}"
        return key


def compose_with_sources(
    configs: Iterable[str | Path], overrides: Sequence[str] | Mapping[str, Any] = ()
) -> tuple[dict[str, Any], Sources]:
    """:func:`compose`, and which recipe file or override set each key (for error messages)."""
    merged: dict[str, Any] = {}
    sources = Sources()
    for name in configs:
        path = find_config(name)
        loaded = read_config(path)
        _merge(merged, loaded)
        sources.record(loaded, ("file", str(path)))
    pairs = parse_overrides(overrides) if not isinstance(overrides, Mapping) else dict(overrides)
    for key, value in pairs.items():
        set_dotted(merged, key, value)
        sources.record(value, ("override", key), key)
    return merged, sources


def compose(
    configs: Iterable[str | Path], overrides: Sequence[str] | Mapping[str, Any] = ()
) -> dict[str, Any]:
    """Merge the recipes ``configs`` in order, then apply ``overrides`` (words or a dotted-key mapping).

    Raises:
        KspacelabError: a recipe that is missing or not a YAML mapping, or malformed overrides.
    """
    return compose_with_sources(configs, overrides)[0]


def load_recipe(path: Path, list_key: str, kind: str) -> dict[str, Any]:
    """The mapping of a staged or bundle recipe, which must hold a non-empty list under ``list_key``."""
    if not path.is_file():
        raise KspacelabError(f"{path}: {kind} not found")
    raw = read_config(path)
    if not isinstance(raw.get(list_key), list) or not raw[list_key]:
        raise KspacelabError(f"{path}: a {kind} needs a non-empty '{list_key}' list")
    return raw


def recipe_args(entry: Any, where: str) -> tuple[str, ...]:
    """The ``args`` of a recipe entry: override words (strings or numbers), default none."""
    args = entry.get("args") or [] if isinstance(entry, dict) else []
    if not isinstance(args, list) or not all(isinstance(a, (str, int, float)) for a in args):
        raise KspacelabError(f"{where}: 'args' must be a list of command-line words")
    words = tuple(str(a) for a in args)
    try:
        parse_overrides(words)
    except KspacelabError as err:
        raise KspacelabError(f"{where}: {str(err).removeprefix('train: ')}") from None
    return words


def recipe_configs(entry: Any, base: Path, where: str) -> tuple[Path, ...]:
    """The config files of a recipe entry: ``config`` is one path or a non-empty list of them, each relative to
    ``base`` (the recipe's folder) or the name of a bundled recipe; one-line errors naming ``where``."""
    raw = entry.get("config") if isinstance(entry, dict) else None
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise KspacelabError(f"{where}: needs a 'config' (a path relative to the recipe, or a list of them)")
    found = []
    for name in names:
        try:
            found.append(find_config(name, base))
        except KspacelabError:
            raise KspacelabError(f"{where}: config {name} not found") from None
    return tuple(found)
