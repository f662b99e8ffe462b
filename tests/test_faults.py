"""Fault injection: nothing measured is lost (issue #6).

Real `bench` processes, real SIGKILLs, real damaged files.  Kills are made
deterministic by the test hook ``BENCH_FAULT_KILL_AT=<point>[:<n>]``
(:mod:`bench.faults`, inert when unset): the process SIGKILLs itself the n-th
time it reaches a named point.  One kill comes from outside at a polled moment
instead, so the hooks are not what makes it work.

Interrupted runs are resumed with ``bench run --resume`` and must end with
exactly the records of an uninterrupted run: every epochs.csv column except the
four timings (and the run id), floats compared as written, and the same
architectures, λ and batch decisions in run.json.  To keep the suite short the
kills are chained: one run folder is killed again and again at different
points, resumed after each kill (each resume redoes only the interrupted epoch).
The scenarios run as real processes two at a time (:class:`faultlib.Jobs`);
the tests that only read files run meanwhile in the pytest process.

fault                                        outcome
-------------------------------------------  ---------------------------------------------------------------
kill -9 mid-epoch                            folder consistent: rows 1..k, checkpoint k; resume redoes the epoch
kill -9 in a reconfiguration (after surgery) checkpoint of the previous epoch stays; resume redoes epoch + surgery
kill -9 while run.json is rewritten          old run.json intact, its temp file removed on resume
kill -9 with half a row written              torn tail ignored by readers (report warns), dropped on resume
kill -9 from outside at a polled moment      the same: consistent folder
kill -9 in dense of a `both` run             dense resumes from its checkpoint
kill -9 between checkpoint temp and rename   row k on disk, checkpoint k-1 intact, temp file left; resume drops
  (first prunetrain epoch of a `both` run)   row k, removes the temp file, keeps dense finished, redoes epoch k
... and after all of these                   the resumed runs' records = the uninterrupted run's, exactly
  (the last resume with OMP_NUM_THREADS=2)   (the resume takes the thread count recorded in run.json)
emulated OOM (budget < need at the batch)    batch halved, step retried, oom_retries and batch_reasons
                                             recorded, the row's lr is the one used; run finishes (exit 0)
budget below the need of batch 1             exit 2, one line with budget and measured need; status failed
NaN loss in dense (hook)                     dense stops (epoch-1 row kept, status failed, error recorded),
                                             prunetrain completes = reference; exit 2 naming both; resuming
                                             the failed run changes nothing and says why again (exit 2)
huge --lr, both modes                        both stop in epoch 1 with the message, exit 2, status failed
damaged checkpoint / run.json / epochs.csv   resume refuses with one line naming file and key, exit 2, records
  (types, missing keys, absurd values)       untouched; a pickle with code is not executed (weights_only)
damaged profile TOML                         one line naming file and key, exit 2, no run folder created
absurd values / wrong types / torn row,      rows skipped with a warning naming file:line, report written
  read by `bench report`
two runs into one results folder             two folders (unique id, exclusive mkdir), records not mixed
resume of a folder still being written       refused at once (exit 2, folder lock); the running run unaffected
`bench report` while a run writes            only complete rows, each equal to its final value
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import prunetrain_core as pc
from bench.runfolder import folder as bench_run
from bench.cli import main as bench_main
from bench.report import load_runs
from bench.report.load import read_epochs_csv
from faultlib import (Jobs, assert_consistent, assert_same_records, bench, bench_cmd, bench_env, data_rows_in,
                      kill_when, load_blob, one_error_line, only_run_dir, read_meta, read_rows, save_blob)

pytestmark = pytest.mark.faults

# Small enough for CI (about 20 s a mode on a 2-core CPU), large enough to matter: three epochs, a
# reconfiguration after epochs 1 and 2 that really prunes (the published rule at threshold 0.2:
# 272k -> 139k -> 76k params), both modes at the batch the budget allows (64).
BASE = ["--profile", "smoke", "--subset", "256", "--epochs", "3", "--interval", "1", "--batch-size", "32",
        "--lasso", "paper", "--threshold", "0.2", "--batch-policy", "fill", "--quiet"]
PRUNE = ["run", *BASE, "--mode", "prunetrain"]
BOTH = ["run", *BASE, "--mode", "both"]
WORKERS = max(1, min(2, os.cpu_count() or 1))

SCENARIOS: dict[str, object] = {}   # name -> function(tmp: Path, publish) -> result; run in the Jobs pool


def scenario(name: str):
    def register(fn):
        SCENARIOS[name] = fn
        return fn
    return register


def uses(*names):
    """Mark which scenarios a test reads (so the fixture can start them all early, longest first)."""
    def mark(fn):
        fn.scenarios = names
        return fn
    return mark


@pytest.fixture(scope="module")
def jobs(request, tmp_path_factory):
    """Start every scenario the selected tests need at once, two at a time; tests wait for theirs."""
    pool = Jobs(WORKERS, SCENARIOS, tmp_path_factory.mktemp("faults"))
    wanted = {n.split(":")[0] for item in request.session.items if item.module is request.module
              for n in getattr(item.function, "scenarios", ())}
    for name in sorted(wanted, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        pool.start(name)
    yield pool
    pool.shutdown()


# ============================================================================ scenarios (run in the pool)

@scenario("reference")
def _reference(tmp: Path, publish) -> dict:
    """The uninterrupted `both` run every resumed run must match, watched while it writes.

    The report loader reads the folder every 0.25 s; as soon as run.json exists a `bench run
    --resume` of the same folder is tried (it must be refused: the run holds the folder's lock).
    """
    results = tmp / "results"
    proc = subprocess.Popen(bench_cmd(*BOTH, "--results-dir", str(results)), env=bench_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen, warnings, resume_try = [], [], None
    try:
        while proc.poll() is None:
            try:
                res = load_runs([results])
            except Exception as exc:  # RecordError before the first row: nothing usable yet
                warnings.append(f"{type(exc).__name__}: {exc}")
            else:
                warnings += res.warnings
                seen += [r.epochs.drop(columns=["line"]).to_dict("records") for r in res.runs]
            # from the moment run.json exists the run holds its folder lock (with ~40 s of work left)
            if resume_try is None and any(results.glob("*/run.json")):
                resume_try = bench("run", "--resume", str(only_run_dir(results)))
            time.sleep(0.25)
        stderr = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    run_dir = only_run_dir(results)
    final = load_runs([results]).runs[0].epochs.drop(columns=["line"]).to_dict("records")
    return {"dir": run_dir, "rows": read_rows(run_dir), "meta": read_meta(run_dir),
            "seen": seen, "warnings": warnings, "final": final, "resume_try": resume_try}


# Kill chains: one run folder killed again and again, each time at another point, resumed after
# each kill.  BENCH_FAULT_KILL_AT counts within one process: "checkpoint-write:3" in a resume after
# dense epoch 1 = dense epochs 2, 3, then prunetrain epoch 1.
# (stage, kill point or None for an outside kill, what the killed process said, folder after the kill)
CHAINS = {
    "chain-prune": (PRUNE, [
        ("mid-epoch", "mid-epoch:2", "",
         dict(rows={"prunetrain": 1}, ckpts={"prunetrain": 1}, torn=False, temps=())),
        ("reconfigure", "reconfigure:1", "prunetrain: resuming after epoch 1",
         dict(rows={"prunetrain": 1}, ckpts={"prunetrain": 1}, torn=False, temps=())),
        ("run-json-write", "run-json-write:3", "prunetrain: resuming after epoch 1",  # recording epoch 2's shape
         dict(rows={"prunetrain": 1}, ckpts={"prunetrain": 1}, torn=False, temps=(".run.json.",))),
        ("record-append", "record-append:1", "prunetrain: resuming after epoch 1",
         dict(rows={"prunetrain": 1}, ckpts={"prunetrain": 1}, torn=True, temps=())),
        ("outside", None, "prunetrain: resuming after epoch 1", None),  # SIGKILL once row 2 is on disk
    ]),
    "chain-both": (BOTH, [
        ("mid-epoch-dense", "mid-epoch:2", "",
         dict(rows={"dense": 1}, ckpts={"dense": 1}, torn=False, temps=())),
        ("checkpoint-write", "checkpoint-write:3", "dense: resuming after epoch 1",
         dict(rows={"dense": 3, "prunetrain": 1}, ckpts={"dense": 3}, torn=False, temps=(".prunetrain.pt.",))),
    ]),
}
STAGES = [(chain, stage[0]) for chain, (_, stages) in CHAINS.items() for stage in stages]


def _chain(name: str):
    first_args, stages = CHAINS[name]

    def body(tmp: Path, publish) -> dict:
        results = tmp / "results"
        run_dir = None
        for i, (stage, point, _, _) in enumerate(stages):
            args = [*first_args, "--results-dir", str(results)] if run_dir is None else ["run", "--resume", str(run_dir)]
            if point is not None:
                proc = bench(*args, env=bench_env(BENCH_FAULT_KILL_AT=point))
                rc, stderr = proc.returncode, proc.stderr
            else:
                rows_then = data_rows_in(results) + 1  # the next row the resumed process appends
                rc, stderr = kill_when(args, lambda: data_rows_in(results) >= rows_then)
            run_dir = run_dir or only_run_dir(results)
            snapshot = tmp / f"{i}-{stage}" / run_dir.name
            shutil.copytree(run_dir, snapshot)
            publish(stage, {"rc": rc, "stderr": stderr, "snapshot": snapshot})
        # the last resume with another thread count: it must take the run's recorded one (exact floats)
        final = bench("run", "--resume", str(run_dir), env=bench_env(OMP_NUM_THREADS="2"))
        return {"dir": run_dir, "resume_rc": final.returncode, "resume_stderr": final.stderr}
    return body


for _name in CHAINS:
    scenario(_name)(_chain(_name))


def _profile(tmp: Path, budget_gib: float) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "tiny.toml"
    path.write_text(f'name = "tiny"\nauto = false\n[device]\nkind = "cpu"\n'
                    f'[budget]\nmemory_gib = {budget_gib}\nreserve_gib = 0\nheadroom = 0.9\n'
                    f'[defaults]\nmodel = "resnet20"\ndata = "synthetic"\nlr_milestones = []\nlpr = 0.9\n')
    return path


# resnet20 at the probe: need(16) = 0.026 GiB, need(32) = 0.049 GiB (0.044 after pruning), need(1) = 0.0045 GiB
OOM_ARGS = ["--subset", "128", "--epochs", "2", "--interval", "1", "--batch-size", "32", "--lasso", "paper",
            "--threshold", "0.2",
            "--mode", "prunetrain", "--quiet"]


@scenario("oom-retry")
def _oom_retry(tmp: Path, publish) -> dict:
    proc = bench("run", "--profile", str(_profile(tmp, 0.035)), *OOM_ARGS, "--no-adjust-batch",
                 "--results-dir", str(tmp / "results"))
    run_dir = only_run_dir(tmp / "results")
    return {"proc": proc, "dir": run_dir, "rows": read_rows(run_dir), "meta": read_meta(run_dir)}


@scenario("oom-fatal")
def _oom_fatal(tmp: Path, publish) -> dict:
    out = {}
    for name, extra in (("retry", ["--no-adjust-batch"]), ("rule", [])):
        proc = bench("run", "--profile", str(_profile(tmp / name, 0.001)), *OOM_ARGS, *extra,
                     "--results-dir", str(tmp / name / "results"))
        run_dir = only_run_dir(tmp / name / "results")
        out[name] = {"proc": proc, "dir": run_dir, "rows": read_rows(run_dir), "meta": read_meta(run_dir)}
    return out


@scenario("nan-dense")
def _nan_dense(tmp: Path, publish) -> dict:
    proc = bench(*BOTH, "--epochs", "2", "--results-dir", str(tmp / "results"),
                 env=bench_env(BENCH_FAULT_NAN_AT="dense:2"))
    run_dir = only_run_dir(tmp / "results")
    out = {"proc": proc, "dir": run_dir, "rows": read_rows(run_dir), "meta": read_meta(run_dir)}
    out["resume"] = bench("run", "--resume", str(run_dir))
    out["rows_after_resume"] = read_rows(run_dir)
    return out


@scenario("huge-lr")
def _huge_lr(tmp: Path, publish) -> dict:
    proc = bench("run", *BASE, "--mode", "both", "--epochs", "1", "--lr", "1e6", "--results-dir", str(tmp))
    run_dir = only_run_dir(tmp)
    return {"proc": proc, "dir": run_dir, "rows": read_rows(run_dir), "meta": read_meta(run_dir)}


@scenario("two-runs")
def _two_runs(tmp: Path, publish) -> dict:
    args = bench_cmd("run", *BASE, "--mode", "prunetrain", "--epochs", "1", "--subset", "128",
                     "--results-dir", str(tmp))
    procs = [subprocess.Popen(args, env=bench_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    return {"rcs": [p.returncode for p in procs], "stderr": [o[1] for o in outs],
            "dirs": sorted(d for d in tmp.iterdir() if d.is_dir())}


# longest first
ORDER = ["chain-prune", "reference", "chain-both", "nan-dense", "oom-retry", "two-runs", "huge-lr", "oom-fatal"]


# ============================================================================ helpers for the checks

def _mode_rows(rows: list[dict], mode: str) -> list[dict]:
    return [r for r in rows if r["mode"] == mode]


def _assert_resumed_like_reference(run_dir: Path, ref: dict, modes: tuple[str, ...]) -> None:
    state = assert_consistent(run_dir)
    assert state["temp_files"] == [] and state["torn_tail"] == b""
    assert_same_records(read_rows(run_dir), [r for r in ref["rows"] if r["mode"] in modes], f"resumed {run_dir.name}")
    meta = read_meta(run_dir)
    assert meta["status"] == "finished"
    for mode in modes:
        got, exp = meta["modes"][mode], ref["meta"]["modes"][mode]
        assert got["status"] == "finished"
        assert got["architectures"] == exp["architectures"]
        assert got["batch_reasons"] == exp["batch_reasons"]
        assert got["lasso_lambda"] == exp["lasso_lambda"]
        assert (run_dir / f"{mode}_final.pt").exists()
        assert load_blob(run_dir / "checkpoints" / f"{mode}.pt")["epoch"] == 3


# ============================================================================ tests that read files only
# (first in the file: they run in the pytest process while the pool's scenarios go on)


def _resumable(tmp_path: Path, jobs) -> Path:
    """A private copy of a killed run folder (prunetrain checkpointed after epoch 1, pruned): resumable."""
    snap = jobs.get("chain-prune:mid-epoch")["snapshot"]
    dst = tmp_path / snap.name
    shutil.copytree(snap, dst)
    return dst


def _edit_ckpt(fn):
    def damage(run_dir: Path) -> None:
        path = run_dir / "checkpoints" / "prunetrain.pt"
        blob = load_blob(path)
        fn(blob)
        save_blob(path, blob)
    damage.__doc__ = fn.__doc__
    return damage


def _edit_meta(fn):
    def damage(run_dir: Path) -> None:
        meta = read_meta(run_dir)
        fn(meta)
        (run_dir / "run.json").write_text(json.dumps(meta))
    damage.__doc__ = fn.__doc__
    return damage


def _truncate_ckpt(run_dir: Path) -> None:
    """checkpoint cut in half (a copy interrupted, a full disk)"""
    path = run_dir / "checkpoints" / "prunetrain.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage_ckpt(run_dir: Path) -> None:
    """checkpoint replaced by random bytes"""
    (run_dir / "checkpoints" / "prunetrain.pt").write_bytes(os.urandom(4096))


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('FAULT_EVIL_MARKER', '/nonexistent/x')}",))


def _evil_ckpt(run_dir: Path) -> None:
    """checkpoint whose pickle would run a shell command (refused by weights_only)"""
    buf = io.BytesIO()
    torch.save({"format": 1, "payload": _Evil()}, buf)
    (run_dir / "checkpoints" / "prunetrain.pt").write_bytes(buf.getvalue())


def _wider_model(blob: dict) -> None:
    """arch and weights of a model wider than the run's (fc with 100 outputs, the run's has 10)"""
    model = pc.build_model("resnet20", 100)
    blob["arch"], blob["model"] = pc.describe(model), model.state_dict()


def _momentum_shape(blob: dict) -> None:
    """a momentum buffer of the wrong shape"""
    state = blob["optimizer"]["state_dict"]["state"]
    key = next(iter(state))
    state[key]["momentum_buffer"] = torch.zeros(3)


def _csv_bad_value(run_dir: Path) -> None:
    """an epochs.csv row whose train_loss is text"""
    path = run_dir / "epochs.csv"
    lines = path.read_text().splitlines(keepends=True)
    fields = lines[1].split(",")
    fields[12] = "abc"
    lines[1] = ",".join(fields)
    path.write_text("".join(lines))


def _csv_extra_field(run_dir: Path) -> None:
    """an epochs.csv row with one field too many"""
    path = run_dir / "epochs.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1].rstrip("\n") + ",42\n"
    path.write_text("".join(lines))


def _set(d: dict, dotted, value) -> None:
    """Set (or delete, value KeyError) the entry at a dotted path, or a tuple path for keys with dots."""
    *head, last = dotted if isinstance(dotted, tuple) else dotted.split(".")
    for k in head:
        d = d[k]
    if value is KeyError:
        del d[last]
    else:
        d[last] = value


def _ck(key: str, value, doc: str):
    fn = _edit_ckpt(lambda b: _set(b, key, value))
    fn.__doc__ = doc
    return fn


def _mj(key: str, value, doc: str):
    fn = _edit_meta(lambda m: _set(m, key, value))
    fn.__doc__ = doc
    return fn


# (id, damage, the file it names, the key/what the one line must name)
DAMAGED_RUN_FOLDERS = [
    ("ckpt-truncated", _truncate_ckpt, "prunetrain.pt", "not a readable checkpoint"),
    ("ckpt-garbage", _garbage_ckpt, "prunetrain.pt", "not a readable checkpoint"),
    ("ckpt-pickled-code", _evil_ckpt, "prunetrain.pt", "not a readable checkpoint"),
    ("ckpt-no-state", _ck("state", KeyError, "checkpoint without its 'state'"), "prunetrain.pt", "key 'state'"),
    ("ckpt-batch-0", _ck("state.batch", 0, "batch 0"), "prunetrain.pt", "key 'state.batch'"),
    ("ckpt-batch-text", _ck("state.batch", "32", "batch as text"), "prunetrain.pt", "key 'state.batch'"),
    ("ckpt-epoch-negative", _ck("epoch", -1, "epoch -1"), "prunetrain.pt", "key 'epoch'"),
    ("ckpt-epoch-too-late", _ck("epoch", 99, "epoch past the run's end"), "prunetrain.pt", "key 'epoch'"),
    ("ckpt-lambda-nan", _ck("state.lam", float("nan"), "λ NaN"), "prunetrain.pt", "key 'state.lam'"),
    ("ckpt-retries-negative", _ck("state.oom_retries", -3, "negative OOM count"), "prunetrain.pt",
     "key 'state.oom_retries'"),
    ("ckpt-archs-not-list", _ck("state.architectures", "x", "architectures not a list"), "prunetrain.pt",
     "key 'state.architectures'"),
    ("ckpt-wrong-mode", _ck("mode", "dense", "another mode's checkpoint"), "prunetrain.pt", "key 'mode'"),
    ("ckpt-channels-recorded", _ck("arch.channels.conv1", 999, "recorded channel count larger than the layer"),
     "prunetrain.pt", "key 'arch.channels'"),
    ("ckpt-wider-than-model", _edit_ckpt(_wider_model), "prunetrain.pt", "more than the 10 of the run's model"),
    ("ckpt-weights-missing", _ck(("model", "conv1.weight"), KeyError, "a weight missing"), "prunetrain.pt",
     "key 'arch'/'model'"),
    ("ckpt-momentum-shape", _edit_ckpt(_momentum_shape), "prunetrain.pt", "key 'optimizer.state_dict'"),
    ("ckpt-rng-text", _ck("rng.torch", "seed", "RNG state as text"), "prunetrain.pt", "key 'rng'"),
    ("ckpt-format", _ck("format", 7, "format of a future version"), "prunetrain.pt", "key 'format'"),
    ("json-torn", lambda d: (d / "run.json").write_text((d / "run.json").read_text()[:100]), "run.json",
     "unreadable"),
    ("json-epochs-text", _mj("config.epochs", "three", "epochs as text"), "run.json", "key 'config.epochs'"),
    ("json-epochs-missing", _mj("config.epochs", KeyError, "epochs missing"), "run.json", "key 'config.epochs'"),
    ("json-batch-0", _mj("config.batch_size", 0, "batch 0"), "run.json", "--batch-size must be >= 1"),
    ("json-lr-negative", _mj("config.lr", -0.1, "negative LR"), "run.json", "--lr must be > 0"),
    ("json-no-run-id", _mj("run_id", KeyError, "run id missing"), "run.json", "key 'run_id'"),
    ("json-archs-text", _mj("modes.prunetrain.architectures", "x", "architectures as text"), "run.json",
     "key 'modes.prunetrain.architectures'"),
    ("json-status", _mj("modes.prunetrain.status", 3, "status a number"), "run.json",
     "key 'modes.prunetrain.status'"),
    ("csv-bad-value", _csv_bad_value, "epochs.csv:2", "column train_loss"),
    ("csv-extra-field", _csv_extra_field, "epochs.csv:2", "wrong number of fields"),
]
_ = [setattr(d[1], "__doc__", d[1].__doc__ or d[0]) for d in DAMAGED_RUN_FOLDERS]


@pytest.fixture
def keep_torch_threads():
    """An in-process resume sets the run's recorded thread count: give pytest its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@uses("chain-prune:mid-epoch")
@pytest.mark.usefixtures("keep_torch_threads")
@pytest.mark.parametrize("case", DAMAGED_RUN_FOLDERS, ids=[c[0] for c in DAMAGED_RUN_FOLDERS])
def test_resume_refuses_damaged_files(jobs, tmp_path, monkeypatch, case):
    """A damaged checkpoint, run.json or epochs.csv in a folder to resume (the damage: each case's docstring).

    `bench run --resume` stops before training with exit 2 and one line naming the file and the key;
    no traceback; a pickle with code is not executed.  (In-process through click: the data set and
    model are already imported, so each case takes about a second.)
    """
    name, damage, file_named, key = case
    run_dir = _resumable(tmp_path, jobs)
    marker = tmp_path / "evil-ran"
    monkeypatch.setenv("FAULT_EVIL_MARKER", str(marker))
    damage(run_dir)
    before = (run_dir / "epochs.csv").read_bytes()
    result = CliRunner().invoke(bench_main, ["run", "--resume", str(run_dir), "--quiet"])
    assert result.exit_code == 2, (result.output, result.exception)
    line = one_error_line(result.stderr)
    assert file_named in line and key in line, line
    assert not marker.exists()
    assert (run_dir / "epochs.csv").read_bytes() == before  # refused before touching the records


def test_damaged_checkpoint_real_process(jobs, tmp_path):
    """The same as a real process: a truncated checkpoint gives one `error:` line and exit 2, no traceback."""
    run_dir = _resumable(tmp_path, jobs)
    _truncate_ckpt(run_dir)
    proc = bench("run", "--resume", str(run_dir))
    assert proc.returncode == 2
    assert "prunetrain.pt: not a readable checkpoint" in one_error_line(proc.stderr)


test_damaged_checkpoint_real_process.scenarios = ("chain-prune:mid-epoch",)

PROFILE_DAMAGES = [
    ("negative-memory", "[budget]\nmemory_gib = -1\n", "budget.memory_gib"),
    ("memory-text", '[budget]\nmemory_gib = "lots"\n', "budget.memory_gib"),
    ("no-budget", "", "budget"),
    ("batch-0", "[budget]\nmemory_gib = 1\n[defaults]\nbatch_size = 0\n", "defaults.batch_size"),
    ("reserve-above-budget", "[budget]\nmemory_gib = 1\nreserve_gib = 2\n", "budget.reserve_gib"),
    ("unknown-key", "[budget]\nmemory_gib = 1\nmemroy = 2\n", "budget.memroy"),
    ("not-toml", "[budget\n", "TOML syntax error"),
]


@pytest.mark.parametrize("case", PROFILE_DAMAGES, ids=[c[0] for c in PROFILE_DAMAGES])
def test_bad_profile_one_line(tmp_path, case):
    """A profile TOML with a wrong type, a missing table or an absurd value: exit 2, one line naming file and key."""
    name, body, key = case
    path = tmp_path / "bad.toml"
    path.write_text(f'name = "bad"\n[device]\nkind = "cpu"\n{body}')
    result = CliRunner().invoke(bench_main, ["run", "--profile", str(path), "--results-dir", str(tmp_path / "r")])
    assert result.exit_code == 2, (result.output, result.exception)
    line = one_error_line(result.stderr)
    assert str(path) in line and key in line, line
    assert not (tmp_path / "r").exists()  # nothing created before the input was checked


@uses("reference")
def test_report_skips_absurd_and_mistyped_records(jobs, tmp_path):
    """Records with absurd values (negative memory, batch 0), wrong types and a torn row reach the report.

    Appended copies of good rows with one value damaged are skipped, each with a warning naming
    file:line (the good rows are used); half a row at the end (a kill mid-append) is ignored with a
    warning; run.json fields of the wrong type are ignored with a warning; the report is written
    (exit 0, no traceback).  With nothing usable left: exit 2, one line.
    """
    src = jobs.get("reference")["dir"]
    run_dir = tmp_path / "results" / src.name
    shutil.copytree(src, run_dir)
    lines = (run_dir / "epochs.csv").read_text().splitlines(keepends=True)
    col = {n: i for i, n in enumerate(lines[0].strip().split(","))}

    def damaged(line: str, name: str, value: str) -> str:
        f = line.rstrip("\n").split(",")
        f[col[name]] = value
        return ",".join(f) + "\n"
    bad = [damaged(lines[1], "peak_memory_bytes", "-5"), damaged(lines[2], "batch_size", "0"),
           damaged(lines[3], "params", "many"), damaged(lines[4], "test_acc", "inf")]
    (run_dir / "epochs.csv").write_text("".join(lines + bad) + lines[6][:40])
    meta = read_meta(run_dir)
    meta["hardware"], meta["emulated"] = "gpu", "no"
    (run_dir / "run.json").write_text(json.dumps(meta))
    proc = bench("report", str(tmp_path / "results"), "--out", str(tmp_path / "report"))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for lineno, what in ((8, "peak_memory_bytes -5 "), (9, "batch_size 0 "), (10, "column params"),
                         (11, "test_acc inf ")):
        assert re.search(rf"epochs.csv:{lineno}: .*{re.escape(what)}.*row skipped", proc.stderr), proc.stderr
    assert "epochs.csv:12: last line is incomplete" in proc.stderr
    assert "field 'hardware' should be a dict" in proc.stderr and "field 'emulated' should be a bool" in proc.stderr
    assert (tmp_path / "report" / "report.md").exists()

    (run_dir / "epochs.csv").write_text(lines[0] + "garbage,row\n")
    proc = bench("report", str(tmp_path / "results"), "--out", str(tmp_path / "report2"))
    assert proc.returncode == 2
    assert "no usable run records" in one_error_line(proc.stderr)


# ============================================================================ tests: concurrency

@uses("two-runs")
def test_two_runs_into_one_results_folder(jobs):
    """Two `bench run` started together into one results folder: two run folders, nothing shared.

    Each is complete and consistent, its rows carry its own run id, and (same settings, same seed)
    both measured the same numbers.
    """
    res = jobs.get("two-runs")
    assert res["rcs"] == [0, 0], res["stderr"]
    assert len(res["dirs"]) == 2 and res["dirs"][0].name != res["dirs"][1].name
    for d in res["dirs"]:
        state = assert_consistent(d)
        assert state["rows"] == {"prunetrain": 1} and state["meta"]["status"] == "finished"
    assert_same_records(read_rows(res["dirs"][0]), read_rows(res["dirs"][1]))


def test_run_folder_creation_is_exclusive(tmp_path, monkeypatch):
    """Two processes drawing the same id: the second mkdir fails and it draws again, never sharing a folder."""
    import datetime as dt
    from types import SimpleNamespace

    tokens = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(bench_run.secrets, "token_hex", lambda n: next(tokens))
    stamp = "20250101-000000"
    fixed = SimpleNamespace(now=lambda tz=None: dt.datetime(2025, 1, 1, tzinfo=tz))
    monkeypatch.setattr(bench_run, "_dt", SimpleNamespace(datetime=fixed, timezone=dt.timezone))
    a = bench_run.new_run_dir(tmp_path, "smoke", "resnet20")
    b = bench_run.new_run_dir(tmp_path, "smoke", "resnet20")
    assert a[0] == f"{stamp}-smoke-resnet20-aaaaaa" and b[0] == f"{stamp}-smoke-resnet20-bbbbbb"


@uses("reference")
def test_resume_of_a_running_folder_is_refused(jobs):
    """`bench run --resume` on a folder whose run is still writing: exit 2 at once (the folder is locked).

    The running run is not disturbed: it finishes, and its records are the ones every other
    run of these settings reproduces.
    """
    res = jobs.get("reference")  # the scenario asserts that the run itself finished (exit 0)
    assert res["resume_try"] is not None
    assert res["resume_try"].returncode == 2
    assert "another `bench run` is writing this run folder" in one_error_line(res["resume_try"].stderr)
    assert res["meta"]["status"] == "finished"
    # undisturbed: the chains and the NaN case, run apart, reproduce its records exactly (tests below)


@uses("reference")
def test_report_while_run_writes_reads_complete_rows(jobs):
    """The report loader, polled every 0.25 s while a run writes, sees only complete rows.

    Every row it ever read equals the final row of that (mode, epoch) exactly; the row count never
    shrinks; no warning of a damaged row or unreadable run.json.
    """
    res = jobs.get("reference")
    final = {(r["mode"], r["epoch"]): r for r in res["final"]}
    assert len(res["seen"]) >= 3  # it really read while the run wrote
    counts = [len(rows) for rows in res["seen"]]
    assert counts == sorted(counts) and counts[-1] <= len(final)
    for rows in res["seen"]:
        for r in rows:
            want = final[(r["mode"], r["epoch"])]
            assert {k: v for k, v in r.items() if v == v} == {k: v for k, v in want.items() if v == v}  # NaN: empty
    bad = [w for w in res["warnings"] if re.search(r"row skipped|invalid JSON|fields, expected|not a JSON", w)]
    assert bad == []


# ============================================================================ tests: out of memory

@uses("oom-retry")
def test_emulated_oom_lowers_batch_and_retries(jobs):
    """Budget 0.035 GiB: batch 32 needs 0.049, 16 needs 0.026.  With --no-adjust-batch the run starts at 32.

    The first step exceeds the emulated budget: the batch is halved to 16, the step redone, the
    run finishes (exit 0).  oom_retries counts it, run.json's batch_reasons says so, and the row
    records the LR the epoch really ran with.
    """
    res = jobs.get("oom-retry")
    assert res["proc"].returncode == 0, res["proc"].stderr
    rows = res["rows"]
    assert [int(r["batch_size"]) for r in rows] == [16, 16]
    assert [int(r["oom_retries"]) for r in rows] == [1, 1]
    assert float(rows[0]["lr"]) == 0.1          # epoch 1 ran at the LR of batch 32 (set at its start)
    assert float(rows[1]["lr"]) == 0.1 * 16 / 32  # then scaled with the lowered batch
    reasons = res["meta"]["modes"]["prunetrain"]["batch_reasons"]
    assert "epoch 1: out of memory at 32, retried at 16" in reasons
    assert res["meta"]["status"] == "finished"
    assert all(int(r["peak_memory_bytes"]) <= 0.035 * 2**30 for r in rows)


@uses("oom-fatal")
def test_budget_too_small_for_any_batch(jobs):
    """Budget 0.001 GiB, below what batch 1 needs: exit 2, one line with the budget and the measured need.

    Both ways in: lowering after OOMs down to batch 1 (--no-adjust-batch), and the batch rule at
    the start.  The run folder says failed, with the error and the batch steps taken.
    """
    res = jobs.get("oom-fatal")
    line = one_error_line(res["retry"]["proc"].stderr)
    assert res["retry"]["proc"].returncode == 2
    assert re.search(r"out of memory even at batch 1: budget 1 MiB, measured need \d+ MiB", line), line
    meta = res["retry"]["meta"]
    assert meta["status"] == "failed" and meta["modes"]["prunetrain"]["status"] == "failed"
    assert meta["modes"]["prunetrain"]["error"] in line
    assert any("retried at 1" in r for r in meta["modes"]["prunetrain"]["batch_reasons"])
    assert res["retry"]["rows"] == []

    line = one_error_line(res["rule"]["proc"].stderr)
    assert res["rule"]["proc"].returncode == 2
    assert re.search(r"even batch \d+ needs \d+ MiB, more than the \d+ MiB the budget allows \(1 MiB usable × headroom", line), line
    assert res["rule"]["meta"]["status"] == "failed"


# ============================================================================ tests: divergence

@uses("nan-dense", "reference")
def test_nan_in_one_mode_other_mode_completes(jobs):
    """BENCH_FAULT_NAN_AT=dense:2 in a 2-epoch `both` run: dense's loss is NaN in epoch 2.

    Dense stops with a clear message and keeps its epoch-1 row; prunetrain runs to the end (its
    two rows equal the reference's first two).  Exit 2 with one line naming the diverged mode and what finished.
    Resuming the failed run retrains nothing and repeats the reason (exit 2).
    """
    res, ref = jobs.get("nan-dense"), jobs.get("reference")
    proc = res["proc"]
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "dense: the training loss became nan in epoch 2" in line and "prunetrain finished" in line
    assert_same_records(_mode_rows(res["rows"], "dense"), _mode_rows(ref["rows"], "dense")[:1])
    # epoch 2 is this run's last, so no reconfiguration (and no measurement of one) follows it, as it does in
    # the longer reference: the reconfiguration's columns of that row differ by construction
    last = {"prune_threshold", "func_change_eval", "func_change_train", "func_acc_delta_eval", "func_acc_delta_train"}
    assert_same_records([{k: v for k, v in r.items() if k not in last} for r in _mode_rows(res["rows"], "prunetrain")],
                        [{k: v for k, v in r.items() if k not in last} for r in _mode_rows(ref["rows"], "prunetrain")[:2]])
    assert_same_records(_mode_rows(res["rows"], "prunetrain")[:1], _mode_rows(ref["rows"], "prunetrain")[:1])
    meta = res["meta"]
    assert meta["status"] == "failed"
    assert meta["modes"]["dense"]["status"] == "failed" and "nan" in meta["modes"]["dense"]["error"]
    assert meta["modes"]["prunetrain"]["status"] == "finished"
    assert (res["dir"] / "prunetrain_final.pt").exists() and not (res["dir"] / "dense_final.pt").exists()
    assert res["resume"].returncode == 2
    assert "dense: the training loss became nan" in one_error_line(res["resume"].stderr)
    assert res["rows_after_resume"] == res["rows"]


@uses("huge-lr")
def test_huge_lr_diverges_both_modes(jobs):
    """--lr 1e6: both modes diverge in epoch 1; each stops with the message, exit 2, nothing half-written."""
    res = jobs.get("huge-lr")
    assert res["proc"].returncode == 2
    line = one_error_line(res["proc"].stderr)
    assert "dense: the training loss became nan in epoch 1" in line
    assert "prunetrain: the training loss became nan in epoch 1" in line
    assert res["rows"] == []
    assert {m: s["status"] for m, s in res["meta"]["modes"].items()} == {"dense": "failed", "prunetrain": "failed"}
    assert_consistent(res["dir"])


# ============================================================================ tests: kill -9 and resume

@uses("reference")
def test_reference_run_prunes(jobs):
    """The reference (uninterrupted `both` run) really prunes, so the kill cases cross a reconfiguration."""
    ref = jobs.get("reference")
    params = [int(r["params"]) for r in _mode_rows(ref["rows"], "prunetrain")]
    dense = [int(r["params"]) for r in _mode_rows(ref["rows"], "dense")]
    assert len(params) == 3 and params[0] == dense[0]
    archs = ref["meta"]["modes"]["prunetrain"]["architectures"]
    assert [a["epoch"] for a in archs] == [0, 1, 2]
    assert archs[0]["params"] > archs[1]["params"] > archs[2]["params"]  # both reconfigurations prune
    assert params[1] == archs[1]["params"] and params[2] == archs[2]["params"]
    assert [int(r["batch_size"]) for r in _mode_rows(ref["rows"], "prunetrain")] == [64, 64, 64]


@uses(*(f"{chain}:{stage}" for chain, stage in STAGES), "reference")
@pytest.mark.parametrize("chain,stage", STAGES, ids=[f"{c}:{s}" for c, s in STAGES])
def test_kill_leaves_consistent_folder(jobs, chain, stage):
    """SIGKILL at one point of a chain (see CHAINS): the folder is consistent right after the kill.

    Complete rows 1..k per mode, the checkpoint of the last complete epoch (loads with
    weights_only; from prunetrain's epoch 1 on a pruned model), at most a torn last row or an
    unrenamed temp file, both ignored by readers; the complete rows equal the reference's;
    run.json still says running.  A killed resume had said where it resumed.
    """
    stages = CHAINS[chain][1]
    i = [st[0] for st in stages].index(stage)
    _, point, says, want = stages[i]
    res, ref = jobs.get(f"{chain}:{stage}"), jobs.get("reference")
    assert res["rc"] == -9, res["stderr"]
    assert says in res["stderr"]
    state = assert_consistent(res["snapshot"])
    assert state["meta"]["status"] == "running"
    rows = read_rows(res["snapshot"])
    for mode in ("dense", "prunetrain"):
        assert_same_records(_mode_rows(rows, mode), _mode_rows(ref["rows"], mode)[:state["rows"].get(mode, 0)])
    warnings: list[str] = []
    df = read_epochs_csv(res["snapshot"] / "epochs.csv", warnings)
    assert len(df) == len(rows)
    assert any("last line is incomplete" in w for w in warnings) == bool(state["torn_tail"])
    if want is None:  # killed from outside once row 2 was on disk: before, in or after its checkpoint
        assert state["rows"]["prunetrain"] >= 2
        return
    assert state["rows"] == want["rows"]
    assert state["checkpoints"] == want["ckpts"]
    assert bool(state["torn_tail"]) == want["torn"]
    assert len(state["temp_files"]) == len(want["temps"])
    assert all(any(t.startswith(p) for p in want["temps"]) for t in state["temp_files"])
    if "prunetrain" in want["ckpts"]:
        blob = load_blob(res["snapshot"] / "checkpoints" / "prunetrain.pt")
        assert blob["arch"]["params"] < ref["meta"]["modes"]["prunetrain"]["architectures"][0]["params"]


@uses("chain-prune", "reference")
def test_resume_after_kills_equals_uninterrupted_run(jobs):
    """After five SIGKILLs in prunetrain (and five resumes) the run ends with exactly the reference's records.

    Every epochs.csv column but the timings, float for float; the architectures, λ and batch
    decisions in run.json; the final model, the checkpoint after epoch 3; no temp file left.
    """
    res, ref = jobs.get("chain-prune"), jobs.get("reference")
    assert res["resume_rc"] == 0, res["resume_stderr"]
    assert "prunetrain: resuming after epoch" in res["resume_stderr"]
    _assert_resumed_like_reference(res["dir"], ref, ("prunetrain",))


@uses("chain-both", "reference")
def test_resume_of_both_run_after_kills_equals_uninterrupted_run(jobs):
    """A `both` run killed in dense, then between prunetrain's first row and its checkpoint.

    The last resume finds dense finished (not redone), drops prunetrain's row without
    checkpoint, removes the temp file, and ends with the reference's records for both modes.
    """
    res, ref = jobs.get("chain-both"), jobs.get("reference")
    assert res["resume_rc"] == 0, res["resume_stderr"]
    assert "dense: already finished" in res["resume_stderr"] and "prunetrain: starting" in res["resume_stderr"]
    _assert_resumed_like_reference(res["dir"], ref, ("dense", "prunetrain"))
