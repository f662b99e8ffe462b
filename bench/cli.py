"""The ``bench`` command line: thin click commands over the library.

Known mistakes (BenchError, UnsupportedModelError) become one line on stderr
and exit code 2; nothing else is caught, so real bugs still show a traceback.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

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
        except KeyboardInterrupt:
            click.echo("interrupted: the last complete epoch is checkpointed; continue with --resume", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="prunetrain-bench")
def main() -> None:
    """PruneTrain benchmark: how much training time pruning during training saves on your hardware."""


# ---------------------------------------------------------------------------------------------- run
@main.command()
@click.option("--profile", default="auto", show_default=True,
              help="Hardware profile: a name from `bench profiles`, a path to a .toml file, or auto.")
@click.option("--model", default=None, help="Model (default from the profile): resnet20/32/56/110/50, vgg8/11/13/16, "
                                            "resnet50-imagenet, vgg16-imagenet.")
@click.option("--data", default=None, help="cifar10, cifar100, synthetic (embedded, no files), or any name with --data-dir.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Image-folder data set with train/ and test/ (or val/) class folders; with --resume, the "
                   "run's folder again (records keep only its name).")
@click.option("--subset", type=int, default=None, help="Train on a class-balanced subset of N images (0 = all).")
@click.option("--mode", "mode", type=click.Choice(["both", "dense", "prunetrain"]), default="both", show_default=True)
@click.option("--epochs", type=int, default=None)
@click.option("--batch-size", type=int, default=None, help="Base (global) mini-batch.")
@click.option("--max-batch", type=int, default=None, help="Cap for the dynamic mini-batch.")
@click.option("--lr", type=float, default=None, help="Base learning rate (scaled linearly with the batch).")
@click.option("--lr-milestones", default=None,
              help="Fractions of the epochs where the LR drops ×0.1, e.g. 0.5,0.75 (default from the profile; "
                   "'none' keeps it constant).")
@click.option("--momentum", type=float, default=0.9, show_default=True)
@click.option("--weight-decay", type=float, default=5e-4, show_default=True)
@click.option("--interval", type=int, default=None, help="Reconfigure every N epochs.")
@click.option("--lpr", type=float, default=None, help="Lasso penalty ratio that sets λ.")
@click.option("--threshold", type=float, default=None, help="A channel is dead when max|w| < threshold.")
@click.option("--lasso", type=click.Choice(["paper", "proximal"]), default=None,
              help="paper: the penalty in the loss, union liveness, fixed threshold (PruneTrain as published); "
                   "proximal: block soft-thresholding after each optimizer step. Default from the profile.")
@click.option("--liveness", type=click.Choice(["union", "readers"]), default=None,
              help="union: a channel goes when dead in every layer that writes or reads it; readers: when every "
                   "layer that reads it ignores it. Default: union with --lasso paper, else the profile's.")
@click.option("--structure", type=click.Choice(["union", "gating"]), default="union", show_default=True,
              help="union: every layer touching a channel space keeps one channel set (PruneTrain's default); "
                   "gating: at residual streams each layer keeps its own, joined by gather/scatter.")
@click.option("--change-budget", type=float, default=None,
              help="Choose the largest threshold whose removal changes the held-out logits by at most this "
                   "fraction of their scale (0 = fixed --threshold). Default: 0 with --lasso paper, else the profile's.")
@click.option("--lasso-until", type=float, default=None,
              help="Fraction of the epochs trained under the penalty; after it the pruned network trains without "
                   "it (1 = throughout, as published). Default: 1 with --lasso paper, else the profile's.")
@click.option("--held-out", type=int, default=256, show_default=True,
              help="Test images in the fixed batch that measures every reconfiguration's function change.")
@click.option("--batch-policy", type=click.Choice(["freed", "fill"]), default=None,
              help="freed: PruneTrain's batch grows only into memory pruning freed (dense's need at the start); "
                   "fill: both modes fill the memory budget.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--adjust-batch/--no-adjust-batch", default=True, show_default=True,
              help="Dynamic mini-batch adjustment after each reconfiguration.")
@click.option("--round-channels", default="1", show_default=True,
              help="Keep channel counts at multiples of N, or 'auto' to measure what this device prefers.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--emulate/--no-emulate", default=False, show_default=True,
              help="On a GPU larger than the profile's budget, cap this process at the budget.")
@click.option("--amp", type=click.Choice(["off", "bf16", "fp16"]), default="off", show_default=True,
              help="Mixed precision (CUDA only).")
@click.option("--channels-last/--no-channels-last", default=False, show_default=True)
@click.option("--compile/--no-compile", "compile_", default=False, show_default=True,
              help="torch.compile, recompiled after each reconfiguration (compile time recorded apart).")
@click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True)
@click.option("--interleave/--no-interleave", default=False, show_default=True,
              help="Alternate dense and PruneTrain epoch by epoch (both models kept), so that a busy phase of "
                   "a shared machine hits both alike.")
@click.option("--resume", type=click.Path(file_okay=False), default=None,
              help="Continue an interrupted run folder (its recorded configuration is used).")
@click.option("--nproc-per-node", type=int, default=1, show_default=True,
              help="Data-parallel processes on this node (launches torchrun).")
@click.option("--quiet", is_flag=True, help="No progress output.")
@friendly_errors
def run(**opts) -> None:
    """Train dense and PruneTrain on the same schedule and record every epoch."""
    from .distributed import launch_torchrun, maybe_init

    if opts["nproc_per_node"] > 1 and "LOCAL_RANK" not in os.environ:
        sys.exit(launch_torchrun(opts["nproc_per_node"], sys.argv[1:]))
    dist = maybe_init()
    cfg = None if opts["resume"] else build_config(opts, dist)
    quiet = opts["quiet"] or (dist is not None and dist.rank != 0)
    echo = (lambda s: None) if quiet else (lambda s: click.echo(s, err=True))
    from .run import run_benchmark

    abandoned = False
    try:
        run_dir = run_benchmark(cfg, results_dir=Path(opts["results_dir"]),
                                resume=Path(opts["resume"]) if opts["resume"] else None,
                                progress=not quiet and sys.stderr.isatty(), echo=echo, dist=dist,
                                data_dir=Path(opts["data_dir"]) if opts["resume"] and opts["data_dir"] else None)
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
    if not quiet:
        click.echo(str(run_dir))


def _exit_now(code: int) -> None:
    """End this process at once (no atexit handlers, no process-group shutdown), output flushed."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def build_config(opts: dict, dist=None):
    """Command-line options over the profile's defaults."""
    from .config import RunConfig
    from .gpu import select
    from .hardware import detect
    from .profiles import resolve_profile

    device, info = select(opts["device"], detect(), dist)  # the card trained on, checked against this torch
    profile = resolve_profile(opts["profile"], info)
    d = profile.defaults

    def pick(key, default):
        return default if opts[key] is None else opts[key]

    round_channels = opts["round_channels"]
    if round_channels == "auto":
        from .speed.decisions import auto_round_channels

        round_channels = auto_round_channels(pick("model", d.model), device)
    else:
        try:
            round_channels = int(round_channels)
        except ValueError:
            raise BenchError(f"--round-channels must be a positive integer or 'auto', got {round_channels!r}") from None
    milestones = list(d.lr_milestones)
    if opts["lr_milestones"] is not None:
        text = opts["lr_milestones"].strip().lower()
        try:
            milestones = [] if text in ("", "none") else [float(v) for v in text.split(",")]
        except ValueError:
            raise BenchError(f"--lr-milestones must be fractions like 0.5,0.75 or 'none', got {text!r}") from None
        if not all(0 < v < 1 for v in milestones):
            raise BenchError(f"--lr-milestones must be fractions between 0 and 1, got {text!r}")
    paper = opts["lasso"] == "paper"  # the published method unless a lever is asked for explicitly
    cfg = RunConfig(
        lasso=pick("lasso", d.lasso), liveness=pick("liveness", "union" if paper else d.liveness),
        structure=opts.get("structure") or "union",
        change_budget=pick("change_budget", 0.0 if paper else d.change_budget), held_out=opts["held_out"],
        lasso_until=pick("lasso_until", 1.0 if paper else d.lasso_until),
        batch_policy=pick("batch_policy", d.batch_policy),
        model=pick("model", d.model), data=pick("data", d.data), data_dir=opts["data_dir"],
        subset=pick("subset", d.subset), profile=opts["profile"] if opts["profile"] != "auto" else profile.name,
        modes=["dense", "prunetrain"] if opts["mode"] == "both" else [opts["mode"]],
        epochs=pick("epochs", d.epochs), batch_size=pick("batch_size", d.batch_size),
        max_batch=pick("max_batch", d.max_batch), lr=pick("lr", d.lr), momentum=opts["momentum"],
        weight_decay=opts["weight_decay"], lr_milestones=milestones, interval=pick("interval", d.interval), lpr=pick("lpr", d.lpr),
        threshold=pick("threshold", d.threshold), seed=opts["seed"], adjust_batch=opts["adjust_batch"],
        round_channels=round_channels, device=opts["device"], emulate=opts["emulate"], amp=opts["amp"],
        channels_last=opts["channels_last"], compile=opts["compile_"],
        world_size=dist.world_size if dist is not None else 1, interleave=opts["interleave"],
    )
    if opts["max_batch"] is None and cfg.max_batch < cfg.batch_size:
        cfg.max_batch = cfg.batch_size
    return cfg.validate()


# ---------------------------------------------------------------------------------------------- sweep
_NOT_FOR_SWEEP = {"mode", "resume", "nproc_per_node"}


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
@click.option("--title", default=None)
@friendly_errors
def report(paths, out, title) -> None:
    """Merge run folders (from any number of machines) into one report."""
    from .report import build_report

    result = build_report([Path(p) for p in (paths or ("results",))], Path(out), title=title)
    for line in result.warnings:
        click.echo(f"warning: {line}", err=True)
    click.echo(f"{len(result.table)} configuration(s) compared; wrote {result.out_dir / 'report.html'}")


# ---------------------------------------------------------------------------------------------- replay
@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--profile", default="auto", show_default=True,
              help="Target profile whose memory rule decides each shape's batch (name, .toml path, or auto).")
@click.option("--emulate/--no-emulate", default=False, show_default=True,
              help="On a GPU larger than the profile's budget, cap this process at the budget.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True)
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
    from .replay import ReplaySettings, replay as run_replay

    if budget_s <= 0 or not 0 < spread < 1:
        raise BenchError("--budget must be > 0 and --spread between 0 and 1")
    settings = ReplaySettings(profile=profile, device=device, emulate=emulate, synthetic=synthetic,
                              data_dir=data_dir, budget_s=budget_s, spread=spread)
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
    from .hardware import detect, format_env

    click.echo(format_env(detect()))


@main.command()
@friendly_errors
def profiles() -> None:
    """List the built-in hardware profiles and the one `--profile auto` picks here."""
    from .hardware import detect
    from .profiles import builtin_profiles, format_profiles

    click.echo(format_profiles(builtin_profiles(), detect()))


# ---------------------------------------------------------------------------------------------- check
@main.command()
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--model", default="resnet20", show_default=True, help="Model of the training rows.")
@click.option("--amp", type=click.Choice(["off", "bf16", "fp16"]), default="off", show_default=True,
              help="Also check mixed precision (CUDA only).")
@click.option("--channels-last/--no-channels-last", default=False, show_default=True,
              help="Also check training in channels_last.")
@friendly_errors
def check(device, model, amp, channels_last) -> None:
    """Run every path a long run takes on this device for a few steps; one table, exit 1 if any fails."""
    from .check import FAIL, format_table, run_check

    rows = run_check(device, model=model, amp=amp, channels_last=channels_last,
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
@friendly_errors
def speed(model, batch_size, device, rounds, sections, reconfig_models, harness_steps, data_images, memory_format,
          threads, quick, json_path, csv_path, enforce_targets) -> None:
    """Measure what the FLOP savings are worth in time here: penalty, reconfiguration, harness, pruned shapes."""
    from prunetrain_core import available_models

    from .speed.run import run_speed

    models = [m.strip() for m in reconfig_models.split(",") if m.strip()] if reconfig_models else None
    for name in [model, *(models or [])]:
        if name not in available_models():
            raise BenchError(f"unknown model '{name}': choose one of {', '.join(available_models())}")
    if batch_size < 1 or rounds < 1 or harness_steps < 1 or data_images < 1:
        raise BenchError("--batch-size, --rounds, --harness-steps and --data-images must be >= 1")
    from .gpu import select_device
    from .hardware import detect

    device = select_device(device, detect())  # a GPU this torch build cannot drive: one line, not a kernel error
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
