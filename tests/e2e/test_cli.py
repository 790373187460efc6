"""End to end through the command line: `alignkit run --preset smoke`, world export, generate, --help.

`smoke_run` (tests/e2e/conftest.py) is one smoke run shared by the session."""

import json

import pytest
import yaml

from alignkit.cli import main
from alignkit.config import PRESETS_DIR as PRESETS
from alignkit.data.sources import load_records
from alignkit.stages.prefs import pair_schedule

PRETRAIN_KEYS = {"heldout_loss", "heldout_ppl", "vocab_size", "tokens_seen", "params", "train_seconds"}
EVAL_KEYS = {"win_rate_vs_sft", "win_rate_ci", "gold_reward", "rates", "per_category", "kl_to_sft",
             "mean_length", "n_prompts"}
RATE_KEYS = {"helpful", "honest", "harmless", "over_refusal", "proper_ending"}
SFT_KEYS = {"val_loss", "train_examples", "steps", "train_seconds"}
RM_KEYS = {"heldout_accuracy", "accuracy_ceiling", "spearman_gold", "train_seconds", "val_accuracy", "normalization",
           "prior", "heldout_accuracy_head", "heldout_accuracy_prior"}
BON_ROW_KEYS = {"n", "kl", "proxy_reward", "gold_reward", "win_rate_vs_sft", "win_rate_ci", "oracle_gold_reward"}
GRPO_CHECKER_KEYS = {"arithmetic_accuracy_before", "arithmetic_accuracy_after", "arithmetic_accuracy_before_ci",
                     "arithmetic_accuracy_after_ci", "accuracy_draws", "train_seconds"}
STAGE_KEYS = {"pretrain": PRETRAIN_KEYS, "sft": SFT_KEYS, "rm": RM_KEYS, "rm_pairs": RM_KEYS,
              "grpo_arithmetic": GRPO_CHECKER_KEYS}
# Figures a run writes next to its summary.json: the pipeline's, then the report's (alignkit/eval/report.py).
RUN_PNGS = ["best_of_n.png", "rm_curve.png", "frontier.png", "ppo.png",
            "win_rate.png", "overoptimisation.png", "training.png"]


def test_run_writes_every_file_and_documented_key(smoke_run):
    paths = ["summary.json", "config.yaml", "world/pretrain.jsonl", "tokenizer/tokenizer.json",
             "pretrain/model/config.json", "pretrain/model/model.safetensors", "pretrain/model/tokenizer.json",
             "pretrain/metrics.jsonl", "pretrain/summary.json", "pretrain/config.yaml", "pretrain/state/latest",
             "sft/model/model.safetensors", "sft/summary.json", "sft/metrics.jsonl", "eval/summary.json",
             "eval/sft/summary.json", "eval/sft/samples.jsonl", "eval/base_zero_shot/samples.jsonl",
             "eval/base_few_shot/summary.json", "prefs/rankings.jsonl", "prefs/pairs.jsonl",
             "prefs/labels.jsonl", "prefs/heldout.jsonl", "prefs/summary.json", "rm/model/config.json",
             "rm/model/model.safetensors", "rm/metrics.jsonl", "rm/summary.json", "rm_curve/summary.json",
             "rm_pairs/model/model.safetensors",
             "bon/summary.json", "bon/best_of_2/samples.jsonl", "dpo/model/model.safetensors", "dpo/ref_logps.pt",
             "dpo/eval/summary.json", "dpo_beta_0.3/eval/samples.jsonl", "ppo/model/model.safetensors",
             "ppo/value/config.json", "ppo/metrics.jsonl", "ppo/eval/summary.json", "ppo_ptx/summary.json",
             "ppo_ptx/eval/summary.json", "grpo/model/model.safetensors", "grpo/eval/summary.json",
             "grpo_arithmetic/metrics.jsonl", "grpo_arithmetic/eval/samples.jsonl", "report.html", "report.md",
             "dpo_round_2_prefs/rankings.jsonl", "dpo_round_2/model/model.safetensors", "dpo_round_2/eval/summary.json",
             *RUN_PNGS]
    missing = [p for p in paths if not (smoke_run / p).exists()]
    assert not missing, f"not written by the run: {missing}"
    pairs_text = (smoke_run / "report.md").read_text().split("trained on the pairwise comparisons alone")  # rm_pairs
    assert len(pairs_text) == 2 and " per prompt)" in pairs_text[1].split("\n")[0]
    summary = json.loads((smoke_run / "summary.json").read_text())
    assert {"preset", "wall_seconds", "machine", "stages", "models"} <= summary.keys()
    assert summary["preset"] == "smoke"
    # the documented keys of each stage, in the run's summary and in the stage's own summary.json
    for stage, keys in STAGE_KEYS.items():
        assert keys <= summary["stages"][stage].keys(), (stage, sorted(keys - summary["stages"][stage].keys()))
        own = json.loads((smoke_run / stage / "summary.json").read_text())
        assert keys <= own.keys(), (stage, sorted(keys - own.keys()))
    # PPO's snapshots along training, evaluated like the final models (the frontier's PPO path)
    snap = summary["stages"]["ppo"]["snapshots"]
    assert [p["step"] for p in snap] == [1] and (smoke_run / "ppo" / "eval" / "step-1" / "summary.json").is_file()
    assert {"gold_reward", "kl_to_sft", "win_rate_vs_sft", "win_rate_ci"} <= snap[0].keys()
    # every model: the documented EVAL block, on the same held-out prompts
    models = summary["models"]
    for name, model in models.items():
        assert EVAL_KEYS <= model.keys(), (name, sorted(EVAL_KEYS - model.keys()))
        assert -1.0 <= model["gold_reward"] <= 1.0, name
        assert RATE_KEYS == model["rates"].keys(), name
        lo, hi = model["win_rate_ci"]
        assert 0 <= lo <= model["win_rate_vs_sft"] <= hi <= 1, name
        categories = model["per_category"].values()
        assert categories and all({"gold_reward", "n"} <= c.keys() for c in categories), name
    assert len({m["n_prompts"] for m in models.values()}) == 1, {k: m["n_prompts"] for k, m in models.items()}
    assert [row["n"] for row in summary["stages"]["bon"]["curve"]] == [1, 2]
    assert BON_ROW_KEYS <= summary["stages"]["bon"]["curve"][0].keys()
    assert list(models) == ["base_zero_shot", "base_few_shot", "sft", "best_of_2", "ppo", "ppo_round_2", "ppo_ptx",
                            "dpo", "dpo_round_2", "dpo_beta_0.3", "grpo", "grpo_arithmetic"]
    # the second DPO round: preferences on round 1's answers, trained from round 1 with it as reference
    dpo_cfg = yaml.safe_load((smoke_run / "dpo_round_2" / "config.yaml").read_text())
    prefs_cfg = yaml.safe_load((smoke_run / "dpo_round_2_prefs" / "config.yaml").read_text())
    round_1 = str(smoke_run / "dpo" / "model")
    assert dpo_cfg["model"] == dpo_cfg["ref_model"] == prefs_cfg["model"] == round_1
    assert dpo_cfg["data"] == str(smoke_run / "dpo_round_2_prefs" / "rankings.jsonl")
    assert prefs_cfg["heldout_k"] == 0 and prefs_cfg["seed"] == 1
    # the second PPO round: preferences on round 1's answers, a reward model on both rounds', PPO on from round 1
    ppo_cfg = yaml.safe_load((smoke_run / "ppo_round_2" / "config.yaml").read_text())
    rm_cfg = yaml.safe_load((smoke_run / "ppo_round_2_rm" / "config.yaml").read_text())
    assert ppo_cfg["model"] == str(smoke_run / "ppo" / "model") and ppo_cfg["rm"] == str(smoke_run / "ppo_round_2_rm" / "model")
    assert rm_cfg["data"] == f"{smoke_run / 'prefs' / 'rankings.jsonl'},{smoke_run / 'ppo_round_2_prefs' / 'rankings.jsonl'}"
    assert summary["stages"]["ppo_round_2_rm"]["train_comparisons"] > summary["stages"]["rm"]["train_comparisons"]
    for name in ("dpo", "dpo_round_2", "ppo", "ppo_round_2", "ppo_ptx", "grpo", "grpo_arithmetic"):
        assert models[name]["kl_to_sft"] is not None, name
    assert [row["step"] for row in summary["stages"]["ppo"]["curve"]] == [1, 2]
    assert {"reward", "reward/rm", "gold", "kl"} <= summary["stages"]["ppo"]["curve"][0].keys()
    for kind, name in (("ranking", "rankings"), ("pair", "pairs"), ("label", "labels"), ("scored", "heldout")):
        load_records(smoke_run / "prefs" / f"{name}.jsonl", kind)  # every record follows the schema
    assert models["sft"]["win_rate_vs_sft"] == 0.5  # against itself: all ties
    assert models["sft"]["kl_to_sft"] == 0.0
    assert 0.5 <= models["sft"]["ideal_win_rate_vs_sft"] <= 1.0  # the world's ideal answers against SFT's


def test_second_run_skips_unchanged_stages(smoke_run, capfd):
    runs = smoke_run.parent
    before = (smoke_run / "pretrain" / "model" / "model.safetensors").stat().st_mtime_ns
    assert main(["run", "--preset", "smoke", f"runs_dir={runs}", "name=smoke"]) == 0
    err = capfd.readouterr().err  # file-descriptor level: stages after SFT may log from worker processes
    for stage in ("world", "tokenizer", "pretrain", "sft", "eval", "prefs", "rm", "rm_curve", "rm_pairs", "bon", "dpo",
                  "dpo_beta_0.3", "dpo_round_2_prefs", "dpo_round_2", "ppo", "ppo_round_2_prefs", "ppo_round_2_rm",
                  "ppo_round_2", "ppo_ptx", "grpo", "grpo_arithmetic"):
        assert f"{stage}: unchanged, skipped" in err
    assert (smoke_run / "pretrain" / "model" / "model.safetensors").stat().st_mtime_ns == before


def test_generate_from_the_pretrained_model(smoke_run, capsys):
    model = smoke_run / "pretrain" / "model"
    assert main(["generate", "--model", str(model), "--prompt", "Q: What is 2 + 2?\nA:", "max_new_tokens=5",
                 "temperature=0"]) == 0
    assert main(["generate", "--model", str(model), "--prompt", "hi", "chat=true", "n=2",
                 "max_new_tokens=3"]) == 0
    assert "--- sample 2" in capsys.readouterr().out


def test_generate_reports_a_dir_without_weights(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    assert main(["generate", "--model", str(tmp_path), "--prompt", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alignkit: error:") and str(tmp_path) in err and "\n" not in err


def test_world_export_follows_the_record_schema(tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["world", "export", "--out", str(out), "corpus_docs=50", "heldout_per_category=2"]) == 0
    kinds = {"pretrain": "text", "sft": "chat", "prompts": "prompt", "eval_prompts": "prompt",
             "pairs": "pair", "rankings": "ranking", "labels": "label"}
    for name, kind in kinds.items():
        assert load_records(out / f"{name}.jsonl", kind), name  # validates every record
    (out / "sft.jsonl").write_text("mine\n")
    assert main(["world", "export", "--out", str(out)]) == 2  # what is there is kept
    assert "is not empty; pass --overwrite" in capsys.readouterr().err
    assert (out / "sft.jsonl").read_text() == "mine\n"
    assert main(["world", "export", "--out", str(out), "--overwrite", "corpus_docs=50"]) == 0
    assert load_records(out / "sft.jsonl", "chat")


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["pretrain", "--help"], ["world", "export", "--help"],
                                  ["generate", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "usage: alignkit" in capsys.readouterr().out


def test_empty_corpus_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert main(["pretrain", f"data={empty}", f"out={tmp_path / 'out'}"]) == 2
    assert "empty.jsonl: no records" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_interrupted_pretraining_resumes_in_the_pipeline(tmp_path, capsys):
    args = ["run", "--preset", "smoke", f"runs_dir={tmp_path}", "name=cut", "workers=1", "report=false"]
    assert main(args) == 0
    pre = tmp_path / "cut" / "pretrain"
    (pre / "summary.json").unlink()  # as if the run died after its last checkpoint
    (pre / "state" / "latest").write_text("step-000003\n")
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "pretrain: resuming" in err and "(step 3)" in err
    assert "world: unchanged, skipped" in err
    steps = [json.loads(line)["step"] for line in open(pre / "metrics.jsonl")]
    assert steps == list(range(1, 7))


@pytest.mark.parametrize("command, hint", [("run", "run the same command again"),
                                           ("dpo", "add resume=true to the same command"),
                                           ("prefs", "run it again with overwrite=true")])
def test_an_interrupt_says_how_to_resume(command, hint, capsys, monkeypatch):
    def stop(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(f"alignkit.cli.cmd_{command}", stop)
    assert main([command]) == 130
    err = capsys.readouterr().err
    assert err.startswith("alignkit: interrupted (") and hint in err


def test_sigterm_stops_a_command_as_an_interrupt_does(capsys, monkeypatch):
    """`kill` / a scheduler's SIGTERM takes the Ctrl-C path (which also stops `alignkit run`'s workers)."""
    import os
    import signal
    import time

    def killed(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this

    monkeypatch.setattr("alignkit.cli.cmd_dpo", killed)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["dpo"]) == 130
    assert "alignkit: interrupted (to resume, add resume=true" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before  # restored after the command


def test_a_second_interrupt_does_not_break_off_the_stopping(capsys, monkeypatch):
    """Ctrl-C pressed again while a command stops (checkpoint, workers) says how to quit at once instead of
    breaking the clean-up off with a traceback; a third press quits at once."""
    import os
    import signal
    import time

    stopped, quits = [], []

    def interrupted_twice(args):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        finally:  # the cleanup a stage or alignkit run does on the way out
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
            stopped.append(True)

    monkeypatch.setattr("alignkit.cli.cmd_ppo", interrupted_twice)
    before = signal.getsignal(signal.SIGINT)
    assert main(["ppo"]) == 130
    assert stopped == [True]
    err = capsys.readouterr().err
    assert "press Ctrl-C again to quit at once" in err and "alignkit: interrupted (to resume, add resume=true" in err
    assert signal.getsignal(signal.SIGINT) is before

    from alignkit.cli import _interrupt_once

    previous = _interrupt_once(exit_fn=quits.append)
    try:
        handler = signal.getsignal(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGINT, None)
        handler(signal.SIGINT, None)
        handler(signal.SIGTERM, None)
        assert quits == [130]
    finally:
        for signum, h in previous.items():
            signal.signal(signum, h)


def test_chat_command_reads_stdin(smoke_run, capsys, monkeypatch):
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO("Where does Mira live?\n/reset\n/quit\n"))
    assert main(["chat", "--model", str(smoke_run / "sft" / "model"), "max_new_tokens=4", "seed=1"]) == 0
    assert capsys.readouterr().out  # a reply was streamed


def test_eval_command_with_reference(smoke_run, tmp_path, capsys):
    model = smoke_run / "sft" / "model"
    out = tmp_path / "ev"
    args = ["eval", "--model", str(model), "--reference", str(smoke_run / "pretrain" / "model"),
            "--world-config", str(PRESETS / "smoke" / "world.yaml"), f"out={out}", "n_per_category=1",
            "max_new_tokens=4", "progress=false"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {"win_rate_vs_reference", "win_rate_vs_reference_ci", "kl_to_reference", "kl_to_reference_k3"} <= summary.keys()
    assert summary["kl_to_reference"] == summary["kl_to_reference"]  # finite
    assert len((out / "samples.jsonl").read_text().splitlines()) == summary["n_prompts"] == 8
    assert "win vs reference" in capsys.readouterr().out
    before = (out / "samples.jsonl").read_text()
    assert main(args + ["n_per_category=2"]) == 2  # an earlier evaluation is kept
    assert "already holds an evaluation" in capsys.readouterr().err
    assert (out / "samples.jsonl").read_text() == before
    assert main(args + ["n_per_category=2", "overwrite=true"]) == 0
    assert len((out / "samples.jsonl").read_text().splitlines()) == 16


def test_eval_command_against_stored_samples(smoke_run, tmp_path, capsys):
    """--reference-samples: the win rate is against the stored answers' gold scores (no reference sampled);
    a file of other prompts is refused with one line."""
    world = str(PRESETS / "smoke" / "world.yaml")
    base = ["eval", "--model", str(smoke_run / "sft" / "model"), "--world-config", world, "n_per_category=1",
            "max_new_tokens=4", "progress=false"]
    assert main(base + [f"out={tmp_path / 'first'}"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "first" / "samples.jsonl").read_text().splitlines()]
    below = tmp_path / "below.jsonl"  # every stored answer worse than any the oracle gives (≥ −1)
    below.write_text("".join(json.dumps({**r, "gold": -2.0}) + "\n" for r in rows))
    assert main(base + ["--reference-samples", str(below), f"out={tmp_path / 'second'}", "temperature=0.3"]) == 0
    summary = json.loads((tmp_path / "second" / "summary.json").read_text())
    assert summary["win_rate_vs_reference"] == 1.0 and summary["reference_samples"] == str(below)
    assert "kl_to_reference" not in summary  # no reference model given
    short = tmp_path / "short.jsonl"
    short.write_text("".join(json.dumps(r) + "\n" for r in rows[:-1]))
    capsys.readouterr()
    assert main(base + ["--reference-samples", str(short), f"out={tmp_path / 'third'}"]) != 0
    err = capsys.readouterr().err.strip()
    assert "short.jsonl: 7 records, expected a samples.jsonl of these 8 held-out prompts" in err and "\n" not in err
    assert not (tmp_path / "third").exists()
    for name, change, message in (("nogold", {"gold": "high"}, "nogold.jsonl:3: field 'gold' is 'high'"),
                                  ("moved", {"prompt": "Another question?"}, "moved.jsonl:3: field 'prompt' is not")):
        bad = tmp_path / f"{name}.jsonl"
        bad.write_text("".join(json.dumps({**r, **(change if i == 2 else {})}) + "\n" for i, r in enumerate(rows)))
        assert main(base + ["--reference-samples", str(bad), f"out={tmp_path / 'third'}"]) == 2
        assert message in capsys.readouterr().err


def test_prefs_rm_bon_dpo_commands(smoke_run, tmp_path, capsys):
    world = str(PRESETS / "smoke" / "world.yaml")
    sft = smoke_run / "sft" / "model"
    assert main(["prefs", "--world-config", world, f"model={sft}", f"out={tmp_path / 'prefs'}", "n_prompts=6", "k=2",
                 "max_new_tokens=4", "heldout_k=2", "progress=false"]) == 0
    for name, kind in (("rankings", "ranking"), ("heldout", "scored")):
        load_records(tmp_path / "prefs" / f"{name}.jsonl", kind)
    assert main(["rm", f"model={sft}", f"data={smoke_run / 'prefs' / 'rankings.jsonl'}", f"out={tmp_path / 'rm'}",
                 "max_steps=2", "progress=false", f"eval_data={tmp_path / 'prefs' / 'heldout.jsonl'}"]) == 0
    assert main(["bon", "--world-config", world, f"model={sft}", f"rm={tmp_path / 'rm' / 'model'}",
                 f"out={tmp_path / 'bon'}", "n=[1,2]", "eval.n_per_category=1", "eval.max_new_tokens=4",
                 "eval.progress=false"]) == 0
    assert "oracle-selected gold" in capsys.readouterr().out
    assert main(["dpo", f"model={sft}", f"data={smoke_run / 'prefs' / 'rankings.jsonl'}", f"out={tmp_path / 'dpo'}",
                 "loss=listwise", "max_steps=2", "progress=false"]) == 0
    # an existing run is never overwritten by accident
    assert main(["bon", "--world-config", world, f"model={sft}", f"rm={tmp_path / 'rm' / 'model'}",
                 f"out={tmp_path / 'bon'}"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert not list(tmp_path.glob(".*.lock"))  # each command's lock on its out is gone with it


def test_a_stage_command_refuses_an_out_in_use(tmp_path, capsys):
    from alignkit.pipeline import RUN_LOCK, _flock

    out = tmp_path / "sft"
    other = _flock(tmp_path / ".sft.lock", owner=True)  # another command writing to the same out
    try:
        assert main(["sft", f"out={out}", "model=nope"]) == 2
        err = capsys.readouterr().err
        assert f"{out} is in use by another alignkit command (process " in err and "\n" not in err.strip()
        assert not out.exists()
    finally:
        other.close()
    assert main(["sft", f"out={out}", "model=nope"]) == 2  # free again: stops at its own check of the model
    assert "model directory nope does not exist" in capsys.readouterr().err
    assert not (tmp_path / ".sft.lock").exists()
    run = _flock(tmp_path / RUN_LOCK, owner=True)  # tmp_path is the folder of a running `alignkit run`
    try:
        assert main(["rm", f"out={tmp_path / 'rm'}", "model=nope", "data=x.jsonl"]) == 2
        assert f"{tmp_path} is in use by an alignkit run" in capsys.readouterr().err
    finally:
        run.close()
    assert main(["rm", f"out={tmp_path / 'rm'}", "model=nope", "data=x.jsonl"]) == 2  # the run has ended
    assert "in use" not in capsys.readouterr().err


def test_preferences_are_collected_in_parts_and_merged(smoke_run):
    parts = [load_records(smoke_run / "prefs-parts" / str(i) / "rankings.jsonl", "ranking") for i in range(2)]
    merged = load_records(smoke_run / "prefs" / "rankings.jsonl", "ranking")
    prompts = [{r["prompt"] for r in p} for p in parts]
    assert prompts[0] and prompts[1] and not prompts[0] & prompts[1]  # each part its own prompts
    assert [r["prompt"] for r in merged] == [r["prompt"] for p in parts for r in p]
    summary = json.loads((smoke_run / "prefs" / "summary.json").read_text())
    own = [json.loads((smoke_run / "prefs-parts" / str(i) / "summary.json").read_text()) for i in range(2)]
    assert summary["parts"] == 2 and summary["prompts"] == sum(s["prompts"] for s in own)
    assert summary["records"]["heldout"] == sum(s["records"]["heldout"] for s in own)


def test_eval_says_why_a_reference_on_another_tokenizer_has_no_kl(smoke_run, tmp_path, capsys):
    from alignkit.models.load import build_config, new_model, save_model
    from alignkit.models.tokenizer import train_tokenizer

    other = train_tokenizer(["Another corpus entirely, with other words."] * 3, vocab_size=300)
    save_model(new_model(build_config("llama", "smoke", other), seed=0), other, tmp_path / "other")
    out = tmp_path / "ev"
    assert main(["eval", "--model", str(smoke_run / "sft" / "model"), "--reference", str(tmp_path / "other"),
                 "--world-config", str(PRESETS / "smoke" / "world.yaml"), f"out={out}", "n_per_category=1",
                 "max_new_tokens=4", "progress=false"]) == 0
    assert "eval: no KL to" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert "win_rate_vs_reference" in summary and "kl_to_reference" not in summary


def test_preferences_compare_answers_in_independent_pairs(smoke_run, tmp_path):
    """pairs_per_prompt: the answers' pairs in pair_schedule's order, each with a label of its own, as far as
    a prompt's answers go; the rankings and the first comparisons are the same whatever the number of
    comparisons asked for."""
    world = str(PRESETS / "smoke" / "world.yaml")
    sft = smoke_run / "sft" / "model"
    files = {}
    for n in (1, 2, 6):
        out = tmp_path / f"p{n}"
        assert main(["prefs", "--world-config", world, f"model={sft}", f"out={out}", "n_prompts=12", "k=4",
                     f"pairs_per_prompt={n}", "max_new_tokens=6", "temperature=1.5", "heldout_k=0",
                     "progress=false"]) == 0
        files[n] = {name: [json.loads(line) for line in open(out / f"{name}.jsonl")]
                    for name in ("rankings", "pairs", "labels")}
    one, two, six = files[1], files[2], files[6]
    assert one["rankings"] == two["rankings"] == six["rankings"]
    first = [r for r in two["pairs"] + two["labels"] if r["meta"]["comparison"] == 1]
    assert sorted(json.dumps(r, sort_keys=True) for r in first) == \
        sorted(json.dumps(r, sort_keys=True) for r in one["pairs"] + one["labels"])
    answers = {r["prompt"]: r["responses"] for r in six["rankings"]}
    assert any(len(a) == 4 for a in answers.values())
    for n, got in ((2, two), (6, six)):
        shown = {}
        for r in got["pairs"] + got["labels"]:
            shown.setdefault(r["prompt"], []).append((r["meta"]["comparison"],
                                                      sorted(r.get("responses") or [r["chosen"], r["rejected"]])))
        for prompt, a in answers.items():  # every prompt: its first n pairs in schedule order, once each
            expected = [sorted([a[x], a[y]]) for x, y in pair_schedule(len(a))[:n]]
            assert [pair for _, pair in sorted(shown[prompt])] == expected
            assert [c for c, _ in sorted(shown[prompt])] == list(range(1, len(expected) + 1))


def test_the_labeller_writes_the_ideal_answer_where_every_shown_answer_fails(smoke_run, tmp_path, monkeypatch):
    """ideal_unsolved=1 (and no random ideal answers): a ranking holds a labeller-written answer exactly when
    none of the sampled answers it shows does what the prompt asks; ideal_unsolved=0 writes none. The policy's
    answers are replaced by the ideal answer on every second prompt, so both cases occur."""
    from dataclasses import asdict

    from alignkit.config import WorldConfig, load_config
    from alignkit.stages import prefs
    from alignkit.world import build_world
    from alignkit.world.oracle import Labeller

    world = build_world(**asdict(load_config(WorldConfig, config_file=PRESETS / "smoke" / "world.yaml")))
    tasks = {t.prompt: t for t in world.tasks("train")}
    labeller = Labeller(world.oracle)

    def answers(model, tokenizer, ts, k, *args, **kwargs):
        return [[t.ideal if i % 2 else "Blue.", "Blue green.", "Red.", "Red green."][:k] for i, t in enumerate(ts)]

    monkeypatch.setattr(prefs, "_sample_groups", answers)
    written, solved = {}, 0
    for p in (0, 1):
        out = tmp_path / f"u{p}"
        assert main(["prefs", "--world-config", str(PRESETS / "smoke" / "world.yaml"),
                     f"model={smoke_run / 'sft' / 'model'}", f"out={out}", "n_prompts=12", "ideal_fraction=0",
                     f"ideal_unsolved={p}", "heldout_k=0", "progress=false"]) == 0
        rows = [json.loads(line) for line in open(out / "rankings.jsonl")]
        written[p] = sum(bool(r["meta"]["labeller_written"]) for r in rows)
        for r in rows:
            task = tasks[r["prompt"]]
            sampled = [x for i, x in enumerate(r["responses"]) if i not in r["meta"]["labeller_written"]]
            ok = any(labeller.acceptable(task, x) for x in sampled)
            solved += ok
            if p:
                assert bool(r["meta"]["labeller_written"]) == (not ok)
    assert written[0] == 0 and 0 < written[1] < 12 and solved > 0


def test_every_held_out_prompt_is_sampled_once_whatever_the_labeller_wrote(smoke_run, tmp_path):
    """The labeller's ideal answers are placed by a random draw; it must not change which held-out prompts a
    part samples (it once did: a part could sample the other part's half, or skip the first prompt)."""
    from dataclasses import asdict

    from alignkit.config import WorldConfig, load_config
    from alignkit.world import build_world

    world = build_world(**asdict(load_config(WorldConfig, config_file=PRESETS / "smoke" / "world.yaml")))
    held = [t.prompt for t in world.tasks("heldout")]
    for seed in range(4):
        out = tmp_path / f"s{seed}"
        assert main(["prefs", "--world-config", str(PRESETS / "smoke" / "world.yaml"), f"model={smoke_run / 'sft' / 'model'}",
                     f"out={out}", "n_prompts=6", "ideal_fraction=1", f"seed={seed}", "max_new_tokens=3",
                     "heldout_k=1", "progress=false"]) == 0
        assert [json.loads(line)["prompt"] for line in open(out / "heldout.jsonl")] == held
