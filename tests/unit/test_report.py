"""The run report: written from a finished run's files alone (a small fake run here), self-contained HTML,
escaped answers, and "not in this run" instead of a crash when a stage is missing."""

import base64
import json
import re

import pytest

from alignkit.errors import AlignkitError
from alignkit.eval.report import pick_prompts, write_report

SECTIONS = ("Run", "Model comparison", "Win rate vs SFT", "Reward vs KL frontier", "Overoptimisation",
            "Reward model", "Training curves", "Side-by-side samples")
NASTY = "<script>alert('x')</script> & <b>1 < 2</b>"


def _eval(win: float, gold: float, kl: float | None) -> dict:
    return {"win_rate_vs_sft": win, "win_rate_vs_sft_ci": [win - 0.05, win + 0.05], "gold_reward": gold,
            "rates": {"helpful": 0.8, "honest": 0.5, "harmless": None, "over_refusal": 0.0, "proper_ending": 1.0},
            "per_category": {}, "kl_to_sft": kl, "mean_length": 12.5, "n_prompts": 4}


def _curve(n: int, **extra) -> list[dict]:
    return [{"step": i + 1, "reward": 0.1 * i, "gold": 0.5 + 0.01 * i, "kl": 0.2 * i, **extra} for i in range(n)]


def _jsonl(path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_run(root, *, rl: bool = True):
    """A finished run as `alignkit run` lays it out, small: 2 categories × 2 prompts, a few logged steps."""
    models = {"base_zero_shot": _eval(0.2, -0.2, None), "base_few_shot": _eval(0.3, 0.1, None),
              "sft": _eval(0.5, 0.5, 0.0) | {"ideal_win_rate_vs_sft": 0.76}, "best_of_4": _eval(0.6, 0.6, 0.64), "dpo": _eval(0.58, 0.62, 1.5),
              "dpo_beta_0.3": _eval(0.55, 0.6, 2.0)}
    stages = {"pretrain": {"train_seconds": 30.0, "params": 1000}, "sft": {"train_seconds": 5.0},
              "rm": {"heldout_accuracy": 0.75, "accuracy_ceiling": 0.88, "objective": "plackett_luce",
                     "train_prompts": 100, "per_category": {"fact": {"accuracy": 0.8, "n_pairs": 10}}},
              "bon": {"curve": [{"n": n, "kl": kl, "proxy_reward": 0.3 * i, "gold_reward": 0.5 + 0.05 * i,
                                 "win_rate_vs_sft": 0.5, "oracle_gold_reward": 0.5 + 0.1 * i}
                                for i, (n, kl) in enumerate([(1, 0.0), (2, 0.19), (4, 0.64)])],
                      "sft_gold_reward": 0.5, "seconds": 3.0, "samples_per_prompt": 4},
              "dpo": {"train_seconds": 4.0, "beta": 0.1, "loss": "sigmoid"},
              "dpo_beta_0.3": {"train_seconds": 4.0, "beta": 0.3, "loss": "sigmoid"}}
    if rl:
        models |= {"ppo": _eval(0.61, 0.65, 0.9), "ppo_ptx": _eval(0.6, 0.64, 0.8), "grpo": _eval(0.57, 0.6, 0.7)}
        stages |= {"ppo": {"train_seconds": 6.0, "curve": _curve(8, **{"reward/rm": 0.3})},
                   "ppo_ptx": {"train_seconds": 6.5, "curve": _curve(8, **{"reward/rm": 0.2})},
                   "grpo": {"train_seconds": 7.0, "curve": _curve(8)},
                   "grpo_arithmetic": {"train_seconds": 3.0, "arithmetic_accuracy_before": 0.425,
                                       "arithmetic_accuracy_before_ci": [0.35, 0.5], "arithmetic_accuracy_after": 0.5,
                                       "arithmetic_accuracy_after_ci": [0.4, 0.6], "accuracy_draws": 4},
                   "rm_curve": {"points": [{"form": f, "prompts": p, "heldout_accuracy": 0.6 + p / 1000,
                                            "heldout_accuracy_per_seed": [0.59 + p / 1000, 0.61 + p / 1000]}
                                           for f in ("pairs", "rankings") for p in (8, 16)],
                                "seeds": 2, "rankings_match_pairs": {"pairs_prompts": 16, "pairs_accuracy": 0.616,
                                                                     "rankings_prompts": 16, "bound": "interpolated"}}}
    (root / "summary.json").write_text(json.dumps({"preset": "tiny", "wall_seconds": 61.0, "stages": stages,
                                                   "models": models, "machine": {"cpus": 2, "device": "cpu",
                                                                                 "torch": "2.6.0"}}))
    _jsonl(root / "pretrain" / "metrics.jsonl", [{"step": s, "pretrain/loss": 7.0 / s} for s in range(1, 6)]
           + [{"step": 6, "pretrain/loss": 1.0, "pretrain/heldout_loss": 1.2}])
    _jsonl(root / "dpo" / "metrics.jsonl", [{"step": s, "dpo/loss": 0.69 - 0.01 * s} for s in range(1, 6)])
    if rl:
        for name in ("ppo", "ppo_ptx", "grpo"):
            prefix = name.split("_")[0]  # PPO-ptx logs under ppo/, like the β sweep under dpo/
            _jsonl(root / name / "metrics.jsonl", [{"step": r["step"], **{f"{prefix}/{k}": v for k, v in r.items()},
                                                    f"{prefix}/ptx/loss": 2.0} for r in stages[name]["curve"]])
    prompts = [("fact", "Where is A?"), ("fact", "Where is B?"), ("harmful", "How to X?"), ("harmful", "How to Y?")]
    for name, where in (("base_few_shot", "eval/base_few_shot"), ("sft", "eval/sft"), ("dpo", "dpo/eval"),
                        *((("ppo", "ppo/eval"), ("grpo", "grpo/eval")) if rl else ())):
        # the first fact prompt gets the same answer from every model, so the report should show the second
        answers = ["A is in C.", f"B is in {name}.", NASTY if name == "sft" else "No.", "No."]
        _jsonl(root / where / "samples.jsonl",
               [{"prompt": p, "category": c, "response": a, "gold": 0.5, "finished": True}
                for (c, p), a in zip(prompts, answers)])
    return root


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("demo"))
    files = write_report(run)
    return files, files["html"].read_text(), files["md"].read_text()


def test_the_report_has_every_section_and_figure(full_report):
    files, page, md = full_report
    assert files["html"].name == "report.html" and files["md"].name == "report.md"
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page and f"\n## {title}\n" in md
    for name in ("win_rate", "frontier", "overoptimisation", "rm_curve", "training"):
        assert files[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name}.png)" in md  # beside report.md in the run dir
    # table order: base, SFT, best-of-n, PPO, DPO then its β sweep, GRPO
    labels = ["Base, zero-shot", "Base, few-shot", "| SFT |", "Best-of-4", "| PPO |", "| PPO-ptx |", "DPO, β 0.1",
              "DPO, β 0.3", "GRPO (reward model)"]
    table = md.split("## Model comparison")[1].split("## Win rate")[0]
    assert [table.index(x) for x in labels] == sorted(table.index(x) for x in labels)
    assert "The world's ideal answers against SFT's: win rate 0.76" in table  # the scale of the win rates
    assert "pairs reach 0.616 with 16 prompts; rankings reach it with about 16 (means of 2 seeds)" in md


def test_the_verifiable_reward_run_shows_its_accuracy_before_and_after(full_report):
    _, page, md = full_report
    line = ("GRPO, arithmetic checker: arithmetic accuracy on its held-out prompts 42.5% [35.0%, 50.0%] (SFT) → "
            "50.0% [40.0%, 60.0%], 4 sample(s) per prompt: +7.5 points.")
    assert line in md and line in page


def test_the_html_is_self_contained(full_report):
    _, page, _ = full_report
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) == 5
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"
    assert not re.search(r"https?://|<link|<script|@import|url\(", page)


def test_answers_are_escaped_and_chosen_where_the_models_differ(full_report):
    _, page, md = full_report
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;1 &lt; 2&lt;/b&gt;" in page
    assert NASTY not in page and "<script>" not in md and "<b>" not in md
    assert "Where is B?" in page and "Where is A?" not in page


def test_a_run_without_ppo_and_grpo_still_gets_a_report(tmp_path):
    files = write_report(make_run(tmp_path, rl=False))
    page = files["html"].read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page
    assert "Not in this run: PPO" in page and "rm_curve" not in files and "overoptimisation" in files
    assert ">PPO<" not in page  # no table row


def test_an_empty_summary_gives_not_in_this_run_lines(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"preset": "smoke", "stages": {}, "models": {}}))
    files = write_report(tmp_path)
    assert set(files) == {"html", "md"}
    assert files["html"].read_text().count("Not in this run") >= 6


def test_a_directory_that_is_not_a_finished_run_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(AlignkitError, match="no such run directory"):
        write_report(tmp_path / "missing")
    with pytest.raises(AlignkitError, match="summary.json: not found"):
        write_report(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(AlignkitError, match="not valid JSON"):
        write_report(tmp_path)
    for broken in ({"stages": {}, "models": []}, {"stages": {}, "models": {"ppo": None}}):
        (tmp_path / "summary.json").write_text(json.dumps(broken))
        with pytest.raises(AlignkitError, match="must map each name to an object"):
            write_report(tmp_path)
    for stage_summary in ({}, {"steps": 3, "curve": []}):  # e.g. a bon or ppo folder: no report, nothing written
        (tmp_path / "summary.json").write_text(json.dumps(stage_summary))
        with pytest.raises(AlignkitError, match="not the summary of an `alignkit run`"):
            write_report(tmp_path)
        assert not (tmp_path / "report.html").exists()

    from alignkit.cli import main

    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alignkit: error:") and err.count("\n") == 1


def test_pick_prompts_takes_the_first_prompt_whose_answers_differ_per_category():
    a = {("x", "p1"): {"response": "same"}, ("x", "p2"): {"response": "a"}, ("y", "q1"): {"response": "same"}}
    b = {("x", "p1"): {"response": "same"}, ("x", "p2"): {"response": "b"}, ("y", "q1"): {"response": "same"}}
    assert pick_prompts({"m1": a, "m2": b}) == [("x", "p2"), ("y", "q1")]
