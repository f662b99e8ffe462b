"""Profiles: built-ins, validation of damaged files, auto-matching, emulation math."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.errors import ProfileError
from bench.machine.hardware import DeviceInfo, GPUInfo
from bench.machine.profiles import (
    Profile,
    builtin_profile_dir,
    builtin_profiles,
    format_profiles,
    load_profile,
    match_profile,
    resolve_profile,
)

GIB = 1 << 30
MIB = 1 << 20


def gpu_device(name: str, mib: int, cc: tuple[int, int]) -> DeviceInfo:
    return DeviceInfo(
        kind="cuda", gpus=(GPUInfo(0, name, mib * MIB, cc, "550.54"),),
        cpu_model="Intel Core i7", cpu_cores=8, torch_version="2.7.1+cu126",
        cuda_version="12.6", cudnn_version=90100, torch_arch_list=("sm_50", "sm_60"),
        nvml_available=True, warnings=(),
    )


CPU = DeviceInfo(kind="cpu", gpus=(), cpu_model="AMD EPYC", cpu_cores=2,
                 torch_version="2.14.1", cuda_version=None, cudnn_version=None,
                 torch_arch_list=(), nvml_available=False, warnings=())
GTX750TI = gpu_device("NVIDIA GeForce GTX 750 Ti", 2048, (5, 0))
GTX1070 = gpu_device("NVIDIA GeForce GTX 1070", 8192, (6, 1))
GTX1080TI = gpu_device("NVIDIA GeForce GTX 1080 Ti", 11264, (6, 1))
H200 = gpu_device("NVIDIA H200", 143771, (9, 0))


@pytest.fixture(scope="module")
def builtins() -> dict[str, Profile]:
    return builtin_profiles()


# --------------------------------------------------------------------------
# built-ins

def test_every_builtin_loads(builtins):
    files = sorted(p.stem for p in builtin_profile_dir().glob("*.toml"))
    assert files == sorted(builtins)
    assert {"gtx750ti", "gtx1070", "gtx1080ti", "server", "cpu", "smoke"} <= set(builtins)
    for name, p in builtins.items():
        assert p.name == name and p.source.endswith(f"{name}.toml")
        assert p.description
        assert Profile.from_dict(p.to_dict()) == p


def test_builtin_values(builtins):
    assert builtins["gtx1070"].budget_bytes == 8 * GIB
    assert builtins["gtx1070"].compute_capability == (6, 1)
    assert builtins["gtx750ti"].device_memory_bytes == 2 * GIB
    assert builtins["gtx750ti"].compute_capability == (5, 0)
    assert builtins["gtx1080ti"].budget_bytes == 11 * GIB
    assert "1070" in builtins["gtx1080ti"].description
    assert builtins["server"].budget_bytes is None
    assert builtins["cpu"].device_kind == "cpu"
    smoke = builtins["smoke"]
    assert smoke.auto is False and smoke.device_kind == "cpu"
    assert smoke.budget_bytes == GIB
    d = smoke.defaults
    assert (d.model, d.data, d.subset, d.batch_size, d.max_batch, d.epochs, d.interval) == (
        "resnet20", "synthetic", 1024, 32, 64, 4, 1)
    assert (d.lpr, d.threshold, d.lr_milestones) == (0.9, 1e-4, ())
    assert (d.lasso, d.liveness, d.change_budget) == ("proximal", "readers", 0.01)


# --------------------------------------------------------------------------
# matching

@pytest.mark.parametrize("device,expected", [
    (GTX750TI, "gtx750ti"),
    (GTX1070, "gtx1070"),
    (GTX1080TI, "gtx1080ti"),
    (gpu_device("NVIDIA GeForce GTX 1070 Ti", 8192, (6, 1)), "gtx1070"),
    (H200, "server"),
    (gpu_device("NVIDIA A100-SXM4-80GB", 81920, (8, 0)), "server"),
    (CPU, "cpu"),
])
def test_auto_match(builtins, device, expected):
    assert match_profile(device, builtins).name == expected
    assert resolve_profile("auto", device, builtins).name == expected


def test_pattern_match_is_case_insensitive(builtins):
    dev = gpu_device("nvidia geforce gtx 1070", 8192, (6, 1))
    assert match_profile(dev, builtins).name == "gtx1070"


def test_compute_capability_and_memory_match_without_pattern(builtins):
    # A Pascal card with 8 GiB but another name behaves like the GTX 1070.
    quadro = gpu_device("Quadro P4000", 8192, (6, 1))
    assert match_profile(quadro, builtins).name == "gtx1070"
    # Same architecture, very different memory: no close profile -> server.
    p100 = gpu_device("Tesla P100-PCIE-16GB", 16384, (6, 0))
    assert match_profile(p100, builtins).name == "server"


def test_longest_pattern_wins(tmp_path, builtins):
    write(tmp_path / "gtx1080.toml", GOOD.replace('"GTX 1070"', '"GTX 1080"')
          .replace('name = "mine"', 'name = "gtx1080"'))
    profiles = dict(builtins, gtx1080=load_profile(tmp_path / "gtx1080.toml"))
    assert match_profile(GTX1080TI, profiles).name == "gtx1080ti"
    assert match_profile(gpu_device("NVIDIA GeForce GTX 1080", 8192, (6, 1)),
                         profiles).name == "gtx1080"


def test_smoke_is_never_auto_picked(builtins):
    only_smoke = {"smoke": builtins["smoke"]}
    with pytest.raises(ProfileError):
        match_profile(CPU, only_smoke)
    for dev in (CPU, GTX1070, H200):
        assert match_profile(dev, builtins).name != "smoke"


def test_unknown_gpu_without_generic_profile_errors(builtins):
    only = {"gtx1070": builtins["gtx1070"]}
    with pytest.raises(ProfileError, match="H200"):
        match_profile(H200, only)


# --------------------------------------------------------------------------
# resolve

def test_resolve_by_name_and_path(builtins, tmp_path):
    assert resolve_profile("gtx1070", CPU).name == "gtx1070"
    assert resolve_profile("smoke", CPU).name == "smoke"
    path = builtin_profile_dir() / "gtx750ti.toml"
    assert resolve_profile(str(path), CPU) == builtins["gtx750ti"]
    write(tmp_path / "mine.toml", GOOD)
    assert resolve_profile(str(tmp_path / "mine.toml"), CPU).name == "mine"


def test_resolve_relative_toml(tmp_path, monkeypatch):
    write(tmp_path / "mine.toml", GOOD)
    monkeypatch.chdir(tmp_path)
    assert resolve_profile("mine.toml", CPU).name == "mine"


def test_resolve_unknown_name():
    with pytest.raises(ProfileError) as e:
        resolve_profile("gtx9999", CPU)
    msg = str(e.value)
    assert "unknown profile 'gtx9999'" in msg and "gtx1070" in msg and ".toml" in msg
    assert "\n" not in msg


def test_resolve_missing_file():
    with pytest.raises(ProfileError, match="not found"):
        resolve_profile("/nonexistent/x.toml", CPU)


# --------------------------------------------------------------------------
# budget and emulation

def test_resolve_budget(builtins):
    assert builtins["gtx1070"].resolve_budget(H200) == 8 * GIB
    assert builtins["gtx1070"].resolve_budget(CPU) == 8 * GIB  # CPU emulates the budget
    assert builtins["server"].resolve_budget(H200) == 143771 * MIB
    with pytest.raises(ProfileError, match="no usable GPU"):
        builtins["server"].resolve_budget(CPU)


def test_emulation_fraction(builtins):
    h200_141 = gpu_device("NVIDIA H200", 141 * 1024, (9, 0))
    frac = builtins["gtx1070"].emulation_fraction(h200_141)
    assert frac == pytest.approx((8 - 0.3) / 141, rel=1e-6)
    assert builtins["gtx750ti"].emulation_fraction(h200_141) == pytest.approx(1.7 / 141, rel=1e-6)
    # Nothing to emulate: same-size or smaller device, CPU, or a "device" budget.
    assert builtins["gtx1070"].emulation_fraction(GTX1070) is None
    assert builtins["gtx1080ti"].emulation_fraction(GTX1070) is None
    assert builtins["gtx1070"].emulation_fraction(CPU) is None
    assert builtins["server"].emulation_fraction(H200) is None


# --------------------------------------------------------------------------
# damaged files

GOOD = """\
name = "mine"
description = "test"

[device]
kind = "cuda"
name_patterns = ["GTX 1070"]
compute_capability = [6, 1]
memory_gib = 8

[budget]
memory_gib = 8
reserve_gib = 0.3
headroom = 0.9

[defaults]
model = "resnet32"
data = "cifar10"
batch_size = 128
max_batch = 1024
epochs = 182
interval = 10
subset = 0
lpr = 0.2
threshold = 1e-4
lr = 0.1
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_good_file_loads(tmp_path):
    p = load_profile(write(tmp_path / "mine.toml", GOOD))
    assert p.budget_bytes == 8 * GIB and p.reserve_bytes == round(0.3 * GIB)
    assert p.defaults.threshold == 1e-4 and p.auto is True


def test_purpose_is_read_and_recorded(tmp_path):
    p = load_profile(write(tmp_path / "mine.toml", GOOD.replace('description = "test"', 'description = "test"\n'
                                                                'purpose = """Presses hard\n on purpose."""')))
    assert p.purpose == "Presses hard on purpose." and p.to_dict()["purpose"] == p.purpose
    assert Profile.from_dict(p.to_dict()).purpose == p.purpose


def test_minimal_file_gets_defaults(tmp_path):
    p = load_profile(write(tmp_path / "min.toml", 'name = "min"\n[device]\nkind = "cpu"\n'
                           "[budget]\nmemory_gib = 4\n"))
    assert p.defaults.model == "resnet32" and p.headroom == 0.9 and p.reserve_bytes == 0


@pytest.mark.parametrize("old,new,key", [
    ("memory_gib = 8\n\n[budget]", "memory_gib = 8\nvram = 8\n\n[budget]", "device.vram"),
    ('name = "mine"', 'name = "mine"\ncolour = "red"', "colour"),
    ("[defaults]", "[defaultz]", "defaultz"),
    ("batch_size = 128", 'batch_size = "128"', "defaults.batch_size"),
    ("batch_size = 128", "batch_size = 128.0", "defaults.batch_size"),
    ("batch_size = 128", "batch_size = 0", "defaults.batch_size"),
    ("batch_size = 128", "batch_size = true", "defaults.batch_size"),
    ("max_batch = 1024", "max_batch = 64", "defaults.max_batch"),
    ("memory_gib = 8\nreserve_gib", "memory_gib = -1\nreserve_gib", "budget.memory_gib"),
    ("memory_gib = 8\nreserve_gib", 'memory_gib = "lots"\nreserve_gib', "budget.memory_gib"),
    ("memory_gib = 8\n\n[budget]", "memory_gib = 0\n\n[budget]", "device.memory_gib"),
    ("reserve_gib = 0.3", "reserve_gib = -0.1", "budget.reserve_gib"),
    ("reserve_gib = 0.3", "reserve_gib = 9", "budget.reserve_gib"),
    ("headroom = 0.9", "headroom = 1.5", "budget.headroom"),
    ("headroom = 0.9", "headroom = 0", "budget.headroom"),
    ("lpr = 0.2", "lpr = 1.0", "defaults.lpr"),
    ("threshold = 1e-4", "threshold = 0", "defaults.threshold"),
    ("epochs = 182", "epochs = 0", "defaults.epochs"),
    ("interval = 10", "interval = -2", "defaults.interval"),
    ("subset = 0", "subset = -1", "defaults.subset"),
    ("lr = 0.1", "lr = nan", "defaults.lr"),
    ('kind = "cuda"', 'kind = "tpu"', "device.kind"),
    ("compute_capability = [6, 1]", "compute_capability = [6]", "device.compute_capability"),
    ("compute_capability = [6, 1]", 'compute_capability = "6.1"', "device.compute_capability"),
    ('name_patterns = ["GTX 1070"]', 'name_patterns = "GTX 1070"', "device.name_patterns"),
    ('name_patterns = ["GTX 1070"]', "name_patterns = [1070]", "device.name_patterns"),
    ('name = "mine"', 'name = "auto"', "name"),
    ('name = "mine"', "name = 3", "name"),
    ('description = "test"', 'description = "test"\nauto = "no"', "auto"),
    ('description = "test"', 'description = "test"\npurpose = 3', "purpose"),
    ("memory_gib = 8\n\n[budget]", "\n[budget]", "device.memory_gib"),  # cuda needs it
])
def test_bad_value_names_file_and_key(tmp_path, old, new, key):
    assert old in GOOD
    path = write(tmp_path / "bad.toml", GOOD.replace(old, new, 1))
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert str(path) in msg
    assert f"'{key}'" in msg


def test_device_budget_only_for_cuda(tmp_path):
    path = write(tmp_path / "c.toml", 'name = "c"\n[device]\nkind = "cpu"\n'
                 '[budget]\nmemory_gib = "device"\n')
    with pytest.raises(ProfileError, match="'budget.memory_gib'"):
        load_profile(path)


def test_cpu_profile_rejects_gpu_keys(tmp_path):
    path = write(tmp_path / "c.toml", 'name = "c"\n[device]\nkind = "cpu"\n'
                 "compute_capability = [6, 1]\n[budget]\nmemory_gib = 4\n")
    with pytest.raises(ProfileError, match="'device.compute_capability'"):
        load_profile(path)


def test_missing_tables(tmp_path):
    with pytest.raises(ProfileError, match="'budget'"):
        load_profile(write(tmp_path / "a.toml", 'name = "a"\n[device]\nkind = "cpu"\n'))
    with pytest.raises(ProfileError, match="'device'"):
        load_profile(write(tmp_path / "b.toml", 'name = "b"\n[budget]\nmemory_gib = 1\n'))


def test_toml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path / "broken.toml", GOOD.replace("headroom = 0.9", "headroom = = 0.9"))
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    msg = str(e.value)
    assert str(path) in msg and "TOML syntax error" in msg and "line 13" in msg
    assert "\n" not in msg


def test_not_utf8(tmp_path):
    path = tmp_path / "bin.toml"
    path.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(ProfileError, match="UTF-8"):
        load_profile(path)


def test_builtin_name_must_equal_stem(tmp_path):
    path = write(tmp_path / "other.toml", GOOD)
    assert load_profile(path).name == "mine"
    with pytest.raises(ProfileError, match="'name'.*'other'"):
        load_profile(path, builtin=True)


# --------------------------------------------------------------------------
# formatting

def test_format_profiles_marks_auto_pick(builtins):
    text = format_profiles(builtins, GTX1070)
    lines = text.splitlines()
    marked = [line for line in lines if line.startswith("*  ")]
    assert len(marked) == 1 and "gtx1070" in marked[0]
    for name in builtins:
        assert name in text
    assert "smoke (manual)" in text
    assert "NVIDIA GeForce GTX 1070" in text
    cpu_text = format_profiles(builtins, CPU)
    assert [line for line in cpu_text.splitlines() if line.startswith("*  ")][0].split()[1] == "cpu"
