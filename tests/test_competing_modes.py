"""The competing methods as modes (bench.training.methods): settings, schedules, and one run next to dense."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

import prunetrain_core as pc
from bench.training import methods
from bench.cli import build_config
from bench.config import RunConfig, method_name, run_method
from bench.errors import ConfigError
from bench.runfolder.records import read_epochs

X = torch.randn(2, 3, 32, 32)


def test_mode_options_pair_each_method_with_dense_and_random_with_prunetrain():
    opts = {"profile": "smoke", "device": "cpu"}
    assert build_config({**opts, "mode": "slimming"}).modes == ["dense", "slimming"]
    assert build_config({**opts, "mode": "earlybird"}).modes == ["dense", "earlybird"]
    assert build_config({**opts, "mode": "random"}).modes == ["dense", "prunetrain", "random"]
    assert build_config({**opts, "mode": "compare"}).modes == ["dense", "prunetrain", "slimming", "earlybird", "random"]
    assert build_config({**opts, "mode": "all"}).modes == ["dense", "prunetrain", "small-dense", "thin-dense"]
    with pytest.raises(ConfigError, match="random pruning removes as many channels as PruneTrain"):
        RunConfig(modes=["dense", "random"]).validate()
    for bad, match in [({"prune_ratio": 1.0}, "--prune-ratio"), ({"prune_at": 0.0}, "--prune-at"),
                       ({"sparsity": 0.0}, "--sparsity"), ({"epochs": 1, "modes": ["dense", "slimming"]}, "--epochs")]:
        with pytest.raises(ConfigError, match=match):
            RunConfig(**bad).validate()


def test_a_bad_method_setting_is_one_line_exit_2_and_nothing_written(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bench", "run", "--profile", "smoke", "--mode", "earlybird",
                          "--prune-ratio", "1.5", "--results-dir", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stderr.strip() == "error: --prune-ratio must be a fraction in (0, 1)"
    assert not (tmp_path / "r").exists()


def test_a_study_does_not_vary_a_setting_that_none_of_its_runs_reads():
    from bench.sweep import parse_vary, plan_study
    with pytest.raises(ConfigError, match="--vary prune_ratio: no run of this study reads it"):
        plan_study(RunConfig(), dict([parse_vary("prune_ratio=0.3,0.5")]), repeat=1)


def test_each_method_is_named_with_the_settings_it_ran():
    cfg = RunConfig(modes=["dense", "slimming"], epochs=30)
    assert cfg.prune_epoch() == 3 and RunConfig(epochs=2).prune_epoch() == 1
    assert method_name(cfg, "slimming") == ("Network Slimming: L1 on BN scales s=0.0001 until pruning, ratio 0.4 "
                                            "once after epoch 3")
    assert run_method(cfg) == method_name(cfg, "slimming")          # not PruneTrain: it did not run
    varied = RunConfig(modes=["dense", "earlybird"], prune_ratio=0.7)
    assert method_name(varied, "earlybird").startswith("Early-Bird tickets: L1 on BN scales s=0.0001 until pruning, "
                                                       "ratio 0.7 once when the Early-Bird ticket is drawn")
    assert run_method(RunConfig(modes=["dense", "prunetrain", "random"])).startswith("PruneTrain")


def _bn_model(gammas: list[float]) -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, len(gammas), 3, padding=1), nn.BatchNorm2d(len(gammas)), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(len(gammas), 10))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor(gammas))
    return model


def test_earlybird_draws_the_ticket_after_five_stable_masks_and_stops_penalising():
    cfg = RunConfig(modes=["dense", "earlybird"], epochs=10, prune_ratio=0.5)
    eb = methods.EarlyBird(cfg)
    model = _bn_model([0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.4, 0.6, 0.05, 0.95])
    assert [eb.due(e, model, X) for e in range(1, 6)] == [False] * 4 + [True]   # the fifth identical mask
    assert not eb.penalty_on and eb.pruned_at == [5]
    plan, record = eb.plan(model, X)
    assert plan.keep[next(iter(plan.keep))] == [1, 3, 5, 7, 9] and record["threshold"] == pytest.approx(0.6)
    assert not eb.due(6, model, X)                                                  # once only
    live = methods.EarlyBird(cfg)
    for e in range(1, 5):
        live.due(e, model, X)
        with torch.no_grad():
            model[1].weight.copy_(model[1].weight.flip(0))    # the same model, its γ moved: the mask follows
    assert live.distances[-1] == [1.0, 1.0, 1.0] and not live.due(5, model, X)
    rec = eb.record()
    assert rec["drawn"] and rec["drawn_after_epoch"] == 5 and rec["mask_distances"][-1] == [0, 0, 0, 0]


def test_earlybird_that_never_converges_stays_dense_and_says_so():
    cfg = RunConfig(modes=["dense", "earlybird"], epochs=8, prune_ratio=0.5)
    eb = methods.EarlyBird(cfg)
    a, b = [0.1, 0.9, 0.2, 0.8], [0.9, 0.1, 0.8, 0.2]           # the mask flips every epoch: distance 1
    assert not any(eb.due(e, _bn_model(a if e % 2 else b), X) for e in range(1, 9))
    rec = eb.record()
    assert not rec["drawn"] and rec["drawn_after_epoch"] is None and "never converged" in rec["note"]
    assert eb.penalty_on
    # a ticket that would be drawn after the last epoch is not: nothing would train on it
    late = methods.EarlyBird(RunConfig(modes=["dense", "earlybird"], epochs=5))
    assert not any(late.due(e, _bn_model(a), X) for e in range(1, 6))


def test_slimming_prunes_once_at_its_epoch_and_a_resumed_schedule_continues():
    cfg = RunConfig(modes=["dense", "slimming"], epochs=20, prune_at=0.25)
    slim = methods.Slimming(cfg)
    model = _bn_model([0.1, 0.9, 0.2, 0.8])
    assert [e for e in range(1, 21) if slim.due(e, model, X)] == [5]
    again = methods.Slimming(cfg)
    again.load(slim.state(), "ckpt")
    assert again.pruned_at == [5] and not again.penalty_on
    with pytest.raises(Exception, match="method.pruned_at"):
        again.load({"pruned_at": "5"}, "ckpt")


def test_random_pruning_follows_prunetrains_recorded_epochs_and_counts():
    model = pc.build_model("resnet20")
    pt = pc.scale_width(model, X, 0.5)
    archs = [{"epoch": 0, "channels": list(pc.channels(model).items())},
             {"epoch": 3, "channels": list(pc.channels(pt).items())}]
    rnd = methods.RandomPruning(RunConfig(modes=["dense", "prunetrain", "random"], epochs=10, seed=2))
    rnd.follow(json.loads(json.dumps(archs)), "run.json")           # as run.json holds them
    assert not rnd.penalised and [e for e in range(1, 11) if rnd.due(e, model, X)] == [3]
    plan, record = rnd.plan(model, X)
    small = pc.apply_plan_to(model, plan, X)
    assert pc.channels(small) == pc.channels(pt)                    # PruneTrain's counts, layer by layer
    assert record["seed"] == 2003 and plan.keep != {s: list(range(len(k))) for s, k in plan.keep.items()}
    with pytest.raises(ConfigError, match="per-layer channels"):
        rnd.follow([{"epoch": 1}], "run.json")


def test_the_report_compares_each_method_with_dense_and_calls_its_function_change_by_design(tmp_path):
    """A folder with dense, PruneTrain and slimming (written with the real writers): the method comparison
    row of slimming holds its time and FLOPs saved against dense, its epoch of pruning, and the words "by
    design" for its function change, while PruneTrain's faithful change is not flagged."""
    from bench.runfolder.records import EpochLog, atomic_write_json
    from bench.report import build_report, load_runs
    from bench.report.aggregate import BY_DESIGN, BY_DESIGN_RANDOM, aggregate
    from report_fixtures import FakeRun, run_json, write_run

    fr = FakeRun("20261206-100000-gtx1070-resnet32-cc01", epochs=4, interval=2)
    folder = write_run(tmp_path / "r", fr)
    meta = run_json(fr)
    meta["config"]["modes"] = ["dense", "prunetrain", "slimming", "random"]
    slim_archs = [dict(meta["modes"]["dense"]["architectures"][0]), {"epoch": 1, "channels": {"conv1": 8}, "params": 9}]
    meta["modes"]["slimming"] = {"status": "finished", "architectures": slim_archs, "method": "Network Slimming"}
    same = [dict(slim_archs[0]), {**slim_archs[0], "epoch": 2}]   # a reconfiguration that removed nothing
    meta["modes"]["random"] = {"status": "finished", "architectures": same, "method": "random pruning"}
    atomic_write_json(folder / "run.json", meta)
    log = EpochLog(folder / "epochs.csv")
    dense = [r for r in fr.rows if r["mode"] == "dense"]
    for r in dense:   # pruned after epoch 1 to half the time and FLOPs: 3 of 8 epoch-halves saved
        pruned = r["epoch"] > 1
        log.append({**r, "mode": "slimming", "train_flops": r["train_flops"] * (0.5 if pruned else 1.0),
                    "epoch_time_s": r["epoch_time_s"] * (0.5 if pruned else 1.0), "test_acc": r["test_acc"] - 2.0,
                    "reconfig_time_s": 0.0, "func_change_eval": 0.3 if r["epoch"] == 1 else None,
                    "func_change_train": 0.2 if r["epoch"] == 1 else None})
    for r in dense:
        log.append({**r, "mode": "random", "func_change_eval": 0.05 if r["epoch"] == 2 else None})
    agg = aggregate(load_runs([tmp_path / "r"]).runs)
    rows = {r["mode"]: r for _, r in agg.methods.iterrows()}
    assert set(rows) == {"prunetrain", "slimming", "random"}
    assert math.isnan(rows["random"]["pruned_after_epoch"]) and rows["random"]["time_saved_pct"] == 0
    slim = rows["slimming"]
    assert slim["time_saved_pct"] == pytest.approx(37.5) and slim["train_flops_saved_pct"] == pytest.approx(37.5)
    assert slim["pruned_after_epoch"] == 1 and slim["max_function_change"] == pytest.approx(0.3)
    assert slim["final_acc_gap"] == pytest.approx(-2.0) and slim["method"] == "Network Slimming"
    assert rows["prunetrain"]["pruned_after_epoch"] == 2
    build_report([tmp_path / "r"], tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    section = md[md.index("## Method comparison"):]
    section = section[:section.index("\n## ", 1)]
    assert f"0.3 ({BY_DESIGN})" in section and "changed the function" not in section
    assert "| slimming | Network Slimming |" in section and "| 37.5 |" in section
    assert f"| never | 0.05 ({BY_DESIGN_RANDOM}) |" in section


def test_slimming_in_the_trainer_prunes_through_the_engine_and_a_resume_keeps_its_schedule(tmp_path):
    """The trainer's path: s·Σ|γ| at the fixed weight s, the pruning measured on the validation split, the
    optimizer's momentum sliced with the weights, and a resumed mode that neither prunes again nor penalises."""
    from trainlib import make_trainer

    trainer = make_trainer(tmp_path, "slimming", images=64, val=32, held_out=16, prune_at=0.25)  # after epoch 1
    trainer.start()
    assert trainer.state.lam == 1e-4 and isinstance(trainer.lasso, pc.methods.BNScaleL1)
    trainer.train_epoch(1)
    assert trainer.step.penalty_on and trainer.step.lam == 1e-4
    trainer.state.epoch = 1
    assert trainer.method.due(1, trainer.module, trainer.example)
    before = sum(p.numel() for p in trainer.module.parameters())
    trainer.reconfigure(1)
    change = trainer.last_change
    assert change["method"] == "slimming" and change["measured_on"].startswith("validation split (16 of 32")
    assert change["bn_below"] == int(0.4 * change["bn_channels"])
    assert sum(p.numel() for p in trainer.module.parameters()) < before
    assert all(trainer.optimizer.state[p]["momentum_buffer"].shape == p.shape for p in trainer.module.parameters())
    trainer.save_checkpoint()
    again = make_trainer(tmp_path, "slimming", images=64, val=32, held_out=16, prune_at=0.25,
                         run_dir=trainer.ctx.run_dir)
    assert again.resume()
    assert again.method.pruned_at == [1] and not again.method.penalty_on and again.state.lam == 1e-4
    assert pc.channels(again.module) == pc.channels(trainer.module)
    assert not again.method.due(2, again.module, again.example)
    again.train_epoch(2)
    assert not again.step.penalty_on


@pytest.mark.parametrize("mode", ["slimming", "random"])
def test_replay_times_a_methods_penalty_before_its_pruning_and_the_pruning_itself(mode):
    """bench replay: the shape before a slimming pruning trains under s·Σ|γ| (random never has a penalty), and
    the pruning is timed as the method's own decision plus the surgery, ending exactly in the recorded shape."""
    from types import SimpleNamespace

    from bench.training.data import load_data
    from bench.replay.run import StepRunner
    from bench.replay.surgery import time_method_pruning
    from bench.replay.trajectory import Shape

    cfg = RunConfig(model="resnet20", modes=["dense", "prunetrain", mode], epochs=4)
    model = pc.build_model("resnet20")
    small = pc.scale_width(model, X, 0.5)

    def shape(m: nn.Module, index: int) -> Shape:
        return Shape(mode, index, index, pc.describe(m), dict(pc.channels(m)), 8, 0, 0.0, 0.0)

    data = load_data("synthetic", subset=64).train
    before, after = (StepRunner(shape(m, i), data, 8, torch.device("cpu"), cfg, 0.5).step for i, m in
                     enumerate((model, small)))
    if mode == "slimming":
        assert isinstance(before.lasso, pc.methods.BNScaleL1) and before.lam == 1e-4
    else:
        assert before.lasso is None
    assert after.lasso is None
    seconds, exact = time_method_pruning(SimpleNamespace(cfg=cfg), shape(model, 0), shape(small, 1), data,
                                         torch.device("cpu"), 1, 1 << 30, 0.9)
    assert exact and seconds > 0


def test_a_folder_of_dense_and_slimming_alone_is_reported_as_a_method_comparison(tmp_path):
    """No PruneTrain ran: the report still compares slimming with its dense (its time and FLOPs saved, the epoch
    it pruned), says that no dense + PruneTrain pair exists, and lists the run without a warning."""
    from bench.runfolder.records import EpochLog, atomic_write_json
    from bench.report import build_report
    from report_fixtures import FakeRun, run_json, write_run

    fr = FakeRun("20261206-100000-gtx1070-resnet32-dd01", epochs=4, interval=2, pt_done=0)
    folder = write_run(tmp_path / "r", fr)
    meta = run_json(fr)
    meta["config"]["modes"] = ["dense", "slimming"]
    del meta["modes"]["prunetrain"]
    first = dict(meta["modes"]["dense"]["architectures"][0])
    meta["modes"]["slimming"] = {"status": "finished", "method": "Network Slimming",
                                 "architectures": [first, {"epoch": 1, "channels": {"conv1": 8}, "params": 9}]}
    atomic_write_json(folder / "run.json", meta)
    log = EpochLog(folder / "epochs.csv")
    for r in [r for r in fr.rows if r["mode"] == "dense"]:
        pruned = r["epoch"] > 1
        log.append({**r, "mode": "slimming", "train_flops": r["train_flops"] * (0.5 if pruned else 1.0),
                    "epoch_time_s": r["epoch_time_s"] * (0.5 if pruned else 1.0), "test_acc": r["test_acc"] - 2.0,
                    "func_change_eval": 0.3 if r["epoch"] == 1 else None})
    res = build_report([tmp_path / "r"], tmp_path / "out")
    assert res.warnings == [] and res.table.empty
    assert res.runs.iloc[0]["note"] == "dense and slimming (no PruneTrain): in the method comparison only"
    md = (tmp_path / "out" / "report.md").read_text()
    assert "No run holds a complete dense + PruneTrain pair" in md
    assert "| resnet32 / cifar10, 4 epochs | slimming | Network Slimming | 1 |" in md
    assert "| 37.5 | 37.5 | 1.00 | 61.0 | -2.0 |" in md and "| 1 | 0.3 (prunes by ratio" in md


@pytest.mark.slow
def test_methods_added_to_a_prunetrain_folder_run_end_to_end_beside_a_dense_run_elsewhere(tmp_path):
    """The evidence workflow: dense in one folder, PruneTrain alone in another (same seed and settings dense
    reads), the three methods added to the PruneTrain folder with --methods-of (a changed setting refused in one
    line). Slimming starts where dense starts, is pruned once after epoch 1 through the engine, its function change
    measured on the validation split, its method named; the report compares every method with the other folder's
    dense and says where that dense came from."""
    from bench.report import build_report

    args = ["--profile", "smoke", "--epochs", "2", "--subset", "256", "--val", "200", "--held-out", "100",
            "--test-size", "200", "--quiet"]
    for mode, where in (("dense", "d"), ("prunetrain", "p")):
        done = subprocess.run([sys.executable, "-m", "bench", "run", *args, "--mode", mode,
                               "--results-dir", str(tmp_path / where)], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr
    folder = next((tmp_path / "p").iterdir())
    from click.testing import CliRunner
    from bench import cli
    refused = CliRunner().invoke(cli.main, ["run", "--methods-of", str(folder), "--seed", "3"])
    assert refused.exit_code == 2 and refused.output.strip().startswith(f"error: --methods-of continues {folder}")
    added = subprocess.run([sys.executable, "-m", "bench", "run", "--methods-of", str(folder), "--quiet"],
                           capture_output=True, text=True, timeout=900)
    assert added.returncode == 0, added.stderr
    meta = json.loads((folder / "run.json").read_text())
    assert meta["config"]["modes"] == ["prunetrain", "slimming", "earlybird", "random"]
    assert all(meta["modes"][m]["status"] == "finished" for m in meta["config"]["modes"])
    dense_folder = next((tmp_path / "d").iterdir())
    dense_meta = json.loads((dense_folder / "run.json").read_text())
    slim = meta["modes"]["slimming"]
    assert slim["method"].startswith("Network Slimming") and slim["pruning"]["pruned_after_epochs"] == [1]
    assert slim["pruning"]["prune_epoch"] == 1
    first, pruned = slim["architectures"]
    assert first["params"] == dense_meta["modes"]["dense"]["architectures"][0]["params"] > pruned["params"]
    change = pruned["function_change"]
    assert change["method"] == "slimming" and change["measured_on"].startswith("validation split")
    assert change["bn_below"] == int(change["bn_channels"] * 0.4) and "union_rule" in change
    rows = [r for _, r in read_epochs(folder / "epochs.csv", strict=True)]
    rows += [r for _, r in read_epochs(dense_folder / "epochs.csv", strict=True)]
    by = {(r.mode, r.epoch): r for r in rows}
    assert by["slimming", 1].lasso_lambda == 1e-4 and by["slimming", 1].prune_threshold == change["cut"]
    assert by["slimming", 1].train_flops == by["dense", 1].train_flops > by["slimming", 2].train_flops
    assert by["slimming", 1].func_change_eval == change["eval_rel"]
    result = build_report([tmp_path / "d", tmp_path / "p"], tmp_path / "out")
    joined = result.runs[result.runs["run_id"] == f"{folder.name} vs {dense_folder.name}"]
    assert list(joined["note"]) == [f"dense from run {dense_folder.name}"] and bool(joined["compared"].iloc[0])
    md = (tmp_path / "out" / "report.md").read_text()
    section = md[md.index("## Method comparison"):]
    assert all(f"| {m} |" in section for m in ("prunetrain", "slimming", "earlybird", "random"))


def test_a_methods_l1_on_gamma_is_applied_whatever_prunetrains_lasso_setting(tmp_path):
    """The cpu and smoke profiles set --lasso proximal, which only PruneTrain reads: a slimming epoch under it
    trains exactly as under --lasso paper, and its s·Σ|γ| pulls the BN scales below those of s = 0."""
    from trainlib import make_trainer

    def gammas(**cfg) -> torch.Tensor:
        trainer = make_trainer(tmp_path, "slimming", images=64, val=32, held_out=16, **cfg)
        trainer.start()
        trainer.train_epoch(1)
        return torch.cat([m.weight.detach().abs().flatten() for m in trainer.module.modules()
                          if isinstance(m, nn.BatchNorm2d)])

    proximal, paper, none = gammas(lasso="proximal", sparsity=0.05), gammas(sparsity=0.05), gammas(sparsity=0.0)
    assert torch.equal(proximal, paper)
    assert proximal.sum() < none.sum() - 0.01 * len(none)
