"""A run folder on disk: its unique name, its lock, the portable form of what run.json records.

A run folder is created exclusively with a unique id (concurrent runs into one
results directory never collide) and locked while a process writes it; what it
records of this machine is portable (names and hashes instead of paths) so that
records travel between machines.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import platform
import secrets
import subprocess
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..config import RunConfig
from ..errors import ConfigError
from ..machine import gpu
from ..machine.profiles import Profile


def now() -> str:
    """The time a record is written: UTC, to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_commit(root: Path | None = None) -> str | None:
    """HEAD of the checkout this code runs from, with ``-dirty`` when the code (bench/, prunetrain_core/)
    differs from it: a record must not claim a commit whose code it did not run.  None outside a checkout."""
    root = root or Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    if not head:
        return None
    changed = git("status", "--porcelain", "--untracked-files=no", "--", "bench", "prunetrain_core")
    return f"{head}-dirty" if changed is None or changed else head


def versions(device: torch.device | None = None) -> dict[str, Any]:
    """The software a record was made with; with ``device``, the fp32 precision in force on it (gpu.configure)."""
    import torchvision

    out = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
           else None, "bench": __version__}
    if device is not None:
        out["fp32_precision"] = gpu.precision_in_force(device)
    return out


def new_run_dir(results_dir: Path, profile: str, model: str) -> tuple[str, Path]:
    """Create ``results_dir/<run-id>`` exclusively: two processes never get the same folder."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    for _ in range(100):
        run_id = f"{stamp}-{profile}-{model}-{secrets.token_hex(3)}"
        path = results_dir / run_id
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return run_id, path
    raise ConfigError(f"could not create a unique run folder in {results_dir}")


def portable_config(cfg: RunConfig, profile: Profile) -> dict[str, Any]:
    """The configuration as run.json keeps it: names instead of this machine's paths (data folder, profile file)."""
    d = cfg.to_dict()
    d["data_dir"] = Path(cfg.data_dir).name if cfg.data_dir else None
    d["profile"] = profile.name
    return d


def portable_profile(profile: Profile) -> dict[str, Any]:
    """The profile as run.json keeps it: its file by name and a hash of its content, not this machine's path."""
    d = profile.to_dict()
    src = Path(profile.source) if profile.source else None
    if src is not None and src.is_file():
        d["source"] = f"{src.name} sha256:{hashlib.sha256(src.read_bytes()).hexdigest()[:16]}"
    return d


def portable_command(argv: list[str]) -> str:
    """The command line without this machine's paths: ``bench`` for the program, a path argument by its name."""
    words = ["bench"] + [Path(a).name if os.sep in a and not a.startswith("-") else a for a in argv[1:]]
    return " ".join(words)


def resumed_data_dir(path: Path, recorded: str | None, data_dir: Path | None) -> str | None:
    """The image folder of a resumed run: given again with --data-dir (run.json keeps only its name)."""
    if recorded is None:
        if data_dir is not None:
            raise ConfigError(f"{path}: the run did not read an image folder; drop --data-dir")
        return None
    if data_dir is None:
        raise ConfigError(f"{path}: the run read the image folder '{recorded}' (records keep only its name); "
                          "give it again with --data-dir FOLDER")
    return str(data_dir)


def lock_run_dir(run_dir: Path):
    """Hold an exclusive lock on the run folder for this process's lifetime (released by the kernel on kill -9).

    A second ``bench run --resume`` of a folder that is still being written fails at once instead of
    interleaving records.  Returns the open lock file (keep it referenced) or None where flock is missing.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    fh = open(run_dir / ".lock", "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise ConfigError(f"{run_dir}: another `bench run` is writing this run folder; "
                          "wait for it to end (or stop it) before --resume") from None
    return fh


@contextlib.contextmanager
def locked(run_dir: Path):
    """The run folder's lock held for the block (see lock_run_dir)."""
    lock = lock_run_dir(run_dir)
    try:
        yield
    finally:
        if lock is not None:
            lock.close()


def remove_stale_temp_files(run_dir: Path) -> None:
    """Temporary files of atomic writes that a kill left behind (never renamed, so never part of the record)."""
    for folder in (run_dir, run_dir / "checkpoints"):
        for tmp in folder.glob(".*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                pass
