"""Missing prerequisites: a skip on a laptop, a failure under CI (chromium, CIFAR-10), always listed."""
from __future__ import annotations

import pytest

TEST = """
import pytest

@pytest.mark.cifar
def test_needs_cifar():
    pass

@pytest.mark.cuda
def test_needs_cuda():
    pass
"""


@pytest.fixture
def suite(pytester, monkeypatch):
    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    monkeypatch.setattr("prerequisites._cuda", lambda: False)
    monkeypatch.setattr("prerequisites._NOT_RUN", [])
    pytester.makeconftest("pytest_plugins = ['prerequisites']")
    pytester.makeini("[pytest]\nmarkers =\n  cifar: x\n  cuda: x\n")
    pytester.makepyfile(TEST)
    return pytester


def test_without_ci_missing_prerequisites_skip_and_are_listed(suite, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    result = suite.runpytest()
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*2 test(s) not run for a missing prerequisite*",
                                 "*test_needs_cifar: CIFAR10_DIR is not set*", "*test_needs_cuda: no CUDA device*"])


def test_under_ci_missing_cifar_fails_and_cuda_is_listed(suite, monkeypatch):
    monkeypatch.setenv("CI", "1")
    result = suite.runpytest()
    result.assert_outcomes(errors=1, skipped=1)
    result.stdout.fnmatch_lines(["*required when CI is set*", "*1 test(s) not run*", "*test_needs_cuda*"])
