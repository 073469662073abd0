"""HDF5 layouts of the SNU challenge and of NYU fastMRI: discover, validate, read lazily, write atomically.

SNU layout: every volume is ``kspace/NAME.h5`` (datasets ``kspace`` complex64
``(S, C, H, W)`` and ``mask`` ``(W,)`` 0/1) plus ``image/NAME.h5`` (datasets ``image_input``,
``image_grappa``, ``image_label`` float32 ``(S, h, w)``, attrs ``max`` and ``norm``); file and folder names
follow :mod:`kspacelab.challenge`.
NYU fastMRI layout: one file per volume with ``kspace``, an optional target
``reconstruction_rss``/``reconstruction_esc``, an ``ismrmrd_header`` XML string and attrs.
Reconstructions: dataset ``reconstruction`` float32 ``(S, h, w)``.

Readers open the file for the duration of one call and never keep a handle, so they are safe in forked
DataLoader workers. Writers go through :func:`atomic_h5` (:func:`atomic_text` for text), so a failed write never
leaves a partial file or a temporary, and an OS error while writing is a one-line KspacelabError; a run claims its
outputs in an :class:`OutputSet` (:func:`all_or_nothing`) so that a failed run removes the new files it wrote.
Broken and looping symbolic links are reported as such, never skipped.
Every problem with a user's file raises :class:`~kspacelab.errors.DataFormatError` with one line
``"<path>: <problem>"`` naming the dataset or attribute at fault.
"""

from __future__ import annotations

import contextlib
import errno
import json
import operator
import os
import re
import secrets
import signal
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeAlias

import h5py
import numpy as np

from kspacelab import challenge
from kspacelab.errors import DataFormatError, KspacelabError

__all__ = [
    "ISMRMRD_NAMESPACE",
    "Box",
    "NyuInfo",
    "OutputSet",
    "Volume",
    "all_or_nothing",
    "anatomy_from_name",
    "atomic_h5",
    "atomic_npy",
    "atomic_text",
    "discover_folder",
    "discover_nyu",
    "discover_snu",
    "discover_split",
    "is_reconstruction_file",
    "ismrmrd_header",
    "kspace_shape",
    "natural_key",
    "read_annotations",
    "read_image_attrs",
    "read_image_slice",
    "read_image_volume",
    "read_kspace_slice",
    "read_mask",
    "read_nyu_header",
    "read_nyu_slice",
    "read_reconstruction",
    "validate_image_file",
    "validate_kspace_file",
    "validate_pair",
    "write_annotations",
    "write_error",
    "write_image_file",
    "write_kspace_file",
    "write_nyu_file",
    "write_reconstruction",
]

StrPath: TypeAlias = "str | os.PathLike[str]"

ISMRMRD_NAMESPACE = "http://www.ismrm.org/ISMRMRD"
IMAGE_KEYS = ("image_input", "image_grappa", "image_label")
NYU_TARGET_KEYS = ("reconstruction_rss", "reconstruction_esc")
#: ``Volume.split`` of an NYU fastMRI file (one file per volume: ``kspace_path`` is the file, no image partner)
NYU_SPLIT = "nyu"
SNU_SPLITS = ("train", "val")
_CHUNK_BYTES = 64 * 2**20  # finiteness checks read at most this many bytes at a time
# the leaderboard's acceleration folders in error messages: "acc4/ or acc8/"
_ACC_FOLDERS_OR = " or ".join(f"{challenge.acc_folder(a)}/" for a in challenge.ACCELERATIONS)


# --------------------------------------------------------------------------------------------- helpers


def _error(path: StrPath, problem: str) -> DataFormatError:
    """A DataFormatError whose message is guaranteed to be a single line."""
    return DataFormatError(os.fspath(path), " ".join(problem.split()))


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key giving natural order of names: ``brain_test2`` before ``brain_test10``."""
    parts = re.split(r"(\d+)", name)
    return tuple((1, int(p)) if p.isdigit() else (0, p.lower()) for p in parts if p)


def _link_problem(path: Path) -> str | None:
    """Why ``path`` cannot be followed: a symbolic link loop or a broken symbolic link; None otherwise."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "is a symbolic link loop (too many levels of symbolic links)"
        if path.is_symlink():
            return f"is a broken symbolic link (its target {os.readlink(path)} does not exist)"
    return None


def _check_folder(path: Path, missing: str) -> None:
    """Raise a one-line DataFormatError unless ``path`` is a folder (``missing``: the problem when it is absent)."""
    if path.is_dir():
        return
    problem = _link_problem(path)
    if problem is not None:
        raise _error(path, problem)
    raise _error(path, missing if not path.exists() else "is not a folder")


def _h5_files(folder: Path) -> list[Path]:
    """Visible ``*.h5`` entries of ``folder`` in natural order of their names: regular files and also broken or
    looping symbolic links (so that reading them reports the problem instead of skipping them silently)."""
    files = [
        p
        for p in folder.glob("*.h5")
        if not p.name.startswith(".") and (p.is_file() or _link_problem(p) is not None)
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


@contextmanager
def _open_read(path: StrPath) -> Iterator[h5py.File]:
    """Open an HDF5 file read-only, turning every I/O problem into a one-line DataFormatError."""
    p = Path(path)
    problem = _link_problem(p)
    if problem is not None:
        raise _error(p, problem)
    if not p.exists():
        raise _error(p, "file not found")
    if p.is_dir():
        raise _error(p, "is a folder, expected an HDF5 file")
    if not os.access(p, os.R_OK):
        raise _error(p, "not readable (permission denied)")
    try:
        f = h5py.File(p, "r")
    except (OSError, ValueError):
        raise _error(p, "not a readable HDF5 file (truncated or corrupt?)") from None
    try:
        yield f
    except OSError:
        raise _error(p, "could not read data from the HDF5 file (truncated or corrupt?)") from None
    finally:
        f.close()


def _dataset(f: h5py.File, key: str, path: StrPath) -> h5py.Dataset:
    """The dataset ``key`` of ``f``; a DataFormatError naming the key when it is missing."""
    obj = f.get(key)
    if obj is None:
        found = ", ".join(sorted(f.keys())[:8]) or "nothing"
        raise _error(path, f"missing dataset '{key}' (found: {found})")
    if not isinstance(obj, h5py.Dataset):
        raise _error(path, f"'{key}' is a group, expected a dataset")
    return obj


def _check_index(index: int, n: int, path: StrPath, key: str) -> int:
    """Normalise a slice index (negative counts from the end); IndexError when out of range."""
    i = operator.index(index)
    if not -n <= i < n:
        raise IndexError(f"{path}: slice index {i} out of range for '{key}' with {n} slices")
    return i % n


def _check_finite(ds: h5py.Dataset, key: str, path: StrPath) -> None:
    """Raise when ``ds`` holds NaN or Inf; reads groups of slices so a big file is never loaded whole."""
    if ds.size == 0:
        return
    per_slice = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize)
    step = max(1, _CHUNK_BYTES // per_slice)
    for start in range(0, ds.shape[0], step):
        block = np.asarray(ds[start : start + step])
        bad = ~np.isfinite(block)
        if bad.any():
            first = start + int(np.argwhere(bad)[0][0])
            bad_slice = block[first - start]
            kinds = [kind for kind, test in (("NaN", np.isnan), ("Inf", np.isinf)) if test(bad_slice).any()]
            raise _error(path, f"'{key}' contains {' and '.join(kinds)} values (first in slice {first})")


def _mask_vector(raw: Any, path: StrPath, width: int | None) -> np.ndarray:
    """Check a stored mask and return it as a bool vector ``(W,)``.

    Accepts any numeric or bool dtype and any shape squeezable to 1-D; values must be 0/1 and the
    length must equal ``width`` when given.
    """
    arr = np.asarray(raw)
    if arr.dtype.kind not in "biuf":
        raise _error(path, f"'mask' has dtype {arr.dtype}, expected a numeric or bool dtype")
    if sum(1 for s in arr.shape if s != 1) > 1:
        raise _error(path, f"'mask' has shape {arr.shape}, expected a vector (W,)")
    vec = arr.reshape(-1)
    if width is not None and vec.shape[0] != width:
        raise _error(path, f"'mask' has length {vec.shape[0]} but 'kspace' has width W={width}")
    ok = (vec == 0) | (vec == 1)
    if not ok.all():
        bad = vec[~ok][0]
        raise _error(path, f"'mask' has values other than 0 and 1 (found {bad})")
    return vec != 0


def _kspace_dataset(f: h5py.File, path: StrPath) -> h5py.Dataset:
    """The ``kspace`` dataset with its dtype and rank checked (rank 3 or 4)."""
    ds = _dataset(f, "kspace", path)
    if ds.dtype.kind != "c":
        raise _error(path, f"'kspace' has dtype {ds.dtype}, expected complex64 or complex128")
    if ds.ndim not in (3, 4):
        raise _error(path, f"'kspace' has rank {ds.ndim} (shape {ds.shape}), expected (S, C, H, W)")
    return ds


def _attr_scalar(value: Any) -> Any:
    """Convert an HDF5 attribute to a plain Python value (bytes decoded, 0-d arrays unwrapped)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, np.generic):
        value = value.item()
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
    return value


# ------------------------------------------------------------------------------------------ file names


def anatomy_from_name(name: str) -> challenge.Anatomy:
    """Anatomy of a volume from its file name (``brain_acc4_1.h5`` -> ``"brain"``).

    The name must start with or contain exactly one of ``brain``/``knee`` (case-insensitive);
    a directory part of ``name`` is ignored. More lenient than :func:`kspacelab.challenge.parse_volume_name`:
    NYU names such as ``file_brain_AXT2_200_2000019.h5`` only contain the anatomy.
    """
    return _anatomy(name, name)


def _anatomy(name: str, path: StrPath) -> challenge.Anatomy:
    base = Path(name).name.lower()
    for anatomy in challenge.ANATOMIES:
        if base.startswith(anatomy):
            return anatomy
    found = [anatomy for anatomy in challenge.ANATOMIES if anatomy in base]
    if len(found) == 1:
        return found[0]
    problem = "contains both" if found else "contains neither"
    names = " and ".join(f"'{anatomy}'" for anatomy in challenge.ANATOMIES)
    raise _error(path, f"cannot tell the anatomy from the file name ({problem} {names})")


# --------------------------------------------------------------------------------------------- writing


def write_error(path: StrPath, err: OSError) -> KspacelabError:
    """A one-line error for an OS error while writing ``path`` (read-only folder, disk full, a file where a
    folder should be, ...): ``"<path>: cannot write (<reason>)"``."""
    reason = err.strerror
    if not reason:  # h5py puts errno and message inside its own text
        found = re.search(r"error message = '([^']*)'", str(err))
        reason = found.group(1) if found else str(err).split("(")[0].strip() or type(err).__name__
    return KspacelabError(f"{os.fspath(path)}: cannot write ({' '.join(reason.split())})")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temporary(target: Path) -> Path:
    return target.parent / f".{target.name}.tmp-{secrets.token_hex(6)}"


# Held by every atomic write from the creation of its temporary to its rename (re-entrant: a write may nest).
_WRITING = threading.RLock()


@contextmanager
def writes_paused() -> Iterator[None]:
    """Hold every atomic write of this process for the duration of the block: the write in progress (in another
    thread) ends first, later ones wait before they create anything. A thread that removes a run's files while
    the run goes on (a device process whose command was killed) rolls back inside this block and exits before
    it ends, so no file appears after the rollback."""
    with _WRITING:
        yield


@contextmanager
def _replacing(path: StrPath) -> Iterator[Path]:
    """A fresh hidden temporary beside ``path`` (its folder created if needed) for the block to write; afterwards
    synced and renamed onto ``path``. On any exception the temporary is deleted and the exception re-raised, an
    OS error as a one-line :class:`KspacelabError` naming ``path``. Runs under :func:`writes_paused`'s lock."""
    with _WRITING, _replacing_unlocked(path) as tmp:
        yield tmp


@contextmanager
def _replacing_unlocked(path: StrPath) -> Iterator[Path]:
    target = Path(path)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary(target)
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_error(target, err) from err
        raise


@contextmanager
def atomic_h5(path: StrPath) -> Iterator[h5py.File]:
    """Write an HDF5 file atomically.

    Yields an ``h5py.File`` open for writing on a hidden temporary ``.NAME.tmp-<random>`` in the target
    directory (created if needed). On success the file is flushed, closed, synced and renamed onto
    ``path`` with ``os.replace``; on any exception the temporary is deleted and the exception re-raised,
    so ``path`` is either untouched or the complete new file. An OS error (read-only folder, disk full, a
    file in place of a folder) becomes a one-line :class:`KspacelabError` naming ``path``.
    """
    with _replacing(path) as tmp:
        # exclusive create: a random name never clobbers a concurrent writer's temporary
        f = h5py.File(tmp, "x")
        try:
            yield f
            f.flush()
        finally:
            f.close()


def check_replaceable_json(path: StrPath, what: str, ours: Callable[[Any], bool]) -> None:
    """Refuse a JSON output file that would replace something else: ``path`` is a folder, lies under a file, or
    exists and is not one of ``ours`` (its parsed content fails the test; unreadable or non-JSON counts as
    foreign). One-line KspacelabError naming the file and ``what`` it should be; call it before the run."""
    path = Path(path)
    try:
        for folder in reversed(path.parents):
            if folder.exists() and not folder.is_dir():
                raise KspacelabError(f"{path}: cannot write the {what}, {folder} is a file, not a folder")
        if path.is_dir():
            raise KspacelabError(f"{path}: exists and is a folder, expected the {what}")
        if path.exists() or path.is_symlink():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError):
                old = None
            if old is None or not ours(old):
                raise KspacelabError(f"{path}: exists and is not a kspacelab {what}; refusing to replace it")
    except OSError as err:
        raise write_error(path, err) from err


def atomic_text(path: StrPath, text: str) -> None:
    """Write a text file atomically (hidden temporary in the same folder, synced, renamed onto ``path``); the
    temporary is removed on any failure, and an OS error becomes a one-line :class:`KspacelabError`."""
    with _replacing(path) as tmp, open(tmp, "x", encoding="utf-8") as f:
        f.write(text)


def atomic_npy(path: StrPath, array: np.ndarray) -> None:
    """Write a numpy array as ``.npy`` atomically (as :func:`atomic_text`); ``path`` is used as given."""
    with _replacing(path) as tmp, open(tmp, "xb") as f:
        np.save(f, array)


def _present(path: Path) -> bool:
    """Whether anything (a file, a folder, a link, even a broken one) is at ``path``; True when it cannot be told."""
    try:
        return path.exists() or path.is_symlink()
    except OSError:
        return True


class OutputSet:
    """The files one run writes, so that a failed run leaves none of its new files behind.

    :meth:`claim` each output path before writing it; :func:`all_or_nothing` calls :meth:`rollback` when the run
    fails, which deletes the files that did not exist before the run and the folders it created (when empty).
    Files that existed before (earlier outputs replaced by this run) stay as written.
    """

    def __init__(self) -> None:
        self.created: list[Path] = []
        self.folders: list[Path] = []

    def claim(self, path: StrPath) -> Path:
        """Record ``path`` (and its missing parent folders) as new outputs of this run; returns ``path``."""
        p = Path(path)
        missing = []
        for parent in p.parents:
            if _present(parent):
                break
            missing.append(parent)
        self.folders.extend(reversed(missing))
        if not _present(p) and p not in self.created:
            self.created.append(p)
        return p

    def rollback(self) -> None:
        """Delete the new files (and a temporary still being written beside one: a process that ends its run from
        another thread), then the new folders that are empty."""
        for p in reversed(self.created):
            with contextlib.suppress(OSError):
                for tmp in p.parent.glob(f".{p.name}.tmp-*"):
                    tmp.unlink(missing_ok=True)
                p.unlink(missing_ok=True)
        for folder in sorted(set(self.folders), key=lambda f: len(f.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()
        self.created.clear()
        self.folders.clear()


@contextmanager
def all_or_nothing(outputs: OutputSet | None = None) -> Iterator[OutputSet]:
    """Yield an :class:`OutputSet` (``outputs`` or a new one) and roll it back when the body raises (Ctrl-C
    included): a run writes all of its outputs or none of the new ones."""
    run = outputs if outputs is not None else OutputSet()
    try:
        yield run
    except BaseException:
        with sigint_ignored():  # a second Ctrl-C (or SIGINT) must not stop the rollback half-way
            run.rollback()
        raise


@contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT (Ctrl-C) in the block when called from the main thread (elsewhere a no-op): a SIGINT that
    arrives meanwhile is dropped. Processes started in the block inherit the ignored signal from their first
    instruction."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def is_reconstruction_file(path: StrPath) -> bool:
    """True when ``path`` is a readable HDF5 file with a ``reconstruction`` dataset (a kspacelab output that
    a new run may replace)."""
    try:
        with h5py.File(path, "r") as f:
            return isinstance(f.get("reconstruction"), h5py.Dataset)
    except (OSError, ValueError):
        return False


def write_kspace_file(path: StrPath, kspace: np.ndarray, mask: np.ndarray) -> None:
    """Write an SNU k-space file.

    Args:
        path: output ``.h5`` file.
        kspace: complex ``(S, C, H, W)`` (or single-coil ``(S, H, W)``), stored as complex64 ``kspace``.
        mask: ``(W,)`` 0/1 or bool, stored as float32 ``mask`` like the SNU files.
    """
    k = np.asarray(kspace)
    if not np.iscomplexobj(k):
        raise ValueError(f"kspace must be complex, got {k.dtype}")
    if k.ndim not in (3, 4):
        raise ValueError(f"kspace must have shape (S, C, H, W), got {k.shape}")
    m = np.asarray(mask).reshape(-1)
    if m.shape[0] != k.shape[-1]:
        raise ValueError(f"mask length {m.shape[0]} does not match kspace width {k.shape[-1]}")
    if not np.isin(m, (0, 1)).all():
        raise ValueError("mask must hold only 0 and 1")
    with atomic_h5(path) as f:
        f.create_dataset("kspace", data=k.astype(np.complex64, copy=False))
        f.create_dataset("mask", data=m.astype(np.float32))


def write_image_file(
    path: StrPath,
    image_input: np.ndarray,
    image_grappa: np.ndarray,
    image_label: np.ndarray,
    max_value: float | None = None,
    norm: float | None = None,
) -> None:
    """Write an SNU image file: float32 ``(S, h, w)`` datasets ``image_input``, ``image_grappa``,
    ``image_label`` and attrs ``max`` (default ``image_label.max()``) and ``norm`` (default: the L2 norm
    of ``image_label`` over the whole volume)."""
    arrays = {
        key: np.asarray(a, dtype=np.float32)
        for key, a in zip(IMAGE_KEYS, (image_input, image_grappa, image_label), strict=True)
    }
    label = arrays["image_label"]
    for key, a in arrays.items():
        if a.ndim != 3:
            raise ValueError(f"{key} must have shape (S, h, w), got {a.shape}")
        if a.shape != label.shape:
            raise ValueError(f"{key} has shape {a.shape} but image_label has {label.shape}")
    max_attr = float(label.max()) if max_value is None else float(max_value)
    norm_attr = float(np.linalg.norm(label.astype(np.float64).ravel())) if norm is None else float(norm)
    with atomic_h5(path) as f:
        for key, a in arrays.items():
            f.create_dataset(key, data=a)
        f.attrs["max"] = max_attr
        f.attrs["norm"] = norm_attr


def write_reconstruction(path: StrPath, reconstruction: np.ndarray) -> None:
    """Write a reconstruction file: dataset ``reconstruction`` float32 ``(S, h, w)``."""
    r = np.asarray(reconstruction)
    if r.ndim != 3:
        raise ValueError(f"reconstruction must have shape (S, h, w), got {r.shape}")
    if np.iscomplexobj(r):
        raise ValueError("reconstruction must be real (a magnitude image)")
    with atomic_h5(path) as f:
        f.create_dataset("reconstruction", data=r.astype(np.float32, copy=False))


# --------------------------------------------------------------------------------------------- reading


def kspace_shape(path: StrPath) -> tuple[int, int, int, int]:
    """Shape ``(S, C, H, W)`` of the ``kspace`` dataset (a single-coil ``(S, H, W)`` file gives C=1)."""
    with _open_read(path) as f:
        shape = tuple(int(s) for s in _kspace_dataset(f, path).shape)
    if len(shape) == 3:
        return (shape[0], 1, shape[1], shape[2])
    return (shape[0], shape[1], shape[2], shape[3])


def read_mask(path: StrPath) -> np.ndarray:
    """The ``mask`` of a k-space file as bool ``(W,)``."""
    with _open_read(path) as f:
        return _mask_vector(_dataset(f, "mask", path)[()], path, None)


def read_kspace_slice(path: StrPath, index: int) -> tuple[np.ndarray, np.ndarray]:
    """One slice of an SNU k-space file.

    Returns:
        ``(kspace, mask)``: complex64 ``(C, H, W)`` (C=1 for a single-coil file) and bool ``(W,)``.
    """
    with _open_read(path) as f:
        ds = _kspace_dataset(f, path)
        i = _check_index(index, ds.shape[0], path, "kspace")
        k = np.asarray(ds[i], dtype=np.complex64)
        mask = _mask_vector(_dataset(f, "mask", path)[()], path, ds.shape[-1])
    if k.ndim == 2:
        k = k[None]
    return k, mask


def _image_dataset(f: h5py.File, key: str, path: StrPath) -> h5py.Dataset:
    ds = _dataset(f, key, path)
    if ds.dtype.kind != "f":
        raise _error(path, f"'{key}' has dtype {ds.dtype}, expected a float dtype")
    if ds.ndim != 3:
        raise _error(path, f"'{key}' has rank {ds.ndim} (shape {ds.shape}), expected (S, h, w)")
    return ds


def read_image_slice(path: StrPath, index: int, key: str = "image_label") -> np.ndarray:
    """Slice ``index`` of image dataset ``key`` as float32 ``(h, w)``."""
    with _open_read(path) as f:
        ds = _image_dataset(f, key, path)
        i = _check_index(index, ds.shape[0], path, key)
        return np.asarray(ds[i], dtype=np.float32)


def read_image_volume(path: StrPath, key: str = "image_label") -> np.ndarray:
    """The whole image dataset ``key`` as float32 ``(S, h, w)``."""
    with _open_read(path) as f:
        return np.asarray(_image_dataset(f, key, path)[()], dtype=np.float32)


def read_image_attrs(path: StrPath) -> dict[str, float]:
    """Attrs ``max`` (required) and ``norm`` of an image file as floats.

    A missing ``norm`` is computed as the L2 norm of ``image_label`` over the volume.
    """
    with _open_read(path) as f:
        if "max" not in f.attrs:
            raise _error(path, "missing attribute 'max' (the SSIM data range of image_label)")
        out = {"max": float(_attr_scalar(f.attrs["max"]))}
        if "norm" in f.attrs:
            out["norm"] = float(_attr_scalar(f.attrs["norm"]))
        else:
            label = np.asarray(_image_dataset(f, "image_label", path)[()], dtype=np.float64)
            out["norm"] = float(np.linalg.norm(label.ravel()))
    return out


class Box(NamedTuple):
    """A lesion box of the 2026 challenge's ``attrs['annotations']``: pixels of the 384 x 384 image space, ``x``
    along columns and ``y`` along rows from the top-left corner."""

    x: float
    y: float
    width: float
    height: float
    label: str = ""


def _parse_annotations(raw: Any, path: StrPath, slices: int, shape: tuple[int, int]) -> dict[int, list[Box]]:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    raw = _attr_scalar(raw)
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if not isinstance(raw, str):
        raise _error(path, f"attrs['annotations'] must be a JSON string, got {type(raw).__name__}")
    try:
        data = json.loads(raw)
    except ValueError as err:
        raise _error(path, f"attrs['annotations'] is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise _error(path, "attrs['annotations'] must map slice indices to lists of boxes")
    height, width = shape
    out: dict[int, list[Box]] = {}
    for key, boxes in data.items():
        try:
            index = int(key)
        except ValueError:
            raise _error(path, f"attrs['annotations']: slice key {key!r} is not an integer") from None
        if not 0 <= index < slices:
            raise _error(
                path, f"attrs['annotations']: slice {index} out of range (the file has {slices} slices)"
            )
        if not isinstance(boxes, list):
            raise _error(path, f"attrs['annotations'][{key!r}] must be a list of boxes")
        parsed = []
        for box in boxes:
            fields = ("x", "y", "width", "height")
            if not isinstance(box, dict) or any(
                isinstance(box.get(f), bool) or not isinstance(box.get(f), (int, float)) for f in fields
            ):
                raise _error(
                    path, f"attrs['annotations'][{key!r}]: a box needs numeric x, y, width, height: {box!r}"
                )
            x, y, w, h = (float(box[f]) for f in fields)
            if not all(np.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
                raise _error(
                    path,
                    f"attrs['annotations'][{key!r}]: box with a non-positive or non-finite size: {box!r}",
                )
            if x >= width or y >= height or x + w <= 0 or y + h <= 0:
                raise _error(
                    path,
                    f"attrs['annotations'][{key!r}]: box {box!r} lies outside the {height} x {width} image",
                )
            parsed.append(Box(x, y, w, h, str(box.get("label", ""))))
        out[index] = parsed
    return out


def read_annotations(path: StrPath) -> dict[int, list[Box]]:
    """The lesion boxes of an image file (``attrs['annotations']``, the 2026 challenge), validated against the
    file's ``image_label``: slice index -> boxes; ``{}`` when the file has none.

    Raises:
        DataFormatError: one line naming the file: not JSON, not a mapping of slice indices to box lists, a slice
            out of range, a box without numeric ``x, y, width, height``, of non-positive size, or entirely outside
            the image (a box partly outside is kept; the metric clips it).
    """
    with _open_read(path) as f:
        if "annotations" not in f.attrs:
            return {}
        label = _image_dataset(f, "image_label", path)
        return _parse_annotations(f.attrs["annotations"], path, int(label.shape[0]), tuple(label.shape[-2:]))


def write_annotations(path: StrPath, annotations: Mapping[int, Sequence[Box]]) -> None:
    """Store ``annotations`` in an existing image file's ``attrs['annotations']`` (the format :func:`read_annotations`
    reads; validated first, so a bad box never reaches the file)."""
    text = json.dumps(
        {
            str(int(k)): [
                {"x": b.x, "y": b.y, "width": b.width, "height": b.height, "label": b.label} for b in v
            ]
            for k, v in sorted(annotations.items())
        }
    )
    with _open_read(path) as f:
        label = _image_dataset(f, "image_label", path)
        _parse_annotations(text, path, int(label.shape[0]), tuple(label.shape[-2:]))
    try:
        with h5py.File(path, "r+") as f:
            f.attrs["annotations"] = text
    except OSError as err:
        raise write_error(path, err) from err


def read_reconstruction(path: StrPath, expected_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Read and check a reconstruction file: ``reconstruction`` float ``(S, h, w)``, finite, and of
    ``expected_shape`` when given. Returns float32 ``(S, h, w)``."""
    with _open_read(path) as f:
        ds = _dataset(f, "reconstruction", path)
        if ds.dtype.kind != "f":
            raise _error(path, f"'reconstruction' has dtype {ds.dtype}, expected a float dtype")
        if ds.ndim != 3:
            raise _error(path, f"'reconstruction' has rank {ds.ndim} (shape {ds.shape}), expected (S, h, w)")
        if expected_shape is not None and tuple(ds.shape) != tuple(expected_shape):
            raise _error(
                path, f"'reconstruction' has shape {tuple(ds.shape)}, expected {tuple(expected_shape)}"
            )
        _check_finite(ds, "reconstruction", path)
        return np.asarray(ds[()], dtype=np.float32)


# ------------------------------------------------------------------------------------------ validation


def validate_kspace_file(path: StrPath, allow_single_coil: bool = False) -> None:
    """Check an SNU k-space file; raise a one-line DataFormatError naming the key at fault.

    Checks: readable HDF5; ``kspace`` present, complex, rank 4 ``(S, C, H, W)`` (rank 3 only with
    ``allow_single_coil``), at least one slice, at least one coil, non-empty ``H`` and ``W``, finite (checked
    in groups of slices); ``mask`` present, numeric or bool, squeezable to ``(W,)``, values 0/1, at least one
    sampled line.
    """
    with _open_read(path) as f:
        ds = _kspace_dataset(f, path)
        if ds.ndim == 3 and not allow_single_coil:
            raise _error(path, f"'kspace' has rank 3 (shape {ds.shape}), expected multi-coil (S, C, H, W)")
        if ds.shape[0] == 0:
            raise _error(path, "'kspace' has no slices")
        if ds.ndim == 4 and ds.shape[1] == 0:
            raise _error(path, f"'kspace' has no coils (shape {ds.shape}, expected (S, C, H, W) with C >= 1)")
        if 0 in ds.shape[-2:]:
            raise _error(path, f"'kspace' has an empty image axis (shape {ds.shape})")
        mask = _mask_vector(_dataset(f, "mask", path)[()], path, ds.shape[-1])
        if not mask.any():
            raise _error(path, "'mask' samples no k-space line (all zeros)")
        _check_finite(ds, "kspace", path)


def validate_image_file(path: StrPath, expected_slices: int | None = None) -> None:
    """Check an SNU image file; raise a one-line DataFormatError naming the key at fault.

    Checks: readable HDF5; ``image_label`` present, float, rank 3, finite; ``image_input`` and
    ``image_grappa`` (when present) float, rank 3, same shape as ``image_label``, finite; attr ``max``
    present, positive and finite; slice count equal to ``expected_slices`` when given.
    """
    with _open_read(path) as f:
        label = _image_dataset(f, "image_label", path)
        for key in ("image_input", "image_grappa"):
            if key in f:
                ds = _image_dataset(f, key, path)
                if ds.shape != label.shape:
                    raise _error(path, f"'{key}' has shape {ds.shape} but 'image_label' has {label.shape}")
        if expected_slices is not None and label.shape[0] != expected_slices:
            raise _error(
                path,
                f"has {label.shape[0]} slices in image_label but its k-space file has {expected_slices}",
            )
        if "max" not in f.attrs:
            raise _error(path, "missing attribute 'max' (the SSIM data range of image_label)")
        try:
            max_value = float(_attr_scalar(f.attrs["max"]))
        except (TypeError, ValueError):
            raise _error(path, "attribute 'max' is not a number") from None
        if not (np.isfinite(max_value) and max_value > 0):
            raise _error(path, f"attribute 'max' is {max_value}, expected a positive finite number")
        if "norm" in f.attrs:
            try:
                norm = float(_attr_scalar(f.attrs["norm"]))
            except (TypeError, ValueError):
                raise _error(path, "attribute 'norm' is not a number") from None
            if not np.isfinite(norm):
                raise _error(path, f"attribute 'norm' is {norm}, expected a finite number")
        for key in IMAGE_KEYS:
            if key in f:
                _check_finite(f[key], key, path)


def validate_pair(kspace_path: StrPath, image_path: StrPath) -> None:
    """Check a k-space file and its image partner: both present and valid, same slice count."""
    kp, ip = Path(kspace_path), Path(image_path)
    if not kp.exists():
        raise _error(kp, f"missing k-space file (partner of image file {ip})")
    if not ip.exists():
        raise _error(ip, f"missing image file (partner of k-space file {kp})")
    validate_kspace_file(kp)
    validate_image_file(ip, expected_slices=kspace_shape(kp)[0])


# ------------------------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class Volume:
    """One SNU volume: a k-space file and (optionally) its image partner.

    Attributes:
        name: file name shared by both files, e.g. ``"brain_acc4_1.h5"``.
        kspace_path: the ``kspace/NAME.h5`` file.
        image_path: the ``image/NAME.h5`` file, or None when there is none (leaderboard without targets).
        anatomy: ``"brain"`` or ``"knee"`` (from the name).
        acceleration: from ``accN`` in the name or the leaderboard ``accN/`` folder; None if unknown.
        split: ``"train"``, ``"val"``, ``"leaderboard"``, ``""`` for a bare folder, or :data:`NYU_SPLIT` for an NYU
            fastMRI file.
    """

    name: str
    kspace_path: Path
    image_path: Path | None
    anatomy: str
    acceleration: int | None
    split: str


def discover_folder(
    folder: StrPath,
    split: str = "",
    acceleration: int | None = None,
    require_images: bool = False,
) -> list[Volume]:
    """List the volumes of a folder holding ``kspace/*.h5`` and optionally ``image/*.h5`` (same names).

    Volumes come in natural order of their names. An image file without a k-space partner, or (with
    ``require_images``) a k-space file without an image partner, raises a DataFormatError naming the
    missing file; so does a folder without ``kspace/`` or without ``.h5`` files in it. ``acceleration``
    (the leaderboard ``accN/`` folder) must agree with an ``accN`` in a file name.
    """
    root = Path(folder)
    _check_folder(root, "folder not found")
    kdir, idir = root / "kspace", root / "image"
    for sub in (kdir, idir):
        problem = _link_problem(sub)
        if problem is not None:
            raise _error(sub, problem)
    if not kdir.is_dir():
        raise _error(root, "has no kspace/ subfolder")
    kfiles = _h5_files(kdir)
    if not kfiles:
        raise _error(kdir, "no .h5 files in this folder")
    if require_images and not idir.is_dir():
        raise _error(idir, "missing image/ subfolder (image files are required here)")
    ifiles = {p.name: p for p in _h5_files(idir)} if idir.is_dir() else {}
    knames = {p.name for p in kfiles}
    for name in sorted(ifiles, key=natural_key):
        if name not in knames:
            raise _error(kdir / name, f"missing k-space file (partner of image file {ifiles[name]})")
    volumes = []
    for kp in kfiles:
        ip = ifiles.get(kp.name)
        if ip is None and require_images:
            raise _error(idir / kp.name, f"missing image file (partner of k-space file {kp})")
        acc = challenge.acceleration_in_name(kp.name)
        if acc is not None and acceleration is not None and acc != acceleration:
            raise _error(
                kp,
                f"file name says {challenge.acc_folder(acc)} but it lies in an "
                f"{challenge.acc_folder(acceleration)} folder",
            )
        volumes.append(
            Volume(
                name=kp.name,
                kspace_path=kp,
                image_path=ip,
                anatomy=_anatomy(kp.name, kp),
                acceleration=acc if acc is not None else acceleration,
                split=split,
            )
        )
    return volumes


def discover_split(root: StrPath, split: str, require_images: bool = False) -> list[Volume]:
    """The volumes of the split folder ``root/split`` (``train``, ``val``, ...), as :func:`discover_folder`;
    a missing split folder is a DataFormatError naming it."""
    folder = Path(root) / split
    _check_folder(folder, f"split folder '{split}' not found under the dataset root")
    return discover_folder(folder, split=split, require_images=require_images)


def _acc_folders(folder: Path) -> list[tuple[str, int]]:
    """``(name, acceleration)`` of the ``accN/`` subfolders of ``folder``, in natural order."""
    out = []
    for p in folder.iterdir():
        acc = challenge.acceleration_of_folder(p.name)
        if acc is not None and _link_problem(p) is not None:
            raise _error(p, str(_link_problem(p)))
        if acc is not None and p.is_dir():
            out.append((p.name, acc))
    return sorted(out, key=lambda t: t[1])


def discover_snu(root: StrPath) -> dict[str, list[Volume]]:
    """Discover an SNU dataset in one of three shapes.

    (a) a dataset root with any of ``train/``, ``val/``, ``leaderboard/``: keys ``"train"``, ``"val"``,
    ``"leaderboard/acc4"``, ``"leaderboard/acc8"``; (b) a leaderboard folder with ``acc4/`` and/or
    ``acc8/``: keys ``"acc4"``, ``"acc8"``; (c) a single folder with ``kspace/``: key ``""``.
    """
    base = Path(root)
    _check_folder(base, "folder not found")
    for name in (*SNU_SPLITS, "leaderboard", "kspace"):
        problem = _link_problem(base / name)
        if problem is not None:
            raise _error(base / name, problem)
    found: dict[str, list[Volume]] = {}
    split_dirs = [s for s in (*SNU_SPLITS, "leaderboard") if (base / s).is_dir()]
    if split_dirs:
        for split in SNU_SPLITS:
            if (base / split).is_dir():
                found[split] = discover_folder(base / split, split=split)
        board = base / "leaderboard"
        if board.is_dir():
            accs = _acc_folders(board)
            if not accs:
                raise _error(board, f"has no {_ACC_FOLDERS_OR} subfolder")
            for name, acc in accs:
                found[f"leaderboard/{name}"] = discover_folder(board / name, "leaderboard", acc)
        return found
    accs = _acc_folders(base)
    if accs:
        return {name: discover_folder(base / name, "leaderboard", acc) for name, acc in accs}
    if (base / "kspace").is_dir():
        return {"": discover_folder(base)}
    raise _error(
        base,
        "not an SNU dataset: expected train/, val/ or leaderboard/ (dataset root), "
        f"{_ACC_FOLDERS_OR} (leaderboard folder), or kspace/ (single folder)",
    )


# ------------------------------------------------------------------------------------------ NYU fastMRI


@dataclass(frozen=True)
class NyuInfo:
    """Header of an NYU fastMRI file.

    Attributes:
        path: the file.
        kspace_shape: ``(S, C, H, W)`` multi-coil or ``(S, H, W)`` single-coil.
        multicoil: True for rank-4 k-space.
        target_key: ``"reconstruction_rss"``, ``"reconstruction_esc"``, or None (test files).
        has_mask: whether the file carries a ``mask`` dataset (test files).
        acquisition, max_value, norm, patient_id: file attrs ``acquisition``, ``max``, ``norm``,
            ``patient_id`` (None when absent).
        encoding_size, recon_size: ``(x, y, z)`` matrix sizes from ``ismrmrd_header``.
        padding_left, padding_right: the sampled phase-encoding range ``[padding_left, padding_right)``,
            computed as fastMRI does (``enc_y // 2 - center``, ``padding_left + maximum + 1``).
        attrs: every file attribute as a plain Python value.
    """

    path: Path
    kspace_shape: tuple[int, ...]
    multicoil: bool
    target_key: str | None
    has_mask: bool
    acquisition: str | None
    max_value: float | None
    norm: float | None
    patient_id: str | None
    encoding_size: tuple[int, int, int]
    recon_size: tuple[int, int, int]
    padding_left: int
    padding_right: int
    attrs: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def num_slices(self) -> int:
        """Number of slices S."""
        return self.kspace_shape[0]


def discover_nyu(folder: StrPath) -> list[Path]:
    """The ``*.h5`` files of an NYU fastMRI folder in natural order; DataFormatError if there are none."""
    base = Path(folder)
    _check_folder(base, "folder not found")
    files = _h5_files(base)
    if not files:
        raise _error(base, "no .h5 files in this folder")
    return files


def _xml_int(root: ET.Element, ns: str, steps: tuple[str, ...], path: StrPath) -> int:
    """Integer text of the element at ``steps`` below ``root`` in the ISMRMRD header."""
    query = "/".join(f"{ns}{s}" for s in steps)
    el = root.find(query)
    if el is None or el.text is None:
        raise _error(path, f"'ismrmrd_header' has no element {'/'.join(steps)}")
    try:
        return int(float(el.text.strip()))
    except ValueError:
        raise _error(path, f"'ismrmrd_header' element {'/'.join(steps)} is not a number") from None


def _parse_ismrmrd(raw: Any, path: StrPath) -> tuple[tuple[int, int, int], tuple[int, int, int], int, int]:
    """``(encoding_size, recon_size, center, maximum)`` from an ISMRMRD XML header."""
    data = raw if isinstance(raw, bytes | str) else _attr_scalar(raw)
    if not isinstance(data, bytes | str):
        raise _error(path, "'ismrmrd_header' is not an XML string")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise _error(path, f"'ismrmrd_header' is not valid XML ({exc})") from None
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    enc = ("encoding", "encodedSpace", "matrixSize")
    rec = ("encoding", "reconSpace", "matrixSize")
    lims = ("encoding", "encodingLimits", "kspace_encoding_step_1")
    enc_size = tuple(_xml_int(root, ns, (*enc, a), path) for a in "xyz")
    rec_size = tuple(_xml_int(root, ns, (*rec, a), path) for a in "xyz")
    center = _xml_int(root, ns, (*lims, "center"), path)
    maximum = _xml_int(root, ns, (*lims, "maximum"), path)
    return (
        (enc_size[0], enc_size[1], enc_size[2]),
        (rec_size[0], rec_size[1], rec_size[2]),
        center,
        maximum,
    )


def read_nyu_header(path: StrPath) -> NyuInfo:
    """Read the header of an NYU fastMRI file (shapes, target key, attrs, ISMRMRD sizes and padding)."""
    p = Path(path)
    with _open_read(p) as f:
        ks = _kspace_dataset(f, p)
        shape = tuple(int(s) for s in ks.shape)
        multicoil = len(shape) == 4
        keys = NYU_TARGET_KEYS if multicoil else NYU_TARGET_KEYS[::-1]
        target_key = next((k for k in keys if k in f), None)
        enc_size, rec_size, center, maximum = _parse_ismrmrd(_dataset(f, "ismrmrd_header", p)[()], p)
        attrs = {str(k): _attr_scalar(v) for k, v in f.attrs.items()}
        has_mask = "mask" in f

    def number(key: str) -> float | None:
        v = attrs.get(key)
        try:
            return None if v is None else float(v)
        except (TypeError, ValueError):
            raise _error(p, f"attribute '{key}' is not a number") from None

    def text(key: str) -> str | None:
        v = attrs.get(key)
        return None if v is None else str(v)

    padding_left = enc_size[1] // 2 - center
    return NyuInfo(
        path=p,
        kspace_shape=shape,
        multicoil=multicoil,
        target_key=target_key,
        has_mask=has_mask,
        acquisition=text("acquisition"),
        max_value=number("max"),
        norm=number("norm"),
        patient_id=text("patient_id"),
        encoding_size=enc_size,
        recon_size=rec_size,
        padding_left=padding_left,
        padding_right=padding_left + maximum + 1,
        attrs=attrs,
    )


def read_nyu_slice(path: StrPath, index: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """One slice of an NYU fastMRI file.

    Returns:
        ``(kspace, mask, target)``: complex64 ``(C, H, W)`` (multi-coil) or ``(H, W)`` (single-coil);
        bool ``(W,)`` or None when the file has no ``mask``; float32 ``(h, w)`` target
        (``reconstruction_rss``/``reconstruction_esc``) or None when the file has none.
    """
    with _open_read(path) as f:
        ks = _kspace_dataset(f, path)
        i = _check_index(index, ks.shape[0], path, "kspace")
        kspace = np.asarray(ks[i], dtype=np.complex64)
        mask = _mask_vector(f["mask"][()], path, ks.shape[-1]) if "mask" in f else None
        keys = NYU_TARGET_KEYS if ks.ndim == 4 else NYU_TARGET_KEYS[::-1]
        target = None
        for key in keys:
            if key in f:
                tds = _dataset(f, key, path)
                if tds.shape[0] != ks.shape[0]:
                    raise _error(path, f"'{key}' has {tds.shape[0]} slices but 'kspace' has {ks.shape[0]}")
                target = np.asarray(tds[i], dtype=np.float32)
                break
    return kspace, mask, target


def ismrmrd_header(
    encoding_size: tuple[int, int, int],
    recon_size: tuple[int, int, int],
    center: int | None = None,
    maximum: int | None = None,
) -> bytes:
    """A minimal ISMRMRD XML header with what :func:`read_nyu_header` (and fastMRI's loader) read.

    Args:
        encoding_size: ``(x, y, z)`` encoded matrix: ``(H, W, 1)`` of the k-space.
        recon_size: ``(x, y, z)`` reconstruction matrix: ``(h, w, 1)`` of the target.
        center, maximum: ``kspace_encoding_step_1`` centre line and last line (defaults ``W // 2`` and ``W - 1``:
            every phase-encoding line lies in the sampled range, so the padding is ``[0, W)``).

    Returns:
        UTF-8 XML bytes in the ISMRMRD namespace.
    """
    center = encoding_size[1] // 2 if center is None else int(center)
    maximum = encoding_size[1] - 1 if maximum is None else int(maximum)

    def size(v: tuple[int, int, int]) -> str:
        return f"<matrixSize><x>{int(v[0])}</x><y>{int(v[1])}</y><z>{int(v[2])}</z></matrixSize>"

    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<ismrmrdHeader xmlns="{ISMRMRD_NAMESPACE}">\n'
        "  <encoding>\n"
        f"    <encodedSpace>{size(encoding_size)}</encodedSpace>\n"
        f"    <reconSpace>{size(recon_size)}</reconSpace>\n"
        "    <encodingLimits>\n"
        f"      <kspace_encoding_step_1><minimum>0</minimum><maximum>{maximum}</maximum><center>{center}</center>"
        "</kspace_encoding_step_1>\n"
        "    </encodingLimits>\n"
        "  </encoding>\n"
        "</ismrmrdHeader>\n"
    ).encode()


def write_nyu_file(
    path: StrPath,
    kspace: np.ndarray,
    target: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    attrs: Mapping[str, str | int | float] | None = None,
    header: str | bytes | None = None,
) -> None:
    """Write one NYU fastMRI file atomically (as :func:`atomic_h5`), readable by :func:`read_nyu_header`,
    :func:`read_nyu_slice` and fastMRI's own ``SliceDataset``.

    Args:
        path: output ``.h5`` file.
        kspace: complex ``(S, H, W)`` single-coil or ``(S, C, H, W)`` multi-coil, stored as complex64 ``kspace``.
        target: float ``(S, h, w)``, stored as float32 ``reconstruction_esc`` (single-coil) or
            ``reconstruction_rss`` (multi-coil); None for a test file.
        mask: ``(W,)`` 0/1 or bool sampling mask of an undersampled (test) file, stored as bool ``mask``.
        attrs: file attributes (``acquisition``, ``max``, ``norm``, ``patient_id``, ``acceleration``,
            ``num_low_frequency``, ...): strings, ints or floats.
        header: the ``ismrmrd_header`` XML; None builds one (:func:`ismrmrd_header`) from the k-space size and
            the target's size, which a file without a target must then state here.

    Raises:
        ValueError: bad shapes, dtypes or values, or a header that cannot be parsed (nothing is written).
    """
    k = np.asarray(kspace)
    if not np.iscomplexobj(k) or k.ndim not in (3, 4):
        raise ValueError(f"kspace must be complex (S, H, W) or (S, C, H, W), got {k.dtype} {k.shape}")
    datasets: dict[str, np.ndarray] = {"kspace": k.astype(np.complex64, copy=False)}
    if target is not None:
        t = np.asarray(target)
        if np.iscomplexobj(t) or t.ndim != 3 or t.shape[0] != k.shape[0]:
            raise ValueError(f"target must be real (S, h, w) with S={k.shape[0]}, got {t.dtype} {t.shape}")
        datasets[NYU_TARGET_KEYS[0] if k.ndim == 4 else NYU_TARGET_KEYS[1]] = t.astype(np.float32, copy=False)
    if mask is not None:
        m = np.asarray(mask).reshape(-1)
        if m.shape[0] != k.shape[-1] or not np.isin(m, (0, 1)).all():
            raise ValueError(f"mask must be 0/1 of length W={k.shape[-1]}, got shape {np.shape(mask)}")
        datasets["mask"] = m.astype(bool)
    if header is None:
        if target is None:
            raise ValueError("a file without a target needs header= (it states the reconstruction size)")
        t_shape = datasets[NYU_TARGET_KEYS[0] if k.ndim == 4 else NYU_TARGET_KEYS[1]].shape
        header = ismrmrd_header((k.shape[-2], k.shape[-1], 1), (t_shape[-2], t_shape[-1], 1))
    raw = header.encode() if isinstance(header, str) else bytes(header)
    try:
        _parse_ismrmrd(raw, path)
    except DataFormatError as err:
        raise ValueError(err.problem) from None
    with atomic_h5(path) as f:
        for key, data in datasets.items():
            f.create_dataset(key, data=data)
        f.create_dataset("ismrmrd_header", data=np.bytes_(raw))
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
