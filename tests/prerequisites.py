"""Tests that need something this machine may lack: skipped on a laptop, failed under CI, always listed.

Mark a test ``cifar`` (the real CIFAR-10 copy in ``$CIFAR10_DIR``), ``chromium``
(the browser test) or ``cuda``.  A missing prerequisite skips the test, except
that with ``CI`` set a missing chromium or CIFAR-10 copy fails it (CI installs
both, so a silent skip there hides a broken setup).  CUDA-only tests cannot run
on the CPU CI machines; every test not run is listed at the end of the run.
"""
from __future__ import annotations

import os
import shutil

import pytest


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# marker: (is it here?, what is missing, required under CI)
PREREQUISITES = {
    "cifar": (lambda: bool(os.environ.get("CIFAR10_DIR")), "CIFAR10_DIR is not set to an unpacked cifar10-jpeg copy",
              True),
    "chromium": (lambda: shutil.which("chromium") is not None, "chromium is not installed", True),
    "cuda": (_cuda, "no CUDA device", False),
}
_NOT_RUN: list[str] = []


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, (present, missing, required_in_ci) in PREREQUISITES.items():
        if item.get_closest_marker(marker) is None or present():
            continue
        if required_in_ci and os.environ.get("CI"):
            pytest.fail(f"{missing}: required when CI is set (CI installs it)", pytrace=False)
        _NOT_RUN.append(f"{item.nodeid}: {missing}")
        pytest.skip(missing)


def pytest_terminal_summary(terminalreporter) -> None:
    if _NOT_RUN:
        terminalreporter.write_sep("=", f"{len(_NOT_RUN)} test(s) not run for a missing prerequisite")
        for line in _NOT_RUN:
            terminalreporter.write_line(line)
