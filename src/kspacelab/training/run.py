"""One training entry point: :func:`fit` (the only caller of LightningCLI), and :func:`fit_or_reuse`.

``fit(configs, overrides, run_dir)`` merges the recipes (:mod:`kspacelab.training.recipes`), picks the Lightning
module and data module from the task of ``model.model_name`` in the model registry (reconstruction: the
:class:`~kspacelab.training.module.ReconModule` on an SNU dataset; anatomy_classifier: the classifier on labelled
images; singlecoil and generative: :mod:`kspacelab.training.singlecoil` on NYU single-coil files), validates the whole configuration against their signatures (a misspelt key is one line naming it), hands
the data module the model's :class:`~kspacelab.models.base.InputSpec` and trains. The run folder receives
``checkpoints/{last,best}.ckpt`` (written atomically; with ``checkpoint: {keep_every_epoch: true}`` also one
``checkpoints/epoch{N:03d}.ckpt`` per epoch), ``logs/`` (CSV, and TensorBoard when installed), ``loss_log.npy``
(:mod:`kspacelab.training.epochs`) and the resolved ``config.yaml``. Running the same command again resumes from
``last.ckpt`` exactly.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
import yaml
from jsonargparse import ArgumentError
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO
from torch import nn

from kspacelab.data.anatomy import AnatomyDataModule
from kspacelab.data.dataset import SnuDataModule
from kspacelab.data.singlecoil import SingleCoilDataModule
from kspacelab.errors import KspacelabError
from kspacelab.models import model_entry
from kspacelab.models.base import check_config
from kspacelab.training import recipes
from kspacelab.training.checkpoint import is_training_checkpoint, read_state_dict, safe_load
from kspacelab.training.classifier import ClassifierModule
from kspacelab.training.epochs import LossLog, every_epoch_checkpoint
from kspacelab.training.module import MONITOR, ReconModule
from kspacelab.training.resume import AtomicCheckpointIO, ExactResume, LastCheckpoint
from kspacelab.training.singlecoil import GenerativeModule, SingleCoilModule

__all__ = [
    "BEST_CHECKPOINT",
    "LAST_CHECKPOINT",
    "FitResult",
    "ValidateAtMaxSteps",
    "check_run_dir",
    "fit",
    "fit_or_reuse",
]

#: File names of the checkpoints under ``RUN_DIR/checkpoints/``.
BEST_CHECKPOINT = "best.ckpt"
LAST_CHECKPOINT = "last.ckpt"
_RUN_MARKER = "kspacelab-run.json"

#: The Lightning module and data module that train the models of each task.
_TRAINING_CLASSES: dict[str, tuple[type[L.LightningModule], type[L.LightningDataModule]]] = {
    "reconstruction": (ReconModule, SnuDataModule),
    "anatomy_classifier": (ClassifierModule, AnatomyDataModule),
    "singlecoil": (SingleCoilModule, SingleCoilDataModule),
    "generative": (GenerativeModule, SingleCoilDataModule),
}


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` left in the run folder (None when it only printed the configuration)."""

    run_dir: Path
    best: Path | None
    last: Path | None


class ValidateAtMaxSteps(Callback):
    """Ask the loop to stop (and therefore to validate) when ``max_steps`` is reached mid-epoch.

    Lightning ends a run at ``max_steps`` without validating unless the step happens to end an epoch; this
    callback sets ``trainer.should_stop`` on the last step so the final weights are always validated and
    ``best.ckpt``/``last.ckpt`` are written.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True


class _SaveRunConfig(SaveConfigCallback):
    """Write the fully resolved configuration to ``RUN_DIR/config.yaml`` (rank zero)."""

    def __init__(self, *args: Any, run_dir: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run_dir = run_dir

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.parser.save(
            self.config,
            self.run_dir / self.config_filename,
            skip_unset=False,
            overwrite=True,
            multifile=False,
        )


def _tensorboard_available() -> bool:
    return any(importlib.util.find_spec(name) is not None for name in ("tensorboard", "tensorboardX"))


class _PrintedConfigError(Exception):
    """Raised after ``print_config`` printed the resolved configuration (nothing is instantiated)."""


def _type_name(hint: Any) -> str:
    """A type annotation in words: ``float``, ``float or null``, ``one of 'adamw', 'adam'``, ``a mapping``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        literals = [v for a in args if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)]
        others = [_type_name(a) for a in args if typing.get_origin(a) is not typing.Literal]
        words = ([f"one of {', '.join(repr(v) for v in literals)}"] if literals else []) + others
        return " or ".join(dict.fromkeys(words))
    if hint is type(None):
        return "null"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (dict, Mapping) or hint is dict:
        return "a mapping"
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        return f"a list of {_type_name(args[0])}" if args and args[0] is not Ellipsis else "a list"
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _dotted_get(config: Mapping[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _short_value(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _TrainCLI(LightningCLI):
    """LightningCLI over a parsed configuration dict, with the run folder's checkpoint and log layout."""

    def __init__(
        self,
        *args: Any,
        run_dir: Path,
        save_every_n_steps: int | None,
        print_config: bool,
        sources: recipes.Sources | None = None,
        **kwargs: Any,
    ) -> None:
        self.run_dir = run_dir
        self.save_every_n_steps = save_every_n_steps
        self.print_config = print_config
        self.sources = sources or recipes.Sources()
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--checkpoint.keep_every_epoch",
            type=bool,
            default=False,
            help="also keep checkpoints/epoch{N:03d}.ckpt, the state at the end of every (0-based) epoch N",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        self._check_keys(parser, args)
        try:
            self.config = parser.parse_object(args)
        except ArgumentError as err:
            raise KspacelabError(self._explain(parser, args, err)) from None
        self._check_model_arguments()
        if self.print_config:
            print(parser.dump(self.config, skip_none=False), end="")
            raise _PrintedConfigError

    def _check_keys(self, parser: LightningArgumentParser, config: Any) -> None:
        """Every key of ``config`` against the parser's: ``FILE: model.lrr: unknown key; allowed: ...`` (or
        ``override --model.lrr: ...``), or a section that is not a mapping."""
        known = {key for key in parser.get_defaults().keys() if key != "config"}  # noqa: SIM118 (flat keys)
        groups = {".".join(k.split(".")[:i]) for k in known for i in range(1, k.count(".") + 1)}

        def walk(node: Mapping[str, Any], prefix: str) -> None:
            for key, value in node.items():
                dotted = f"{prefix}{key}"
                if dotted in known:
                    continue
                if dotted in groups:
                    if not isinstance(value, Mapping):
                        raise KspacelabError(
                            f"{self.sources.where(dotted)}: expected a mapping of options, got {_short_value(value)}"
                        )
                    walk(value, dotted + ".")
                    continue
                allowed = sorted(
                    {k[len(prefix) :].split(".")[0] for k in known | groups if k.startswith(prefix)}
                )
                raise KspacelabError(
                    f"{self.sources.where(dotted)}: unknown key; allowed: {', '.join(allowed)}"
                )

        if isinstance(config, Mapping):
            walk(config, "")

    def _explain(self, parser: LightningArgumentParser, config: Any, err: ArgumentError) -> str:
        """One line for jsonargparse's ``err``: where the key was set, what type it needs, what it got."""
        message = " ".join(str(err).split())
        match = re.search(r'Parser key "([^"]+)"', message)
        if match is None:
            return f"train: invalid configuration: {message}"
        key = match.group(1)
        action = parser._option_string_actions.get(f"--{key}")
        hint = getattr(action, "_typehint", None)
        expected = _type_name(hint) if hint is not None else message.split(":", 1)[-1].strip()
        got = _dotted_get(config, key) if isinstance(config, Mapping) else None
        return f"{self.sources.where(key)}: expected {expected}, got {_short_value(got)}"

    def _check_model_arguments(self) -> None:
        """The model's arguments against its typed config (one line naming a misspelt key and where it was
        set)."""
        name = str(self.config.get("model.model_name"))
        kwargs = dict(self.config.get("model.model_kwargs") or {})
        try:
            entry = model_entry(name)
            check_config(name, entry.config, kwargs)
        except ValueError as err:
            fields = {f.name for f in dataclasses.fields(entry.config)} if "entry" in locals() else set()
            culprits = [k for k in kwargs if fields and k not in fields] or [
                k for k in kwargs if f"{k} = " in str(err)
            ]
            key = f"model.model_kwargs.{culprits[0]}" if culprits else "model.model_kwargs"
            where = self.sources.where(key)
            if not culprits and name != "None":
                where = self.sources.where("model.model_name")
            problem = re.sub(r"<class '(\w+)'>", r"\1", str(err))
            raise KspacelabError(f"{where}: {problem}") from None

    def before_instantiate_classes(self) -> None:
        """Check the data root before anything is built."""
        root = self.config.get("data.root")
        if root is not None and not Path(str(root)).is_dir():
            raise KspacelabError(f"{root}: data root (data.root) is not a directory")

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        configured = self._get(self.config_init, "trainer", default={}).get("logger")
        loggers: list[Logger] = []
        if configured is not False:
            loggers.append(CSVLogger(save_dir=self.run_dir, name="logs"))
            if _tensorboard_available():
                loggers.append(TensorBoardLogger(save_dir=self.run_dir, name="tensorboard"))
            if isinstance(configured, Logger):
                loggers.append(configured)
            elif isinstance(configured, (list, tuple)):
                loggers.extend(configured)
        checkpoints = self.run_dir / "checkpoints"
        callbacks: list[Callback] = [
            ModelCheckpoint(  # first: trainer.checkpoint_callback, the best checkpoint
                dirpath=checkpoints,
                filename=Path(BEST_CHECKPOINT).stem,
                monitor=getattr(self.model_class, "monitor", MONITOR),
                mode="max",
                save_top_k=1,
                save_last=False,
                save_on_train_epoch_end=False,  # at the end of the validation (resume.py)
                auto_insert_metric_name=False,
                enable_version_counter=False,
            ),
            LastCheckpoint(checkpoints, every_n_train_steps=self.save_every_n_steps),
            ValidateAtMaxSteps(),
            ExactResume(),
            LossLog(self.run_dir, getattr(self.model_class, "monitor", MONITOR)),
        ]
        if self.config.get("checkpoint.keep_every_epoch"):
            callbacks.append(every_epoch_checkpoint(checkpoints))
        if loggers:
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        self.trainer_defaults["callbacks"] = callbacks
        kwargs.setdefault("default_root_dir", str(self.run_dir))
        # Only the callbacks of ``trainer_defaults`` are read at this point; the checkpoint IO must be passed
        # as an argument (next to any plugins the recipe configures), or Lightning's non-atomic, unsafe-loading
        # TorchCheckpointIO would be used.
        configured_plugins = self._get(self.config_init, "trainer", default={}).get("plugins")
        plugins = (
            []
            if configured_plugins is None
            else list(configured_plugins)
            if isinstance(configured_plugins, (list, tuple))
            else [configured_plugins]
        )
        if any(isinstance(p, CheckpointIO) for p in plugins):
            raise KspacelabError(
                "trainer.plugins: kspacelab writes and reads checkpoints itself; remove the CheckpointIO plugin"
            )
        kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        kwargs.setdefault("logger", loggers if loggers else False)
        return super().instantiate_trainer(**kwargs)


def _training_classes(
    config: Mapping[str, Any], sources: recipes.Sources | None = None
) -> tuple[type[L.LightningModule], type[L.LightningDataModule]]:
    """The Lightning module and data module of the task of ``model.model_name`` (default ``varnet``)."""
    model = config.get("model") or {}
    name = model.get("model_name", "varnet") if isinstance(model, dict) else "varnet"
    try:
        entry = model_entry(str(name))
    except ValueError as err:
        where = sources.where("model.model_name") if sources is not None else "model.model_name"
        raise KspacelabError(f"{where}: {err}") from None
    return _TRAINING_CLASSES[entry.task]


def _resume_path(run_dir: Path, ckpt_path: str | Path | None, config: Mapping[str, Any]) -> Path | None:
    """The checkpoint to resume from: ``ckpt_path``, else the run folder's ``last.ckpt`` (same model only)."""
    if ckpt_path:
        path = Path(ckpt_path)
        if not path.is_file():
            raise KspacelabError(f"{path}: checkpoint to resume from not found")
        return path
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / LAST_CHECKPOINT
    if last.is_file():
        saved_path = run_dir / "config.yaml"
        saved = (yaml.safe_load(saved_path.read_text()) or {}).get("model") if saved_path.is_file() else None
        current = yaml.safe_load(yaml.safe_dump(config.get("model")))
        if saved is not None and saved != current:
            raise KspacelabError(
                f"{run_dir}: holds a run with a different model configuration; choose another --run-dir "
                "(or pass --ckpt_path explicitly)"
            )
        if os.environ.get("LOCAL_RANK", "0") == "0":
            print(f"resuming from {last}")
        return last
    if ckpt_dir.is_dir() and any(ckpt_dir.glob("*.ckpt")):
        raise KspacelabError(
            f"{ckpt_dir}: holds checkpoints of an earlier run but no {LAST_CHECKPOINT}; pass --ckpt_path "
            "or choose another --run-dir"
        )
    return None


def check_run_dir(run_dir: Path) -> None:
    """Refuse a ``--run-dir`` that is a file or lies under one (one line)."""
    for folder in (run_dir, *run_dir.parents):
        if folder.exists():
            if folder.is_dir():
                return
            where = (
                "is a file, not a folder" if folder == run_dir else f"lies under {folder}, which is a file"
            )
            raise KspacelabError(f"{run_dir}: --run-dir {where}")


def _read_training_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint to resume from, read safely (:func:`~kspacelab.training.checkpoint.safe_load`) and checked to
    be a kspacelab training checkpoint (one-line errors instead of Lightning's tracebacks)."""
    checkpoint = safe_load(path, "cpu")
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if (
        not is_training_checkpoint(checkpoint)
        or not isinstance(checkpoint.get("pytorch-lightning_version"), str)
        or not isinstance(state, dict)
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise KspacelabError(
            f"{path}: not a kspacelab training checkpoint (no training state to resume from); to start from its "
            "weights use --init-weights"
        )
    return dict(checkpoint)


def _check_weights_fit(path: Path, checkpoint: Mapping[str, Any], module: L.LightningModule) -> None:
    """Refuse a checkpoint whose weights do not fit ``module`` (one line instead of Lightning's traceback)."""
    state = checkpoint["state_dict"]
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or reshaped:
        if missing:
            first = f"missing {missing[0]}"
        elif unexpected:
            first = f"unexpected {unexpected[0]}"
        else:
            key = reshaped[0]
            first = f"{key} has shape {tuple(state[key].shape)}, not {tuple(expected[key].shape)}"
        raise KspacelabError(
            f"{path}: its weights do not fit the configured model ({len(missing)} missing, {len(unexpected)} "
            f"unexpected, {len(reshaped)} of another shape; {first}); choose the matching configuration or "
            "another --run-dir"
        )


def _worker_error(err: BaseException) -> str | None:
    """The one-line message of a kspacelab error raised in a DataLoader worker (which torch re-raises with the
    worker's traceback in the message), else None."""
    text = str(err)
    if not text.startswith("Caught ") or "DataLoader worker" not in text.splitlines()[0]:
        return None
    for line in reversed(text.strip().splitlines()):
        name, sep, message = line.partition(": ")
        if sep and name.startswith("kspacelab.errors."):
            return message.strip()
    return None


def _load_weights(target: nn.Module, path: Path, what: str) -> None:
    """Copy the model weights of ``path`` (kspacelab checkpoint or plain state dict) into ``target`` (strict)."""
    if not path.is_file():
        raise KspacelabError(f"{path}: {what} checkpoint not found")
    state = read_state_dict(path)
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise KspacelabError(f"{path}: weights do not fit the {what}: {first}") from None
    print(f"{what} weights from {path}")


def _load_initial_weights(module: L.LightningModule, path: Path) -> None:
    """``--init_weights``: the whole model from ``path``."""
    _load_weights(module.model, path, "--init_weights")  # type: ignore[arg-type]


def _load_pretrained_parts(module: L.LightningModule) -> None:
    """The parts a model starts from (e.g. a two-stage model's first stage, ``init_from``)."""
    parts = getattr(module.model, "pretrained_parts", None)
    for part, path in parts() if callable(parts) else []:
        _load_weights(part, Path(path), f"{type(part).__name__} (init_from)")


def fit(
    configs: Sequence[str | Path],
    overrides: Sequence[str] | Mapping[str, Any] = (),
    run_dir: str | Path | None = None,
    seed: int | None = None,
    ckpt_path: str | Path | None = None,
    init_weights: str | Path | None = None,
    save_every_n_steps: int | None = None,
    print_config: bool = False,
    progress: bool = True,
) -> FitResult:
    """Train one model as the recipes ``configs`` (merged in order) and ``overrides`` say.

    Args:
        configs: recipe paths or names of bundled recipes (:func:`kspacelab.training.recipes.find_config`).
        overrides: ``--section.key VALUE`` words or a ``{"section.key": value}`` mapping.
        run_dir: run folder (required unless ``print_config``).
        seed: global seed (``seed_everything``); default the recipe's, else 0.
        ckpt_path: resume from this checkpoint; default the run folder's ``last.ckpt`` when it exists.
        init_weights: start from these model weights (a kspacelab checkpoint or a state dict) with a fresh
            optimiser and schedule (the previous stage of a staged recipe); ignored when resuming.
        save_every_n_steps: also write ``last.ckpt`` every N optimiser steps.
        print_config: print the resolved configuration and return without training.
        progress: progress bars.

    Returns:
        the run folder and its best and last checkpoints.

    Raises:
        KspacelabError: a bad recipe, override, data root or checkpoint (one line).
    """
    config, sources = recipes.compose_with_sources(configs, overrides)
    if seed is not None:
        config["seed_everything"] = int(seed)
    if not progress:
        recipes.set_dotted(config, "trainer.enable_progress_bar", False)
    module_class, data_class = _training_classes(config, sources)
    if run_dir is None and not print_config:
        raise KspacelabError("train: --run-dir DIR is required")
    folder = Path(run_dir) if run_dir is not None else Path(".")
    preloaded: dict[str, Any] | None = None
    if not print_config:  # the run folder and the checkpoints to read, before Lightning starts
        check_run_dir(folder)
        candidate = Path(ckpt_path) if ckpt_path else folder / "checkpoints" / LAST_CHECKPOINT
        if ckpt_path or candidate.is_file():
            preloaded = _read_training_checkpoint(candidate)
        elif init_weights:
            read_state_dict(Path(init_weights))  # a missing, corrupt or unsafe file fails here, in one line
    # ExactResume (training/resume.py) restores the position inside the epoch, so Lightning's warning about
    # non-resumable dataloaders does not apply to kspacelab runs.
    warnings.filterwarnings(
        "ignore", message="You're resuming from a checkpoint that ended before the epoch ended"
    )
    # Lightning calls a deprecated torch pytree API on every run; the warning says nothing about the run.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # A frozen first stage (two-stage models) stays in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    try:
        cli = _TrainCLI(
            module_class,
            data_class,
            run_dir=folder,
            save_every_n_steps=save_every_n_steps,
            print_config=print_config,
            sources=sources,
            save_config_callback=_SaveRunConfig,
            save_config_kwargs={"save_to_log_dir": False, "overwrite": True, "run_dir": folder},
            trainer_defaults={"use_distributed_sampler": False},
            seed_everything_default=0,
            parser_kwargs={"prog": "kspacelab train", "exit_on_error": False},
            args=config,
            run=False,
            auto_configure_optimizers=False,
        )
    except _PrintedConfigError:
        return FitResult(folder, None, None)
    resolved = cli.config.as_dict()
    resume = _resume_path(folder, ckpt_path, resolved)
    if hasattr(cli.datamodule, "set_input_spec"):
        cli.datamodule.set_input_spec(cli.model.input_spec)
    if resume is not None:
        resumed = preloaded if preloaded is not None else _read_training_checkpoint(resume)
        preloaded = None
        _check_weights_fit(resume, resumed, cli.model)
        checkpoint_io = cli.trainer.strategy.checkpoint_io
        if isinstance(checkpoint_io, AtomicCheckpointIO):
            checkpoint_io.preload(resume, resumed)  # Lightning's restore takes it (and lets it go) from there
        del resumed  # not kept in memory for the whole run
    elif init_weights:
        _load_initial_weights(cli.model, Path(init_weights))
    else:
        _load_pretrained_parts(cli.model)
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=resume)
    except (
        MisconfigurationException
    ) as err:  # a trainer setting the module cannot use, e.g. manual optimisation
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise KspacelabError(f"train: {first}") from None
    except Exception as err:
        message = _worker_error(err)
        if message is None:
            raise
        raise KspacelabError(message) from None
    best = folder / "checkpoints" / BEST_CHECKPOINT
    last = folder / "checkpoints" / LAST_CHECKPOINT
    if cli.trainer.is_global_zero:
        checkpoint = cli.trainer.checkpoint_callback
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.best_model_path:
            score = checkpoint.best_model_score
            shown = f" ({checkpoint.monitor} {float(score):.4f})" if score is not None else ""
            print(f"best checkpoint: {checkpoint.best_model_path}{shown}")
    return FitResult(folder, best if best.is_file() else None, last if last.is_file() else None)


def fit_or_reuse(
    configs: Sequence[str | Path],
    overrides: Sequence[str],
    run_dir: str | Path,
    label: str,
    init_weights: str | Path | None = None,
    extra: Any = None,
    progress: bool = True,
) -> Path:
    """:func:`fit` into ``run_dir`` unless a finished run of the same recipes (their texts), overrides, initial
    weights and ``extra`` (e.g. a description of the data) is there; returns its best checkpoint.

    An unfinished run of the same request is resumed; any other content of ``run_dir`` is replaced.
    """
    run_dir = Path(run_dir)
    check_run_dir(run_dir)  # before anything is deleted
    paths = [recipes.find_config(c) for c in configs]
    wanted = {
        "configs": [str(p) for p in paths],
        "texts": [p.read_text() for p in paths],
        "overrides": list(overrides),
        "init_weights": None if init_weights is None else str(init_weights),
        "extra": extra,
    }
    wanted = json.loads(json.dumps(wanted))
    checkpoint = run_dir / "checkpoints" / BEST_CHECKPOINT
    marker = run_dir / _RUN_MARKER
    if checkpoint.is_file() and marker.is_file() and json.loads(marker.read_text()) == wanted:
        print(f"reusing {label} in {run_dir}")
        return checkpoint
    started = run_dir / (_RUN_MARKER + ".started")
    same_unfinished = started.is_file() and json.loads(started.read_text()) == wanted
    if run_dir.exists() and not (same_unfinished and (run_dir / "checkpoints" / LAST_CHECKPOINT).is_file()):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started.write_text(json.dumps(wanted))
    print(f"training {label} in {run_dir}")
    result = fit(paths, overrides, run_dir, init_weights=init_weights, progress=progress)
    if result.best is None:
        raise KspacelabError(f"{run_dir}: training ended without a best checkpoint")
    marker.write_text(json.dumps(wanted))
    return result.best
