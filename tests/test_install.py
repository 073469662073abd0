"""A non-editable install works: the package installed into a scratch folder (``pip install --target``), run
from outside the checkout, finds its modules, its package data (the recipes of ``kspacelab/configs``) and runs
the demo end to end (marked slow: `make test-slow`).

The install is built once per test session and shared by the tests below; ``-m slow -k "install and not demo"``
runs the quick ones without the demo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
REQUIRED_CONFIGS = ("demo.yaml", "demo_moe.yaml", "snu2025_promptmr_ej.yaml")


def _pip_install(site: Path, *, isolation: bool) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-input",
        "--disable-pip-version-check",
    ]
    if not isolation:
        command.append("--no-build-isolation")
    command += ["--target", str(site), str(REPO)]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch folder ``tmp`` with the package installed (not editable) into ``tmp/site``."""
    tmp = tmp_path_factory.mktemp("install")
    site = tmp / "site"
    result = _pip_install(site, isolation=False)
    if result.returncode != 0:
        # --no-build-isolation needs the build backend (setuptools) in this environment; without it let pip
        # fetch one into an isolated build environment.
        first = result
        result = _pip_install(site, isolation=True)
        assert result.returncode == 0, (
            f"pip install --target failed with and without build isolation:\n--- with --no-build-isolation:\n"
            f"{first.stdout}\n{first.stderr}\n--- with build isolation:\n{result.stdout}\n{result.stderr}"
        )
    assert (site / "kspacelab" / "__init__.py").is_file(), f"no kspacelab package under {site}"
    return tmp


def _run(tmp: Path, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``python args`` with the installed copy first (and only) on the path, from ``tmp``, outside the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = str(tmp / "site")
    env["PYTHONNOUSERSITE"] = "1"
    return subprocess.run(
        [sys.executable, *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit status {result.returncode}\n--- stdout:\n{result.stdout}\n--- stderr:\n{result.stderr}"


def test_install_imports_from_the_install(installed: Path) -> None:
    result = _run(installed, ["-c", "import kspacelab, sys; print(kspacelab.__file__)"], timeout=300)
    assert result.returncode == 0, _output(result)
    location = Path(result.stdout.strip().splitlines()[-1]).resolve()
    site = (installed / "site").resolve()
    assert location.is_relative_to(site), (
        f"kspacelab was imported from {location}, not from the install {site}"
    )
    assert not location.is_relative_to((REPO / "src").resolve())


def test_install_holds_exactly_the_sources(installed: Path) -> None:
    """The installed modules are the checkout's: none missing, and no stale module (pip builds in the checkout's
    ``build/`` folder, whose ``build/lib`` keeps modules the sources no longer have)."""
    source = {p.relative_to(REPO / "src").as_posix() for p in (REPO / "src" / "kspacelab").rglob("*.py")}
    site = installed / "site"
    shipped = {p.relative_to(site).as_posix() for p in (site / "kspacelab").rglob("*.py")}
    assert not source - shipped, f"modules missing from the install: {sorted(source - shipped)}"
    assert not shipped - source, (
        f"the install holds modules the sources do not have: {sorted(shipped - source)} (stale files in "
        f"{REPO / 'build'}? remove that folder)"
    )


def test_install_ships_the_configs(installed: Path) -> None:
    code = (
        "from importlib.resources import files; "
        "print(sorted(p.name for p in files('kspacelab').joinpath('configs').iterdir()))"
    )
    result = _run(installed, ["-c", code], timeout=300)
    assert result.returncode == 0, (
        "could not list kspacelab/configs in the installed package (is it declared as package data in "
        "pyproject.toml?)\n" + _output(result)
    )
    names = result.stdout.strip().splitlines()[-1]
    missing = [name for name in REQUIRED_CONFIGS if repr(name) not in names]
    assert not missing, (
        f"the installed kspacelab/configs lacks {missing} (package data not shipped? see "
        f"[tool.setuptools.package-data] in pyproject.toml); it holds {names}"
    )


def test_install_runs_the_demo(installed: Path) -> None:
    """The whole demo (about 10 minutes on 2 quiet CPU cores) from the installed copy."""
    out = installed / "demo"
    result = _run(installed, ["-m", "kspacelab.cli", "demo", "--out", str(out), "--quiet"], timeout=2700)
    assert result.returncode == 0, _output(result)
    assert (out / "report.md").is_file(), f"no report.md in {out}\n" + _output(result)
    assert (out / "results.json").is_file(), f"no results.json in {out}\n" + _output(result)
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert "varnet" in results.get("methods", {}), f"no 'varnet' under 'methods' in results.json: {results}"
