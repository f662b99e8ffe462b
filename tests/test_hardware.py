"""Device detection and architecture checks, without a GPU (fake NVML / torch.cuda)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
import types
from types import SimpleNamespace

import pytest
import torch

from bench.machine import hardware
from bench.machine.hardware import DeviceInfo, GPUInfo, arch_support, detect, format_env

CURRENT = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # 2.8+ cu128/cu129/cu130
CU126 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
GIB = 1 << 30


# --------------------------------------------------------------------------
# arch_support

@pytest.mark.parametrize("cc,sm,arch", [((5, 0), "sm_50", "Maxwell"), ((6, 1), "sm_61", "Pascal")])
def test_old_gpus_need_cu126_on_current_wheels(cc, sm, arch):
    msg = arch_support(cc, CURRENT)
    assert msg is not None and "\n" not in msg
    assert sm in msg and arch in msg
    assert "cu126" in msg and "torch==2.14.1" in msg and "torchvision==0.29.1" in msg


@pytest.mark.parametrize("cc", [(5, 0), (6, 0), (6, 1), (7, 5), (8, 6), (8, 9), (9, 0)])
def test_cu126_list_covers_old_and_new(cc):
    # sm_61 and sm_89 run sm_60 / sm_86 cubins: binary compatibility within a major.
    assert arch_support(cc, CU126) is None


def test_no_cross_major_binary_compatibility():
    assert arch_support((6, 1), ["sm_50", "sm_70"]) is not None
    assert arch_support((6, 0), ["sm_61"]) is not None  # newer minor does not run on older


def test_ptx_fallback():
    assert arch_support((6, 1), ["sm_75", "compute_60"]) is None
    assert arch_support((12, 0), ["sm_90", "compute_90"]) is None  # PTX JITs forward
    assert arch_support((5, 0), ["sm_75", "compute_60"]) is not None


def test_arch_specific_entries_match_exactly():
    assert arch_support((9, 0), ["sm_90a"]) is None
    assert arch_support((10, 3), ["sm_100a"]) is not None


def test_cpu_only_build_message():
    msg = arch_support((6, 1), [])
    assert msg is not None and "CPU-only" in msg and "won't be used" in msg
    assert "cu126" in msg
    newer = arch_support((9, 0), [])
    assert newer is not None and "CPU-only" in newer and "index-url" in newer


# --------------------------------------------------------------------------
# detect

def test_detect_on_this_machine_is_cpu_and_does_not_crash(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    info = detect()
    assert info.kind == "cpu"
    assert info.memory_bytes is None
    assert info.device_name.startswith("cpu: ")
    assert info.cpu_cores >= 1 and info.cpu_model
    assert info.torch_version == torch.__version__
    assert all("\n" not in w for w in info.warnings)


def test_detect_without_nvml_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    info = detect()
    assert info.kind == "cpu" and not info.nvml_available
    assert any("nvidia-ml-py" in w for w in info.warnings)


def test_detect_nvml_disabled(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    info = detect(nvml=False)
    assert info.kind == "cpu" and not info.nvml_available and info.gpus == ()


class NVMLError(Exception):
    pass


def fake_nvml(name: object = b"NVIDIA GeForce GTX 1070", total: int = 8192 * 2**20,
              cc: tuple[int, int] = (6, 1), count: int = 1,
              fail: str | None = None) -> types.ModuleType:
    """A stand-in for nvidia-ml-py; ``fail`` names the call that raises."""
    mod = types.ModuleType("pynvml")
    mod.NVMLError = NVMLError
    calls: list[str] = []
    mod.calls = calls

    def call(fn_name, value):
        def fn(*args):
            calls.append(fn_name)
            if fail == fn_name:
                raise NVMLError("Driver/library version mismatch")
            return value(*args) if callable(value) else value
        return fn

    mod.nvmlInit = call("nvmlInit", None)
    mod.nvmlShutdown = call("nvmlShutdown", None)
    mod.nvmlSystemGetDriverVersion = call("nvmlSystemGetDriverVersion", b"535.183.01")
    mod.nvmlDeviceGetCount = call("nvmlDeviceGetCount", count)
    mod.nvmlDeviceGetHandleByIndex = call("nvmlDeviceGetHandleByIndex", lambda i: ("h", i))
    mod.nvmlDeviceGetName = call("nvmlDeviceGetName", name)
    mod.nvmlDeviceGetMemoryInfo = call("nvmlDeviceGetMemoryInfo",
                                       SimpleNamespace(total=total, free=total, used=0))
    mod.nvmlDeviceGetCudaComputeCapability = call("nvmlDeviceGetCudaComputeCapability", cc)
    return mod


def fake_cuda(monkeypatch, available: bool = True, arch: list[str] = CU126, count: int = 1,
              cuda_version: str | None = "12.6") -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(arch))
    monkeypatch.setattr(torch.version, "cuda", cuda_version)


@pytest.mark.parametrize("name", [b"NVIDIA GeForce GTX 1070", "NVIDIA GeForce GTX 1070"])
def test_detect_gtx1070_through_nvml(monkeypatch, name):
    nv = fake_nvml(name=name)
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    fake_cuda(monkeypatch)
    info = detect()
    assert info.kind == "cuda" and info.nvml_available
    assert info.gpus == (GPUInfo(0, "NVIDIA GeForce GTX 1070", 8 * GIB, (6, 1), "535.183.01"),)
    assert info.device_name == "NVIDIA GeForce GTX 1070"
    assert info.memory_bytes == 8 * GIB
    assert info.compute_capability == (6, 1)
    assert info.cuda_version == "12.6" and info.torch_arch_list == tuple(CU126)
    assert info.warnings == ()
    assert nv.calls[-1] == "nvmlShutdown"


def test_detect_gtx1070_with_current_wheel_warns_and_uses_cpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml())
    fake_cuda(monkeypatch, arch=CURRENT, cuda_version="12.8")
    info = detect()
    assert info.kind == "cpu" and len(info.gpus) == 1
    assert info.memory_bytes is None
    [w] = [w for w in info.warnings if "sm_61" in w]
    assert "GTX 1070" in w and "cu126" in w


def test_detect_gpu_with_cpu_only_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml())
    fake_cuda(monkeypatch, available=False, arch=[], cuda_version=None)
    info = detect()
    assert info.kind == "cpu" and info.cuda_version is None
    assert any("CPU-only" in w for w in info.warnings)


def test_detect_warns_when_nvml_and_torch_disagree(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(count=2))
    fake_cuda(monkeypatch, count=1)
    info = detect()
    assert info.kind == "cuda" and len(info.gpus) == 2
    assert any("CUDA_VISIBLE_DEVICES" in w for w in info.warnings)


@pytest.mark.parametrize("fail", ["nvmlInit", "nvmlDeviceGetCount", "nvmlDeviceGetName",
                                  "nvmlDeviceGetMemoryInfo"])
def test_nvml_errors_fall_back_to_cpu(monkeypatch, fail):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(fail=fail))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    info = detect()
    assert info.kind == "cpu" and not info.nvml_available and info.gpus == ()
    assert any("NVML unavailable" in w and "mismatch" in w for w in info.warnings)


def test_nvml_failure_falls_back_to_torch_properties(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(fail="nvmlInit"))
    fake_cuda(monkeypatch, arch=CU126)
    props = SimpleNamespace(name="NVIDIA GeForce GTX 750 Ti", total_memory=2 * GIB,
                            major=5, minor=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    info = detect()
    assert info.kind == "cuda" and not info.nvml_available
    assert info.gpus == (GPUInfo(0, "NVIDIA GeForce GTX 750 Ti", 2 * GIB, (5, 0), None),)


def test_cpu_model_falls_back_to_platform(monkeypatch):
    def no_file(*a, **k):
        raise OSError("no /proc")
    monkeypatch.setattr("builtins.open", no_file)
    monkeypatch.setattr(hardware.platform, "processor", lambda: "")
    monkeypatch.setattr(hardware.platform, "machine", lambda: "aarch64")
    assert hardware._cpu_model() == "aarch64"


# --------------------------------------------------------------------------
# serialisation and formatting

def h200() -> DeviceInfo:
    return DeviceInfo(
        kind="cuda",
        gpus=(GPUInfo(0, "NVIDIA H200", 143771 * 2**20, (9, 0), "570.86"),),
        cpu_model="Intel Xeon", cpu_cores=16, torch_version="2.14.1+cu130",
        cuda_version="13.0", cudnn_version=92400, torch_arch_list=tuple(CURRENT),
        nvml_available=True, warnings=("something odd",),
    )


def test_roundtrip_through_json():
    import json
    info = h200()
    assert DeviceInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
    cpu = detect(nvml=False)
    assert DeviceInfo.from_dict(json.loads(json.dumps(cpu.to_dict()))) == cpu


def test_from_dict_rejects_garbage():
    with pytest.raises(ValueError):
        DeviceInfo.from_dict({"kind": "tpu"})
    with pytest.raises(ValueError):
        DeviceInfo.from_dict({"kind": "cpu"})


def test_format_env_has_the_key_facts():
    text = format_env(h200())
    for fact in ("NVIDIA H200", "140.40 GiB", "sm_90", "570.86", "Intel Xeon, 16 cores",
                 "2.14.1+cu130", "13.0", "9.24.0", "sm_75 sm_80", "warning: something odd"):
        assert fact in text, fact
    cpu_text = format_env(detect(nvml=False))
    assert "cpu" in cpu_text and torch.__version__ in cpu_text


def test_format_cudnn_encodings():
    assert hardware.format_cudnn(92400) == "9.24.0"
    assert hardware.format_cudnn(8907) == "8.9.7"
    assert hardware.format_cudnn(None) == "-"


# ---------------------------------------------------------------------------- issue 23: one statement of the build

def test_the_install_line_is_the_pinned_torch_from_the_index_that_has_the_cards_kernels():
    from bench.machine.hardware import CU126_INSTALL, CUDA_INSTALL, TORCH_PIN, TORCHVISION_PIN, install_line

    root = Path(__file__).resolve().parent.parent
    pins = dict(line.split("==") for line in (root / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert (pins["torch"], pins["torchvision"]) == (TORCH_PIN, TORCHVISION_PIN)
    for cc in [(5, 0), (6, 1), (7, 0)]:          # 750 Ti, 1070 / 1080 Ti, V100: the legacy cu126 build
        assert install_line(cc) == CU126_INSTALL
        assert arch_support(cc, CU126) is None    # and that build's arch list drives them
    for cc in [(7, 5), (8, 0), (9, 0), (12, 0)]:
        assert install_line(cc) == CUDA_INSTALL
    assert install_line((3, 7)) is None
    # every document says the same: the README carries the exact line, no profile names another torch
    assert CU126_INSTALL in (root / "README.md").read_text()
    stale = re.compile(r"PyTorch \d+\.\d+\+?|torch==(?!%s)" % re.escape(TORCH_PIN))
    for path in [root / "README.md", *(root / "bench" / "machine" / "builtin_profiles").glob("*.toml")]:
        assert not stale.search(path.read_text()), path
    script = subprocess.run([sys.executable, str(root / "bench" / "machine" / "hardware.py"), "install-line", "6.1"],
                            capture_output=True, text=True, env={"PATH": os.environ.get("PATH", "")})
    assert script.stdout.strip() == CU126_INSTALL     # what gpu_check.sh runs before any torch is installed


def test_bench_env_prints_the_install_line_for_the_detected_card(monkeypatch):
    from bench.machine.hardware import CU126_INSTALL

    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml())          # a GTX 1070, and a CPU-only torch
    fake_cuda(monkeypatch, available=False, arch=[], cuda_version=None)
    text = format_env(detect())
    assert re.search(r"^install +" + re.escape(CU126_INSTALL) + "$", text, re.M), text
