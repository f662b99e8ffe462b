"""run.json: the typed schema of a run folder's record, its one builder, its writer and its reader.

``bench run`` and ``bench replay`` build it with :func:`run_record` (the keys
every run folder has, from the device setup and this machine), the run's
:class:`RunJson` rewrites it atomically whenever something in it changes, and
``--resume``, replay, sweep and the report read it back with
:func:`read_run_json` (strict or lenient, as :mod:`bench.runfolder.records`)
and, for its configuration, :func:`config_from_record`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TypedDict

import torch

from ..config import MODES, Overrides, RunConfig, partial_from, record_source, resolve
from ..errors import RecordError
from ..machine.profiles import Profile
from ..machine.setup import DeviceSetup
from .atomic import atomic_write_json
from .folder import git_commit, now, portable_command, portable_profile, versions
from .hooks import NO_HOOKS, Hooks
from .records import SCHEMA_VERSION, Reader

RUN_STATUSES = ("running", "finished", "failed")
MODE_STATUSES = ("pending", "running", "finished", "failed")


class ModeRecord(TypedDict, total=False):
    """``modes.<mode>`` of run.json: one mode's state and what it recorded."""

    status: str                  # MODE_STATUSES
    architectures: list[dict]    # the channel shape after each reconfiguration (``epoch`` first)
    method: str                  # what the mode ran, in words (bench.config.method_name)
    error: str                   # why it failed
    batch_reasons: list          # why the batch changed, per change
    final_model: str             # the exported model's file name
    lasso_lambda: float          # PruneTrain's λ
    pruning: dict                # a competing method's pruning record
    control: dict                # a control's construction record


class RunRecord(TypedDict, total=False):
    """run.json: every key a run folder's record may hold (``bench run``; ``source = replay`` for a replay)."""

    schema_version: int
    run_id: str
    status: str                  # RUN_STATUSES
    created: str
    finished: str | None
    config: dict                 # RunConfig.to_dict, portable (bench.runfolder.folder.portable_config)
    hardware: dict               # bench.machine.hardware.DeviceInfo.to_dict
    device: str
    profile: dict                # portable (bench.runfolder.folder.portable_profile)
    emulated: bool
    memory_budget_bytes: int
    data: dict | None            # bench.training.data.DataSplit.to_dict
    versions: dict
    git_commit: str | None
    seed: int
    torch_threads: int           # a resume uses the same: same float results on CPU
    command: str
    modes: dict[str, ModeRecord]
    # bench run only
    busy_at_start: str | None
    method: str
    method_differs: dict
    fault_injection: list
    device_peak: dict | None
    # bench replay only
    source: str
    replay_of: str
    replay: dict


def run_record(run_id: str, status: str, config: dict, setup: DeviceSetup, data: dict | None, seed: int,
               modes: dict[str, ModeRecord], **keys: Any) -> RunRecord:
    """The one builder of a run.json: the keys every record has (this machine, the software, the command
    line), then the command's own ``keys``."""
    record: RunRecord = {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "status": status, "created": now(), "finished": None,
        "config": config, "hardware": setup.info.to_dict(), "device": str(setup.device),
        "profile": portable_profile(setup.profile), "emulated": setup.emulated,
        "memory_budget_bytes": setup.budget_bytes, "data": data, "versions": versions(setup.device),
        "git_commit": git_commit(), "seed": seed, "torch_threads": torch.get_num_threads(),
        "command": portable_command(sys.argv), "modes": modes,
    }
    record.update(keys)  # type: ignore[typeddict-item]
    return record


class RunJson:
    """The writer of run.json: rewritten atomically whenever something in it changes."""

    def __init__(self, path: Path, data: RunRecord, hooks: Hooks = NO_HOOKS):
        self.path, self.data, self.hooks = Path(path), data, hooks

    def save(self) -> None:
        atomic_write_json(self.path, self.data, before_replace=lambda: self.hooks.kill_point("run-json-write"))

    def mode(self, mode: str) -> ModeRecord:
        return self.data["modes"].setdefault(mode, {"status": "pending", "architectures": []})

    def add_architecture(self, mode: str, arch: dict) -> None:
        self.mode(mode)["architectures"].append(arch)
        self.save()


# Top-level keys of RunRecord and their JSON types that reading checks; strict reading also requires those
# marked True.
RUN_JSON_KEYS: dict[str, tuple[type, bool]] = {
    "run_id": (str, True), "status": (str, False), "config": (dict, True), "hardware": (dict, False),
    "modes": (dict, True), "versions": (dict, False), "emulated": (bool, False)}


def read_run_json(path: Path, *, strict: bool, warnings: list[str] | None = None,
                  needed_by: str = "--resume") -> RunRecord | None:
    """run.json as a :class:`RunRecord`.

    Strict (resume, replay: ``needed_by`` names which): every key they need is checked; the first problem
    raises RecordError naming the key.  Lenient (report): None with a warning
    when missing or unparsable; a key of the wrong type is dropped with a
    warning so the rest stays usable; older or newer files are read as far as
    their keys are known.
    """
    path = Path(path)
    r = Reader(path, strict, warnings)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        if strict:
            raise RecordError(f"{path}: not found; {needed_by} needs a run folder made by `bench run`") from None
        r.warnings.append(f"{path}: missing; using epochs.csv alone (no hardware details, architectures or run status)")
        return None
    except OSError as e:
        r.fatal("", f"cannot read ({e.strerror or e})", "using epochs.csv alone")
        return None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        where = "" if strict else f":{e.lineno}"
        r.fatal(where, f"unreadable: invalid JSON ({e.msg}, line {e.lineno} column {e.colno})", "using epochs.csv alone")
        return None
    if not isinstance(meta, dict):
        r.fatal("", "unreadable: not a JSON object", "using epochs.csv alone")
        return None
    if not _run_json_version(r, meta.get("schema_version")):
        return None
    for key, (typ, required) in RUN_JSON_KEYS.items():
        value = meta.get(key)
        bad = value is not None and (not isinstance(value, typ) or (typ is int and isinstance(value, bool)))
        if strict and (bad or (required and not value)):
            raise RecordError(f"{path}: key '{key}' is missing or not a {typ.__name__} (got {value!r:.60})")
        if bad:
            r.warnings.append(f"{path}: field {key!r} should be a {typ.__name__}, got {type(value).__name__}; ignored")
            del meta[key]
    if "status" in meta and meta["status"] not in RUN_STATUSES:
        r.fatal("", f"key 'status' is {meta['status']!r}, not one of {', '.join(RUN_STATUSES)}",
                "treated as unknown")
        del meta["status"]
    if strict:
        _check_modes(path, meta["modes"])
    return meta


def _run_json_version(r: Reader, version: Any) -> bool:
    if version is None:
        r.note(f"{r.path}: older record format (no schema_version); read the compatible fields")
    elif not isinstance(version, int) or isinstance(version, bool):
        r.fatal("", f"unrecognised schema_version {version!r}", "using epochs.csv alone")
        return False
    elif version < SCHEMA_VERSION:
        r.note(f"{r.path}: older record format (schema_version {version}, this reads {SCHEMA_VERSION}); "
               "read the compatible fields")
    elif version > SCHEMA_VERSION:
        if r.strict:
            raise RecordError(f"{r.path}: key 'schema_version' is {version}, written by a newer bench "
                              f"(this writes {SCHEMA_VERSION}); continue it with the bench that wrote it")
        r.note(f"{r.path}: written by a newer bench (schema_version {version}, this reads {SCHEMA_VERSION}); "
               "read the known fields")
    return True


def _check_modes(path: Path, modes: dict) -> None:
    for mode, state in modes.items():
        if mode not in MODES or not isinstance(state, dict):
            raise RecordError(f"{path}: key 'modes.{mode}' is not a mode ({', '.join(MODES)}) with a dict of its state")
        if state.get("status") not in MODE_STATUSES:
            raise RecordError(f"{path}: key 'modes.{mode}.status' is {state.get('status')!r}, "
                              "not pending, running, finished or failed")
        archs = state.get("architectures")
        if not isinstance(archs, list) or not all(isinstance(a, dict) and type(a.get("epoch")) is int for a in archs):
            raise RecordError(f"{path}: key 'modes.{mode}.architectures' must be a list of records with an 'epoch'")


def recorded_profile(path: Path, meta: dict) -> Profile:
    """The profile a resumed run started with, as run.json recorded it (its file may not exist here)."""
    try:
        return Profile.from_dict(meta["profile"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"{path}: key 'profile' is not a recorded profile ({exc})") from None


def recorded_settings(path: Path, d: Any, table: str = "config") -> Overrides:
    """The RunConfig a record holds, every key present and typed (RecordError names the key)."""
    if not isinstance(d, dict):
        raise RecordError(f"{path}: key '{table}' is missing or not a table")
    return partial_from(d, record_source(path, table), complete=True)


def config_from_record(path: Path, d: dict) -> RunConfig:
    """The RunConfig recorded in run.json, checked by the loader every source of settings goes through."""
    return resolve(resumed=recorded_settings(path, d))
