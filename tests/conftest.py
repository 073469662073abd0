"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from helpers import TINY, TINY_SC
from kspacelab.data.synthetic import simulate_dataset


@pytest.fixture(autouse=True, scope="module")
def single_thread() -> Iterator[None]:
    """One intra-op thread per test process: `make test` runs two processes on two cores, and two OpenMP
    threads per process on a shared 2-core machine can be several times slower (tiny models especially)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True, scope="session")
def classical_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Classical images cached by the tests (and the programs they start) go to a temporary folder, not to the
    user's ``~/.cache``."""
    from kspacelab.data.classical_cache import CACHE_ENV

    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("classical_cache"))
    yield
    if previous is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = previous


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The TINY synthetic dataset (SNU layout), simulated once per test process. Tests must not modify it
    (copy what you change)."""
    root = tmp_path_factory.mktemp("tiny") / "data"
    simulate_dataset(root, preset=TINY, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_singlecoil_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The TINY_SC single-coil dataset (NYU single-coil layout: ``singlecoil_train/val/test``), simulated once per
    test process. Tests must not modify it."""
    root = tmp_path_factory.mktemp("tiny_singlecoil") / "data"
    simulate_dataset(root, preset=TINY_SC, progress=False)
    return root
