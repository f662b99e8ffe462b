"""scripts/gpu_check.sh --dry-run: every step of the GPU proof, end to end on the CPU (issue 23, item 1).

The script is what a GPU owner runs first; a step that cannot pass (a resume without
--data-dir, a run too short to reconfigure) must fail here, not on the lent card.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PER_CLASS = {"train": 20, "test": 20}


def _small_cifar(into: Path) -> Path:
    """20 train and 20 test images per class: real CIFAR-10 files where $CIFAR10_DIR has them, else synthetic
    JPEGs in the same train/<class>/ layout."""
    source = Path(os.environ.get("CIFAR10_DIR", "/nonexistent"))
    for split, n in PER_CLASS.items():
        if (source / split).is_dir():
            for cls in sorted(p for p in (source / split).iterdir() if p.is_dir()):
                (into / split / cls.name).mkdir(parents=True)
                for f in sorted(cls.iterdir())[:n]:
                    (into / split / cls.name / f.name).write_bytes(f.read_bytes())
        else:
            from PIL import Image

            from bench.training.data import synthetic_data

            data = synthetic_data()[0 if split == "train" else 1]
            for c in range(10):
                (into / split / f"class{c}").mkdir(parents=True)
                idx = (data.labels == c).nonzero().flatten()[:n]
                for i in idx.tolist():
                    Image.fromarray(data.images[i].permute(1, 2, 0).numpy()).save(
                        into / split / f"class{c}" / f"{i:05d}.jpg")
    return into


@pytest.mark.slow
def test_the_dry_run_exercises_every_step_on_the_cpu(tmp_path):
    env = {**os.environ, "CIFAR10_DIR": str(_small_cifar(tmp_path / "cifar10")), "BENCH_PYTHON": sys.executable,
           "PYTHONPATH": str(ROOT), "PRUNETRAIN_BENCH_CACHE": str(tmp_path / "cache"), "MODEL": "resnet20",
           "EPOCHS": "2", "INTERVAL": "1", "SUBSET": "0", "VAL": "40"}
    out = tmp_path / "out"
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", str(out)], env=env,
                            capture_output=True, text=True, timeout=1500)
    summary = (out / "summary.txt").read_text()
    assert result.returncode == 0, summary + result.stderr[-2000:]
    for step in ("install (skipped: dry run)", "bench check --device cpu", "run --profile gtx1070 --emulate",
                 "kill -9 mid-epoch, --resume", "reconfigured; resumed = uninterrupted"):
        assert any(line.startswith(step) and " pass " in line for line in summary.splitlines()), (step, summary)
    assert "DRY RUN on the CPU" in summary
    runs = (out / "runs.txt").read_text()
    assert "resumed run = uninterrupted run in mode, epoch, batch and shape: True" in runs
    assert re.search(r"PruneTrain reconfigured [1-9]\d* time\(s\), params (\d+) -> (\d+).*: True", runs), runs
    assert "device cpu" in runs and "emulated 1" in runs
