"""A fake CUDA machine (torch.cuda + NVML) for tests without a GPU, holding the real contracts.

What the real functions refuse, the fakes refuse the same way:

* ``torch.cuda.set_per_process_memory_fraction(fraction, device)`` resolves the
  device with torch's own ``torch.cuda._utils._get_device_index`` (a
  ``torch.device("cuda")`` without an index raises ValueError, as on a GPU),
  requires a float in [0, 1], and records ``(fraction, index)``.
* ``torch.cuda.get_device_properties`` raises for an index out of range; its
  ``uuid`` prints without NVML's "GPU-" prefix, as torch's does.
* ``torch.set_rng_state`` / ``torch.cuda.set_rng_state_all`` (via
  :func:`strict_rng`) take only CPU byte tensors, one per visible GPU at most.
* NVML lists the cards in PCI bus order, whatever CUDA's order and
  ``CUDA_VISIBLE_DEVICES``; ``nvmlDeviceGetHandleByUUID`` needs the full
  "GPU-..." UUID and ``nvmlDeviceGetHandleByPciBusId`` the bus id of a card
  that exists, else ``NVMLError``.
"""
from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch

GIB = 1 << 30
CURRENT_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]   # 2.8+ cu128 wheels
CU126_ARCHS = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


@dataclass(frozen=True)
class Card:
    name: str
    cc: tuple[int, int]
    memory: int
    bus: int                       # PCI bus number: NVML's order
    uuid: str = ""                 # bare hex, as torch prints it

    def full_uuid(self) -> str:
        return f"GPU-{self.uuid}"

    def bus_id(self) -> str:
        return f"00000000:{self.bus:02x}:00.0"


GTX750TI = Card("NVIDIA GeForce GTX 750 Ti", (5, 0), 2 * GIB, bus=1, uuid="750750-0000-0000-0000-000000000001")
GTX1070 = Card("NVIDIA GeForce GTX 1070", (6, 1), 8 * GIB, bus=2, uuid="107010-0000-0000-0000-000000000002")
GTX1080TI = Card("NVIDIA GeForce GTX 1080 Ti", (6, 1), 11 * GIB, bus=3, uuid="108011-0000-0000-0000-000000000003")
A100 = Card("NVIDIA A100-SXM4-40GB", (8, 0), 40 * GIB, bus=4, uuid="a100a1-0000-0000-0000-000000000004")


class NVMLError(Exception):
    pass


@dataclass
class FakeCuda:
    """``visible`` in CUDA's order (cuda:0 first); ``machine`` is every card, which NVML lists by bus."""

    visible: list[Card]
    machine: list[Card]
    arch_list: list[str]
    fractions: list[tuple[float, int]] = field(default_factory=list)
    current: int = 0

    def index(self, device, optional: bool) -> int:
        if device is None or (isinstance(device, torch.device) and device.index is None and optional):
            return self.current
        if isinstance(device, str):
            device = torch.device(device)
        if isinstance(device, torch.device) and device.index is None:
            return self.current
        return int(device.index if isinstance(device, torch.device) else device)

    def properties(self, device=None):
        i = self.index(device, optional=True)
        if not 0 <= i < len(self.visible):
            raise AssertionError("Invalid device id")
        c = self.visible[i]
        uuid = type("_CUuuid", (), {"__str__": lambda self, u=c.uuid: u})()
        return SimpleNamespace(name=c.name, major=c.cc[0], minor=c.cc[1], total_memory=c.memory, uuid=uuid,
                               pci_bus_id=c.bus, pci_device_id=0, pci_domain_id=0, multi_processor_count=15)

    def set_fraction(self, fraction, device=None) -> None:
        # torch.cuda.memory.set_per_process_memory_fraction, less the allocator call
        if device is None:
            device = self.current
        index = torch.cuda._utils._get_device_index(device)   # the real resolution: raises without an index
        if not isinstance(fraction, float):
            raise TypeError("Invalid type for fraction argument, must be `float`")
        if fraction < 0 or fraction > 1:
            raise ValueError(f"Invalid fraction value: {fraction}. Allowed range: 0~1")
        if not 0 <= index < len(self.visible):
            raise RuntimeError("CUDA error: invalid device ordinal")
        self.fractions.append((fraction, index))


def nvml_module(machine: list[Card], driver: str = "535.183.01",
                processes: dict[str, list[tuple[int, int | None]]] | None = None) -> types.ModuleType:
    """nvidia-ml-py as it behaves: cards by PCI bus, lookups by full UUID or bus id, str or bytes in.

    ``processes``: card name -> ``(pid, usedGpuMemory)`` of the compute processes NVML lists on it.
    ``nvmlDeviceGetPciInfo`` gives ``busId`` as NVML writes it (upper-case hex).
    """
    by_bus = sorted(machine, key=lambda c: c.bus)
    mod = types.ModuleType("pynvml")
    mod.NVMLError = NVMLError

    def text(arg) -> str:
        return arg.decode() if isinstance(arg, bytes) else str(arg)

    def by_uuid(uuid):
        hit = [c for c in by_bus if c.full_uuid() == text(uuid)]   # NVML wants "GPU-..."
        if not hit:
            raise NVMLError("Not Found")
        return ("h", hit[0].bus)

    def by_pci(bus_id):
        hit = [c for c in by_bus if c.bus_id() == text(bus_id).lower()]
        if not hit:
            raise NVMLError("Not Found")
        return ("h", hit[0].bus)

    def card(handle) -> Card:
        return next(c for c in by_bus if c.bus == handle[1])

    mod.calls = []                 # nvmlInit / nvmlShutdown, in order: every init must be shut down
    mod.nvmlInit = lambda: mod.calls.append("nvmlInit")
    mod.nvmlShutdown = lambda: mod.calls.append("nvmlShutdown")
    mod.nvmlSystemGetDriverVersion = lambda: driver
    mod.nvmlDeviceGetCount = lambda: len(by_bus)
    mod.nvmlDeviceGetHandleByIndex = lambda i: ("h", by_bus[i].bus)
    mod.nvmlDeviceGetHandleByUUID = by_uuid
    mod.nvmlDeviceGetHandleByPciBusId = by_pci
    mod.nvmlDeviceGetName = lambda h: card(h).name
    mod.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(total=card(h).memory, free=card(h).memory, used=0)
    mod.nvmlDeviceGetCudaComputeCapability = lambda h: card(h).cc
    mod.nvmlDeviceGetUUID = lambda h: card(h).full_uuid()
    mod.nvmlDeviceGetPciInfo = lambda h: SimpleNamespace(busId=card(h).bus_id().upper().encode())
    mod.nvmlDeviceGetComputeRunningProcesses = lambda h: [
        SimpleNamespace(pid=pid, usedGpuMemory=mem) for pid, mem in (processes or {}).get(card(h).name, [])]
    mod.nvmlDeviceGetGraphicsRunningProcesses = lambda h: []
    return mod


def install(monkeypatch, visible: list[Card], machine: list[Card] | None = None,
            arch_list: list[str] | None = None,
            processes: dict[str, list[tuple[int, int | None]]] | None = None) -> FakeCuda:
    """Make this process see ``visible`` as its CUDA devices (and ``machine`` through NVML)."""
    fake = FakeCuda(visible=list(visible), machine=list(machine or visible),
                    arch_list=list(CU126_ARCHS if arch_list is None else arch_list))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(fake.visible))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: fake.current)
    monkeypatch.setattr(torch.cuda, "get_device_properties", fake.properties)
    monkeypatch.setattr(torch.cuda, "get_device_capability",
                        lambda d=None: (fake.properties(d).major, fake.properties(d).minor))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: fake.properties(d).name)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(fake.arch_list))
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", fake.set_fraction)
    import torchvision  # noqa: F401  (checks torch.version.cuda against its own build once, at import)

    monkeypatch.setattr(torch.version, "cuda", "12.6")
    monkeypatch.setitem(sys.modules, "pynvml", nvml_module(fake.machine, processes=processes))
    return fake


def strict_rng(monkeypatch, visible_gpus: int) -> None:
    """torch's RNG setters as they are: CPU byte tensors only, one CUDA state per visible GPU at most."""
    real = torch.set_rng_state

    def set_rng_state(state):
        if not isinstance(state, torch.Tensor) or state.device.type != "cpu" or state.dtype != torch.uint8:
            raise TypeError(f"expected a torch.ByteTensor, but got {type(state).__name__} on "
                            f"{getattr(state, 'device', '?')}")
        real(state)

    def set_rng_state_all(states):
        for i, s in enumerate(states):
            if i >= visible_gpus:
                raise RuntimeError(f"CUDA error: invalid device ordinal {i}")
            if s.device.type != "cpu":
                raise TypeError("expected a CPU torch.ByteTensor")

    monkeypatch.setattr(torch, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_rng_state_all)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all",
                        lambda: [torch.zeros(16, dtype=torch.uint8) for _ in range(visible_gpus)])


@dataclass
class FakeAllocator:
    """torch's caching allocator as its peak statistics see it (c10/cuda/CUDACachingAllocator.cpp):

    ``allocated`` is live tensors, ``reserved`` what the cache holds (never less than allocated);
    ``empty_cache`` gives back every unoccupied block (reserved falls to allocated);
    ``reset_peak_memory_stats`` sets each peak to the *current* value, it does not zero it.
    """

    allocated: int = 0
    reserved: int = 0
    peak_allocated: int = 0
    peak_reserved: int = 0
    calls: list[str] = field(default_factory=list)

    def alloc(self, n: int) -> None:
        self.allocated += n
        self.reserved = max(self.reserved, self.allocated)
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        self.peak_reserved = max(self.peak_reserved, self.reserved)

    def free(self, n: int) -> None:       # freed blocks stay cached
        self.allocated -= n

    def install(self, monkeypatch) -> "FakeAllocator":
        def index(device):
            return torch.cuda._utils._get_device_index(device, optional=True)

        def empty_cache():
            self.calls.append("empty_cache")
            self.reserved = self.allocated

        def reset(device=None):
            index(device)
            self.calls.append("reset_peak_memory_stats")
            self.peak_allocated, self.peak_reserved = self.allocated, self.reserved

        monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: self.calls.append("synchronize"))
        monkeypatch.setattr(torch.cuda, "empty_cache", empty_cache)
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", reset)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: self.peak_allocated)
        monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: self.peak_reserved)
        return self
