"""Hardware profiles: a memory budget plus ``bench run`` defaults per device.

A profile says which device it describes (to pick it automatically), the
memory a run must fit (so a big GPU can emulate a small one's batch
decisions) and sensible run defaults for that device.  Profiles are small
TOML files; every key is validated so that a typo fails at load time with
one line naming the file and the key, not hours into a run.  The run
defaults are a partial RunConfig, checked by the loader of bench.config.

(Over 400 lines on purpose: the TOML checker, the profile and its matching to a
device stay together so that a key's rule and its error message are read in one place.)
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

from ..config import Overrides, partial_from, profile_source, resolve
from ..errors import BenchError, ProfileError
from .hardware import GIB, DeviceInfo

DEVICE_KINDS = ("cuda", "cpu")
MEMORY_TOLERANCE = 0.10  # "same memory" for matching: within 10 %
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def builtin_profile_dir() -> Path:
    """The built-in profiles: TOML files shipped inside the package (package data), so any install has them."""
    return Path(__file__).resolve().parent / "builtin_profiles"


@dataclass(frozen=True)
class Profile:
    """A validated profile; sizes in bytes.  ``budget_bytes`` None = "device"."""

    name: str
    description: str
    auto: bool
    device_kind: str
    name_patterns: tuple[str, ...]
    compute_capability: tuple[int, int] | None
    device_memory_bytes: int | None
    budget_bytes: int | None
    reserve_bytes: int
    headroom: float
    defaults: Overrides = field(default_factory=lambda: Overrides({}))  # a partial RunConfig
    source: str = ""
    purpose: str = ""  # what runs on it are for, in a sentence the report shows beside their results

    # -- behaviour -----------------------------------------------------------
    def resolve_budget(self, device: DeviceInfo) -> int:
        """The memory budget in bytes on ``device``.

        A numeric budget is returned as is, also when a CUDA profile runs on
        the CPU (the CPU then emulates the budget's batch decisions).
        "device" means the detected GPU's full memory, which needs a GPU.
        """
        if self.budget_bytes is not None:
            return self.budget_bytes
        if device.memory_bytes is None:
            raise ProfileError(
                f"profile '{self.name}' uses the GPU's full memory (budget \"device\") "
                "but no usable GPU was detected: choose a profile with a numeric "
                "budget, e.g. --profile cpu")
        return device.memory_bytes

    def emulation_fraction(self, device: DeviceInfo, context_bytes: int | None = None) -> float | None:
        """Fraction for ``torch.cuda.set_per_process_memory_fraction`` (``--emulate``).

        The cap limits only torch's caching allocator; on the real small card the
        CUDA context (and the driver memory of the cuDNN and cuBLAS handles) takes
        its share first.  So the larger of the profile's reserve and
        ``context_bytes`` -- this process's driver memory outside the allocator,
        measured where NVML reports it (:func:`bench.machine.gpu.context_bytes`) -- is
        subtracted: (budget - context) / device total.  What the emulation still
        leaves out: the small card's slower memory and fewer SMs (time is the big
        card's), and a context that grows after the measurement (cuDNN's handle
        is created at the first convolution) beyond the profile's reserve.  None
        when there is nothing to emulate: CPU device, "device" budget, or a GPU
        not larger than the budget.
        """
        total = device.memory_bytes
        if device.kind != "cuda" or total is None or self.budget_bytes is None:
            return None
        if total <= self.budget_bytes:
            return None
        usable = self.budget_bytes - max(self.reserve_bytes, context_bytes or 0)
        if usable <= 0:
            return None
        return usable / total

    def matches_name(self, gpu_name: str) -> str | None:
        """The longest of this profile's patterns found in ``gpu_name`` (case-insensitive)."""
        low = gpu_name.lower()
        hits = [p for p in self.name_patterns if p.lower() in low]
        return max(hits, key=len) if hits else None

    # -- serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form for run.json."""
        d = asdict(self)
        d["defaults"] = self.defaults.to_dict()
        d["name_patterns"] = list(self.name_patterns)
        d["compute_capability"] = (None if self.compute_capability is None
                                   else list(self.compute_capability))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Profile":
        """Inverse of :meth:`to_dict`; raises ValueError on a malformed dict."""
        try:
            cc = d.get("compute_capability")
            return cls(
                name=str(d["name"]),
                description=str(d.get("description", "")),
                auto=bool(d.get("auto", True)),
                device_kind=str(d["device_kind"]),
                name_patterns=tuple(str(p) for p in d.get("name_patterns", ())),
                compute_capability=None if cc is None else (int(cc[0]), int(cc[1])),
                device_memory_bytes=_opt_int(d.get("device_memory_bytes")),
                budget_bytes=_opt_int(d.get("budget_bytes")),
                reserve_bytes=int(d["reserve_bytes"]),
                headroom=float(d["headroom"]),
                defaults=partial_from(d.get("defaults", {}), profile_source(d.get("source", "profile"))),
                source=str(d.get("source", "")),
                purpose=str(d.get("purpose", "")),
            )
        except (KeyError, TypeError, ValueError, IndexError, BenchError) as e:
            raise ValueError(f"malformed profile: {e!r}") from None


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


# --------------------------------------------------------------------------
# Loading and validation

class _Checker:
    """Typed access to one TOML file's tables; every failure names file and key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, what: str, got: Any = ...) -> ProfileError:
        tail = "" if got is ... else f" (got {got!r})"
        msg = f"{self.path}: key '{key}' {what}{tail}"
        return ProfileError(" ".join(msg.split()))

    def table(self, data: Mapping[str, Any], key: str, allowed: Iterable[str],
              required: bool = True) -> dict[str, Any]:
        if key not in data:
            if required:
                raise self.fail(key, "is missing: add a [" + key + "] table")
            return {}
        value = data[key]
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table [" + key + "]", value)
        self.no_unknown(value, allowed, prefix=key + ".")
        return value

    def no_unknown(self, data: Mapping[str, Any], allowed: Iterable[str],
                   prefix: str = "") -> None:
        allowed = list(allowed)
        for k in data:
            if k not in allowed:
                raise self.fail(prefix + k, "is unknown: allowed keys are "
                                + ", ".join(prefix + a for a in allowed))

    def string(self, data: Mapping[str, Any], key: str, name: str,
               default: str | None = None, choices: Iterable[str] | None = None) -> str:
        if key not in data:
            if default is None:
                raise self.fail(name, "is missing")
            return default
        v = data[key]
        if not isinstance(v, str) or not v.strip():
            raise self.fail(name, "must be a non-empty string", v)
        if choices is not None and v not in choices:
            raise self.fail(name, "must be one of " + ", ".join(f'"{c}"' for c in choices), v)
        return v

    def number(self, data: Mapping[str, Any], key: str, name: str, default: float | None,
               what: str, ok: Callable[[float], bool]) -> float:
        if key not in data and default is None:
            raise self.fail(name, f"is missing: it must be {what}")
        v = data.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.fail(name, f"must be {what}", v)
        if not ok(v):
            raise self.fail(name, f"must be {what}", v)
        return float(v)


def _gib_to_bytes(gib: float) -> int:
    return int(round(gib * GIB))


def load_profile(path: str | Path, *, builtin: bool = False) -> Profile:
    """Read and validate one profile TOML; ProfileError (one line) on any problem.

    ``builtin`` additionally requires ``name`` to equal the file stem, so that
    ``--profile NAME`` and the file agree.
    """
    path = Path(path)
    c = _Checker(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ProfileError(f"{path}: profile file not found") from None
    except OSError as e:
        raise ProfileError(f"{path}: cannot read profile ({e.strerror or e})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as e:
        msg = " ".join(str(e).split())
        raise ProfileError(f"{path}: TOML syntax error: {msg}") from None

    c.no_unknown(data, ("name", "description", "purpose", "auto", "device", "budget", "defaults"))
    name = c.string(data, "name", "name")
    if not _NAME_RE.match(name) or name == "auto":
        raise c.fail("name", "must be letters, digits, '_', '.' or '-' and not \"auto\"", name)
    if builtin and name != path.stem:
        raise c.fail("name", f"must equal the file name '{path.stem}'", name)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise c.fail("description", "must be a string", description)
    purpose = data.get("purpose", "")
    if not isinstance(purpose, str):
        raise c.fail("purpose", "must be a string", purpose)
    auto = data.get("auto", True)
    if not isinstance(auto, bool):
        raise c.fail("auto", "must be true or false", auto)

    # [device]
    dev = c.table(data, "device", ("kind", "name_patterns", "compute_capability", "memory_gib"))
    kind = c.string(dev, "kind", "device.kind", choices=DEVICE_KINDS)
    patterns: tuple[str, ...] = ()
    if "name_patterns" in dev:
        p = dev["name_patterns"]
        if (not isinstance(p, list)
                or not all(isinstance(s, str) and s.strip() for s in p)):
            raise c.fail("device.name_patterns", "must be a list of non-empty strings", p)
        patterns = tuple(p)
    cc: tuple[int, int] | None = None
    if "compute_capability" in dev:
        v = dev["compute_capability"]
        if (not isinstance(v, list) or len(v) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                           for x in v) or v[0] < 1):
            raise c.fail("device.compute_capability", "must be [major, minor], e.g. [6, 1]", v)
        cc = (v[0], v[1])
    if kind == "cpu":
        for k in ("name_patterns", "compute_capability"):
            if k in dev:
                raise c.fail(f"device.{k}", 'is only allowed with kind = "cuda"')
    dev_mem = None
    if "memory_gib" in dev:
        dev_mem = _gib_to_bytes(c.number(dev, "memory_gib", "device.memory_gib", None,
                                         "a number of GiB > 0", lambda x: x > 0))

    # [budget]
    bud = c.table(data, "budget", ("memory_gib", "reserve_gib", "headroom"))
    if "memory_gib" not in bud:
        raise c.fail("budget.memory_gib", 'is missing: it must be a number of GiB > 0 or "device"')
    budget: int | None
    if bud["memory_gib"] == "device":
        if kind != "cuda":
            raise c.fail("budget.memory_gib", 'may be "device" only with device.kind = "cuda"; '
                         "give a number of GiB > 0")
        budget = None
    else:
        budget = _gib_to_bytes(c.number(bud, "memory_gib", "budget.memory_gib", None,
                                        'a number of GiB > 0 or "device"', lambda x: x > 0))
    if kind == "cuda" and budget is not None and dev_mem is None:
        raise c.fail("device.memory_gib", 'is missing: a cuda profile with a numeric budget '
                     "must give the device's memory in GiB")
    reserve_gib = c.number(bud, "reserve_gib", "budget.reserve_gib",
                           0.3 if kind == "cuda" else 0.0, "a number of GiB >= 0",
                           lambda x: x >= 0)
    reserve = _gib_to_bytes(reserve_gib)
    if budget is not None and reserve >= budget:
        raise c.fail("budget.reserve_gib", "must be smaller than budget.memory_gib", reserve_gib)
    headroom = c.number(bud, "headroom", "budget.headroom", 0.9,
                        "a fraction with 0 < headroom <= 1", lambda x: 0 < x <= 1)

    # [defaults]: a partial RunConfig, read by the loader every source of settings goes through
    if not isinstance(data.get("defaults", {}), dict):
        raise c.fail("defaults", "must be a table [defaults]", data["defaults"])
    defaults = partial_from(data.get("defaults", {}), profile_source(path))
    resolve(profile=defaults)  # its values together (a cap below its own batch): refused now, not in a run

    return Profile(
        name=name, description=description, auto=auto, device_kind=kind,
        name_patterns=patterns, compute_capability=cc, device_memory_bytes=dev_mem,
        budget_bytes=budget, reserve_bytes=reserve, headroom=headroom,
        defaults=defaults, source=str(path), purpose=" ".join(purpose.split()),
    )


def builtin_profiles() -> dict[str, Profile]:
    """All built-in profiles by name (read fresh: the files are tiny)."""
    folder = builtin_profile_dir()
    if not folder.is_dir():
        raise ProfileError(f"{folder}: built-in profile folder not found "
                           "(the package is incomplete: reinstall it)")
    return {p.stem: load_profile(p, builtin=True) for p in sorted(folder.glob("*.toml"))}


# --------------------------------------------------------------------------
# Selection

def _memory_close(profile: Profile, gpu_bytes: int) -> bool:
    m = profile.device_memory_bytes
    return m is not None and abs(gpu_bytes - m) <= MEMORY_TOLERANCE * m


def match_profile(device: DeviceInfo, profiles: Mapping[str, Profile]) -> Profile:
    """The profile ``--profile auto`` picks for ``device``.  Pure.

    Only profiles with ``auto = true`` take part.  The rule:

    * CPU device: the profile named ``cpu`` if it is a cpu profile, else the
      first cpu profile by name.
    * CUDA device (the GPU the run trains on, :attr:`DeviceInfo.gpu`):
      1. profiles with a ``name_patterns`` entry found in the GPU name
         (case-insensitive); the longest matching pattern wins ("GTX 1080 Ti"
         beats "GTX 1080"), then equal compute capability, then memory
         within 10 %, then the name;
      2. else profiles whose compute capability equals the GPU's *and* whose
         device memory is within 10 % of it (closest memory wins);
      3. else the generic fallback: a cuda profile with no patterns, no
         compute capability and no device memory, preferring ``server``.
    """
    candidates = sorted((p for p in profiles.values() if p.auto), key=lambda p: p.name)
    gpu = device.gpu
    if gpu is None:
        cpu = [p for p in candidates if p.device_kind == "cpu"]
        if not cpu:
            raise ProfileError("no auto-selectable cpu profile: pass --profile NAME or a .toml path")
        return next((p for p in cpu if p.name == "cpu"), cpu[0])

    cuda = [p for p in candidates if p.device_kind == "cuda"]

    named = [(p, hit) for p in cuda if (hit := p.matches_name(gpu.name)) is not None]
    if named:
        def rank(item: tuple[Profile, str]) -> tuple[int, int, int]:
            p, hit = item
            return (-len(hit), 0 if p.compute_capability == gpu.compute_capability else 1,
                    0 if _memory_close(p, gpu.total_memory_bytes) else 1)
        return min(named, key=rank)[0]

    similar = [p for p in cuda if p.compute_capability == gpu.compute_capability
               and _memory_close(p, gpu.total_memory_bytes)]
    if similar:
        return min(similar, key=lambda p: abs(gpu.total_memory_bytes
                                              - (p.device_memory_bytes or 0)))

    generic = [p for p in cuda if not p.name_patterns and p.compute_capability is None
               and p.device_memory_bytes is None]
    if generic:
        return next((p for p in generic if p.name == "server"), generic[0])
    raise ProfileError(f"no profile matches GPU '{gpu.name}' and there is no generic cuda "
                       "profile: pass --profile NAME or a .toml path")


def resolve_profile(spec: str, device: DeviceInfo,
                    profiles: Mapping[str, Profile] | None = None) -> Profile:
    """``--profile`` value to a Profile: "auto", a built-in name, or a .toml path."""
    if "/" in spec or "\\" in spec or spec.endswith(".toml"):
        return load_profile(spec)
    if profiles is None:
        profiles = builtin_profiles()
    if spec == "auto":
        return match_profile(device, profiles)
    if spec in profiles:
        return profiles[spec]
    names = ", ".join(sorted(profiles))
    raise ProfileError(f"unknown profile '{spec}': choose one of auto, {names} "
                       "or pass a path to a .toml file")


# --------------------------------------------------------------------------
# Formatting

def _gib(n: int | None) -> str:
    if n is None:
        return "-"
    g = n / GIB
    return f"{g:g}" if abs(g - round(g, 2)) < 1e-9 else f"{g:.2f}"


def describe_match(p: Profile) -> str:
    """How a profile matches devices, in a few words."""
    if p.device_kind == "cpu":
        return "cpu"
    parts = []
    if p.name_patterns:
        parts.append(" | ".join(p.name_patterns))
    if p.compute_capability:
        parts.append(f"sm_{p.compute_capability[0]}{p.compute_capability[1]}")
    if p.device_memory_bytes is not None:
        parts.append(f"{_gib(p.device_memory_bytes)} GiB")
    return "cuda: " + (", ".join(parts) if parts else "any GPU")


def describe_budget(p: Profile) -> str:
    """The budget in a few words."""
    size = "device" if p.budget_bytes is None else f"{_gib(p.budget_bytes)} GiB"
    return f"{size} - {_gib(p.reserve_bytes)} reserve, x{p.headroom:g}"


def describe_defaults(d: Overrides) -> str:
    """The run defaults in a few words."""
    subset = f" subset {d.subset}" if d.subset else ""
    return (f"{d.model}/{d.data}{subset} batch {d.batch_size}..{d.max_batch} "
            f"epochs {d.epochs} interval {d.interval} lpr {d.lpr:g} "
            f"thr {d.threshold:g} lr {d.lr:g}")


def format_profiles(profiles: Mapping[str, Profile], device: DeviceInfo) -> str:
    """The table ``bench profiles`` prints; ``*`` marks what auto picks here."""
    try:
        picked: str | None = match_profile(device, profiles).name
    except ProfileError:
        picked = None
    header = ("", "name", "match", "budget", "defaults")
    rows = [header]
    for name in sorted(profiles):
        p = profiles[name]
        label = name if p.auto else f"{name} (manual)"
        rows.append(("*" if name == picked else "", label, describe_match(p),
                     describe_budget(p), describe_defaults(p.defaults)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(f"{cell:<{w}}" for cell, w in zip(r[:-1], widths)) + "  " + r[-1]
             for r in rows]
    lines = [line.rstrip() for line in lines]
    foot = (f"* = what --profile auto picks on this machine ({device.device_name})"
            if picked else "no profile matches this machine automatically: pass --profile NAME")
    return "\n".join(lines + ["", foot])
