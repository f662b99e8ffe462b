"""The device a command computes on, decided once: card, profile, memory budget, backend options.

A command chooses its machine (:func:`choose`: the device from ``--device`` and
the profile matched to that card) once, and :func:`prepare_device` turns it and
the run's settings into a :class:`DeviceSetup`: a pure decision, checked
against the card (torch build, compile, bf16, tf32) before anything is written.
Nothing global changes until the command calls :meth:`DeviceSetup.apply`: fp32
precision and cuDNN autotuning (:func:`bench.machine.gpu.configure`), the
``--emulate`` memory cap and the CPU thread count, in one place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from . import gpu
from .hardware import DeviceInfo, detect
from .profiles import Profile, resolve_profile


@dataclass(frozen=True)
class Machine:
    """The device selected, the machine described by it (its card identified) and the profile matched to it."""

    device: torch.device
    info: DeviceInfo
    profile: Profile


def choose(device: str, profile: str | Profile, dist: Any = None, info: DeviceInfo | None = None) -> Machine:
    """``--device`` and ``--profile`` as this machine answers them: the one place both are resolved.

    A :class:`Profile` (a resumed run's, as it recorded it) is taken as it is.
    """
    selected, info = gpu.select(device, info if info is not None else detect(), dist)
    return Machine(selected, info, profile if isinstance(profile, Profile) else resolve_profile(profile, info))


@dataclass(frozen=True)
class DeviceSetup:
    """The device a run trains on, the machine described by it, its profile, budget, emulation and backend options."""

    device: torch.device
    info: DeviceInfo
    profile: Profile
    budget_bytes: int
    emulated: bool
    fp32_precision: str = "ieee"
    memory_fraction: float | None = None   # the --emulate cap of this process's CUDA allocator
    threads: int | None = None             # torch.set_num_threads (None: leave torch's choice)

    def apply(self) -> "DeviceSetup":
        """Set what the setup decided, process-wide: backend options, the memory cap, the thread count."""
        if self.threads:
            torch.set_num_threads(self.threads)
        gpu.configure(self.device, self.fp32_precision)
        if self.memory_fraction is not None:
            gpu.cap_memory(self.memory_fraction, self.device)
        return self


def prepare_device(cfg, dist=None, machine: Machine | None = None, threads: int | None = None) -> DeviceSetup:
    """:func:`decide` the setup, then :meth:`DeviceSetup.apply` it: what a command calls before it computes."""
    return decide(cfg, dist, machine, threads).apply()


def decide(cfg, dist=None, machine: Machine | None = None, threads: int | None = None) -> DeviceSetup:
    """Check the device against ``cfg`` (bench.machine.gpu), its budget, and whether to cap its memory (--emulate).

    ``cfg``: a RunConfig, or any settings with ``device``, ``profile`` and ``emulate`` (a replay's).
    ``machine``: chosen by the command already (else chosen here from ``cfg``).
    """
    machine = machine or choose(cfg.device, cfg.profile, dist)
    device, info, profile = machine.device, machine.info, machine.profile
    precision = getattr(cfg, "fp32_precision", "ieee")
    budget = profile.resolve_budget(info)
    if device.type != "cuda":  # a GPU profile's budget decisions, made on the CPU, are emulated
        gpu.check_cpu_features(cfg)
        return DeviceSetup(device, info, profile, budget, emulated=profile.device_kind == "cuda",
                           fp32_precision=precision, threads=threads)
    gpu.check_features(cfg, info.gpu)
    fraction = profile.emulation_fraction(info, gpu.context_bytes(device)) if cfg.emulate else None
    return DeviceSetup(device, info, profile, budget, emulated=fraction is not None, fp32_precision=precision,
                       memory_fraction=fraction, threads=threads)


def select_device_name(info: DeviceInfo, device: torch.device) -> str:
    """The device name written into every row."""
    return info.device_name if device.type == "cuda" else f"cpu: {info.cpu_model}"
