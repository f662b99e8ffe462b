"""Test-suite settings shared by every test file."""
from __future__ import annotations

import os

# skip / fail / list tests whose prerequisite (CIFAR-10 copy, chromium, CUDA) is missing
pytest_plugins = ["prerequisites", "pytester"]

# bench.runfolder.hooks honours BENCH_FAULT_* variables only under the test suite; `bench` processes that the
# tests start inherit this.
os.environ["BENCH_UNDER_TEST"] = "1"
