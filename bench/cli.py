"""The ``bench`` command line: thin click commands over the library.

Known mistakes (BenchError, UnsupportedModelError) become one line on stderr
and exit code 2; nothing else is caught, so real bugs still show a traceback.

(Over 400 lines on purpose: every command's options are declared here, one click decorator each, ``bench
run``'s alone about a hundred lines; what a command does lives in its own module (bench.run, bench.sweep,
bench.check, bench.replay, bench.report, bench.speed), so this file is declarations and argument plumbing.)
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from .config import AMP, BATCH_POLICIES, CONTROLS, FP32_PRECISIONS, FIELDS, GROUP_WEIGHTS, LASSO_STEPS, LIVENESS, METHODS, MODES, NOT_IN_PROFILES, PAIR, PENALISE, RESUMABLE, STRUCTURES, default
from .errors import BenchError, OutOfMemoryBudget
from .speed import SECTIONS as SPEED_SECTIONS  # the section names alone: no torch import

EXIT_USAGE = 2


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def friendly_errors(fn):
    """Turn user errors into one clear line and exit 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from prunetrain_core import UnsupportedModelError

        try:
            return fn(*args, **kwargs)
        except BenchError as exc:
            for line in getattr(exc, "warnings", []) or []:
                click.echo(f"warning: {line}", err=True)
            _fail(str(exc))
        except UnsupportedModelError as exc:
            _fail(f"unsupported model: {exc}")
        except KeyboardInterrupt as exc:  # bench.run attaches the exact command once the run folder exists
            click.echo("interrupted: the last complete epoch is checkpointed; continue with "
                       + getattr(exc, "resume_command", "--resume"), err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="prunetrain-bench")
def main() -> None:
    """PruneTrain benchmark: how much training time pruning during training saves on your hardware."""


# ---------------------------------------------------------------------------------------------- run
def _setting(*decls: str, **kw):
    """An option that sets a RunConfig field: None when not given, so that the profile or RunConfig decides
    (the default is written there only); --help shows which."""
    name = kw.pop("field", None) or decls[0].split("/")[0].lstrip("-").replace("-", "_")
    value = default(name)
    shown = kw.pop("shown", None) or (("on" if value else "off") if isinstance(value, bool)
                                      else ",".join(map(str, value)) if isinstance(value, tuple) else value)
    if "type" not in kw and FIELDS[name].type in ("int", "float"):
        kw.setdefault("metavar", "FLOAT" if FIELDS[name].type == "float" else "INTEGER")
    from_profile = kw.pop("from_profile", name not in NOT_IN_PROFILES)
    show = False if value is None else f"the profile's, else {shown}" if from_profile else shown
    return click.option(*decls, default=None, show_default=show, **kw)


@main.command()
@_setting("--profile", help="Hardware profile: a name from `bench profiles`, a path to a .toml file, or auto.")
@_setting("--model", help="Model: resnet20/32/56/110/50, vgg8/11/13/16, resnet50-imagenet, vgg16-imagenet.")
@_setting("--data", help="cifar10, cifar100, synthetic (embedded, no files), or any name with --data-dir.")
@_setting("--data-dir", type=click.Path(file_okay=False),
          help="Image-folder data set with train/ and test/ (or val/) class folders; with --resume, the "
               "run's folder again (records keep only its name).")
@_setting("--subset", help="Train on a class-balanced subset of N images (0 = all).")
@_setting("--mode", field="modes", shown="both", type=click.Choice(["both", "all", "compare", *MODES]),
          help="both: dense and PruneTrain; all: both, then the controls small-dense (PruneTrain's final "
               "architecture trained from scratch) and thin-dense (dense uniformly thinned to PruneTrain's "
               "training FLOPs); slimming, earlybird: that method next to dense; random: dense, PruneTrain and "
               "random channels at PruneTrain's counts; compare: dense, PruneTrain and all three methods in one "
               "folder (the report's method comparison); or one mode.")
@_setting("--val", help="Training images held out as the validation split (class-balanced, the same for every "
                        "seed and mode): every decision taken from data reads it, never the test set.")
@_setting("--test-size", help="Evaluate a class-balanced subset of N test images (0 = the whole test split).")
@_setting("--epochs", help="Epochs per mode (one schedule for both).")
@_setting("--batch-size", help="Base (global) mini-batch.")
@_setting("--max-batch", help="Cap for the dynamic mini-batch.")
@_setting("--lr", help="Base learning rate (scaled linearly with the batch).")
@_setting("--lr-milestones", metavar="F,F,...",
          help="Fractions of the epochs where the LR drops ×0.1, e.g. 0.5,0.75 ('none' keeps it constant).")
@_setting("--momentum", help="SGD momentum (carried into the pruned tensors at each reconfiguration).")
@_setting("--weight-decay", help="SGD weight decay (L2), besides the group-lasso penalty.")
@_setting("--interval", help="Reconfigure every N epochs.")
@_setting("--lpr", help="Lasso penalty ratio that sets λ.")
@_setting("--threshold", help="A channel is dead when max|w| < threshold.")
@_setting("--lasso", type=click.Choice(LASSO_STEPS),
          help="paper: the penalty in the loss, union liveness, fixed threshold (PruneTrain as published); "
               "proximal: block soft-thresholding after each optimizer step.")
@_setting("--liveness", type=click.Choice(LIVENESS),
          help="union: a channel goes when dead in every layer that writes or reads it; readers: when every "
               "layer that reads it ignores it. With --lasso paper given: union unless given too.")
@_setting("--penalise", type=click.Choice(PENALISE),
          help="all: every writer's filter and reader's slice (as published); readers: only the readers' slices "
               "(needs --liveness readers; a BatchNorm-followed filter need not shrink to go). With --lasso paper "
               "given: all unless given too.")
@_setting("--group-weight", type=click.Choice(GROUP_WEIGHTS),
          help="uniform: every group's norm counts once (as published); size: times √(its element count), so "
               "the pressure per unit of norm follows each layer's weight scale and small-init classifier "
               "columns do not die first. With --lasso paper given: uniform unless given too.")
@_setting("--keep-bn-scale/--no-keep-bn-scale",
          help="After each proximal step, scale every filter that only a BatchNorm reads back to its norm (and "
               "the BN's running statistics): the function is unchanged and the penalty moves only the filter's "
               "direction, which is all BN lets matter. With --lasso paper given: off unless given too.")
@_setting("--structure", type=click.Choice(STRUCTURES),
          help="union: every layer touching a channel space keeps one channel set (PruneTrain's default); "
               "gating: at residual streams each layer keeps its own, joined by gather/scatter.")
@_setting("--change-budget",
          help="Choose the largest threshold whose removal changes the held-out logits by at most this "
               "fraction of their scale (0 = fixed --threshold). With --lasso paper given: 0 unless given too.")
@_setting("--lasso-until",
          help="Fraction of the epochs trained under the penalty; after it the pruned network trains without "
               "it (1 = throughout, as published). With --lasso paper given: 1 unless given too.")
@_setting("--sparsity", help="slimming, earlybird: the L1 weight on every BatchNorm scale γ (Liu et al.: 1e-4 "
                              "for VGGNet, 1e-5 for ResNets).")
@_setting("--prune-ratio", help="slimming, earlybird: the fraction of all BN channels whose |γ| falls below the "
                                "global cut.")
@_setting("--prune-at", help="slimming: prune once after this fraction of the epochs (at least the first).")
@_setting("--held-out", help="Validation images in the fixed batch that measures every reconfiguration's function "
                             "change (and the change-budget search).")
@_setting("--batch-policy", type=click.Choice(BATCH_POLICIES),
          help="freed: PruneTrain's batch grows only into memory pruning freed (dense's need at the start); "
               "fill: both modes fill the memory budget.")
@_setting("--seed", help="Seed of weights, data order and subset; runs differing only in it are repeats.")
@_setting("--adjust-batch/--no-adjust-batch", help="Dynamic mini-batch adjustment after each reconfiguration.")
@_setting("--round-channels", metavar="N|auto",
          help="Keep channel counts at multiples of N, or 'auto' to measure what this device prefers.")
@_setting("--device", help="auto, cpu, cuda or cuda:N.")
@_setting("--emulate/--no-emulate", help="On a GPU larger than the profile's budget, cap this process at the budget.")
@_setting("--amp", type=click.Choice(AMP), help="Mixed precision (CUDA only).")
@_setting("--channels-last/--no-channels-last", help="channels_last memory format (off, and recorded so, where unsafe).")
@_setting("--fp32-precision", type=click.Choice(FP32_PRECISIONS),
          help="fp32 matmuls and convolutions: ieee (true fp32 on every card) or tf32 (Ampere and newer).")
@_setting("--compile/--no-compile", help="torch.compile, recompiled after each reconfiguration (compile time recorded apart).")
@click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True,
              help="Folder the run folder is created in.")
@_setting("--interleave/--no-interleave",
          help="Alternate dense and PruneTrain epoch by epoch (both models kept), so that a busy phase of "
                   "a shared machine hits both alike.")
@_setting("--threads", help="CPU threads of torch (torch.set_num_threads; 0 = torch's choice), recorded.")
@click.option("--resume", type=click.Path(file_okay=False), default=None,
              help="Continue an interrupted run folder (its recorded configuration is used).")
@click.option("--repeat", type=int, default=1, show_default=True,
              help="Run the whole configuration N times, with seeds seed, seed+1, ... (one run folder each; the "
                   "report gives means with 95 % confidence intervals over them).")
@click.option("--controls-of", type=click.Path(file_okay=False), default=None,
              help="Add the controls (small-dense, thin-dense) to a finished run folder, built from its PruneTrain "
                   "records (give --data-dir again if it read an image folder).")
@click.option("--methods-of", type=click.Path(file_okay=False), default=None,
              help="Add the competing methods (slimming, earlybird, random) to a finished run folder: the same data, "
                   "seed and initial weights, random pruning at its PruneTrain's epochs and counts.")
@click.option("--nproc-per-node", type=int, default=1, show_default=True,
              help="Data-parallel processes on this node (launches torchrun).")
@click.option("--quiet", is_flag=True, help="No progress output.")
@friendly_errors
def run(**opts) -> None:
    """Train dense and PruneTrain on the same schedule and record every epoch."""
    from .training.distributed import launch_torchrun, maybe_init

    if opts["nproc_per_node"] > 1 and "LOCAL_RANK" not in os.environ:
        sys.exit(launch_torchrun(opts["nproc_per_node"], sys.argv[1:]))
    if opts["repeat"] < 1:
        _fail("--repeat must be >= 1")
    continued = [f"--{k.replace('_', '-')}" for k in CONTINUING if opts[k]]
    if continued and opts["repeat"] != 1:
        _fail(f"--repeat starts new runs: drop it with {continued[0]}")
    if len(continued) > 1:
        _fail(f"give one of {' and '.join(continued)}")
    if continued:
        refuse_resume_changes(opts)
    dist = maybe_init()
    existing = opts["resume"] or opts["controls_of"] or opts["methods_of"]
    cfg, machine = (None, None) if existing else build_run(opts, dist)
    quiet = opts["quiet"] or (dist is not None and dist.rank != 0)
    echo = (lambda s: None) if quiet else (lambda s: click.echo(s, err=True))
    from .run import add_modes, run_benchmark, run_repeats

    abandoned = False
    progress = not quiet and sys.stderr.isatty()
    data_dir = Path(opts["data_dir"]) if existing and opts["data_dir"] else None
    try:
        if opts["controls_of"] or opts["methods_of"]:
            run_dir = add_modes(Path(opts["controls_of"] or opts["methods_of"]),
                                CONTROLS if opts["controls_of"] else METHODS, progress=progress, echo=echo,
                                dist=dist, data_dir=data_dir)
        elif opts["repeat"] > 1:
            run_dir = run_repeats(cfg, opts["repeat"], results_dir=Path(opts["results_dir"]), progress=progress,
                                  echo=echo, dist=dist, machine=machine)[-1].parent
        else:
            run_dir = run_benchmark(cfg, results_dir=Path(opts["results_dir"]),
                                    resume=Path(opts["resume"]) if opts["resume"] else None,
                                    progress=progress, echo=echo, dist=dist, data_dir=data_dir, machine=machine)
    except OutOfMemoryBudget as exc:
        if dist is None:
            raise
        # Only this rank ran out of memory; the others may be waiting in a collective it will never join.
        # Leave at once, without the process group's orderly shutdown (which waits for them): torchrun
        # stops the other ranks as soon as one exits with an error, so the whole run ends now, with this line.
        click.echo(f"error: rank {dist.rank} of {dist.world_size}: {exc}", err=True)
        abandoned = True
        _exit_now(EXIT_USAGE)
    finally:
        if dist is not None and not abandoned:
            dist.close()
    if not quiet:  # the run folder is the last line: scripts read it from there
        from .report.summary import run_summary
        click.echo(f"{run_summary(run_dir)}\ncompare with other runs: bench report {run_dir.parent}\n{run_dir}")


#: the options that continue an existing run folder with its recorded configuration
CONTINUING = ("resume", "controls_of", "methods_of")


def refuse_resume_changes(opts: dict) -> None:
    """A resumed run keeps its record: options that would change it are refused in one line, before any I/O."""
    given = [f"--{'mode' if k == 'modes' else k.replace('_', '-')}" for k in FIELDS
             if k not in RESUMABLE and opts.get("mode" if k == "modes" else k) is not None]
    if click.get_current_context().get_parameter_source("results_dir") is not click.core.ParameterSource.DEFAULT:
        given.append("--results-dir")  # the run folder is where it is
    if given:
        key = next(k for k in CONTINUING if opts.get(k))
        raise BenchError(f"--{key.replace('_', '-')} continues {opts[key]} with its recorded "
                         "configuration and "
                         f"{', '.join(given)} would change it; drop {'it' if len(given) == 1 else 'them'}")


def _exit_now(code: int) -> None:
    """End this process at once (no atexit handlers, no process-group shutdown), output flushed."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def build_config(opts: dict, dist=None):
    """The options given (not None) over the profile's defaults, through bench.config's one loader."""
    return build_run(opts, dist)[0]


def build_run(opts: dict, dist=None):
    """:func:`build_config` and the machine it was built for (the device and profile the command chose once,
    bench.machine.setup.choose), which the run is then given."""
    from .config import partial_from, resolve
    from .machine.setup import choose

    given = {k: v for k, v in opts.items() if k in FIELDS and v is not None}
    if opts.get("mode"):
        given["modes"] = {"both": list(PAIR), "all": list(PAIR + CONTROLS), "compare": list(PAIR + METHODS),
                          "random": ["dense", "prunetrain", "random"],
                          **{m: ["dense", m] for m in METHODS if m != "random"}}.get(opts["mode"], [opts["mode"]])
    given["world_size"] = dist.world_size if dist is not None else 1
    auto_round = given.get("round_channels") == "auto"
    if auto_round:
        del given["round_channels"]
    cli = partial_from(given)  # wrong types are one line before any device or profile is looked at
    spec = cli.get("profile", default("profile"))
    machine = choose(cli.get("device", default("device")), spec, dist)  # the card trained on, its profile
    given["profile"] = machine.profile.name if spec == "auto" else spec
    if auto_round:
        from .training.decisions import auto_round_channels

        given["round_channels"] = auto_round_channels(cli.get("model", machine.profile.defaults.model),
                                                      machine.device)
    return resolve(profile=machine.profile.defaults, given=partial_from(given)), machine


# ---------------------------------------------------------------------------------------------- sweep
_NOT_FOR_SWEEP = {"mode", "resume", "nproc_per_node", "repeat", "controls_of", "methods_of"}


@friendly_errors
def _sweep(vary, repeat, resume, **opts) -> None:
    """Run a study: one dense baseline and one PruneTrain run per --vary setting, on one seed and schedule."""
    from .sweep import resume_study, sweep

    quiet = opts["quiet"]
    echo = (lambda s: None) if quiet else (lambda s: click.echo(s, err=True))
    progress = not quiet and sys.stderr.isatty()
    if resume:
        folder = resume_study(Path(resume), data_dir=opts["data_dir"], progress=progress, echo=echo)
    else:
        cfg = build_config({**opts, "mode": "both"})
        folder = sweep(cfg, vary, repeat=repeat, results_dir=Path(opts["results_dir"]), progress=progress, echo=echo)
    click.echo(str(folder))


main.add_command(click.Command(
    "sweep", callback=_sweep, help=_sweep.__doc__ + (
        "\n\nExample: bench sweep --profile cpu --vary interval=2,5,10,20 --vary lpr=0.1,0.2 --repeat 2. "
        "Every `bench run` option sets the base configuration."),
    params=[
        click.Option(["--vary"], multiple=True, metavar="SETTING=V1,V2,...",
                     help="A setting and its values (interval, lpr, threshold, adjust_batch=on,off, ...); "
                          "repeat the option to vary several (their grid is run)."),
        click.Option(["--repeat"], type=int, default=1, show_default=True,
                     help="Repeats with seeds seed, seed+1, ... (spread in the report)."),
        click.Option(["--resume"], type=click.Path(file_okay=False), default=None,
                     help="Continue an interrupted study folder where it stopped."),
        *[p for p in run.params if p.name not in _NOT_FOR_SWEEP],
    ]))


# ---------------------------------------------------------------------------------------------- report
@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--out", type=click.Path(file_okay=False), default="reports/latest", show_default=True,
              help="Folder for report.md, report.html and the plots.")
@click.option("--title", default=None, help="Title of report.md and report.html (default: the standard one).")
@friendly_errors
def report(paths, out, title) -> None:
    """Merge run folders (from any number of machines) into one report.

    PATHS: run folders, study folders or folders holding them (default: results).
    """
    from .report import build_report
    from .report.summary import summary_table

    result = build_report([Path(p) for p in (paths or ("results",))], Path(out), title=title)
    for line in result.warnings:
        click.echo(f"warning: {line}", err=True)
    click.echo(summary_table(result.table))
    click.echo(f"{len(result.table)} configuration(s) compared; wrote {result.out_dir / 'report.html'}")


# ---------------------------------------------------------------------------------------------- replay
@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@_setting("--profile", help="Target profile whose memory rule decides each shape's batch (name, .toml path, or auto).")
@_setting("--emulate/--no-emulate", from_profile=False,
          help="On a GPU larger than the profile's budget, cap this process at the budget.")
@_setting("--device", help="auto, cpu, cuda or cuda:N.")
@click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True,
              help="Folder the replay's run folder is created in.")
@click.option("--synthetic", is_flag=True, help="Random images of the recorded shape even where the data set loads.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="The run's image folder on this machine (records keep only its name); without it, synthetic "
                   "images of the recorded shape.")
@click.option("--budget", "budget_s", type=float, default=20.0, show_default=True,
              help="Timing budget in seconds per shape (the rounds stop earlier once the spread is small).")
@click.option("--spread", type=float, default=0.05, show_default=True,
              help="Stop when every shape's step-time IQR / median is at most this.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@friendly_errors
def replay(run_dir, profile, emulate, device, results_dir, synthetic, data_dir, budget_s, spread, quiet) -> None:
    """Time a recorded run's (or a whole study's) pruning trajectory here, without training."""
    from .config import partial_from
    from .replay.run import ReplaySettings, replay as run_replay

    if budget_s <= 0 or not 0 < spread < 1:
        raise BenchError("--budget must be > 0 and --spread between 0 and 1")
    given = partial_from({"profile": profile, "device": device, "emulate": emulate})  # None: RunConfig's default
    settings = ReplaySettings(**given, synthetic=synthetic, data_dir=data_dir, budget_s=budget_s, spread=spread)
    echo = (lambda s: None) if quiet else (lambda s: click.echo(s, err=True))
    if (Path(run_dir) / "study.json").exists():  # a study (bench sweep): replay every run of it
        from .sweep import replay_study

        out = replay_study(Path(run_dir), Path(results_dir), settings, echo=echo)
    else:
        out = run_replay(Path(run_dir), Path(results_dir), settings, echo=echo)
    click.echo(str(out))


# ---------------------------------------------------------------------------------------------- env / profiles
@main.command()
def env() -> None:
    """What this machine has: GPUs (NVML), CPU, torch/CUDA/cuDNN, and whether torch supports the GPU."""
    from .machine.hardware import detect, format_env

    click.echo(format_env(detect()))


@main.command()
@friendly_errors
def profiles() -> None:
    """List the built-in hardware profiles and the one `--profile auto` picks here."""
    from .machine.hardware import detect
    from .machine.profiles import builtin_profiles, format_profiles

    click.echo(format_profiles(builtin_profiles(), detect()))


# ---------------------------------------------------------------------------------------------- check
@main.command()
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--model", default="resnet20", show_default=True, help="Model of the training rows.")
@click.option("--amp", type=click.Choice(["off", "bf16", "fp16"]), default="off", show_default=True,
              help="Also check mixed precision (CUDA only).")
@click.option("--channels-last/--no-channels-last", default=False, show_default=True,
              help="Also check training in channels_last.")
@click.option("--fp32-precision", type=click.Choice(FP32_PRECISIONS), default="ieee", show_default=True,
              help="fp32 matmuls and convolutions, as `bench run --fp32-precision`.")
@friendly_errors
def check(device, model, amp, channels_last, fp32_precision) -> None:
    """Run every path a long run takes on this device for a few steps; one table, exit 1 if any fails."""
    from .check import FAIL, format_table, run_check

    rows = run_check(device, model=model, amp=amp, channels_last=channels_last, fp32_precision=fp32_precision,
                     echo=lambda s: click.echo(s, err=True))
    click.echo(format_table(rows))
    failed = [r.path for r in rows if r.result == FAIL]
    if failed:
        click.echo(f"{len(failed)} of {len(rows)} checks failed: {', '.join(failed)}", err=True)
        sys.exit(1)


# ---------------------------------------------------------------------------------------------- speed


@main.command()
@click.option("--model", default="resnet32", show_default=True, help="Model for every section.")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--rounds", type=int, default=5, show_default=True,
              help="Interleaved rounds per measurement (the penalty takes 3x as many); medians and IQR over them.")
@click.option("--section", "sections", multiple=True, type=click.Choice(SPEED_SECTIONS),
              help="Only these sections (repeatable; default all).")
@click.option("--reconfig-models", default=None,
              help="Comma-separated models for the reconfiguration section (default: MODEL,resnet50).")
@click.option("--harness-steps", type=int, default=8, show_default=True,
              help="Steps per epoch in the harness-overhead section.")
@click.option("--data-images", type=int, default=2048, show_default=True,
              help="JPEG images in the data-path section ($CIFAR10_DIR/train when set, else synthetic).")
@click.option("--memory-format", type=click.Choice(["both", "contiguous", "channels_last"]), default="both",
              show_default=True, help="Memory format(s) of the pruned-shape sweep.")
@click.option("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice).")
@click.option("--quick", is_flag=True, help="Smoke mode: 1 round, no warm-up, tiny sizes (numbers are not meaningful).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the rows as JSON.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Also write the rows as CSV.")
@click.option("--enforce-targets", is_flag=True, help="Exit 1 when a figure misses its target (after writing it all).")
@click.option("--fp32-precision", type=click.Choice(FP32_PRECISIONS), default="ieee", show_default=True,
              help="fp32 matmuls and convolutions, as `bench run --fp32-precision`.")
@friendly_errors
def speed(model, batch_size, device, rounds, sections, reconfig_models, harness_steps, data_images, memory_format,
          threads, quick, json_path, csv_path, enforce_targets, fp32_precision) -> None:
    """Measure what the FLOP savings are worth in time here: penalty, reconfiguration, harness, pruned shapes."""
    from prunetrain_core import available_models

    from .speed.run import run_speed

    models = [m.strip() for m in reconfig_models.split(",") if m.strip()] if reconfig_models else None
    for name in [model, *(models or [])]:
        if name not in available_models():
            raise BenchError(f"unknown model '{name}': choose one of {', '.join(available_models())}")
    if batch_size < 1 or rounds < 1 or harness_steps < 1 or data_images < 1:
        raise BenchError("--batch-size, --rounds, --harness-steps and --data-images must be >= 1")
    from .machine.gpu import configure, select_device
    from .machine.hardware import detect

    device = select_device(device, detect())  # a GPU this torch build cannot drive: one line, not a kernel error
    configure(device, fp32_precision)         # cuDNN autotuning and fp32 precision, as a run has them
    report = run_speed(model, batch=batch_size, device=device, rounds=rounds, sections=sections or SPEED_SECTIONS,
                       reconfig_models=models, harness_steps=harness_steps, data_images=data_images,
                       threads=threads, quick=quick,
                       formats=("contiguous", "channels_last") if memory_format == "both" else (memory_format,),
                       echo=lambda s: click.echo(s, err=True))
    click.echo(report.format_table())
    if json_path:
        report.write_json(Path(json_path))
    if csv_path:
        report.write_csv(Path(csv_path))
    if enforce_targets and report.missed:
        click.echo("error: target missed: " + "; ".join(f"{r.name}: {r.formatted_value()} (target {r.target})"
                                                       for r in report.missed), err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
