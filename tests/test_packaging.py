"""A non-editable install works on its own: `pip install .`, then `bench run --profile smoke` elsewhere."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_installs_and_runs_the_smoke_profile_from_another_folder(tmp_path):
    """Build the wheel, install it into a fresh virtual environment (its dependencies come from this
    interpreter through a .pth file: no network), and run from a folder without the source tree."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BENCH_UNDER_TEST")}
    run = lambda *cmd, **kw: subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, **kw)
    built = run(sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                "-w", str(tmp_path / "dist"))
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("prunetrain_bench-*.whl")
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", "--without-pip", str(venv)).returncode == 0
    py = venv / "bin" / "python"
    site = Path(run(str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = run(sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", str(wheel))
    assert installed.returncode == 0, installed.stderr
    assert (site / "bench" / "machine" / "builtin_profiles" / "smoke.toml").is_file()   # profiles are package data
    assert not (site / "benchmarks").exists() and not (site / "tests").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    smoke = run(str(venv / "bin" / "bench"), "run", "--profile", "smoke", "--mode", "dense", "--epochs", "1",
                "--subset", "128", "--results-dir", "results", "--quiet", cwd=elsewhere)
    assert smoke.returncode == 0, smoke.stderr
    where = run(str(py), "-c", "import bench; print(bench.__file__)", cwd=elsewhere).stdout
    assert where.startswith(str(site))
    assert list((elsewhere / "results").glob("*/epochs.csv"))
