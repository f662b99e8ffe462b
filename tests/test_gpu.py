"""The CUDA paths of a run, against fakes that hold torch's and NVML's real contracts (tests/cudafake.py).

Issue 10, defects 1, 2, 4, 5, 6 and 8: the card a run trains on is CUDA's selected
device (not NVML's first), the memory cap gets a device index, checkpoints load onto
the CPU, and what a card or a torch build cannot do is refused up front in one line.
"""
from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bench.training import checkpoint
from bench import cli
from bench.config import RunConfig
from bench.errors import CheckpointError, ConfigError
from bench.machine.hardware import detect
from bench.machine.setup import prepare_device
from bench.training.step import new_scaler
from trainlib import make_trainer
import cudafake
from cudafake import A100, GTX750TI, GTX1070, GTX1080TI, GIB


# ---------------------------------------------------------------------------- the fakes hold the contracts

def test_the_fake_memory_cap_refuses_a_device_without_index(monkeypatch):
    cudafake.install(monkeypatch, [GTX1080TI])
    with pytest.raises(ValueError, match="specified index"):
        torch.cuda.set_per_process_memory_fraction(0.5, torch.device("cuda"))   # what the harness used to pass
    with pytest.raises(TypeError):
        torch.cuda.set_per_process_memory_fraction(1, 0)


def test_the_fake_nvml_lists_cards_in_pci_order_not_cudas(monkeypatch):
    cudafake.install(monkeypatch, visible=[GTX1080TI, GTX750TI], machine=[GTX750TI, GTX1080TI])
    info = detect()
    assert [g.name for g in info.gpus] == [GTX750TI.name, GTX1080TI.name]   # NVML: bus order
    assert torch.cuda.get_device_properties(0).name == GTX1080TI.name       # CUDA: its own order


# ---------------------------------------------------------------------------- defect 1: the cap gets an index

def test_emulation_caps_the_selected_device_by_index(monkeypatch):
    fake = cudafake.install(monkeypatch, [GTX1080TI])
    setup = prepare_device(RunConfig(device="cuda", profile="gtx1070", emulate=True))
    assert setup.device == torch.device("cuda", 0) and setup.emulated
    ((fraction, index),) = fake.fractions
    assert index == 0
    assert fraction == pytest.approx((8 - 0.3) * GIB / GTX1080TI.memory)   # (budget - reserve) / this card


# ---------------------------------------------------------------------------- defect 4: the card is CUDA's

@pytest.mark.parametrize("spec,card,profile", [("cuda:0", GTX1080TI, "gtx1080ti"), ("cuda", GTX1080TI, "gtx1080ti"),
                                               ("cuda:1", GTX750TI, "gtx750ti")])
def test_the_card_is_the_selected_cuda_device_not_nvmls_first(monkeypatch, spec, card, profile):
    """NVML's GPU 0 is the 750 Ti (bus 1); CUDA's cuda:0 is the 1080 Ti (fastest first)."""
    cudafake.install(monkeypatch, visible=[GTX1080TI, GTX750TI], machine=[GTX750TI, GTX1080TI])
    setup = prepare_device(RunConfig(device=spec, profile="auto"))
    assert setup.info.device_name == card.name
    assert setup.profile.name == profile
    assert setup.info.gpu.driver == "535.183.01"          # NVML found the same card by its UUID
    assert setup.info.gpu.uuid == card.full_uuid()
    assert not any("disagree" in w for w in setup.info.warnings)


def test_emulation_fraction_is_of_the_trained_card_with_a_hidden_card(monkeypatch):
    """CUDA_VISIBLE_DEVICES=1: CUDA sees only the A100; NVML still lists the 750 Ti first."""
    fake = cudafake.install(monkeypatch, visible=[A100], machine=[GTX750TI, A100])
    setup = prepare_device(RunConfig(device="cuda", profile="gtx1070", emulate=True))
    assert setup.info.device_name == A100.name and setup.emulated
    assert fake.fractions == [(pytest.approx((8 - 0.3) * GIB / A100.memory), 0)]


def test_a_torchrun_rank_trains_on_its_own_card(monkeypatch):
    cudafake.install(monkeypatch, visible=[GTX1080TI, GTX750TI], machine=[GTX750TI, GTX1080TI])
    dist = type("Dist", (), {"device": torch.device("cuda", 1), "rank": 1, "world_size": 2})()
    setup = prepare_device(RunConfig(device="auto", profile="auto"), dist=dist)
    assert setup.device == torch.device("cuda", 1) and setup.info.device_name == GTX750TI.name


def test_nvml_found_by_pci_bus_id_when_torch_has_no_uuid(monkeypatch):
    fake = cudafake.install(monkeypatch, visible=[GTX1070, GTX750TI], machine=[GTX750TI, GTX1070])
    props = fake.properties

    def no_uuid(device=None):
        p = props(device)
        p.uuid = None
        return p
    monkeypatch.setattr(torch.cuda, "get_device_properties", no_uuid)
    setup = prepare_device(RunConfig(device="cuda:0", profile="auto"))
    assert setup.info.gpu.pci_bus_id == GTX1070.bus_id() and setup.info.gpu.driver == "535.183.01"


# ---------------------------------------------------------------------------- defects 5, 6, 8: refused up front

def _bench(args: list[str], tmp_path: Path):
    return CliRunner().invoke(cli.main, [*args, "--results-dir", str(tmp_path / "results")])


def _one_error_line(result) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize("args,needle", [
    (["--compile"], "--compile: torch.compile's GPU backend (Triton) needs compute capability 7.0"),
    (["--amp", "bf16"], "--amp bf16 needs compute capability 8.0"),
])
def test_what_a_pascal_card_cannot_run_is_refused_in_one_line(monkeypatch, tmp_path, args, needle):
    cudafake.install(monkeypatch, [GTX1070])
    result = _bench(["run", "--profile", "gtx1070", "--data", "synthetic", "--device", "cuda", *args], tmp_path)
    line = _one_error_line(result)
    assert needle in line and "6.1" in line
    assert not (tmp_path / "results").exists()


def test_bf16_and_compile_pass_on_an_ampere_card(monkeypatch):
    cudafake.install(monkeypatch, [A100])
    setup = prepare_device(RunConfig(device="cuda", profile="server", compile=True, amp="bf16"))
    assert setup.info.compute_capability == (8, 0)


@pytest.mark.parametrize("command", [
    ["run", "--profile", "gtx1070", "--data", "synthetic", "--device", "cuda"],
    ["speed", "--device", "cuda", "--quick", "--section", "penalty"],
])
def test_a_card_this_torch_build_cannot_drive_is_refused(monkeypatch, tmp_path, command):
    """A 1070 (sm_61) under a torch built for sm_75+: one line naming the build to install, not a kernel error."""
    cudafake.install(monkeypatch, [GTX1070], arch_list=cudafake.CURRENT_ARCHS)
    line = _one_error_line(_bench(command, tmp_path) if command[0] == "run"
                           else CliRunner().invoke(cli.main, command))
    assert "sm_61" in line and ("cu126" in line or "CPU" in line)


def test_round_channels_auto_decides_for_the_selected_device(monkeypatch):
    import bench.training.decisions

    cudafake.install(monkeypatch, [GTX1070])
    asked = []
    monkeypatch.setattr(bench.training.decisions, "auto_round_channels",
                        lambda model, device=None: asked.append(device) or 4)
    opts = {p.name: p.default for p in cli.run.params}          # every `bench run` option at its default
    opts.update(profile="smoke", round_channels="auto", device="cpu")
    cfg = cli.build_config(opts)
    assert cfg.round_channels == 4 and asked == [torch.device("cpu")]


# ---------------------------------------------------------------------------- defect 2: resume onto a GPU

def test_checkpoint_rng_states_stay_on_the_cpu(monkeypatch, tmp_path):
    """No CUDA state is saved (nothing draws from it); an old checkpoint's CUDA states for 2 GPUs are ignored."""
    cudafake.install(monkeypatch, [GTX1070])
    cudafake.strict_rng(monkeypatch, visible_gpus=1)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    checkpoint.save(tmp_path / "c.pt", model=model, optimizer=opt, extra={"epoch": 1})
    blob = checkpoint.load(tmp_path / "c.pt")
    assert set(blob["rng"]) == {"torch", "python"} and blob["rng"]["torch"].device.type == "cpu"
    torch.rand(3)
    checkpoint.set_rng_state({**blob["rng"], "cuda": [torch.zeros(16, dtype=torch.uint8)] * 2})
    assert torch.equal(torch.get_rng_state(), blob["rng"]["torch"])


def test_a_cuda_run_reads_its_checkpoint_onto_the_cpu(tmp_path):
    """The trainer of a CUDA run must not load with map_location=<cuda device>: here, without CUDA,
    that is an error; with CUDA it put the RNG state on the GPU, which torch.set_rng_state refuses."""
    trainer = make_trainer(tmp_path, "dense")
    trainer.start()
    trainer.state.epoch = 1
    trainer.save_checkpoint()
    trainer.ctx = dataclasses.replace(trainer.ctx, device=torch.device("cuda", 0))
    blob = checkpoint.read(trainer.ckpt_path, trainer.ctx.dist)  # what ModeTrainer.resume reads with
    assert blob["rng"]["torch"].device.type == "cpu"
    assert all(t.device.type == "cpu" for t in blob["model"].values())


# ---------------------------------------------------------------------------- defect 8: AMP

def test_grad_scaler_state_survives_a_resume(tmp_path):
    trainer = make_trainer(tmp_path, "dense")
    trainer.scaler = new_scaler("cpu", {"scale": 512.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                        "growth_interval": 1, "_growth_tracker": 0})  # grows every step
    trainer.start()
    trainer.train_epoch(1)
    assert trainer.scaler.get_scale() == 512.0 * 2 ** 2      # two steps of 32 of the 64 images
    trainer.state.epoch = 1
    trainer.save_checkpoint()
    again = make_trainer(tmp_path, "dense", run_dir=trainer.ctx.run_dir)
    again.scaler = new_scaler("cpu")
    assert again.resume()
    assert again.scaler.state_dict() == trainer.scaler.state_dict()
    assert again.step.scaler is again.scaler


def test_a_checkpoint_without_the_scaler_of_an_fp16_run_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="key 'scaler'"):
        checkpoint.scaler_state({"epoch": 1}, tmp_path / "x.pt")


def test_grad_scaler_before_torch_2_3(monkeypatch):
    """torch.amp.GradScaler arrived in 2.3; pyproject accepts 2.1: the CUDA scaler of torch.cuda.amp then."""
    monkeypatch.delattr(torch.amp, "GradScaler")
    with pytest.warns(Warning):
        scaler = new_scaler("cuda")
    assert isinstance(scaler, torch.cuda.amp.GradScaler)


def test_the_memory_model_measures_activations_under_autocast():
    """With AMP the activations saved for backward are half precision: the dynamic batch must see that."""
    from bench.training.memory import measure_training_memory
    import prunetrain_core as pc

    model = pc.build_model("resnet20", 10)
    fp32 = measure_training_memory(model, (8, 3, 32, 32))
    bf16 = measure_training_memory(model, (8, 3, 32, 32), autocast_dtype=torch.bfloat16)
    assert bf16.params == fp32.params
    assert 0.3 < bf16.activations / fp32.activations < 0.75


def test_check_features_is_silent_on_a_cpu_config():
    from bench.machine.gpu import check_features
    from bench.machine.hardware import GPUInfo

    check_features(RunConfig(amp="fp16"), GPUInfo(0, "x", GIB, (6, 1)))
    with pytest.raises(ConfigError):
        check_features(RunConfig(compile=True), GPUInfo(0, "x", GIB, (5, 0)))


# ---------------------------------------------------------------------------- issue 23

def test_a_change_of_memory_format_takes_the_momentum_buffers_along(tmp_path):
    """The trainer converts a model's parameters in place (channels_last, or back to contiguous where a shape is
    hazardous); their momentum must follow, or SGD's foreach kernels fall back to one launch per tensor."""
    trainer = make_trainer(tmp_path, "prunetrain", images=32, batch=16, channels_last=True)
    trainer.start()
    trainer.train_epoch(1)
    for state in trainer.optimizer.state.values():   # as if the state had been made under the other format
        state["momentum_buffer"] = state["momentum_buffer"].contiguous()
    trainer._install(trainer.module, trainer.optimizer)
    params = [p for p in trainer.module.parameters() if p.dim() == 4]
    assert any(not p.is_contiguous() for p in params)      # channels_last indeed
    assert [p.stride() for p in params] == [trainer.optimizer.state[p]["momentum_buffer"].stride() for p in params]


def test_detect_decides_by_cudas_card_not_nvmls_first(monkeypatch):
    """CUDA sees an A100 (CUDA_VISIBLE_DEVICES=1); NVML's GPU 0 is a 750 Ti this cu128-style build cannot drive."""
    cudafake.install(monkeypatch, visible=[A100], machine=[GTX750TI, A100], arch_list=cudafake.CURRENT_ARCHS)
    info = detect()
    assert info.kind == "cuda" and info.device_name == A100.name
    assert info.gpu.uuid == A100.full_uuid() and info.gpu.driver == "535.183.01"
    setup = prepare_device(RunConfig(device="auto", profile="auto"))
    assert setup.device == torch.device("cuda", 0) and setup.info.device_name == A100.name
    result = CliRunner().invoke(cli.main, ["env"])
    assert result.exit_code == 0 and re.search(rf"device +cuda +\({A100.name}\)", result.output), result.output


@pytest.fixture
def backend_flags():
    """The process-wide flags gpu.configure sets, restored after the test."""
    saved = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
             torch.backends.cudnn.benchmark)
    yield
    torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = saved[:2]
    torch.backends.cudnn.benchmark = saved[2]


@pytest.mark.parametrize("command", [["check", "--device", "cuda"], ["speed", "--device", "cuda", "--quick"]])
def test_check_and_speed_set_the_device_options_a_run_sets(monkeypatch, backend_flags, command):
    """cuDNN autotuning (and the fp32 precision) come from one function for run, check and speed alike."""
    from bench import check as check_module
    from bench.speed import run as speed_run
    from bench.speed.table import SpeedReport

    cudafake.install(monkeypatch, [A100])
    torch.backends.cudnn.benchmark = False
    prepare_device(RunConfig(device="cuda", profile="auto"))
    assert torch.backends.cudnn.benchmark is True
    torch.backends.cudnn.benchmark = False
    monkeypatch.setattr(check_module.Checker, "check_all", lambda self: [])
    monkeypatch.setattr(speed_run, "run_speed", lambda model, **kw: SpeedReport("fake", 1, "-", 2, model, 1, rows=[]))
    result = CliRunner().invoke(cli.main, command)
    assert result.exit_code == 0, result.output
    assert torch.backends.cudnn.benchmark is True


def test_tf32_is_in_force_only_where_asked_and_on_a_card_that_has_it(monkeypatch, backend_flags):
    from bench.check import reconfiguration_tolerance
    from bench.machine.gpu import configure, precision_in_force

    cudafake.install(monkeypatch, [A100, GTX1070])
    a100, gtx1070 = torch.device("cuda", 0), torch.device("cuda", 1)
    configure(a100, "tf32")
    assert precision_in_force(a100)["matmul"] == precision_in_force(a100)["conv"] == "tf32"
    assert precision_in_force(gtx1070)["conv"] == "ieee"               # Pascal has no TF32: true fp32
    assert precision_in_force(torch.device("cpu"))["conv"] == "ieee"
    assert reconfiguration_tolerance(False, a100)[0] == 1e-3 and reconfiguration_tolerance(False, gtx1070)[0] == 1e-4
    configure(a100, "ieee")
    assert precision_in_force(a100)["conv"] == "ieee" and reconfiguration_tolerance(False, a100)[0] == 1e-4
    assert reconfiguration_tolerance(True, a100)[0] == 1e-2


def test_a_run_records_the_fp32_precision_it_ran_with(tmp_path, backend_flags):
    import json

    result = CliRunner().invoke(cli.main, ["run", "--profile", "smoke", "--mode", "dense", "--epochs", "1",
                                           "--subset", "64", "--fp32-precision", "tf32", "--quiet",
                                           "--results-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (run_json,) = tmp_path.glob("*/run.json")
    meta = json.loads(run_json.read_text())
    assert meta["config"]["fp32_precision"] == "tf32"
    assert meta["versions"]["fp32_precision"]["requested"] == {"matmul": "tf32", "conv": "tf32"}
    assert meta["versions"]["fp32_precision"]["conv"] == "ieee"       # the CPU computes true fp32 whatever is asked


def _graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


@pytest.fixture
def eager_compile(monkeypatch):
    """torch.compile with dynamo's "eager" backend: dynamo traces, guards and recompiles exactly as with inductor
    (its unique_graphs counter counts each compiled graph); only the code generation is skipped."""
    import functools

    real, reset = torch.compile, torch._dynamo.reset
    monkeypatch.setattr(torch, "compile", functools.partial(real, backend="eager"))
    reset()
    yield
    reset()


def test_every_compilation_happens_in_the_untimed_warm_up_and_lands_in_compile_time(tmp_path, monkeypatch,
                                                                                      eager_compile):
    """40 images at batch 16: a short last batch of 8, a second shape to compile.  No timed step may compile."""
    from bench.training.step import TrainStep

    compiled_in_timed_steps = []
    timed = TrainStep.__call__

    def counting(self, x, y, meter=None):
        before = _graphs()
        timed(self, x, y, meter)
        compiled_in_timed_steps.append(_graphs() - before)
    monkeypatch.setattr(TrainStep, "__call__", counting)
    trainer = make_trainer(tmp_path, "dense", images=40, batch=16, compile=True)
    trainer.start()
    before = _graphs()
    stats = trainer.train_epoch(1)
    assert _graphs() - before >= 2                        # the full and the short batch were compiled ...
    assert compiled_in_timed_steps == [0, 0, 0]           # ... none of it inside a timed step
    assert stats.compile_time_s > 0 and stats.steps == 3


def test_interleaved_modes_keep_each_others_compiled_frames(tmp_path, monkeypatch, eager_compile):
    """Installing PruneTrain's model must not clear dense's compiled code (torch._dynamo.reset() did):
    dense's next epoch compiles nothing and records no compile time."""
    monkeypatch.setattr(torch._dynamo, "reset", lambda: pytest.fail("torch._dynamo.reset() clears every mode's frames"))
    dense = make_trainer(tmp_path, "dense", images=32, batch=16, compile=True)
    dense.start()
    dense.train_epoch(1)
    prune = make_trainer(tmp_path, "prunetrain", images=32, batch=16, compile=True)
    prune.start()
    prune.train_epoch(1)
    before = _graphs()
    stats = dense.train_epoch(2)
    assert _graphs() == before and stats.compile_time_s == 0.0


def test_a_mig_slice_is_its_parent_card_not_a_disagreement(monkeypatch, tmp_path):
    """CUDA sees a 1g.5gb slice of an A100; NVML has no GPU with the slice's UUID and finds the A100 by bus id."""
    from bench.check import Checker

    mig = cudafake.Card(f"{A100.name} MIG 1g.5gb", A100.cc, 5 * GIB, bus=A100.bus, uuid="m1g5gb-0000-0000-0000-000000000009")
    cudafake.install(monkeypatch, visible=[mig], machine=[A100])
    setup = prepare_device(RunConfig(device="cuda", profile="auto"))
    assert not any("disagree" in w for w in setup.info.warnings)
    assert any("MIG slice of" in w for w in setup.info.warnings)
    assert setup.info.gpu.name == mig.name and setup.info.gpu.total_memory_bytes == 5 * GIB   # torch's, the slice's
    checker = Checker.__new__(Checker)
    checker.device = setup.device
    assert checker.identity().startswith(f"cuda:0: {mig.name}")     # bench check's identity row passes


def test_emulation_subtracts_the_measured_context_where_it_exceeds_the_reserve(monkeypatch):
    """The 750 Ti's 2 GiB less this process's driver memory (NVML's figure less the allocator's reserve)."""
    import os

    mib = 1 << 20
    fake = cudafake.install(monkeypatch, [A100], processes={A100.name: [(os.getpid(), 700 * mib)]})
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 100 * mib)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    setup = prepare_device(RunConfig(device="cuda", profile="gtx750ti", emulate=True))
    assert fake.fractions == [(pytest.approx((2 * GIB - 600 * mib) / A100.memory), 0)]
    assert setup.emulated
