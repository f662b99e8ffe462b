"""``bench sweep``: one study = one dense baseline and one pruning run per varied setting.

A study answers one of the questions PruneTrain leaves open (how robust is the
result to the reconfiguration interval, how the penalty ratio trades FLOPs
against accuracy, what the dynamic mini-batch brings) with runs that differ in
nothing but the varied setting: same seed, same schedule, same data.  Dense
training does not depend on PruneTrain-only settings (interval, penalty ratio,
threshold, ...), so it is run once per repeat, not once per setting; a varied
setting that dense does depend on gets a dense run per value.

``--vary mode=prunetrain,slimming,earlybird`` compares the pruning methods
themselves the same way: each method's run gets only the varied settings it
reads (bench.config.not_read_by), so varying the penalty ratio beside it does
not train Network Slimming twice.  Random pruning follows PruneTrain's records
in the same folder, so it is not a study entry (``bench run --mode random``).

Every run is an ordinary ``bench run`` folder inside the study folder; the
study record ``study.json`` names what was varied and which folder holds which
run, so ``bench report`` can pair them and ``--resume`` continues an
interrupted study where it stopped (a half-trained run resumes from its
checkpoint, a finished one is not run again).
"""
from __future__ import annotations

import datetime as _dt
import itertools
import secrets
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import FIELDS, RunConfig, not_read_by, parse_text, partial_from, resolve
from .errors import BenchError, ConfigError, DivergenceError
from .runfolder.atomic import atomic_write_json
from .runfolder.folder import lock_run_dir, portable_command, resumed_data_dir
from .runfolder.runjson import read_run_json, recorded_settings
from .runfolder.study import ENTRY_MODES, STUDY_FILE, read_study

STUDY_SCHEMA = 1
#: fields a study may not vary: they name the run rather than a setting of it
NOT_VARIABLE = frozenset({"modes", "profile", "data", "data_dir", "device", "world_size", "seed", "emulate"})
#: the pruning methods a study can compare (``--vary mode=...``): every entry mode but dense
STUDY_METHODS = tuple(m for m in ENTRY_MODES if m != "dense")

Echo = Callable[[str], None]


def parse_vary(spec: str) -> tuple[str, list[Any]]:
    """``"interval=2,5,10"`` → ``("interval", [2, 5, 10])``, each value typed like the setting."""
    key, sep, text = spec.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not text.strip():
        raise ConfigError(f"--vary {spec!r}: write SETTING=V1,V2,... (e.g. --vary interval=2,5,10)")
    if key == "mode":
        return key, _methods(spec, [v.strip() for v in text.split(",")])
    variable = sorted(k for k, f in FIELDS.items() if k not in NOT_VARIABLE and not f.type.startswith("list"))
    if key not in variable:
        raise ConfigError(f"--vary {spec!r}: '{key}' is not a setting a study can vary; "
                          f"choose one of {', '.join(variable)}")
    values: list[Any] = []
    for raw in (v.strip() for v in text.split(",")):
        try:
            value = parse_text(key, raw)
        except ValueError:
            what = "on or off" if FIELDS[key].type == "bool" else FIELDS[key].type
            raise ConfigError(f"--vary {spec!r}: value {raw!r} is not {what}") from None
        if value in values:
            raise ConfigError(f"--vary {spec!r}: value {raw!r} is given twice")
        values.append(value)
    return key, values


def _methods(spec: str, names: list[str]) -> list[str]:
    for name in names:
        if name == "random":
            raise ConfigError(f"--vary {spec!r}: random pruning follows PruneTrain's records in the same folder; "
                              "run it with bench run --mode random (or --mode compare)")
        if name not in STUDY_METHODS:
            raise ConfigError(f"--vary {spec!r}: {name!r} is not a pruning method a study compares; choose from "
                              f"{', '.join(STUDY_METHODS)} (dense runs in every study)")
    if len(set(names)) != len(names):
        raise ConfigError(f"--vary {spec!r}: a method is given twice")
    return names


@dataclass(frozen=True)
class Entry:
    """One planned run of a study."""

    id: str
    mode: str                  # dense | prunetrain | slimming | earlybird
    setting: dict[str, Any]    # the varied values this run uses (dense: only those dense depends on)
    seed: int
    repeat: int

    def config(self, base: RunConfig) -> RunConfig:
        return replace(base, **self.setting, modes=[self.mode], seed=self.seed).validate()


def _label(setting: dict[str, Any]) -> str:
    return ",".join(f"{k}={_text(v)}" for k, v in setting.items()) or "base"


def _text(v: Any) -> str:
    return ("on" if v else "off") if isinstance(v, bool) else str(v)


def plan_study(base: RunConfig, varied: dict[str, list[Any]], repeat: int) -> list[Entry]:
    """Dense runs (one per repeat and per value of settings dense depends on), then each method's grid: a method's
    run holds the varied settings it reads (bench.config.not_read_by), so it runs once per value of those only."""
    if not varied:
        raise ConfigError("bench sweep needs at least one --vary SETTING=V1,V2,...")
    if repeat < 1:
        raise ConfigError("--repeat must be >= 1")
    methods = list(varied.get("mode", ["prunetrain"]))
    keys = [k for k in varied if k != "mode"]
    for k in keys:
        if all(k in not_read_by(m) for m in ("dense", *methods)):
            raise ConfigError(f"--vary {k}: no run of this study reads it ({', '.join(('dense', *methods))}); "
                              "add the method that does with --vary mode=...")
    grid = [dict(zip(keys, combo)) for combo in itertools.product(*(varied[k] for k in keys))]
    entries: list[Entry] = []
    for r in range(repeat):
        seed = base.seed + r
        for mode in ("dense", *methods):
            runs: list[dict[str, Any]] = []
            for setting in grid:
                own = {k: v for k, v in setting.items() if k not in not_read_by(mode)}
                if own not in runs:
                    runs.append(own)
            entries += [Entry(f"{mode}[{_label(s)}]#{r}", mode, s, seed, r) for s in runs]
    for e in entries:  # every combination must be a valid configuration before anything runs
        try:
            e.config(base)
        except ConfigError as exc:
            raise ConfigError(f"study run {e.id}: {exc}") from None
    return entries


class Study:
    """study.json of one study folder, rewritten atomically after every change."""

    def __init__(self, folder: Path, data: dict, data_dir: str | Path | None = None):
        # study.json keeps the image folder by name only (records travel between machines): the path is
        # given on the command line, at the start and again with --resume
        self.folder, self.data, self.data_dir = folder, data, data_dir

    @property
    def path(self) -> Path:
        return self.folder / STUDY_FILE

    def save(self) -> None:
        atomic_write_json(self.path, self.data)

    @classmethod
    def create(cls, results_dir: Path, base: RunConfig, varied: dict[str, list[Any]], repeat: int,
               tag: str = "") -> "Study":
        entries = plan_study(base, varied, repeat)
        results_dir.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        name = "-".join([*varied, *([tag] if tag else [])])
        for _ in range(100):
            study_id = f"study-{stamp}-{name}-{secrets.token_hex(3)}"
            try:
                (results_dir / study_id).mkdir()
                break
            except FileExistsError:
                continue
        else:
            raise ConfigError(f"could not create a unique study folder in {results_dir}")
        study = cls(results_dir / study_id, data_dir=base.data_dir, data={
            "kind": "study", "schema_version": STUDY_SCHEMA, "study_id": study_id, "status": "running",
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "varied": {k: list(v) for k, v in varied.items()}, "repeat": repeat,
            "base_config": {**base.to_dict(), "data_dir": Path(base.data_dir).name if base.data_dir else None},
            "command": portable_command(sys.argv),
            "entries": [{"id": e.id, "mode": e.mode, "setting": e.setting, "seed": e.seed, "repeat": e.repeat,
                         "run": None, "status": "pending"} for e in entries],
        })
        study.save()
        return study

    @classmethod
    def open(cls, folder: Path, data_dir: str | Path | None = None) -> "Study":
        return cls(folder, read_study(folder / STUDY_FILE), data_dir)

    def base_config(self) -> RunConfig:
        """The recorded base configuration, its image folder the one given now (a missing one is a ConfigError)."""
        recorded = recorded_settings(self.path, self.data["base_config"], "base_config")
        data_dir = None if self.data_dir is None else Path(self.data_dir)
        return resolve(resumed=recorded, given=partial_from(
            {"data_dir": resumed_data_dir(self.path, recorded.get("data_dir"), data_dir)}))

    def entry_config(self, entry: dict) -> RunConfig:
        return Entry(entry["id"], entry["mode"], entry["setting"], entry["seed"], entry["repeat"]).config(
            self.base_config())


def _started_folder(study: Study, entry: dict) -> Path | None:
    """A run folder that a killed sweep started for ``entry`` before it could record the name."""
    claimed = {e["run"] for e in study.data["entries"] if e["run"]}
    want = study.entry_config(entry).to_dict()
    for d in sorted(p for p in study.folder.iterdir() if p.is_dir() and p.name not in claimed):
        meta = read_run_json(d / "run.json", strict=False, warnings=[])  # half-made folders are skipped
        cfg = (meta or {}).get("config")
        if not isinstance(cfg, dict) or not {"modes", "seed", *entry["setting"]} <= cfg.keys():
            continue
        # run.json keeps the data folder and the profile by name (bench.runfolder.folder.portable_config): compare the rest
        if all(cfg[k] == v for k, v in want.items() if k in cfg and k not in ("data_dir", "profile")):
            return d
    return None


def run_study(study: Study, *, progress: bool = False, echo: Echo = lambda s: None) -> Path:
    """Run every entry that has not finished; returns the study folder.

    A diverged run is recorded as failed and the others still run; the
    caller learns of it by a DivergenceError at the end.
    """
    from .run import run_benchmark

    lock = lock_run_dir(study.folder)  # a second sweep on the same folder fails at once
    failures: list[str] = []
    try:
        study.data["status"] = "running"
        study.save()
        entries = study.data["entries"]
        for n, entry in enumerate(entries, start=1):
            if entry["status"] == "finished":
                continue
            existing = study.folder / entry["run"] if entry["run"] else _started_folder(study, entry)
            echo(f"study {study.data['study_id']}: run {n}/{len(entries)} {entry['id']}"
                 f"{' (resuming ' + existing.name + ')' if existing else ''}")
            entry["status"] = "running"
            study.save()
            try:
                if existing is not None:
                    entry["run"] = existing.name
                    study.save()
                    run_dir = run_benchmark(None, resume=existing, progress=progress, echo=echo,
                                            data_dir=None if study.data_dir is None else Path(study.data_dir))
                else:
                    run_dir = run_benchmark(study.entry_config(entry), results_dir=study.folder,
                                            progress=progress, echo=echo)
                entry.update(run=run_dir.name, status="finished")
            except DivergenceError as exc:
                entry.update(status="failed", error=str(exc))
                if entry["run"] is None:
                    found = _started_folder(study, entry)
                    entry["run"] = found.name if found else None
                failures.append(f"{entry['id']}: {exc}")
            study.save()
        study.data["status"] = "failed" if failures else "finished"
        study.save()
    finally:
        if lock is not None:
            lock.close()
    if failures:
        raise DivergenceError(f"{len(failures)} run(s) of the study failed ({'; '.join(failures)}); "
                              f"the others finished in {study.folder}")
    return study.folder


def sweep(base: RunConfig, vary: Sequence[str], *, repeat: int = 1, results_dir: Path = Path("results"),
          progress: bool = False, echo: Echo = lambda s: None) -> Path:
    """Plan a study from ``--vary`` specs, create its folder, run it."""
    varied: dict[str, list[Any]] = {}
    for spec in vary:
        key, values = parse_vary(spec)
        if key in varied:
            raise ConfigError(f"--vary {key} is given twice; list all values in one --vary")
        varied[key] = values
    if "prunetrain" not in base.modes or "dense" not in base.modes:
        raise ConfigError("bench sweep compares dense with PruneTrain: leave --mode at both (compare methods with "
                          "--vary mode=prunetrain,slimming,earlybird)")
    study = Study.create(Path(results_dir), base, varied, repeat)
    echo(f"study {study.data['study_id']}: {len(study.data['entries'])} runs, varying "
         + "; ".join(f"{k} = {', '.join(_text(v) for v in vs)}" for k, vs in varied.items()))
    return run_study(study, progress=progress, echo=echo)


def resume_study(folder: Path, *, data_dir: str | Path | None = None, progress: bool = False,
                 echo: Echo = lambda s: None) -> Path:
    """Continue a study; ``data_dir`` gives its image folder again (study.json keeps only the name)."""
    folder = Path(folder)
    if not (folder / STUDY_FILE).exists():
        raise BenchError(f"{folder}: no {STUDY_FILE}; --resume takes a study folder made by `bench sweep`")
    study = Study.open(folder, data_dir)
    study.base_config()  # a missing --data-dir is one line before anything runs
    return run_study(study, progress=progress, echo=echo)


def replay_study(folder: Path, results_dir: Path, settings: Any = None, *, echo: Echo = lambda s: None) -> Path:
    """``bench replay`` of a study: every finished run of it replayed here, into a study of the same shape.

    The new study record names the one it replays, so the report shows the
    same section with this machine's times (accuracy stays the original's).
    """
    from .replay.run import replay

    src = Study.open(Path(folder))
    todo = [e for e in src.data["entries"] if e["status"] == "finished" and e["run"]]
    if not todo:
        raise BenchError(f"{src.path}: no finished run to replay yet")
    varied = {k: list(v) for k, v in src.data["varied"].items()}
    # the replays read each run's own records: the study's image folder is not needed here
    base = resolve(resumed=recorded_settings(src.path, src.data["base_config"], "base_config"))
    study = Study.create(Path(results_dir), base, varied, src.data["repeat"], tag="replay")
    study.data["replay_of"] = src.data["study_id"]
    study.data["entries"] = [{**e, "run": None, "status": "pending"} for e in src.data["entries"]]
    study.save()
    for n, entry in enumerate(study.data["entries"], start=1):
        original = next(e for e in src.data["entries"] if e["id"] == entry["id"])
        if original not in todo:
            continue
        echo(f"study {study.data['study_id']}: replaying {n}/{len(study.data['entries'])} {entry['id']}")
        out = replay(src.folder / original["run"], study.folder, settings, echo=echo)
        entry.update(run=out.name, status="finished")
        study.save()
    study.data["status"] = "finished"
    study.save()
    return study.folder
