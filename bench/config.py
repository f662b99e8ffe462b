"""The configuration of one benchmark run (everything that decides its results, recorded in run.json),
and the one loader that every source of it goes through.

A run's settings come from up to three sources: a profile's ``[defaults]``, the command line, and a
resumed run.json.  Each is read by :func:`partial_from` into checked, typed :class:`Overrides` (unknown
keys and wrong types are one line naming the source and the key), and :func:`resolve` merges them over
:class:`RunConfig`'s field defaults, the only place a run default is written, then validates the result.

(Over 400 lines on purpose: every setting, its rules, its sources and the name of the method it makes are
decided here and nowhere else.)
"""
from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Iterator, Mapping

from .errors import BenchError, ConfigError, ProfileError, RecordError

#: dense and PruneTrain, the pair every comparison is made of
PAIR = ("dense", "prunetrain")
#: the controls a reviewer asks for first (Liu et al., ICLR 2019): PruneTrain's final architecture trained from
#: scratch, and the dense network uniformly thinned to PruneTrain's training FLOPs; both need PruneTrain's records
CONTROLS = ("small-dense", "thin-dense")
#: the methods PruneTrain competes with (bench.training.methods), each run next to dense; random follows PruneTrain's records
METHODS = ("slimming", "earlybird", "random")
MODES = PAIR + CONTROLS + METHODS
#: modes built from PruneTrain's finished records in the same folder: they run after it
AFTER_PRUNETRAIN = CONTROLS + ("random",)
LASSO_STEPS = ("paper", "proximal")
LIVENESS = ("union", "readers")
STRUCTURES = ("union", "gating")
PENALISE = ("all", "readers")
GROUP_WEIGHTS = ("uniform", "size")
BATCH_POLICIES = ("freed", "fill")
AMP = ("off", "bf16", "fp16")
FP32_PRECISIONS = ("ieee", "tf32")   # how fp32 matmuls and convolutions compute (bench.machine.gpu.configure)
#: field metadata of a setting added after records exist: an older run.json without it resumes with the default
ADDED = {"added": True}


def scaled_lr(base_lr: float, batch: int, base_batch: int) -> float:
    """Linear scaling rule: ``lr0 * b / B0``."""
    return base_lr * batch / base_batch


@dataclass
class RunConfig:
    """Defaults are PruneTrain's published CIFAR settings and its method (``lasso="paper"``).

    A new setting is one line here (``metadata=ADDED``, so older records still load) plus its
    ``bench run`` option in bench/cli.py; profiles, run.json and ``--vary`` take it from here.
    """

    model: str = "resnet32"
    data: str = "cifar10"
    data_dir: str | None = None
    subset: int = 0
    profile: str = "auto"
    modes: list[str] = field(default_factory=lambda: list(PAIR))
    epochs: int = 182
    batch_size: int = 128
    max_batch: int = 1024
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of the epochs
    lr_gamma: float = 0.1
    interval: int = 10
    lpr: float = 0.2
    threshold: float = 1e-4
    lasso: str = "paper"          # paper: penalty in the loss (subgradient) | proximal: soft-threshold after the step
    liveness: str = "union"       # union: dead in every writer and reader | readers: every reader ignores it
    penalise: str = field(default="all", metadata=ADDED)  # all: writers and readers (paper) | readers: readers' slices
    keep_bn_scale: bool = field(default=False, metadata=ADDED)  # proximal: BN-read filters keep their norm
    group_weight: str = field(default="uniform", metadata=ADDED)  # uniform (paper) | size: norm × √elements
    structure: str = field(default="union", metadata=ADDED)  # union: one channel set per space | gating
    change_budget: float = 0.0    # > 0: largest threshold whose measured logit change stays within this
    lasso_until: float = field(default=1.0, metadata=ADDED)  # fraction of the epochs under the penalty (1: all)
    held_out: int = 256           # validation images of the fixed batch that measures each reconfiguration
    val: int = field(default=1000, metadata=ADDED)  # training images held out as the validation split (balanced)
    test_size: int = field(default=0, metadata=ADDED)  # test images evaluated (0: the whole test split)
    batch_policy: str = "freed"   # freed: grow only into memory pruning freed | fill: both modes fill the budget
    seed: int = 0
    adjust_batch: bool = True
    round_channels: int = 1
    device: str = "auto"
    emulate: bool = False
    amp: str = "off"          # off | bf16 | fp16 (CUDA only)
    channels_last: bool = False
    compile: bool = False
    fp32_precision: str = field(default="ieee", metadata=ADDED)  # ieee | tf32: fp32 matmuls and convs (bench.machine.gpu)
    test_batch: int = 500
    world_size: int = field(default=1, metadata=ADDED)
    interleave: bool = field(default=False, metadata=ADDED)  # alternate the modes epoch by epoch (both kept)
    # the competing methods (bench.training.methods); defaults from their papers: s = 1e-4 on every BN γ (Liu et al.,
    # ICCV 2017, their VGGNet value, also Early-Bird's; 1e-5 for their ResNets), ratio 0.4 (Liu et al.'s
    # ResNet-164 on CIFAR-10; 0.7 for their VGGNet; Early-Bird used 0.3, 0.5 and 0.7)
    sparsity: float = field(default=1e-4, metadata=ADDED)
    prune_ratio: float = field(default=0.4, metadata=ADDED)
    prune_at: float = field(default=0.1, metadata=ADDED)  # slimming prunes after this fraction of the epochs
    threads: int = field(default=0, metadata=ADDED)  # torch.set_num_threads (0: torch's choice, as before)

    def milestone_epochs(self) -> list[int]:
        """1-based epochs from which the LR is multiplied by gamma (91 and 136 of 182, as the original)."""
        return [max(1, int(f * self.epochs)) for f in self.lr_milestones]

    def schedule_factor(self, epoch: int) -> float:
        return self.lr_gamma ** sum(epoch >= m for m in self.milestone_epochs())

    def lr_at(self, epoch: int, batch: int) -> float:
        """The learning rate of ``epoch`` at mini-batch ``batch``: the step schedule, scaled linearly with the
        batch (the trainer's and a replay's rows alike)."""
        return scaled_lr(self.lr * self.schedule_factor(epoch), batch, self.batch_size)

    def lasso_last_epoch(self) -> int:
        """The last 1-based epoch trained under the penalty (all of them at ``lasso_until = 1``)."""
        return max(1, round(self.lasso_until * self.epochs))

    def penalised(self, epoch: int) -> bool:
        """Whether 1-based ``epoch`` trains under PruneTrain's penalty (inside the --lasso-until window)."""
        return epoch <= self.lasso_last_epoch()

    def is_reconfiguration_epoch(self, epoch: int) -> bool:
        """Reconfigure after epochs interval, 2·interval, ... and at the end of the penalty window; not after
        the last epoch, nor after the window (nothing is penalised then, so nothing new dies)."""
        if epoch >= self.epochs or epoch > self.lasso_last_epoch():
            return False
        return epoch % self.interval == 0 or (epoch == self.lasso_last_epoch() and self.lasso_until < 1.0)

    def prune_epoch(self) -> int:
        """The 1-based epoch after which ``slimming`` prunes (at least the first)."""
        return max(1, round(self.prune_at * self.epochs))

    def validate(self) -> "RunConfig":
        """ConfigError for the first broken rule; its ``key`` is the field, so a loader can name its source."""
        checks = [
            ("epochs", self.epochs >= 1, "--epochs must be >= 1"),
            ("batch_size", self.batch_size >= 1, "--batch-size must be >= 1"),
            ("max_batch", self.max_batch >= self.batch_size, "--max-batch must be >= --batch-size"),
            ("interval", self.interval >= 1, "--interval must be >= 1"),
            ("lpr", 0.0 < self.lpr < 1.0, "--lpr must be between 0 and 1 (exclusive)"),
            ("threshold", self.threshold > 0, "--threshold must be > 0"),
            ("lasso", self.lasso in LASSO_STEPS, f"--lasso must be one of {', '.join(LASSO_STEPS)}"),
            ("liveness", self.liveness in LIVENESS, f"--liveness must be one of {', '.join(LIVENESS)}"),
            ("penalise", self.penalise in PENALISE, f"--penalise must be one of {', '.join(PENALISE)}"),
            ("penalise", self.penalise == "all" or (self.liveness == "readers" and self.lasso != "paper"),
             "--penalise readers needs --liveness readers and a --lasso other than paper (under the union rule "
             "a writer's filter must be zero too, so it must be penalised)"),
            ("group_weight", self.group_weight in GROUP_WEIGHTS,
             f"--group-weight must be one of {', '.join(GROUP_WEIGHTS)}"),
            ("keep_bn_scale", not self.keep_bn_scale or self.lasso == "proximal",
             "--keep-bn-scale rescales after the proximal step: it needs --lasso proximal"),
            ("structure", self.structure in STRUCTURES, f"--structure must be one of {', '.join(STRUCTURES)}, "
                                                     f"got {self.structure!r}"),
            ("change_budget", 0.0 <= self.change_budget < 1.0, "--change-budget must be 0 (off) or a fraction below 1"),
            ("lasso_until", 0.0 < self.lasso_until <= 1.0, "--lasso-until must be a fraction of the epochs in (0, 1]"),
            ("held_out", self.held_out >= 1, "--held-out must be >= 1"),
            ("val", self.val >= 1, "--val must be >= 1: decisions taken from data (the function-change batch, the "
                                   "change-budget search) use the validation split, never the test set"),
            ("held_out", self.held_out <= self.val, "--held-out must be <= --val (its images come from the "
                                                    "validation split)"),
            ("test_size", self.test_size >= 0, "--test-size must be >= 0 (0: the whole test split)"),
            ("batch_policy", self.batch_policy in BATCH_POLICIES,
             f"--batch-policy must be one of {', '.join(BATCH_POLICIES)}"),
            ("lr", self.lr > 0, "--lr must be > 0"),
            ("lr_milestones", all(0 < m < 1 for m in self.lr_milestones),
             "--lr-milestones must be fractions between 0 and 1"),
            ("subset", self.subset >= 0, "--subset must be >= 0"),
            ("round_channels", self.round_channels >= 1, "--round-channels must be >= 1"),
            ("interleave", not self.interleave or len(self.modes) > 1,
             "--interleave alternates dense and PruneTrain epoch by epoch: it needs both modes (--mode both)"),
            ("threads", self.threads >= 0, "--threads must be >= 1 (or 0 for torch's choice)"),
            ("amp", self.amp in AMP, "--amp must be off, bf16 or fp16"),
            ("fp32_precision", self.fp32_precision in FP32_PRECISIONS, "--fp32-precision must be ieee or tf32"),
            ("modes", all(m in MODES for m in self.modes) and self.modes and len(set(self.modes)) == len(self.modes),
             f"--mode must be one of {', '.join(MODES)}, both or all"),
            ("modes", not set(CONTROLS) & set(self.modes) or "prunetrain" in self.modes,
             "the control modes (small-dense, thin-dense) are built from PruneTrain's records: run them with "
             "--mode all, or later with --controls-of RUN"),
            ("modes", "random" not in self.modes or "prunetrain" in self.modes,
             "random pruning removes as many channels as PruneTrain, when PruneTrain did: run it with --mode random "
             "(dense, PruneTrain, random)"),
            ("sparsity", self.sparsity > 0, "--sparsity must be > 0"),
            ("prune_ratio", 0.0 < self.prune_ratio < 1.0, "--prune-ratio must be a fraction in (0, 1)"),
            ("prune_at", 0.0 < self.prune_at < 1.0, "--prune-at must be a fraction of the epochs in (0, 1)"),
            ("epochs", self.epochs >= 2 or not {"slimming", "earlybird"} & set(self.modes),
             "slimming and earlybird prune after an epoch and train on: give --epochs >= 2"),
        ]
        for key, ok, message in checks:
            if not ok:
                error = ConfigError(message)
                error.key = key
                raise error
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lr_milestone_epochs"] = self.milestone_epochs()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        """Inverse of :meth:`to_dict`, through the loader a record goes through (every key checked)."""
        return resolve(resumed=partial_from(d, record_source("configuration"), complete=True))


#: PruneTrain's method settings at their published values (Lym et al., SC'19, and the authors' code: subgradient
#: group lasso in the loss for the whole run at penalty ratio 0.2, union liveness over writers and readers, every
#: group weighted alike, a fixed threshold of 1e-4).  Only these name the method; the schedule (epochs, interval,
#: batch, LR) is scaled to the machine and stated beside it.
PUBLISHED_METHOD: dict[str, Any] = {
    "lasso": "paper", "lpr": 0.2, "threshold": 1e-4, "liveness": "union", "penalise": "all",
    "group_weight": "uniform", "keep_bn_scale": False, "change_budget": 0.0, "lasso_until": 1.0,
    "structure": "union", "round_channels": 1,
}
#: RunConfig fields that only PruneTrain reads: dense is the same whatever their value (bench sweep runs one
#: dense per repeat for them)
PRUNETRAIN_ONLY = frozenset(PUBLISHED_METHOD) | {"interval"}  # the method's settings and when it reconfigures
#: RunConfig fields only the competing methods read (bench.training.methods)
COMPETING_ONLY = frozenset({"sparsity", "prune_ratio", "prune_at"})
#: RunConfig fields that never change what dense training computes: the pruning methods' settings, and which modes
#: a folder holds and in what order they are timed.  Runs that differ only in these share one dense run (bench
#: sweep's one dense per repeat, the report's borrowed dense: bench.report.pairing) -- decided here only.
NOT_READ_BY_DENSE = PRUNETRAIN_ONLY | COMPETING_ONLY | {"modes", "interleave"}


def not_read_by(mode: str) -> frozenset[str]:
    """The RunConfig fields a pruning mode's training never reads (a study gives its run none of them)."""
    if mode == "dense":
        return NOT_READ_BY_DENSE
    return COMPETING_ONLY if mode == "prunetrain" else PRUNETRAIN_ONLY


def dense_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a configuration (a dict, as run.json keeps it) that dense training reads; a setting added
    after the record was written counts at its default, as a resume of that record would run it."""
    added = {k: list(v) if isinstance(v := default(k), tuple) else v
             for k, f in FIELDS.items() if f.metadata.get("added") and k not in config}
    return {k: v for k, v in {**added, **config}.items() if k not in NOT_READ_BY_DENSE}
#: how a differing method setting reads in a method's name
_METHOD_WORDS: dict[str, Callable[[Any], str]] = {
    "lasso": lambda v: f"{v} step" if v != "paper" else "subgradient step",
    "lpr": lambda v: f"ratio {v:g}", "threshold": lambda v: f"threshold {v:g}",
    "liveness": lambda v: f"{v} liveness", "penalise": lambda v: f"penalise {v}",
    "group_weight": lambda v: f"{v} group weights", "keep_bn_scale": lambda v: "BN-read filters keep their norm"
    if v else "no BN rescale", "change_budget": lambda v: f"threshold within a {v:g} function-change budget"
    if v else "fixed threshold", "lasso_until": lambda v: f"penalty in the first {v:.0%} of the epochs",
    "structure": lambda v: f"{v} structure", "round_channels": lambda v: f"channels rounded to {v}",
}


def method_words(setting: str, value: Any) -> str:
    """How one method setting reads in a method's name (``keep_bn_scale=False`` → "no BN rescale")."""
    return _METHOD_WORDS[setting](value)


#: each mode's method, in words (PruneTrain's depends on its settings: see method_name)
MODE_METHODS = {
    "dense": "dense",
    "small-dense": "small-dense control: PruneTrain's final architecture, initialised like dense, trained from "
                   "the first epoch",
    "thin-dense": "thin-dense control: the dense network uniformly thinned to PruneTrain's training FLOPs, "
                  "trained from the first epoch",
}


def _competing_name(cfg: RunConfig, mode: str) -> str:
    """A competing method named with the settings it ran (bench.training.methods cites where each default comes from; the
    papers' values differ by network, so the name states the values rather than calling them the paper's)."""
    if mode == "random":
        return "random pruning: PruneTrain's per-space channel counts at its epochs, channels drawn at random"
    when = f"once after epoch {cfg.prune_epoch()}" if mode == "slimming" else \
        "once when the Early-Bird ticket is drawn (5 masks, distance < 0.1)"
    name = "Network Slimming" if mode == "slimming" else "Early-Bird tickets"
    return f"{name}: L1 on BN scales s={cfg.sparsity:g} until pruning, ratio {cfg.prune_ratio:g} {when}"


def run_method(cfg: RunConfig) -> str:
    """run.json's top-level ``method``: PruneTrain's name where it runs (or only dense does), else the competing
    method's, so that a record of dense and slimming does not name PruneTrain."""
    competing = [m for m in cfg.modes if m in METHODS]
    return method_name(cfg, "prunetrain" if "prunetrain" in cfg.modes or not competing else competing[0])


def method_differences(cfg: RunConfig) -> dict[str, Any]:
    """The method settings of ``cfg`` that differ from the published method's, in field order."""
    return {k: getattr(cfg, k) for k, v in PUBLISHED_METHOD.items() if getattr(cfg, k) != v}


def method_name(cfg: RunConfig, mode: str = "prunetrain") -> str:
    """What a mode ran, named as it ran: "PruneTrain (published)" only when every method setting has its
    published value, otherwise "PruneTrain variant (...)" listing each setting that differs."""
    if mode in METHODS:
        return _competing_name(cfg, mode)
    if mode != "prunetrain":
        return MODE_METHODS[mode]
    differ = method_differences(cfg)
    if not differ:
        return "PruneTrain (published)"
    return "PruneTrain variant (" + "; ".join(method_words(k, v) for k, v in differ.items()) + ")"


FIELDS = {f.name: f for f in fields(RunConfig)}
DERIVED = ("lr_milestone_epochs",)  # written by to_dict for the reader; never read back
#: what a resumed run may change: its image folder (records keep only the name) and the process count
RESUMABLE = ("data_dir", "world_size")
#: fields a profile's [defaults] may not set: the device and the profile are chosen before it is read; the launch
#: sets world_size
NOT_IN_PROFILES = frozenset({"profile", "device", "world_size"})
_TRUE, _FALSE = ("on", "true", "yes", "1"), ("off", "false", "no", "0")


def default(key: str) -> Any:
    """RunConfig's default for ``key`` (lists as tuples: a default is never shared)."""
    f = FIELDS[key]
    value = f.default_factory() if callable(f.default_factory) else f.default
    return tuple(value) if isinstance(value, list) else value


# ------------------------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class Source:
    """Where settings come from, for error lines: a file's table (profile, run.json) or the command line."""

    file: str | None = None           # None: the command line, whose keys are its --options
    table: str = ""
    error: type[BenchError] = ConfigError
    exclude: frozenset[str] = frozenset()  # fields this source may not set

    def where(self, key: str) -> str:
        return "--" + key.replace("_", "-") if self.file is None else f"{self.file}: key '{self.table}.{key}'"

    def fail(self, key: str, problem: str) -> BenchError:
        return self.error(" ".join(f"{self.where(key)}{problem}".split()))

    def invalid(self, key: str, rule: str) -> BenchError:
        """A value against a rule of RunConfig.validate, named as this source spells it."""
        return self.error(rule if self.file is None else f"{self.where(key)} is invalid: {rule}")


CLI = Source()


def profile_source(path: Any) -> Source:
    return Source(str(path), "defaults", ProfileError, NOT_IN_PROFILES)


def record_source(path: Any, table: str = "config") -> Source:
    return Source(str(path), table, RecordError)


# ------------------------------------------------------------------------------------------- types
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_bool(text: str) -> bool:
    if text.strip().lower() not in _TRUE + _FALSE:
        raise ValueError(text)
    return text.strip().lower() in _TRUE


def _parse_list(text: str, item: Callable[[str], Any]) -> tuple:
    text = text.strip().lower()
    return () if text in ("", "none") else tuple(item(v.strip()) for v in text.split(","))


# annotation -> (what it must be, does a value qualify, its value, its value from command-line text)
_KINDS: dict[str, tuple[str, Callable[[Any], bool], Callable[[Any], Any], Callable[[str], Any]]] = {
    "bool": ("true or false", lambda v: isinstance(v, bool), bool, parse_bool),
    "int": ("an integer", lambda v: type(v) is int, int, int),
    "float": ("a number", _is_number, float, float),
    "str": ("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip()), str, str),
    "str | None": ("a string or null", lambda v: v is None or isinstance(v, str), lambda v: v, str),
    "list[str]": ("a list of strings", lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
                  tuple, lambda t: _parse_list(t, str)),
    "list[float]": ("a list of numbers", lambda v: isinstance(v, (list, tuple)) and all(_is_number(x) for x in v),
                    lambda v: tuple(float(x) for x in v), lambda t: _parse_list(t, float)),
}


def parse_text(key: str, text: str) -> Any:
    """A setting's value from text (command line, ``--vary``); ValueError when the text is not one."""
    return _KINDS[FIELDS[key].type][3](text)


# ------------------------------------------------------------------------------------------- the loader
class Overrides(Mapping[str, Any]):
    """A partial RunConfig from one source: checked values of the fields it sets (lists as tuples).

    Reading a field as an attribute gives what this source alone resolves to (RunConfig's default
    where it is silent), e.g. ``profile.defaults.batch_size``.
    """

    def __init__(self, values: Mapping[str, Any], source: Source = CLI) -> None:
        self._values, self.source = dict(values), source

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __hash__(self) -> int:
        return hash(frozenset(self._values.items()))

    def __repr__(self) -> str:
        return f"Overrides({self._values!r})"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in FIELDS:
            raise AttributeError(name)
        value = getattr(_merge([self]), name)
        return tuple(value) if isinstance(value, list) else value

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (lists again)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self._values.items()}


def partial_from(values: Mapping[str, Any], source: Source = CLI, *, complete: bool = False) -> Overrides:
    """``values`` checked and typed as RunConfig settings; None means "not given" (the command line's default).

    Text is parsed where a number, flag or list is due (command-line options arrive as text).
    ``complete``: a record, which must hold every field (but those added later) and may hold DERIVED keys.
    """
    allowed = [k for k in FIELDS if k not in source.exclude]
    out: dict[str, Any] = {}
    for key, v in values.items():
        if key not in allowed:
            if complete and key in DERIVED:
                continue
            near = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            raise source.fail(key, f" is unknown ({hint}known: {', '.join(allowed)})")
        if v is None and (source.file is None or FIELDS[key].type != "str | None"):
            continue  # not given (a record's null data_dir is a value)
        what, ok, typed, from_text = _KINDS[FIELDS[key].type]
        try:
            out[key] = typed(v) if ok(v) else from_text(v) if isinstance(v, str) and source.file is None else None
        except ValueError:
            out[key] = None
        if out[key] is None and v is not None:
            raise source.fail(key, f": expected {what}, got {v!r:.80}")
    if complete:
        missing = [k for k in allowed if k not in out and not FIELDS[k].metadata.get("added")]
        if missing:
            raise source.fail(missing[0], " is missing")
    return Overrides(out, source)


def _merge(layers: list[Overrides]) -> RunConfig:
    """RunConfig's defaults overridden by ``layers``, lowest precedence first; validated, errors named by source."""
    values: dict[str, Any] = {}
    origin: dict[str, Source] = {}
    for layer in layers:
        if layer.get("lasso") == "paper":  # the published method: levers set below this source do not apply
            for key in ("liveness", "change_budget", "lasso_until", "penalise", "keep_bn_scale", "group_weight"):
                values.pop(key, None)
        batch = layer.get("batch_size")
        if batch is not None and "max_batch" not in layer and values.get("max_batch", default("max_batch")) < batch:
            values["max_batch"] = batch  # a larger batch lifts a cap set below it
        values.update(layer)
        origin.update(dict.fromkeys(layer, layer.source))
    cfg = RunConfig(**{k: list(v) if isinstance(v, tuple) else v for k, v in values.items()})
    try:
        return cfg.validate()
    except ConfigError as exc:
        key = getattr(exc, "key", "")
        raise origin.get(key, layers[-1].source if layers else CLI).invalid(key, str(exc)) from None


def resolve(profile: Overrides | None = None, given: Overrides | None = None,
            resumed: Overrides | None = None) -> RunConfig:
    """The run's configuration.  Precedence, stated here only: the command line (``given``) over a resumed
    run.json over the profile's [defaults] over RunConfig's field defaults.  A resumed run keeps its
    record: the command line may change only RESUMABLE (the profile does not apply; the record is complete).
    """
    given = given or Overrides({})
    if resumed is not None:
        for key in given:
            if key not in RESUMABLE:
                raise given.source.fail(key, ": a resumed run keeps its recorded value; drop the option")
        profile = None
    return _merge([layer for layer in (profile, resumed, given) if layer is not None])
