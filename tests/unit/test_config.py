import pytest

from alignkit.cli import main
from alignkit.config import DPOConfig, PretrainConfig, RunConfig, load_config, preset_file, read_yaml
from alignkit.errors import ConfigError


def test_defaults_yaml_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("max_steps: 7\nlr: 1e-3\n")
    cfg = load_config(PretrainConfig, config_file=f, overrides=["batch_size=3", "resume=true"])
    assert (cfg.max_steps, cfg.lr, cfg.batch_size, cfg.resume) == (7, 1e-3, 3, True)
    assert cfg.block_size == PretrainConfig().block_size


def test_nested_override_and_presets():
    cfg = load_config(RunConfig, overrides=["pretrain.max_steps=5", "world.n_people=3"])
    assert cfg.pretrain.max_steps == 5 and cfg.world.n_people == 3
    for preset in ("smoke", "tiny"):
        assert preset_file(preset, "pretrain").is_file()


@pytest.mark.parametrize("override, message", [
    ("max_stpes=5", "unknown key 'max_stpes'; did you mean 'max_steps'?"),
    ("max_steps=abc", "key 'max_steps' must be an integer, got 'abc'"),
    ("max_steps=0", "key 'max_steps' must be >= 1, got 0"),
    ("lr=-1", "key 'lr' must be > 0"),
    ("lr=nan", "key 'lr' must be a finite number, got nan"),
    ("lr=inf", "key 'lr' must be a finite number, got inf"),
    ("arch=mamba", "key 'arch' must be one of llama, qwen2, gpt2, got 'mamba'"),
    ("resume=maybe", "key 'resume' must be true or false"),
    ("heldout_fraction=0.9", "key 'heldout_fraction' must be > 0 and <= 0.5"),
    ("nokey", "override 'nokey' is not key=value"),
])
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(PretrainConfig, overrides=[override])
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_yaml_errors_name_file_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("max_steps: 5\nlr: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+"):
        load_config(PretrainConfig, config_file=f)
    g = tmp_path / "typo.yaml"
    g.write_text("max_step: 5\n")
    with pytest.raises(ConfigError, match=r"unknown key 'max_step' in .*typo.yaml; did you mean 'max_steps'"):
        load_config(PretrainConfig, config_file=g)
    # a bad key=value beside a good file is not blamed on the file, and a bad file key beside good overrides is
    good = tmp_path / "good.yaml"
    good.write_text("max_steps: 5\nlr: 0.001\n")
    with pytest.raises(ConfigError) as e:
        load_config(PretrainConfig, config_file=good, overrides=["threads=x"])
    assert str(e.value) == "key 'threads' must be an integer, got 'x'"
    with pytest.raises(ConfigError) as e:
        load_config(PretrainConfig, config_file=good, overrides=["max_stepz=5"])
    assert str(e.value).startswith("unknown key 'max_stepz'; did you mean")
    neg = tmp_path / "neg.yaml"
    neg.write_text("lr: -1\n")
    with pytest.raises(ConfigError, match=r"key 'lr' in .*neg.yaml must be > 0"):
        load_config(PretrainConfig, config_file=neg, overrides=["max_steps=7"])
    with pytest.raises(ConfigError) as e:  # the file's value, replaced on the command line by a bad one
        load_config(PretrainConfig, config_file=good, overrides=["lr=-2"])
    assert str(e.value) == "key 'lr' must be > 0, got -2.0"


def test_cli_reports_config_errors_with_exit_2(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["pretrain", f"out={out}", "max_steps=-3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "alignkit: error: key 'max_steps' must be >= 1, got -3"
    assert not out.exists()  # nothing written before validation passed
    assert main(["run", "--preset", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("override", ["sft.data=mine.jsonl", "dpo.out=/tmp/elsewhere", "grpo.reward=oracle"])
def test_run_refuses_the_stage_keys_it_sets(override, tmp_path, capsys):
    assert main(["run", "--preset", "smoke", f"runs_dir={tmp_path}", override]) == 2
    key = override.split("=")[0]
    assert f"alignkit: error: {key} is set by `alignkit run`" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("override, message", [
    ("rm_curve=[abc]", "key 'rm_curve' must be a list of integers, got ['abc']"),
    ("rm_curve=[1.5]", "key 'rm_curve' must be a list of integers, got [1.5]"),
    ("rm_curve=[100, 1]", "key 'rm_curve' must be >= 2 each, got [100, 1]"),
    ("dpo_betas=[x]", "key 'dpo_betas' must be a list of finite numbers, got ['x']"),
    ("dpo_betas=[-1]", "key 'dpo_betas' must be > 0 each, got [-1.0]"),
    ("bon.n=[0]", "key 'bon.n' must be >= 1 each, got [0]"),
    ("ppo.snapshots=[abc]", "key 'ppo.snapshots' must be a list of integers, got ['abc']"),
])
def test_list_elements_are_checked(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(RunConfig, overrides=[override])
    assert message in str(e.value)


def test_typed_lists_read_numbers_and_comma_lists():
    cfg = load_config(RunConfig, overrides=["dpo_betas=[1, 0.5]", "rm_curve=10,20", "eval.categories=fact,story"])
    assert cfg.dpo_betas == [1.0, 0.5] and isinstance(cfg.dpo_betas[0], float)
    assert cfg.rm_curve == [10, 20] and cfg.eval.categories == ["fact", "story"]


@pytest.mark.parametrize("override, message", [
    ("eval.categories=[nosuch]", "eval.categories: unknown categories ['nosuch']"),
    ("grpo_checker_categories=[nosuch]", "grpo_checker_categories: unknown categories ['nosuch']"),
    ("ppo.snapshots=[99]", "ppo.snapshots: [99] beyond ppo.steps="),
    ("grpo_checker=nosuch_module_xyz:f", "grpo_checker: "),
    ("name=", "name='': the run's folder under runs_dir"),
    ("name=..", "name='..': the run's folder under runs_dir"),
    ("name=a/b", "name='a/b': the run's folder under runs_dir"),
])
def test_run_checks_stage_values_before_any_work(override, message, tmp_path, capsys):
    assert main(["run", "--preset", "smoke", f"runs_dir={tmp_path}", override]) == 2
    err = capsys.readouterr().err
    assert f"alignkit: error: {message}" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_help_lists_keys(capsys):
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "max_steps=300" in text and "resume=False" in text


def test_run_help_shows_the_tiny_presets_values(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    tiny = read_yaml(preset_file("tiny", "pretrain"))["max_steps"]
    assert tiny != PretrainConfig().max_steps and f"pretrain.max_steps={tiny}  " in text
    loss = read_yaml(preset_file("tiny", "dpo"))["loss"]
    assert loss != DPOConfig().loss and f"dpo.loss={loss!r}" in text and "keys (key=value of the tiny preset" in text


def test_eval_takes_a_preset(capsys):
    assert main(["eval", "--preset", "nope", "--model", "x"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err


def test_every_preset_loads_as_alignkit_run_builds_it(monkeypatch, capsys):
    """`alignkit run --preset P` for every preset directory, stopped where the recipe would start: every file is
    one the command reads (a misnamed stage file would be ignored silently), every key is a real key, and the
    small preset's model is bigger than tiny's."""
    from pathlib import Path

    import alignkit.cli as cli
    from alignkit import pipeline
    from alignkit.config import PRESETS_DIR, read_yaml
    from alignkit.models.load import resolve_size

    built: dict[str, RunConfig] = {}
    read: set[Path] = set()
    monkeypatch.setattr(pipeline, "run", lambda cfg: built.setdefault(cfg.preset, cfg))
    monkeypatch.setattr(pipeline, "print_table", lambda summary: None)
    monkeypatch.setattr(cli, "read_yaml", lambda path: read.add(Path(path)) or read_yaml(path))
    presets = sorted(p.name for p in PRESETS_DIR.iterdir() if p.is_dir())
    assert {"smoke", "tiny", "small"} <= set(presets)
    for preset in presets:
        assert main(["run", "--preset", preset]) == 0, capsys.readouterr().err
    assert sorted(built) == presets
    unread = sorted(str(p.relative_to(PRESETS_DIR)) for p in set(PRESETS_DIR.glob("*/*.yaml")) - read)
    assert not unread, f"preset files `alignkit run` does not read: {unread}"
    tiny, small = resolve_size(built["tiny"].pretrain.size), resolve_size(built["small"].pretrain.size)
    assert all(small[k] >= tiny[k] for k in tiny) and small["hidden_size"] > tiny["hidden_size"], (tiny, small)
