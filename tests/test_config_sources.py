"""One loader for a run's settings: a profile's [defaults], the command line and a resumed run.json are
checked alike (unknown key, wrong type: one line naming the source and the key) and merged with one
precedence: command line > resumed run.json > profile > RunConfig."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench import cli
from bench.config import RunConfig, partial_from, record_source, resolve
from bench.errors import ConfigError, ProfileError, RecordError
from bench.machine.profiles import load_profile
from bench.runfolder.folder import portable_config
from bench.runfolder.runjson import config_from_record

PROFILE = 'name = "mine"\n[device]\nkind = "cpu"\n[budget]\nmemory_gib = 1\n[defaults]\n'


def profile(tmp_path: Path, defaults: str):
    path = tmp_path / "mine.toml"
    path.write_text(PROFILE + defaults)
    return load_profile(path)


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------ the profile
def test_a_misspelt_profile_key_is_named_with_the_file_and_a_suggestion(tmp_path):
    with pytest.raises(ProfileError) as e:
        profile(tmp_path, "epoch = 3\n")
    msg = one_line(e)
    assert str(tmp_path / "mine.toml") in msg and "'defaults.epoch' is unknown" in msg and "'epochs'" in msg


def test_a_wrong_type_in_a_profile_is_named(tmp_path):
    with pytest.raises(ProfileError) as e:
        profile(tmp_path, 'lpr = "high"\n')
    assert "key 'defaults.lpr': expected a number, got 'high'" in one_line(e)


def test_a_profile_may_not_choose_its_device_or_itself(tmp_path):
    with pytest.raises(ProfileError, match="'defaults.device' is unknown"):
        profile(tmp_path, 'device = "cpu"\n')


def test_a_profile_default_overrides_runconfig(tmp_path):
    p = profile(tmp_path, "epochs = 3\nlr_milestones = [0.5]\n")
    cfg = resolve(profile=p.defaults)
    assert (cfg.epochs, cfg.lr_milestones, cfg.lpr) == (3, [0.5], RunConfig().lpr)
    assert dict(p.defaults) == {"epochs": 3, "lr_milestones": (0.5,)}  # a partial RunConfig: what the file says


def test_a_profile_batch_above_the_default_cap_lifts_it(tmp_path):
    assert profile(tmp_path, "batch_size = 2048\n").defaults.max_batch == 2048


# ------------------------------------------------------------------ the command line
def test_a_wrong_type_on_the_command_line_is_one_line():
    with pytest.raises(ConfigError) as e:
        partial_from({"lpr": "x"})
    assert one_line(e) == "--lpr: expected a number, got 'x'"


def test_the_command_line_overrides_the_profile(tmp_path):
    p = profile(tmp_path, "epochs = 3\nbatch_size = 64\nmax_batch = 128\n")
    cfg = resolve(profile=p.defaults, given=partial_from({"epochs": "5", "batch_size": "256"}))
    assert (cfg.epochs, cfg.batch_size, cfg.max_batch) == (5, 256, 256)  # a cap below the batch given is lifted
    with pytest.raises(ConfigError, match="^--max-batch must be >= --batch-size$"):
        resolve(profile=p.defaults, given=partial_from({"max_batch": "32"}))


def test_lasso_paper_given_drops_the_profiles_levers(tmp_path):
    p = profile(tmp_path, 'lasso = "proximal"\nliveness = "readers"\nchange_budget = 0.01\nlasso_until = 0.5\n')
    cfg = resolve(profile=p.defaults, given=partial_from({"lasso": "paper"}))
    assert (cfg.lasso, cfg.liveness, cfg.change_budget, cfg.lasso_until) == ("paper", "union", 0.0, 1.0)
    cfg = resolve(profile=p.defaults, given=partial_from({"lasso": "paper", "liveness": "readers"}))
    assert cfg.liveness == "readers"


def test_penalising_only_readers_needs_the_reader_rule(tmp_path):
    p = profile(tmp_path, 'lasso = "proximal"\nliveness = "readers"\npenalise = "readers"\n')
    assert resolve(profile=p.defaults).penalise == "readers"
    assert resolve(profile=p.defaults, given=partial_from({"lasso": "paper"})).penalise == "all"
    with pytest.raises(ProfileError, match="key 'defaults.penalise' is invalid: --penalise readers needs --liveness"):
        resolve(profile=p.defaults, given=partial_from({"liveness": "union"}))
    with pytest.raises(ConfigError, match="^--keep-bn-scale rescales after the proximal step"):
        resolve(given=partial_from({"keep_bn_scale": True}))


def test_group_weights_are_a_lever_the_paper_method_resets(tmp_path):
    p = profile(tmp_path, 'lasso = "proximal"\ngroup_weight = "size"\n')
    assert resolve(profile=p.defaults).group_weight == "size"
    assert resolve(profile=p.defaults, given=partial_from({"lasso": "paper"})).group_weight == "uniform"
    with pytest.raises(ProfileError, match="key 'defaults.group_weight' is invalid: --group-weight must be one of"):
        resolve(profile=profile(tmp_path, 'group_weight = "sqrt"\n').defaults)


def test_cli_options_default_to_not_given_and_help_shows_the_effective_default():
    assert all(p.default is None for p in cli.run.params if p.name not in
               ("results_dir", "resume", "nproc_per_node", "quiet", "repeat", "controls_of", "methods_of"))
    text = CliRunner().invoke(cli.main, ["run", "--help"], terminal_width=200).output
    assert "the profile's, else 0.2" in text and "[default: (auto)]" in text


def test_a_bad_cli_value_is_one_line_before_anything_is_loaded(tmp_path):
    result = CliRunner().invoke(cli.main, ["run", "--profile", "gtx9999", "--lpr", "x",
                                           "--results-dir", str(tmp_path / "r")])
    assert result.exit_code == 2 and result.stderr.strip() == "error: --lpr: expected a number, got 'x'"


# ------------------------------------------------------------------ a resumed run.json
def test_a_resumed_record_goes_through_the_same_loader(tmp_path):
    record = json.loads(json.dumps(RunConfig(epochs=7).to_dict()))
    assert config_from_record(tmp_path / "run.json", record).epochs == 7
    for key, value, needle in [("epochs", "7", "key 'config.epochs': expected an integer, got '7'"),
                               ("lr_milestones", ["a"], "key 'config.lr_milestones': expected a list of numbers"),
                               ("epoch", 7, "key 'config.epoch' is unknown"),
                               ("batch_size", 0, "key 'config.batch_size' is invalid: --batch-size must be >= 1")]:
        with pytest.raises(RecordError) as e:
            config_from_record(tmp_path / "run.json", {**record, key: value})
        msg = one_line(e)
        assert str(tmp_path / "run.json") in msg and needle in msg, msg
    del record["epochs"]
    with pytest.raises(RecordError, match="key 'config.epochs' is missing"):
        config_from_record(tmp_path / "run.json", record)


def test_a_resumed_run_keeps_its_record_but_its_image_folder(tmp_path):
    recorded = partial_from(RunConfig(epochs=7, data_dir="cifar").to_dict(), record_source(tmp_path / "run.json"),
                            complete=True)
    cfg = resolve(resumed=recorded, given=partial_from({"data_dir": "/data/cifar", "world_size": 2}))
    assert (cfg.epochs, cfg.data_dir, cfg.world_size) == (7, "/data/cifar", 2)
    with pytest.raises(ConfigError, match="--epochs: a resumed run keeps its recorded value"):
        resolve(resumed=recorded, given=partial_from({"epochs": 9}))


def test_records_from_before_a_setting_was_added_still_load(tmp_path):
    record = json.loads(json.dumps(RunConfig().to_dict()))
    del record["interleave"], record["world_size"], record["lasso_until"]
    cfg = config_from_record(tmp_path / "run.json", record)
    assert (cfg.interleave, cfg.world_size, cfg.lasso_until) == (False, 1, 1.0)


# ------------------------------------------------------------------ the three agree
def test_the_three_sources_give_the_same_config(tmp_path):
    values = {"model": "resnet20", "epochs": 3, "batch_size": 64, "max_batch": 256, "lpr": 0.5, "interval": 1,
              "lr_milestones": [0.5], "lasso": "proximal", "adjust_batch": False}
    toml = "".join(f"{k} = {json.dumps(v).lower() if isinstance(v, bool) else json.dumps(v)}\n"
                   for k, v in values.items())
    from_profile = resolve(profile=profile(tmp_path, toml).defaults)
    text = {k: ("off" if v is False else ",".join(map(str, v)) if isinstance(v, list) else str(v))
            for k, v in values.items()}
    from_cli = resolve(given=partial_from(text))
    from_record = config_from_record(tmp_path / "run.json", json.loads(json.dumps(from_cli.to_dict())))
    assert from_profile == from_cli == from_record
    assert all(getattr(from_cli, k) == v for k, v in values.items())
    assert portable_config(from_record, load_profile(tmp_path / "mine.toml"))["epochs"] == 3
