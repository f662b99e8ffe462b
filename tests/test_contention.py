"""Per-epoch contention records: a busy process is seen and named, GPU neighbours through NVML, the report's rule."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

import cudafake
from bench.machine.contention import ContentionProbe, gpu_processes, is_contended
from cudafake import A100, GTX750TI

linux = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc (Linux)")


@linux
def test_a_busy_process_is_counted_and_named():
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<30: pass"])
    try:
        time.sleep(0.3)  # started and spinning
        # all of them, down to 1 % of a core: at a load average of 11 on 2 cores the spinner gets ~0.18 of one
        probe = ContentionProbe(named=1000, busy=0.01)
        probe.start()
        time.sleep(1.5)  # this process idles: its CPU time stays near 0
        c = probe.stop()
    finally:
        busy.kill()
        busy.wait()
    assert c.cpu_time_s < 0.5
    assert c.other_cpu_cores is not None and c.other_cpu_cores >= 0.01
    assert f"({busy.pid})" in c.busy_processes
    assert c.load_avg is not None and c.load_avg >= 0


@linux
def test_own_work_is_cpu_time_not_other_processes():
    probe = ContentionProbe()
    probe.start()
    t = time.process_time()
    while time.process_time() - t < 0.3:  # CPU time, not wall: on a busy machine 0.5 s of wall can be 0.1 s of CPU
        pass
    c = probe.stop()
    assert c.cpu_time_s >= 0.3
    assert f"({os.getpid()})" not in c.busy_processes


def test_gpu_neighbours_come_from_nvml(monkeypatch):
    me = os.getpid()
    cudafake.install(monkeypatch, [A100], processes={A100.name: [(me, 2**30), (1, 512 * 2**20), (2, None)]})
    found = gpu_processes(torch.device("cuda", 0))
    assert len(found) == 2 and found[0].endswith("(1) 512 MiB") and "(2)" in found[1]  # itself left out
    assert sys.modules["pynvml"].calls == ["nvmlInit", "nvmlShutdown"]


def test_gpu_neighbours_are_those_of_the_cuda_card_not_of_nvmls_same_index(monkeypatch):
    """CUDA_VISIBLE_DEVICES=1: cuda:0 is the A100, NVML's GPU 0 the 750 Ti with a neighbour on it."""
    cudafake.install(monkeypatch, visible=[A100], machine=[GTX750TI, A100],
                     processes={GTX750TI.name: [(1, 300 * 2**20)], A100.name: [(2, 100 * 2**20)]})
    probe = ContentionProbe(torch.device("cuda", 0))
    probe.start()
    found = probe.stop().busy_processes
    assert "gpu: " in found and "(2) 100 MiB" in found and "(1) 300 MiB" not in found


def test_gpu_neighbours_without_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert gpu_processes(0) == []


@pytest.mark.parametrize("other, busy, cores, threads, expected", [
    (0.1, "", 2, 1, False),        # a quiet 2-core machine
    (0.9, "x(1) 0.9 cores", 2, 1, False),   # the other core was busy: still room for our one thread
    (1.5, "x(1) 1.5 cores", 2, 1, True),    # oversubscribed
    (0.0, "gpu: x(1) 300 MiB", 2, 1, True),  # the GPU was shared
    (None, "", None, None, False),  # not measured: not flagged
])
def test_contention_rule(other, busy, cores, threads, expected):
    assert is_contended(other, busy, cores, threads) is expected


def test_a_one_thread_epoch_that_waited_for_a_core_is_contended():
    assert is_contended(0.1, "", 2, 1, cpu_time_s=8.0, wall_s=30.0)      # 27 % of a core: it waited
    assert not is_contended(0.1, "", 2, 1, cpu_time_s=9.5, wall_s=10.0)  # 95 %: it ran
    assert not is_contended(0.1, "", 8, 4, cpu_time_s=8.0, wall_s=30.0)  # several threads: not this rule
