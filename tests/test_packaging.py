"""Packaging: the wheel carries the napari manifest, and installs and runs without the extras.

The slow test installs the built wheel into a fresh virtual environment (CPU torch pinned by
``constraints.txt``, no ``tune``/``distributed`` extras) and runs the console script and
``npe2 validate`` there: what a user gets from ``pip install napari-kanezaki``.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from npe2 import PluginManifest

from napari_kanezaki import SPConfig
from napari_kanezaki.workflows.extras import MissingExtraError, require

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"
TUNE_HINT = "pip install 'napari-kanezaki[tune]'"


# -- helpers -------------------------------------------------------------------------------
def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data or ""


def _show(args, returncode, stdout, stderr) -> str:
    return (f"$ {' '.join(map(str, args))}\nexit status {returncode}\n"
            f"--- stdout (tail)\n{_text(stdout)[-4000:]}\n--- stderr (tail)\n"
            f"{_text(stderr)[-6000:]}")


def _run(args, *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Run a command with captured output; a timeout fails the test and shows the output."""
    try:
        return subprocess.run(list(map(str, args)), capture_output=True, text=True,
                              encoding="utf-8", errors="replace", timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"ran over {timeout} s:\n" + _show(args, "timeout", exc.stdout, exc.stderr))


def _check(result: subprocess.CompletedProcess, status: int = 0) -> subprocess.CompletedProcess:
    assert result.returncode == status, _show(result.args, result.returncode, result.stdout,
                                              result.stderr)
    return result


def _pip_has_python_option() -> bool:
    """pip >= 22.3 installs into another interpreter (``pip --python``)."""
    try:
        version = importlib.metadata.version("pip")
    except importlib.metadata.PackageNotFoundError:
        return False
    major, minor = (int(x) for x in re.findall(r"\d+", version)[:2])
    return (major, minor) >= (22, 3)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the tree so that the build leaves nothing here."""
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache", "demo-output"
    ))
    _check(_run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "-q", "-w", tmp, source], timeout=300))
    (built,) = tmp.glob("napari_kanezaki-*.whl")
    return built


# -- the wheel -------------------------------------------------------------------------------
def test_wheel_contains_a_valid_manifest_and_entry_point(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "napari-kanezaki = napari_kanezaki.plugin:napari.yaml" in archive.read(
            entry_points
        ).decode()
        assert "napari_kanezaki/core/presets/paper-sp.toml" in names
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
        archive.extract("napari_kanezaki/plugin/napari.yaml", tmp_path / "unpacked")
    metadata = metadata.decode()
    assert "Requires-Python: >=3.11" in metadata
    assert "License-Expression: BSD-3-Clause" in metadata
    for extra in ("optuna", "distributed"):  # extras only
        assert not re.search(rf"^Requires-Dist: {extra}\b[^;]*$", metadata, re.M), metadata
    manifest = PluginManifest.from_file(
        tmp_path / "unpacked" / "napari_kanezaki" / "plugin" / "napari.yaml"
    )
    manifest.validate_imports()
    assert manifest.name == "napari-kanezaki"
    assert {w.display_name for w in manifest.contributions.widgets} == {
        "Segment image",
        "Segment layers (batch)",
        "Enhance membranes",
    }
    assert [str(c) for c in manifest.categories] == ["Segmentation"]
    menus = manifest.contributions.menus
    assert {item.command for item in menus["napari/layers/segment"]} == {
        "napari-kanezaki.segment_widget", "napari-kanezaki.batch_widget"
    }
    assert [item.command for item in menus["napari/layers/filter"]] == [
        "napari-kanezaki.enhance_membranes"
    ]


# -- optional dependencies -----------------------------------------------------------------
def test_require_names_the_extra_to_install():
    with pytest.raises(MissingExtraError) as info:
        require("napari_kanezaki_no_such_module.sub", "tune", "the tune command")
    assert isinstance(info.value, ImportError)
    assert info.value.name == "napari_kanezaki_no_such_module"
    assert str(info.value) == (
        "the tune command needs napari_kanezaki_no_such_module, which is not installed; "
        f"install it with: {TUNE_HINT}"
    )
    assert require("json", "tune", "x") is sys.modules["json"]


def test_require_leaves_a_broken_installation_alone(tmp_path, monkeypatch):
    # The package is there but one of *its* imports is not: the extra would not fix that.
    (tmp_path / "kanezaki_broken_pkg.py").write_text("import kanezaki_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        require("kanezaki_broken_pkg", "tune", "the tune command")
    assert not isinstance(info.value, MissingExtraError)
    assert info.value.name == "kanezaki_missing_dependency"


def test_tune_and_a_distributed_run_name_their_extras(tmp_path, monkeypatch):
    from napari_kanezaki.workflows.batch import run_jobs
    from napari_kanezaki.workflows.jobs import Job
    from napari_kanezaki.workflows.tuning import tune

    monkeypatch.setitem(sys.modules, "optuna", None)  # "not installed"
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(MissingExtraError, match=re.escape(TUNE_HINT)):
        tune([tmp_path / "a.tif"], [tmp_path / "a.png"], SPConfig(), progress=False)
    job = Job(name="a", image=tmp_path / "a.tif", outdir=tmp_path / "out")
    hint = "pip install 'napari-kanezaki[distributed]'"
    with pytest.raises(MissingExtraError, match=re.escape(hint)):
        run_jobs([job], scheduler="tcp://127.0.0.1:1", progress=False)


# -- a user's install ------------------------------------------------------------------------
def test_wheel_installs_and_runs_without_the_extras(wheel, tmp_path):
    """Fresh venv, wheel without extras: the CLI, its tune hint and npe2 work there."""
    pins = CONSTRAINTS.read_text()
    # Never let pip choose torch: an unpinned one pulls gigabytes of CUDA wheels.
    assert re.search(r"^torch==", pins, re.M), f"{CONSTRAINTS} must pin torch"
    timings: dict[str, float] = {}
    start = time.perf_counter()

    venv = tmp_path / "venv"
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env.update(PYTHONNOUSERSITE="1", PYTHONIOENCODING="utf-8",
               PATH=os.pathsep.join([str(bindir), env.get("PATH", "")]))
    # The running pip installs into the new interpreter (faster than the venv's bundled pip).
    own_pip = _pip_has_python_option()
    _check(_run([sys.executable, "-m", "venv", *(["--without-pip"] if own_pip else []), venv],
                timeout=180, env=env))
    pip = ([sys.executable, "-m", "pip", "--python", python] if own_pip
           else [python, "-m", "pip"])
    timings["venv"] = time.perf_counter() - start

    args = [*pip, "install", "-q", "--no-compile", "--progress-bar", "off", "-c", CONSTRAINTS,
            wheel]
    try:
        install = subprocess.run(list(map(str, args)), capture_output=True, text=True,
                                 encoding="utf-8", errors="replace", timeout=900, env=env,
                                 cwd=tmp_path)
    except subprocess.TimeoutExpired as exc:
        install = subprocess.CompletedProcess(exc.cmd, "timeout", _text(exc.stdout),
                                              _text(exc.stderr))
    if install.returncode != 0:
        # Skip only if pip cannot fetch even pip itself: then no index answers (offline);
        # anything else (a dependency that does not resolve...) is a failure.
        probe = _run([*pip, "download", "--no-deps", "-q", "-d", tmp_path / "probe", "pip"],
                     timeout=600, env=env, cwd=tmp_path)
        if probe.returncode != 0:
            pytest.skip("pip cannot reach a package index to install the wheel's "
                        "dependencies:\n" + probe.stderr[-2000:])
    _check(install)
    timings["install"] = time.perf_counter() - start - timings["venv"]

    def run(*args, status: int = 0) -> subprocess.CompletedProcess:
        return _check(_run(args, timeout=180, env=env, cwd=tmp_path), status)

    # The package is the installed one, and the extras are really missing.
    where = run(python, "-c", "import napari_kanezaki, torch; "
                "print(napari_kanezaki.__file__); print(torch.__version__)").stdout.split()
    assert Path(where[0]).resolve().is_relative_to(venv.resolve()), where
    assert where[1].startswith(re.search(r"^torch==(\S+)", pins, re.M).group(1)), where
    for module in ("optuna", "distributed"):
        missing = run(python, "-c", f"import {module}", status=1)
        assert "ModuleNotFoundError" in missing.stderr, missing.stderr

    cli = bindir / "napari-kanezaki"
    assert "tune" in run(cli, "--help").stdout
    assert "--gt" in run(cli, "tune", "--help").stdout  # argparse alone, no optuna
    assert "valid" in run(bindir / "npe2", "validate", "napari-kanezaki").stdout

    import tifffile

    rng = np.random.default_rng(0)
    (tmp_path / "gt").mkdir()
    tifffile.imwrite(tmp_path / "cells.tif", rng.integers(0, 255, (16, 16, 3), np.uint8))
    tifffile.imwrite(tmp_path / "gt" / "cells.tif", (np.arange(256) // 128).reshape(16, 16)
                     .astype(np.uint8))
    tuned = _run([cli, "tune", "cells.tif", "--gt", "gt/cells.tif", "-o", "out.toml"],
                 timeout=180, env=env, cwd=tmp_path)
    timings["total"] = time.perf_counter() - start
    print("fresh-venv timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    shown = _show(tuned.args, tuned.returncode, tuned.stdout, tuned.stderr)
    assert TUNE_HINT in tuned.stderr, shown
    assert "Traceback" not in tuned.stderr, shown
    assert tuned.returncode == 2, shown
    assert not (tmp_path / "out.toml").exists()
