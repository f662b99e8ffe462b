"""What else ran while an epoch was timed, so a report can tell a slow card from a busy machine.

A shared machine (a lab server, this CI box) slows an epoch by whatever else
runs.  Per interval this records this process's CPU time (with one thread,
wall time minus CPU time is time spent waiting for a core), the 1-minute load
average, the cores other processes used (from ``/proc/<pid>/stat``, Linux;
None elsewhere) with the busiest of them by name, and on CUDA the other
processes NVML lists on the GPU.  :func:`is_contended` is the report's rule.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUSY_CORE_FRACTION = 0.2   # a process using at least this much of a core during the epoch is named
NAMED = 3                  # busiest other processes named per epoch
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Contention:
    cpu_time_s: float | None        # this process (all threads) during the interval
    load_avg: float | None          # 1-minute load average at the end
    other_cpu_cores: float | None   # cores all other processes used on average (None: no /proc)
    busy_processes: str | None      # "name(pid) 0.93 cores; ..." and "gpu: name(pid)" on CUDA

    @classmethod
    def unknown(cls) -> "Contention":
        return cls(None, None, None, None)

    def columns(self) -> dict:
        return {"cpu_time_s": self.cpu_time_s, "load_avg": self.load_avg, "other_cpu_cores": self.other_cpu_cores,
                "busy_processes": self.busy_processes}


class ContentionProbe:
    """``start()`` before the timed interval, ``stop()`` after it."""

    def __init__(self, gpu: Any = None, proc: Path = Path("/proc"), named: int = NAMED,
                 busy: float = BUSY_CORE_FRACTION):
        """``gpu``: the CUDA device trained on (a ``torch.device`` or CUDA's index), None on the CPU."""
        self.gpu, self.proc, self.named, self.busy = gpu, proc, named, busy

    def start(self) -> None:
        self._wall, self._cpu, self._procs = time.perf_counter(), time.process_time(), self._cpu_ticks()
        self._total = self._busy_ticks()

    def _busy_ticks(self) -> int | None:
        """Non-idle ticks of all CPUs together (/proc/stat: user nice system irq softirq steal)."""
        try:
            fields = (self.proc / "stat").read_text().split("\n", 1)[0].split()
        except OSError:
            return None
        if not fields or fields[0] != "cpu" or len(fields) < 9:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
        return user + nice + system + irq + softirq + steal

    def stop(self) -> Contention:
        wall, cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        after = self._cpu_ticks()
        other, named = None, []
        if after is not None and self._procs is not None:
            used = {pid: (t - self._procs.get(pid, (0, ""))[0]) / _TICKS / max(wall, 1e-9)  # new: all of it
                    for pid, (t, _) in after.items()}
            other = sum(used.values())
            total = self._busy_ticks()
            if total is not None and self._total is not None:  # also counts processes that came and went
                other = max(other, (total - self._total) / _TICKS / max(wall, 1e-9) - cpu / max(wall, 1e-9))
            busiest = sorted(((c, pid) for pid, c in used.items() if c >= self.busy), reverse=True)
            named = [f"{after[pid][1]}({pid}) {c:.2f} cores" for c, pid in busiest[:self.named]]
        named += [f"gpu: {p}" for p in gpu_processes(self.gpu)] if self.gpu is not None else []
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):
            load = None
        return Contention(cpu, load, other, "; ".join(named))

    def _cpu_ticks(self) -> dict[int, tuple[int, str]] | None:
        """utime + stime (clock ticks) and name of every process but this one; None without /proc."""
        if not (self.proc / "self" / "stat").exists():
            return None
        me, out = os.getpid(), {}
        for d in self.proc.iterdir():
            if not d.name.isdigit() or int(d.name) == me:
                continue
            try:
                raw = (d / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            name, rest = raw[raw.index("(") + 1: raw.rindex(")")], raw[raw.rindex(")") + 2:].split()
            out[int(d.name)] = (int(rest[11]) + int(rest[12]), name)  # fields 14 and 15: utime, stime
        return out


def gpu_processes(device: Any) -> list[str]:
    """Other processes NVML lists on CUDA ``device`` (compute and graphics), as ``name(pid) N MiB``.

    The card is found in NVML by its UUID / PCI bus id (:func:`bench.machine.hardware.nvml_handle`):
    NVML's index is PCI order and ignores ``CUDA_VISIBLE_DEVICES``, so CUDA's index would
    count another card's processes.
    """
    import torch

    from .hardware import cuda_card, nvml_handle

    try:
        index = device.index if isinstance(device, torch.device) else int(device)
        card = cuda_card(torch, torch.cuda.current_device() if index is None else index)
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no NVML (or no card torch can describe): nothing can be said
        return []
    try:
        h = nvml_handle(pynvml, card)
        procs = list(pynvml.nvmlDeviceGetComputeRunningProcesses(h)) + list(pynvml.nvmlDeviceGetGraphicsRunningProcesses(h))
    except Exception:
        return []
    finally:
        pynvml.nvmlShutdown()
    out = []
    for p in procs:
        if p.pid == os.getpid():
            continue
        try:
            name = Path(f"/proc/{p.pid}/comm").read_text().strip()
        except OSError:
            name = "?"
        mem = getattr(p, "usedGpuMemory", None)
        out.append(f"{name}({p.pid})" + (f" {mem / 2**20:.0f} MiB" if isinstance(mem, int) else ""))
    return out


WAITING_SHARE = 0.8   # a one-thread CPU epoch that got less than this share of a core waited for it


def is_contended(other_cpu_cores: float | None, busy_processes: str | None, cpu_cores: int | None,
                 threads: int | None, cpu_time_s: float | None = None, wall_s: float | None = None) -> bool:
    """The report's rule: the GPU was shared, or the CPU was oversubscribed (others + our threads > cores), or
    (a one-thread CPU run: pass ``cpu_time_s`` and ``wall_s``) the epoch spent over a fifth of its time waiting."""
    if busy_processes and "gpu: " in busy_processes:
        return True
    if threads == 1 and cpu_time_s is not None and wall_s and cpu_time_s < WAITING_SHARE * wall_s:
        return True
    if other_cpu_cores is None or not cpu_cores:
        return False
    return other_cpu_cores + (threads or 1) > cpu_cores + 0.25  # a quarter core: daemons and our own helpers


BUSY_PROBE_S = 0.5   # how long ``bench run`` watches the machine before it starts


def busy_message(c: Contention, cpu_cores: int | None, threads: int | None) -> str | None:
    """Why the machine is too busy to time on, from a short look at it (None: quiet enough).

    Busy is :func:`is_contended`'s rule (the one the report applies to every epoch), or, where the other
    processes' use could not be measured, a 1-minute load average at or above the cores: then the epochs
    will be flagged and their times are not comparable.  A measured use wins over the load average, which
    lags by a minute (a machine whose other work just ended reads busy for a while).
    """
    load_busy = (c.other_cpu_cores is None and c.load_avg is not None and cpu_cores is not None
                 and c.load_avg >= cpu_cores)
    if not (is_contended(c.other_cpu_cores, c.busy_processes, cpu_cores, threads) or load_busy):
        return None
    parts = [f"load average {c.load_avg:.1f} on {cpu_cores} cores" if c.load_avg is not None else None,
             f"other processes use {c.other_cpu_cores:.1f} cores" if c.other_cpu_cores is not None else None,
             c.busy_processes or None]
    return ("the machine is busy (" + "; ".join(p for p in parts if p) + "): epoch times will include waiting "
            "for it and the time comparison will not be trustworthy; run on a quiet machine, use --interleave "
            "(both modes share the load), or time the trajectory later with `bench replay`")


def busy_now(threads: int | None, gpu_index: int | None = None, seconds: float = BUSY_PROBE_S) -> str | None:
    """:func:`busy_message` for this machine now, watched for ``seconds``."""
    probe = ContentionProbe(gpu_index)
    probe.start()
    time.sleep(seconds)
    return busy_message(probe.stop(), os.cpu_count(), threads)
