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

from .errors import ConfigError
from .hardware import DeviceInfo, GPUInfo, _to_str, arch_support

COMPILE_MIN_CAPABILITY = (7, 0)   # Triton, torch.compile's GPU backend, refuses older GPUs
BF16_MIN_CAPABILITY = (8, 0)      # bfloat16 tensor-core kernels: Ampere and newer


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


def _uuid(props: Any) -> str | None:
    """torch prints a card's UUID without NVML's "GPU-" prefix."""
    value = getattr(props, "uuid", None)
    if value is None or not str(value):
        return None
    text = str(value)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def _pci_bus_id(props: Any) -> str | None:
    try:
        return f"{int(props.pci_domain_id):08x}:{int(props.pci_bus_id):02x}:{int(props.pci_device_id):02x}.0"
    except (AttributeError, TypeError, ValueError):
        return None


def _nvml_view(gpu: GPUInfo) -> GPUInfo:
    """The same card as NVML sees it, found by UUID, else by PCI bus id; raises when it cannot be found."""
    import pynvml

    pynvml.nvmlInit()
    try:
        handle = None
        for lookup, key in ((getattr(pynvml, "nvmlDeviceGetHandleByUUID", None), gpu.uuid),
                            (getattr(pynvml, "nvmlDeviceGetHandleByPciBusId", None), gpu.pci_bus_id)):
            if handle is None and lookup is not None and key:
                try:
                    handle = lookup(key)
                except pynvml.NVMLError:
                    handle = None
        if handle is None:
            raise LookupError(f"NVML has no GPU with UUID {gpu.uuid} or PCI bus id {gpu.pci_bus_id}")
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
    props = torch.cuda.get_device_properties(device)
    gpu = GPUInfo(index=device.index, name=str(props.name), total_memory_bytes=int(props.total_memory),
                  compute_capability=(int(props.major), int(props.minor)), uuid=_uuid(props),
                  pci_bus_id=_pci_bus_id(props))
    try:
        seen = _nvml_view(gpu)
    except ImportError:
        return gpu, "nvidia-ml-py is not installed: the card was not checked against NVML"
    except Exception as exc:  # noqa: BLE001 - any NVML failure: torch's facts stand alone
        return gpu, f"NVML could not find this card ({' '.join(str(exc).split()) or type(exc).__name__})"
    gpu = replace(gpu, driver=seen.driver)
    if (seen.name, seen.compute_capability) != (gpu.name, gpu.compute_capability):
        return gpu, (f"CUDA and NVML disagree about {device}: CUDA says {gpu.name} "
                     f"(sm_{gpu.compute_capability[0]}{gpu.compute_capability[1]}), NVML says {seen.name} "
                     f"(sm_{seen.compute_capability[0]}{seen.compute_capability[1]})")
    return gpu, None


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
