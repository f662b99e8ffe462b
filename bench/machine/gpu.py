"""The CUDA device a run trains on: which card it is, whether this torch can drive it, what it can do.

NVML numbers GPUs in PCI order and ignores ``CUDA_VISIBLE_DEVICES``; CUDA
numbers them its own way (fastest first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``),
and under torchrun each process trains on the GPU of its ``LOCAL_RANK``.  So
the card is identified from the selected CUDA device itself: torch's
properties give its name, memory and compute capability, and its UUID (else
its PCI bus id) finds the same card in NVML for the driver's facts.  Every
check that depends on the card (torch build, ``torch.compile``, bf16) is made
on that card, before anything is written, with one line that says what to do.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from ..config import FP32_PRECISIONS
from ..errors import ConfigError
from .hardware import DeviceInfo, GPUInfo, _to_str, arch_support, cuda_card, nvml_handle

COMPILE_MIN_CAPABILITY = (7, 0)   # Triton, torch.compile's GPU backend, refuses older GPUs
BF16_MIN_CAPABILITY = (8, 0)      # bfloat16 tensor-core kernels: Ampere and newer
TF32_MIN_CAPABILITY = (8, 0)      # TensorFloat-32 tensor cores: Ampere and newer; older cards compute fp32 as is


def select_device(spec: str, info: DeviceInfo, dist: Any = None) -> torch.device:
    """``--device`` (auto, cpu, cuda, cuda:N) as a device with an index, on a GPU this torch can drive.

    Under torchrun a CUDA device is the process's own (``dist.device``).
    """
    if spec == "auto":
        spec = "cuda" if info.kind == "cuda" else "cpu"
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise ConfigError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {spec}: no usable CUDA device (see `bench env`)")
    if dist is not None and getattr(dist, "device", None) is not None and dist.device.type == "cuda":
        device = dist.device
    elif device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    count = torch.cuda.device_count()
    if not 0 <= device.index < count:
        raise ConfigError(f"--device {spec}: only {count} CUDA device(s) are visible (cuda:0..cuda:{count - 1})")
    major, minor = torch.cuda.get_device_capability(device)
    problem = arch_support((major, minor), tuple(torch.cuda.get_arch_list()))
    if problem is not None:
        name = torch.cuda.get_device_name(device)
        raise ConfigError(f"--device {device} ({name}): {problem}")
    return device


def select(spec: str, info: DeviceInfo, dist: Any = None) -> tuple[torch.device, DeviceInfo]:
    """The device, and the machine described by it: its card identified, NVML's disagreement among the warnings."""
    device = select_device(spec, info, dist)
    if device.type == "cuda":
        card, note = identify(device)
        info = replace(info.with_selected(card), warnings=info.warnings + ((note,) if note else ()))
    return device, info


def _nvml_view(gpu: GPUInfo) -> GPUInfo:
    """The same card as NVML sees it, found by UUID, else by PCI bus id; raises when it cannot be found."""
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = nvml_handle(pynvml, gpu)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        try:
            driver: str | None = _to_str(pynvml.nvmlSystemGetDriverVersion())
        except pynvml.NVMLError:
            driver = None
        return replace(gpu, name=_to_str(pynvml.nvmlDeviceGetName(handle)),
                       total_memory_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                       compute_capability=(int(major), int(minor)), driver=driver)
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def identify(device: torch.device) -> tuple[GPUInfo, str | None]:
    """The card behind CUDA ``device`` (CUDA's index, torch's name and memory), and why NVML disagrees, or None.

    torch's total memory is the one the allocator caps (emulation's fraction is of it);
    NVML adds the driver version when it finds the same card.
    """
    gpu = cuda_card(torch, device.index)
    try:
        seen = _nvml_view(gpu)
    except ImportError:
        return gpu, "nvidia-ml-py is not installed: the card was not checked against NVML"
    except Exception as exc:  # noqa: BLE001 - any NVML failure: torch's facts stand alone
        return gpu, f"NVML could not find this card ({' '.join(str(exc).split()) or type(exc).__name__})"
    gpu = replace(gpu, driver=seen.driver)
    if mig_slice_of(gpu, seen):
        return gpu, (f"{device} is a MIG slice of {seen.name}: NVML found the parent card by PCI bus id "
                     "(the memory and processes it reports are the whole card's)")
    if (seen.name, seen.compute_capability) != (gpu.name, gpu.compute_capability):
        return gpu, (f"CUDA and NVML disagree about {device}: CUDA says {gpu.name} "
                     f"(sm_{gpu.compute_capability[0]}{gpu.compute_capability[1]}), NVML says {seen.name} "
                     f"(sm_{seen.compute_capability[0]}{seen.compute_capability[1]})")
    return gpu, None


def mig_slice_of(cuda: GPUInfo, nvml: GPUInfo) -> bool:
    """Whether CUDA's device is a MIG slice ("NVIDIA A100-SXM4-40GB MIG 1g.5gb") of NVML's card: the slice's
    UUID is not a GPU's, so only the PCI bus id finds a card -- the parent, with its own name."""
    rest = cuda.name[len(nvml.name):] if cuda.name.startswith(nvml.name) else ""
    return rest.strip().startswith("MIG") and cuda.compute_capability == nvml.compute_capability


def check_features(cfg: Any, gpu: GPUInfo) -> None:
    """Refuse, up front, what this card cannot run: ``--compile`` below 7.0, ``--amp bf16`` below 8.0."""
    cc = tuple(gpu.compute_capability)
    have = f"{gpu.name} has compute capability {cc[0]}.{cc[1]}"
    if getattr(cfg, "compile", False) and cc < COMPILE_MIN_CAPABILITY:
        raise ConfigError(f"--compile: torch.compile's GPU backend (Triton) needs compute capability 7.0 or "
                          f"newer and {have}; run without --compile")
    if getattr(cfg, "amp", "off") == "bf16" and cc < BF16_MIN_CAPABILITY:
        raise ConfigError(f"--amp bf16 needs compute capability 8.0 or newer (Ampere) and {have}; "
                          "use --amp fp16 or --amp off")


def context_bytes(device: torch.device) -> int | None:
    """This process's memory on ``device`` outside torch's allocator (the CUDA context, library handles):
    NVML's figure for this process minus what the allocator has reserved.  None where NVML cannot tell
    (no NVML, a MIG slice, a driver that hides per-process memory)."""
    import os

    try:
        import pynvml

        torch.cuda.synchronize(device)   # creates the context if nothing has yet: it is what is measured
        card, _ = identify(device)
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001
        return None
    try:
        mine = [p.usedGpuMemory for p in pynvml.nvmlDeviceGetComputeRunningProcesses(nvml_handle(pynvml, card))
                if p.pid == os.getpid()]
    except Exception:  # noqa: BLE001
        return None
    finally:
        pynvml.nvmlShutdown()
    if not mine or not isinstance(mine[0], int):
        return None
    return max(0, int(mine[0]) - int(torch.cuda.memory_reserved(device)))


def check_cpu_features(cfg: Any) -> None:
    """Refuse, up front, what a run on the CPU cannot apply: it would train without it while run.json records it.

    ``--amp``: the step's autocast and loss scaling are CUDA's here (a CPU run would train in fp32);
    ``--emulate``: there is no allocator to cap, and on the CPU the profile's budget already decides every batch.
    """
    amp = getattr(cfg, "amp", "off")
    if amp != "off":
        raise ConfigError(f"--amp {amp}: mixed precision is CUDA only and this run trains on the CPU (it would "
                          "train in fp32); drop --amp or train on a GPU")
    if getattr(cfg, "emulate", False):
        raise ConfigError("--emulate caps a GPU's memory and this run is on the CPU, where the profile's budget "
                          "already decides every batch; drop --emulate")


def cap_memory(fraction: float, device: torch.device) -> None:
    """Cap this process's CUDA allocator at ``fraction`` of ``device``'s total memory (torch's figure)."""
    torch.cuda.set_per_process_memory_fraction(float(fraction), device)


def configure(device: torch.device, fp32_precision: str = "ieee") -> None:
    """The backend options every command computes under (`bench run`, `replay`, `check`, `speed`), set here only.

    * fp32 precision, for matmuls (cuBLAS) and convolutions (cuDNN) alike, through
      torch's own ``fp32_precision`` API (mixing it with the legacy ``allow_tf32``
      flags makes torch raise).  torch 2.14's defaults differ by operation --
      matmul ``ieee``, cuDNN convolution ``tf32`` -- so "fp32" on an A100/H100 would
      be TF32 convolutions while a GTX 1070 computes true fp32: a hardware comparison
      must choose, and record (:func:`precision_in_force`).  Both modes run in one process
      after this call, so they share it.
    * ``cudnn.benchmark`` on CUDA: cuDNN autotunes each new shape (untimed warm-up,
      bench.training.step), so a check exercises autotuning under the memory cap and a speed
      figure times the kernels a run gets.
    """
    if fp32_precision not in FP32_PRECISIONS:
        raise ConfigError(f"--fp32-precision {fp32_precision!r}: expected one of {', '.join(FP32_PRECISIONS)}")
    torch.backends.cuda.matmul.fp32_precision = fp32_precision
    torch.backends.cudnn.conv.fp32_precision = fp32_precision
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def precision_in_force(device: torch.device) -> dict[str, Any]:
    """How fp32 matmuls and convolutions actually compute on ``device``: ``ieee`` or ``tf32`` each.

    TF32 is in force only where it is asked for *and* the card has TF32 tensor
    cores (compute capability 8.0+); a CPU or a Pascal card computes ieee fp32
    whatever the flag says.  ``cudnn_benchmark``: whether cuDNN autotunes.
    """
    def setting(value: str, *parents: str) -> str:
        for v in (value, *parents):   # "none" inherits: op -> backend ("cuda", "all") -> generic
            if v != "none":
                return v
        return "ieee"

    cuda_all, generic = torch.backends.cudnn.fp32_precision, torch.backends.fp32_precision
    asked = {"matmul": setting(torch.backends.cuda.matmul.fp32_precision, cuda_all, generic),
             "conv": setting(torch.backends.cudnn.conv.fp32_precision, cuda_all, generic)}
    tf32_card = device.type == "cuda" and tuple(torch.cuda.get_device_capability(device)) >= TF32_MIN_CAPABILITY
    return {**{k: v if v == "ieee" or tf32_card else "ieee" for k, v in asked.items()},
            "requested": asked, "cudnn_benchmark": bool(torch.backends.cudnn.benchmark) and device.type == "cuda"}
