"""Classical images (GRAPPA, SENSE, CS, zero-filled) of single slices, computed once and cached on disk.

Two-stage models read a second, classical image beside k-space (``image_grappa`` of the challenge's image files).
Where a file lacks it, :func:`classical_slice` computes it from the file's k-space and mask with
:data:`kspacelab.classical.METHODS` and keeps the result under the cache folder: ``$KSPACELAB_CACHE`` if set, else
``~/.cache/kspacelab/classical``. An entry is keyed by the SHA-256 of the k-space file's bytes, the slice, the method,
:data:`kspacelab.classical.ALGORITHM_VERSION` and the output size, so neither a changed file nor a changed
algorithm is ever served a stale image; files are written atomically, so parallel
DataLoader workers and interrupted runs leave no half-written entry.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from kspacelab import classical, formats
from kspacelab.classical import METHODS

__all__ = ["CACHE_ENV", "cache_folder", "classical_slice", "file_digest"]

#: Environment variable naming the cache folder.
CACHE_ENV = "KSPACELAB_CACHE"
_DIGESTS: dict[tuple[str, int, int], str] = {}


def cache_folder() -> Path:
    """Where classical images are cached."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root) if root else Path.home() / ".cache" / "kspacelab"
    return base / "classical"


def file_digest(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes (remembered per path, size and modification time)."""
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def classical_slice(kspace_path: str | Path, index: int, method: str, size: tuple[int, int]) -> np.ndarray:
    """Classical reconstruction ``(h, w)`` float32 of slice ``index`` of a k-space file with its own mask.

    Raises:
        ValueError: an unknown method, or a method that fails on this slice (e.g. no calibration block).
    """
    if method not in METHODS:
        raise ValueError(f"unknown classical method {method!r}; choose one of {', '.join(METHODS)}")
    h, w = int(size[0]), int(size[1])
    digest = file_digest(kspace_path)
    version = classical.ALGORITHM_VERSION
    entry = cache_folder() / digest[:2] / f"{digest}_{index}_{method}_v{version}_{h}x{w}.npy"
    if entry.is_file():
        try:
            cached = np.load(entry, allow_pickle=False)
            if cached.shape == (h, w) and cached.dtype == np.float32:
                return cached
        except (OSError, ValueError):
            pass  # a damaged entry is recomputed
    kspace, mask = formats.read_kspace_slice(kspace_path, index)
    image = np.asarray(METHODS[method](kspace * mask[None, None, :], mask, (h, w)), dtype=np.float32)
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, image, allow_pickle=False)
        os.replace(tmp, entry)
    except OSError:
        tmp.unlink(missing_ok=True)  # a read-only or full cache only costs the recomputation
    return image
