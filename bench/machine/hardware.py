"""What machine are we on?  GPUs, CPU, torch/CUDA/cuDNN versions.

The benchmark's numbers only mean something next to the hardware and software
that produced them, and the most common failure on old GPUs (GTX 750 Ti,
GTX 1070) is a torch wheel without kernels for their architecture.  So
:func:`detect` gathers the facts once, never crashes (a machine without a
driver is simply the CPU path), and turns known problems into warnings that
say how to fix them.

(Over 400 lines on purpose: NVML, the CPU and the torch build are read and
cross-checked in one place, so that `bench env` and every run see one set of facts.)
"""
from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

GIB = 1 << 30

# Which torch build drives which card -- the one statement of it (README, profiles, `bench env`,
# scripts/gpu_check.sh all take it from here).  PyTorch's support matrix for release 2.14 keeps a
# "legacy" CUDA 12.6 build with Maxwell (sm_50), Pascal (sm_60, which runs sm_61 cards) and Volta
# (sm_70) kernels; its CUDA 13 builds start at Turing (sm_75) -- 13.0 is named here, the stable
# build with the older driver floor (580).  The versions are those of constraints.txt (a test holds
# them equal), so an old card runs the same torch as the rest.
TORCH_PIN, TORCHVISION_PIN = "2.14.1", "0.29.1"
LEGACY_INDEX, CURRENT_INDEX = "https://download.pytorch.org/whl/cu126", "https://download.pytorch.org/whl/cu130"
LEGACY_MAX_CAPABILITY = (7, 0)       # sm_50 .. sm_70: the cu126 build; newer: CUDA 13
CU126_INSTALL = f"pip install torch=={TORCH_PIN} torchvision=={TORCHVISION_PIN} --index-url {LEGACY_INDEX}"
CUDA_INSTALL = f"pip install torch=={TORCH_PIN} torchvision=={TORCHVISION_PIN} --index-url {CURRENT_INDEX}"


def install_line(cc: tuple[int, int]) -> str | None:
    """The exact pip command that installs a torch with kernels for compute capability ``cc``; None below
    Maxwell (no prebuilt torch of this version has kernels for it)."""
    cc = (int(cc[0]), int(cc[1]))
    if cc < (5, 0):
        return None
    return CU126_INSTALL if cc <= LEGACY_MAX_CAPABILITY else CUDA_INSTALL


@dataclass(frozen=True)
class GPUInfo:
    """One GPU as NVML (or torch) reports it.

    ``index`` is NVML's (PCI order) in :func:`detect`'s list and CUDA's for the
    GPU a run trains on (:func:`bench.machine.gpu.identify`); ``uuid`` ("GPU-...") and
    ``pci_bus_id`` are set where the card was identified by them.
    """

    index: int
    name: str
    total_memory_bytes: int
    compute_capability: tuple[int, int]
    driver: str | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {
            "index": self.index,
            "name": self.name,
            "total_memory_bytes": self.total_memory_bytes,
            "compute_capability": list(self.compute_capability),
            "driver": self.driver,
        }
        if self.uuid is not None or self.pci_bus_id is not None:
            d.update(uuid=self.uuid, pci_bus_id=self.pci_bus_id)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GPUInfo":
        major, minor = d["compute_capability"]
        return cls(
            index=int(d["index"]),
            name=str(d["name"]),
            total_memory_bytes=int(d["total_memory_bytes"]),
            compute_capability=(int(major), int(minor)),
            driver=None if d.get("driver") is None else str(d["driver"]),
            uuid=None if d.get("uuid") is None else str(d["uuid"]),
            pci_bus_id=None if d.get("pci_bus_id") is None else str(d["pci_bus_id"]),
        )


@dataclass(frozen=True)
class DeviceInfo:
    """The machine a run uses.

    ``kind`` is the device the run will actually train on: ``"cuda"`` only
    when a GPU is present *and* the installed torch can run kernels on it;
    otherwise ``"cpu"`` (``gpus`` still lists what NVML saw, and
    ``warnings`` says why it is not used).  ``selected`` is the GPU the run
    trains on, identified from the selected CUDA device (NVML's first GPU is
    not necessarily CUDA's, see :mod:`bench.machine.gpu`); without it, the first GPU.
    """

    kind: str
    gpus: tuple[GPUInfo, ...]
    cpu_model: str
    cpu_cores: int
    torch_version: str
    cuda_version: str | None
    cudnn_version: int | None
    torch_arch_list: tuple[str, ...]
    nvml_available: bool
    warnings: tuple[str, ...] = field(default_factory=tuple)
    selected: GPUInfo | None = None

    @property
    def gpu(self) -> GPUInfo | None:
        """The GPU the run uses: the selected one, else the first; None on the CPU."""
        if self.kind != "cuda":
            return None
        return self.selected or (self.gpus[0] if self.gpus else None)

    def with_selected(self, gpu: GPUInfo) -> "DeviceInfo":
        """This machine, training on ``gpu``."""
        return replace(self, kind="cuda", selected=gpu)

    @property
    def device_name(self) -> str:
        """The name written into records: the GPU name, or ``cpu: <model>``."""
        return self.gpu.name if self.gpu else f"cpu: {self.cpu_model}"

    @property
    def memory_bytes(self) -> int | None:
        """Total memory of the GPU the run uses, None on the CPU."""
        return self.gpu.total_memory_bytes if self.gpu else None

    @property
    def compute_capability(self) -> tuple[int, int] | None:
        """Compute capability of the GPU the run uses, None on the CPU."""
        return self.gpu.compute_capability if self.gpu else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (tuples become lists) for run.json."""
        return {
            "kind": self.kind,
            "device_name": self.device_name,
            "gpus": [g.to_dict() for g in self.gpus],
            "cpu_model": self.cpu_model,
            "cpu_cores": self.cpu_cores,
            "torch_version": self.torch_version,
            "cuda_version": self.cuda_version,
            "cudnn_version": self.cudnn_version,
            "torch_arch_list": list(self.torch_arch_list),
            "nvml_available": self.nvml_available,
            "warnings": list(self.warnings),
            "selected": None if self.selected is None else self.selected.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DeviceInfo":
        """Inverse of :meth:`to_dict`; raises ValueError on a malformed dict."""
        try:
            kind = str(d["kind"])
            if kind not in ("cuda", "cpu"):
                raise ValueError(f"kind must be 'cuda' or 'cpu', got {kind!r}")
            cudnn = d.get("cudnn_version")
            return cls(
                kind=kind,
                gpus=tuple(GPUInfo.from_dict(g) for g in d.get("gpus", ())),
                cpu_model=str(d["cpu_model"]),
                cpu_cores=int(d["cpu_cores"]),
                torch_version=str(d["torch_version"]),
                cuda_version=None if d.get("cuda_version") is None else str(d["cuda_version"]),
                cudnn_version=None if cudnn is None else int(cudnn),
                torch_arch_list=tuple(str(a) for a in d.get("torch_arch_list", ())),
                nvml_available=bool(d.get("nvml_available", False)),
                warnings=tuple(str(w) for w in d.get("warnings", ())),
                selected=None if d.get("selected") is None else GPUInfo.from_dict(d["selected"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed device info: {e!r}") from None


# --------------------------------------------------------------------------
# Architecture support

_ARCH_RE = re.compile(r"^(sm|compute)_(\d+)([a-z]?)$")

_ARCH_NAMES: dict[int, str] = {
    3: "Kepler (GTX 7xx)",
    5: "Maxwell (GTX 750 Ti)",
    6: "Pascal (GTX 10xx)",
    7: "Volta/Turing (V100, RTX 20xx)",
    8: "Ampere/Ada (A100, RTX 30xx/40xx)",
    9: "Hopper (H100/H200)",
    10: "Blackwell (B200)",
    12: "Blackwell (RTX 50xx)",
}


def _parse_arch(entry: str) -> tuple[str, tuple[int, int], str] | None:
    """'sm_61' -> ('sm', (6, 1), ''); 'sm_100a' -> ('sm', (10, 0), 'a')."""
    m = _ARCH_RE.match(entry.strip())
    if m is None:
        return None
    digits = m.group(2)
    if len(digits) < 2:
        return None
    return m.group(1), (int(digits[:-1]), int(digits[-1])), m.group(3)


def _install_hint(cc: tuple[int, int]) -> str:
    """Which torch build to install for this compute capability."""
    line = install_line(cc)
    if line is None:
        return ("no current PyTorch wheel supports it; use an old torch build "
                "(e.g. torch 1.12 with CUDA 11.3) or run on the CPU")
    if line == CU126_INSTALL:
        return f"install the CUDA 12.6 build: {line}"
    return f"install a torch build whose torch.cuda.get_arch_list() includes sm_{cc[0]}{cc[1]}: {line}"


def arch_support(cc: tuple[int, int], arch_list: Sequence[str]) -> str | None:
    """None when the installed torch has kernels for compute capability ``cc``.

    Checked up front because the alternative is a "no kernel image is
    available" error minutes into a run.  Kernels fit when ``arch_list`` has
    an ``sm_XY`` entry of the same major with minor <= the device's (binary
    compatibility within a major; arch-specific ``sm_90a`` only matches
    exactly), or a ``compute_XY`` PTX entry <= ``cc`` (JIT-compiled).  An
    empty list means a CPU-only torch build.  Otherwise returns a one-line
    message naming the architecture and the build to install.
    """
    cc = (int(cc[0]), int(cc[1]))
    sm = f"sm_{cc[0]}{cc[1]}"
    arch = _ARCH_NAMES.get(cc[0], f"compute capability {cc[0]}.{cc[1]}")
    hint = _install_hint(cc)
    if not arch_list:
        return (f"the installed torch is a CPU-only build, so the {arch} GPU ({sm}) "
                f"won't be used; to train on it, {hint}")
    for entry in arch_list:
        parsed = _parse_arch(entry)
        if parsed is None:
            continue
        kind, (major, minor), suffix = parsed
        if kind == "sm":
            if suffix and (major, minor) == cc:
                return None
            if not suffix and major == cc[0] and minor <= cc[1]:
                return None
        elif (major, minor) <= cc:
            return None
    return (f"the installed torch has no kernels for {sm}, {arch} "
            f"(it has {' '.join(arch_list)}); {hint}")


# --------------------------------------------------------------------------
# Detection

def _to_str(value: Any) -> str:
    """NVML returns bytes in old nvidia-ml-py releases and str in new ones."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _cpu_model() -> str:
    """The CPU's marketing name: /proc/cpuinfo on Linux, platform elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _nvml_gpus() -> tuple[GPUInfo, ...]:
    """All GPUs NVML sees; raises on any NVML problem (caller decides)."""
    import pynvml  # nvidia-ml-py; the separate `pynvml` package is deprecated

    pynvml.nvmlInit()
    try:
        try:
            driver: str | None = _to_str(pynvml.nvmlSystemGetDriverVersion())
        except Exception:  # noqa: BLE001 - a missing driver string is not fatal
            driver = None
        gpus = []
        for i in range(int(pynvml.nvmlDeviceGetCount())):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            gpus.append(GPUInfo(
                index=i,
                name=_to_str(pynvml.nvmlDeviceGetName(h)),
                total_memory_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(h).total),
                compute_capability=(int(major), int(minor)),
                driver=driver,
                uuid=_nvml_text(pynvml, "nvmlDeviceGetUUID", h),
                pci_bus_id=_nvml_pci_bus_id(pynvml, h),
            ))
        return tuple(gpus)
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def _nvml_text(pynvml: Any, fn: str, handle: Any) -> str | None:
    """An optional NVML string (absent from old nvidia-ml-py, or refused): None rather than an error."""
    try:
        return _to_str(getattr(pynvml, fn)(handle))
    except Exception:  # noqa: BLE001
        return None


def _nvml_pci_bus_id(pynvml: Any, handle: Any) -> str | None:
    """NVML's bus id ("00000000:01:00.0"), lower case as torch's is formatted (:func:`_pci_bus_id`)."""
    try:
        info = pynvml.nvmlDeviceGetPciInfo(handle)
    except Exception:  # noqa: BLE001
        return None
    text = _to_str(getattr(info, "busId", "") or getattr(info, "busIdLegacy", ""))
    if text.count(":") == 2 and len(text.split(":")[0]) == 4:   # legacy 4-digit domain
        text = "0000" + text
    return text.lower() or None


def _torch_gpus(torch: Any) -> tuple[GPUInfo, ...]:
    """GPUs through torch, for machines without NVML (no driver string)."""
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append(GPUInfo(i, str(p.name), int(p.total_memory),
                            (int(p.major), int(p.minor)), None))
    return tuple(gpus)


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


def cuda_card(torch: Any, index: int) -> GPUInfo:
    """CUDA device ``index`` as torch describes it (CUDA's numbering), with the UUID and PCI bus id that find
    the same card in NVML; raises where torch cannot describe it."""
    props = torch.cuda.get_device_properties(index)
    return GPUInfo(index=int(index), name=str(props.name), total_memory_bytes=int(props.total_memory),
                   compute_capability=(int(props.major), int(props.minor)), uuid=_uuid(props),
                   pci_bus_id=_pci_bus_id(props))


def nvml_handle(pynvml: Any, card: GPUInfo) -> Any:
    """NVML's handle of ``card``, found by its UUID, else its PCI bus id -- never by CUDA's index, which
    NVML does not share (PCI order, ``CUDA_VISIBLE_DEVICES`` ignored).  Raises LookupError when not found."""
    for lookup, key in ((getattr(pynvml, "nvmlDeviceGetHandleByUUID", None), card.uuid),
                        (getattr(pynvml, "nvmlDeviceGetHandleByPciBusId", None), card.pci_bus_id)):
        if lookup is not None and key:
            try:
                return lookup(key)
            except pynvml.NVMLError:
                pass
    raise LookupError(f"NVML has no GPU with UUID {card.uuid} or PCI bus id {card.pci_bus_id}")


def _nvml_match(card: GPUInfo, gpus: Sequence[GPUInfo]) -> GPUInfo | None:
    """The entry of NVML's list that is ``card`` (same UUID or PCI bus id), if any."""
    for g in gpus:
        if (card.uuid and g.uuid == card.uuid) or (card.pci_bus_id and g.pci_bus_id == card.pci_bus_id):
            return g
    return None


def detect(nvml: bool = True) -> DeviceInfo:
    """Probe the machine; never raises for missing drivers or GPUs.

    GPUs come from NVML (driver-level facts, including the driver version),
    else from ``torch.cuda`` when NVML is missing or fails.  Note that NVML
    lists every GPU in PCI order and ignores CUDA_VISIBLE_DEVICES; a warning
    is recorded when its count differs from torch's.  The run uses CUDA's
    current device (found in NVML's list by UUID / PCI bus id, never by index;
    NVML's first GPU only where torch cannot describe its card), and only if
    torch can drive it: CUDA available and kernels for its architecture (see
    :func:`arch_support`); otherwise the CPU path.
    """
    import torch

    warnings: list[str] = []
    gpus: tuple[GPUInfo, ...] = ()
    nvml_ok = False

    try:
        cuda_available = bool(torch.cuda.is_available())
    except Exception as e:  # noqa: BLE001
        cuda_available = False
        warnings.append(f"torch.cuda.is_available() failed: {e}")

    if nvml:
        try:
            gpus = _nvml_gpus()
            nvml_ok = True
            if not gpus:
                warnings.append("NVML found no GPU; running on the CPU")
        except ImportError:
            warnings.append("nvidia-ml-py is not installed (pip install nvidia-ml-py); "
                            "GPU memory will not be read through NVML")
        except Exception as e:  # noqa: BLE001 - any NVML failure means "no NVML"
            msg = " ".join(str(e).split()) or type(e).__name__
            warnings.append(f"NVML unavailable ({msg}); no NVIDIA driver?")
    if not gpus and cuda_available:
        try:
            gpus = _torch_gpus(torch)
        except Exception as e:  # noqa: BLE001
            warnings.append(f"torch.cuda.get_device_properties failed: {e}")

    cuda_version = torch.version.cuda
    try:
        arch_list = tuple(torch.cuda.get_arch_list()) if cuda_version else ()
    except Exception:  # noqa: BLE001
        arch_list = ()
    try:
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:  # noqa: BLE001
        cudnn = None

    # the card CUDA would train on (its current device), found in NVML's list by UUID / PCI bus id:
    # NVML's GPU 0 is another card wherever the orders differ or CUDA_VISIBLE_DEVICES hides cards
    selected: GPUInfo | None = None
    if cuda_available:
        try:
            card = cuda_card(torch, torch.cuda.current_device())
            seen = _nvml_match(card, gpus)
            selected = replace(card, driver=seen.driver) if seen is not None else card
        except Exception:  # noqa: BLE001 - torch cannot describe it: NVML's first card stands in
            selected = None

    kind = "cpu"
    if gpus or selected is not None:
        first = selected or gpus[0]
        problem: str | None = None
        if cuda_version is None:
            problem = arch_support(first.compute_capability, ())
        elif arch_list:
            problem = arch_support(first.compute_capability, arch_list)
        if problem is not None:
            warnings.append(f"GPU {first.index} ({first.name}): {problem}")
        elif not cuda_available:
            warnings.append(
                f"GPU {first.index} ({first.name}) is present but torch.cuda.is_available() "
                f"is False (driver too old for CUDA {cuda_version}?); running on the CPU")
        else:
            kind = "cuda"
            try:
                n_torch = torch.cuda.device_count()
            except Exception:  # noqa: BLE001
                n_torch = len(gpus)
            if nvml_ok and n_torch != len(gpus):
                warnings.append(
                    f"NVML sees {len(gpus)} GPU(s) but torch sees {n_torch} "
                    "(CUDA_VISIBLE_DEVICES?); NVML's numbering is not CUDA's, the card is matched by UUID")

    return DeviceInfo(
        kind=kind,
        gpus=gpus,
        cpu_model=_cpu_model(),
        cpu_cores=os.cpu_count() or 1,
        torch_version=str(torch.__version__),
        cuda_version=None if cuda_version is None else str(cuda_version),
        cudnn_version=None if cudnn is None else int(cudnn),
        torch_arch_list=arch_list,
        nvml_available=nvml_ok,
        warnings=tuple(warnings),
        selected=selected if kind == "cuda" else None,
    )


# --------------------------------------------------------------------------
# Formatting

def format_cudnn(version: int | None) -> str:
    """92400 -> '9.24.0', 8907 -> '8.9.7' (cuDNN 9 changed the encoding)."""
    if version is None:
        return "-"
    if version >= 90000:
        return f"{version // 10000}.{version % 10000 // 100}.{version % 100}"
    return f"{version // 1000}.{version % 1000 // 100}.{version % 100}"


def format_gib(n_bytes: int | None) -> str:
    """Bytes as GiB with two decimals; '-' for unknown."""
    return "-" if n_bytes is None else f"{n_bytes / GIB:.2f} GiB"


def format_env(info: DeviceInfo) -> str:
    """The text ``bench env`` prints: one aligned row per fact, then warnings."""
    rows: list[tuple[str, str]] = [("device", f"{info.kind}  ({info.device_name})")]
    for g in info.gpus:
        cc = g.compute_capability
        driver = f", driver {g.driver}" if g.driver else ""
        rows.append((f"GPU {g.index}",
                     f"{g.name}, {format_gib(g.total_memory_bytes)}, "
                     f"sm_{cc[0]}{cc[1]}{driver}"))
    if not info.gpus:
        rows.append(("GPU", "none"))
    rows += [
        ("CPU", f"{info.cpu_model}, {info.cpu_cores} cores"),
        ("torch", info.torch_version),
        ("CUDA", info.cuda_version or "- (CPU-only build)"),
        ("cuDNN", format_cudnn(info.cudnn_version)),
        ("arch list", " ".join(info.torch_arch_list) or "-"),
        ("NVML", "available" if info.nvml_available else "not available"),
    ]
    card = info.gpu or (info.gpus[0] if info.gpus else None)
    if card is not None:   # the torch build for this card (the one the run uses, else NVML's first)
        rows.append(("install", install_line(card.compute_capability) or _install_hint(card.compute_capability)))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines += [f"warning: {w}" for w in info.warnings]
    return "\n".join(lines)


if __name__ == "__main__":   # `python3 bench/machine/hardware.py install-line 6.1`: the install step of gpu_check.sh,
    import sys               # before any torch is installed (this module imports torch only in detect())

    if len(sys.argv) != 3 or sys.argv[1] != "install-line":
        sys.exit("usage: python3 bench/machine/hardware.py install-line MAJOR.MINOR")
    major, _, minor = sys.argv[2].strip().partition(".")
    print(install_line((int(major), int(minor or 0))) or "")
