"""Helpers of the fault-injection suite (tests/test_faults.py): run `bench` as a real process, kill it, check folders.

Every `bench` process gets ``OMP_NUM_THREADS=1``: gentle on a 2-core CI machine, and the
same thread count for the reference and the resumed runs (CPU kernels may sum in another
order with another thread count, and the comparison is exact).
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

import torch

from bench.training import checkpoint
from bench.runfolder.records import COLUMN_TYPES, EPOCH_FIELDNAMES, MACHINE_COLUMNS, parse_value

# Columns that are measurements of time: everything else must be identical between a resumed run and
# an uninterrupted one (floats included: same seed, same thread count, same CPU).
TIMING_COLUMNS = MACHINE_COLUMNS  # clocks and machine load (bench.runfolder.records marks them)
# run_id differs between two runs by construction.
IGNORED_COLUMNS = TIMING_COLUMNS | {"run_id"}

PROCESS_TIMEOUT_S = 420


def bench_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_FAULT_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def bench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench", *args]


def bench(*args: str, env: dict[str, str] | None = None, timeout: float = PROCESS_TIMEOUT_S,
          cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``bench ARGS`` to its end (or its kill); stdout/stderr captured as text."""
    return subprocess.run(bench_cmd(*args), env=env or bench_env(), capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def only_run_dir(results: Path) -> Path:
    dirs = [d for d in Path(results).iterdir() if d.is_dir()]
    assert len(dirs) == 1, f"expected one run folder in {results}, found {dirs}"
    return dirs[0]


def epoch_lines(run_dir: Path) -> tuple[list[str], bytes]:
    """(complete lines, torn tail) of epochs.csv."""
    data = (Path(run_dir) / "epochs.csv").read_bytes()
    cut = data.rfind(b"\n") + 1
    return data[:cut].decode().splitlines(), data[cut:]


def read_rows(run_dir: Path) -> list[dict]:
    """The complete rows of epochs.csv as strings (exact comparison)."""
    lines, _ = epoch_lines(run_dir)
    return list(csv.DictReader(lines))


def read_meta(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "run.json").read_text())


def comparable(rows: Iterable[dict], mode: str | None = None) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in IGNORED_COLUMNS} for r in rows
            if mode is None or r["mode"] == mode]


def assert_same_records(got: list[dict], want: list[dict], what: str = "") -> None:
    """Every column but the timings and the run id identical, row by row, as written (exact floats)."""
    g, w = comparable(got), comparable(want)
    assert [(r["mode"], r["epoch"]) for r in g] == [(r["mode"], r["epoch"]) for r in w], what
    for a, b in zip(g, w):
        diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
        assert not diff, f"{what} {a['mode']} epoch {a['epoch']}: {diff}"


def assert_consistent(run_dir: Path) -> dict:
    """What a reader finds in a (possibly killed) run folder is whole and agrees with itself.

    * run.json parses and names the run;
    * every complete line of epochs.csv is a valid row of the schema, each (mode, epoch) once,
      epochs 1..k in order per mode; at most a torn tail without newline follows;
    * each checkpoint present loads (weights_only) and is no further than the rows: a kill
      between row and checkpoint leaves one row more, never a checkpoint without its row.

    Returns a summary: rows per mode, checkpoint epoch per mode, torn tail, temp files.
    """
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    assert meta["run_id"] == run_dir.name
    lines, tail = epoch_lines(run_dir)
    assert lines[0].split(",") == EPOCH_FIELDNAMES
    rows = list(csv.DictReader(lines))
    per_mode: dict[str, list[int]] = {}
    for r in rows:
        assert None not in r and None not in r.values(), f"row with a wrong field count: {r}"
        for name, typ in COLUMN_TYPES.items():
            parse_value(name, typ, r[name])  # raises on a damaged value
        assert r["run_id"] == meta["run_id"]
        per_mode.setdefault(r["mode"], []).append(int(r["epoch"]))
    for mode, epochs in per_mode.items():
        assert epochs == list(range(1, len(epochs) + 1)), f"{mode} epochs {epochs}"
    ckpt_epochs = {}
    for path in sorted((run_dir / "checkpoints").glob("*.pt")):
        blob = checkpoint.load(path)  # weights_only=True
        mode = path.stem
        ckpt_epochs[mode] = blob["epoch"]
        assert len(per_mode.get(mode, [])) in (blob["epoch"], blob["epoch"] + 1), \
            f"{mode}: checkpoint after epoch {blob['epoch']} but rows {per_mode.get(mode)}"
    temps = sorted(p.name for p in list(run_dir.glob(".*.tmp")) + list((run_dir / "checkpoints").glob(".*.tmp")))
    return {"rows": {m: len(e) for m, e in per_mode.items()}, "checkpoints": ckpt_epochs,
            "torn_tail": tail, "temp_files": temps, "meta": meta}


def kill_when(cmd_args: list[str], ready: Callable[[], bool], env: dict[str, str] | None = None,
              poll_s: float = 0.02, timeout: float = PROCESS_TIMEOUT_S) -> tuple[int, str]:
    """Start ``bench ARGS``, SIGKILL it from outside as soon as ``ready()``; returns (exit status, stderr)."""
    err = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty child never blocks on it
    proc = subprocess.Popen(bench_cmd(*cmd_args), env=env or bench_env(), stdout=subprocess.DEVNULL,
                            stderr=err, text=True)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None:
            if ready():
                os.kill(proc.pid, signal.SIGKILL)
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"bench {' '.join(cmd_args)} did not reach the kill point")
            time.sleep(poll_s)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err.seek(0)
    stderr = err.read()
    err.close()
    if proc.returncode != -signal.SIGKILL:
        raise AssertionError(f"bench ended by itself (rc {proc.returncode}) before the kill point: {stderr}")
    return proc.returncode, stderr


def data_rows_in(results: Path) -> int:
    """Complete data rows in the (single) run folder under ``results``; 0 while it does not exist yet."""
    try:
        (run_dir,) = [d for d in Path(results).iterdir() if d.is_dir()]
        return max(0, len(epoch_lines(run_dir)[0]) - 1)
    except (FileNotFoundError, ValueError):
        return 0


def one_error_line(stderr: str) -> str:
    """stderr must be exactly one ``error: ...`` line (warnings aside) and no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def load_blob(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def save_blob(path: Path, blob) -> None:
    torch.save(blob, path)


class Jobs:
    """Scenarios run in a small pool of threads (each drives its own `bench` processes), keyed by name.

    The machine has few cores and each `bench` process uses one thread, so two scenarios at a
    time halve the suite's wall time without changing any result.  A scenario may publish
    intermediate results under ``"<scenario>:<part>"`` so that tests can start on them while
    it goes on; if it fails, its unpublished parts fail with it.
    """

    def __init__(self, workers: int, scenarios: dict[str, Callable], root: Path):
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fault-scenario")
        self.scenarios, self.root = scenarios, Path(root)
        self.futures: dict[str, Future] = {}
        self.started: set[str] = set()
        self.lock = threading.Lock()

    def _future(self, name: str) -> Future:
        with self.lock:
            return self.futures.setdefault(name, Future())

    def publish(self, name: str, value: object) -> None:
        self._future(name).set_result(value)

    def start(self, name: str) -> None:
        """Submit scenario ``name`` (the part before ':') once."""
        base = name.split(":")[0]
        with self.lock:
            if base in self.started:
                return
            self.started.add(base)
        done = self._future(base)
        tmp = self.root / "".join(c if c.isalnum() or c in "-_." else "_" for c in base)

        def body():
            try:
                done.set_result(self.scenarios[base](tmp, lambda part, v: self.publish(f"{base}:{part}", v)))
            except BaseException as exc:  # the scenario failed: so did every part it did not publish
                with self.lock:
                    parts = [f for n, f in self.futures.items() if n == base or n.startswith(base + ":")]
                for f in parts:
                    if not f.done():
                        f.set_exception(exc)
        self.pool.submit(body)

    def get(self, name: str, timeout: float = 1800) -> object:
        self.start(name)
        return self._future(name).result(timeout=timeout)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
