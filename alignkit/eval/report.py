"""The run report: one page of what a finished run found — ``runs/<name>/report.html`` (self-contained: inline CSS,
every figure embedded as a ``data:image/png`` URI) and ``report.md`` (the same text, the PNGs beside it).

Everything is read from what the run wrote and nothing is recomputed: ``summary.json`` (stage summaries and every
model's evaluation), ``<stage>/metrics.jsonl`` (training curves) and each model's ``samples.jsonl`` (answers side by
side). No model is loaded and torch is not imported, so a report takes about a second. A stage or model the run
did not have (``run_ppo=false``, the smoke preset) becomes a "not in this run" line.

    alignkit report runs/demo
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from alignkit.errors import AlignkitError
from alignkit.eval import plots
from alignkit.eval.curve import match_sentence
from alignkit.eval.plots import dpo_beta, model_family, model_label

# Table order of the evaluated models, by name or else by family (β sweep rows after the main DPO row, by β).
SAMPLE_MODELS = ("base_few_shot", "sft", "ppo", "dpo", "grpo")  # the side-by-side answers
WINDOW = 5  # running mean over RL iterations in the over-optimisation and training figures


# ----------------------------------------------------------------------------------------------------
# the page as data: sections of blocks, rendered once as HTML and once as Markdown

@dataclass
class Text:
    text: str
    note: bool = False  # a "not in this run" line, shown muted


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    numeric: bool = False  # right-align every column but the first


@dataclass
class Figure:
    path: Path
    alt: str


@dataclass
class Subheading:
    text: str


Block = Text | Table | Figure | Subheading


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


def write_report(run_dir: str | Path) -> dict[str, Path]:
    """Write ``run_dir/report.html`` and ``run_dir/report.md`` (and the figures beside them) from a finished run.

    Returns {"html": ..., "md": ..., <figure stem>: <png path>, ...}. Raises AlignkitError when ``run_dir`` is not
    a finished run (no directory, no summary.json, or summary.json unreadable).
    """
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    sections = [header(run_dir, summary), comparison(summary), win_rates(summary, run_dir),
                frontier(summary, run_dir), overoptimisation(summary, run_dir), reward_model(summary, run_dir),
                training(summary, run_dir), samples(summary, run_dir)]
    title = f"alignkit run report: {run_dir.resolve().name}"
    files = {"html": run_dir / "report.html", "md": run_dir / "report.md"}
    files["html"].write_text(to_html(title, sections), encoding="utf-8")
    files["md"].write_text(to_markdown(title, sections), encoding="utf-8")
    return files | {b.path.stem: b.path for s in sections for b in s.blocks if isinstance(b, Figure)}


def read_summary(run_dir: Path) -> dict:
    if not run_dir.is_dir():
        raise AlignkitError(f"{run_dir}: no such run directory (expected runs/<name>/ of `alignkit run`)")
    path = run_dir / "summary.json"
    if not path.is_file():
        raise AlignkitError(f"{path}: not found — not a finished run (`alignkit run` writes it at the end)")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AlignkitError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(summary, dict) or not {"stages", "models"} <= summary.keys():
        raise AlignkitError(f"{path}: not the summary of an `alignkit run` (no 'stages' and 'models'; a single "
                            "stage's folder has no report)")
    for key in ("stages", "models"):
        entries = summary[key]
        if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
            raise AlignkitError(f"{path}: '{key}' must map each name to an object, as `alignkit run` writes it")
    return summary


# ----------------------------------------------------------------------------------------------------
# sections

def header(run_dir: Path, summary: dict) -> Section:
    m = summary.get("machine", {})
    machine = ", ".join(s for s in (f"{m['cpus']} CPUs" if m.get("cpus") else "", m.get("device", ""),
                                    f"torch {m['torch']}" if m.get("torch") else "",
                                    f"Python {m['python']}" if m.get("python") else "") if s)
    wall = summary.get("wall_seconds")
    n_prompts = next((e.get("n_prompts") for e in summary.get("models", {}).values() if e.get("n_prompts")), None)
    rows = [["preset", str(summary.get("preset", "–"))],
            ["wall time", "–" if wall is None else f"{wall:.0f} s ({wall / 60:.1f} min)"],
            ["machine", machine or "–"], ["held-out prompts", _num(n_prompts, "d")],
            ["report written", datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")]]
    return Section("Run", [Text("What was run, where and when. Every number below is read from the run's "
                                "summary.json, metrics.jsonl and samples.jsonl files; nothing is recomputed."),
                           Table(["run", run_dir.resolve().name], rows)])


def comparison(summary: dict) -> Section:
    models, stages = summary.get("models", {}), summary.get("stages", {})
    section = Section("Model comparison")
    if not models:
        section.blocks.append(Text("Not in this run: no evaluated models in summary.json.", note=True))
        return section
    n = next((m.get("n_prompts") for m in models.values() if m.get("n_prompts")), "the")
    section.blocks.append(Text(
        f"Every model answered the same {n} held-out prompts and the world's oracle judged each answer. Win rate: "
        "per prompt, the model's answer against SFT's by gold score (tie = ½), with its 95 % CI. Gold: the oracle's "
        "mean score (−1 … 1). Rates in %. KL(π ‖ SFT) in nats per response, on the model's own samples. Train time: "
        "the stage that made the model (base: pretraining; best-of-n: sampling and scoring)."))
    rows = []
    for name in ordered(models, stages):
        m, r = models[name], models[name].get("rates", {})
        rows.append([label(name, stages), _win(m), _num(m.get("gold_reward"), "+.3f"),
                     *(_num(r.get(k), ".0%").rstrip("%") for k in ("helpful", "honest", "harmless", "over_refusal")),
                     _num(m.get("kl_to_sft"), ".2f"), _num(m.get("mean_length"), ".1f"),
                     _num(stage_seconds(name, stages), ".0f")])
    section.blocks.append(Table(["model", "win vs SFT [95 % CI]", "gold", "helpful %", "honest %", "harmless %",
                                 "over-refusal %", "KL to SFT (nats)", "length (tokens)", "train time (s)"],
                                rows, numeric=True))
    sft = models.get("sft", {})
    if sft.get("win_rate_vs_base_zero_shot") is not None:
        lo, hi = sft["win_rate_vs_base_zero_shot_ci"]
        section.blocks.append(Text(f"SFT against the base model prompted zero-shot: win rate "
                                   f"{sft['win_rate_vs_base_zero_shot']:.2f} [{lo:.2f}, {hi:.2f}]."))
    if sft.get("ideal_win_rate_vs_sft") is not None:
        section.blocks.append(Text(f"The world's ideal answers against SFT's: win rate {sft['ideal_win_rate_vs_sft']:.2f} "
                                   "— the most any model can reach, as every ideal answer gets the top gold score "
                                   "and a prompt SFT already answered perfectly can only be tied."))
    for name, stage in stages.items():  # verifiable-reward runs: accuracy on their categories, before → after
        for key, before in stage.items():
            category = key.removesuffix("_accuracy_before")
            after = stage.get(f"{category}_accuracy_after")
            if key == category or before is None or after is None:
                continue
            section.blocks.append(Text(
                f"{label(name, stages)}: {category} accuracy on its held-out prompts {_pct_ci(stage, category, 'before')}"
                f" (SFT) → {_pct_ci(stage, category, 'after')}, {stage.get('accuracy_draws', 1)} sample(s) per "
                f"prompt: {(after - before) * 100:+.1f} points."))
    return section


def _pct_ci(stage: dict, category: str, when: str) -> str:
    ci = stage.get(f"{category}_accuracy_{when}_ci")
    value = f"{stage[f'{category}_accuracy_{when}']:.1%}"
    return f"{value} [{ci[0]:.1%}, {ci[1]:.1%}]" if ci else value


def win_rates(summary: dict, run_dir: Path) -> Section:
    models, stages = summary.get("models", {}), summary.get("stages", {})
    section = Section("Win rate vs SFT")
    rows = [{"name": n, "label": label(n, stages), "win": models[n]["win_rate_vs_sft"],
             "ci": models[n].get("win_rate_vs_sft_ci") or [models[n]["win_rate_vs_sft"]] * 2}
            for n in ordered(models, stages) if models[n].get("win_rate_vs_sft") is not None]
    if not rows:
        section.blocks.append(Text("Not in this run: no model has a win rate against SFT.", note=True))
        return section
    best = max((r for r in rows if r["name"] != "sft"), key=lambda r: r["win"], default=None)
    above = [r["label"] for r in rows if r["ci"][0] > 0.5]
    below = [r["label"] for r in rows if r["ci"][1] < 0.5]
    text = ("How often each model's answer beats SFT's on the same held-out prompt (whiskers: 95 % CI; dashed "
            "line: 0.5, as good as SFT).")
    if best:
        text += f" Highest: {best['label']}, {best['win']:.2f} [{best['ci'][0]:.2f}, {best['ci'][1]:.2f}]."
    # labels hold commas ("DPO, β 0.1"), so the lists are joined with semicolons
    text += f" CI wholly above 0.5: {'; '.join(above) or 'none'}. Wholly below: {'; '.join(below) or 'none'}."
    section.blocks += [Text(text), Figure(plots.plot_win_rate(rows, run_dir / "win_rate.png"),
                                          "Win rate vs SFT per model with 95 % CI")]
    return section


def frontier(summary: dict, run_dir: Path) -> Section:
    models, stages = summary.get("models", {}), summary.get("stages", {})
    section = Section("Reward vs KL frontier")
    if not any(m.get("kl_to_sft") is not None for m in models.values()):
        section.blocks.append(Text("Not in this run: no evaluated model has a KL to SFT.", note=True))
        return section
    section.blocks += [
        Text("Gold reward against KL(π ‖ SFT) on the held-out prompts: how much a method gains per nat it moves "
             "the policy away from SFT (KL estimated on each model's own samples). Markers: the final models. "
             "Lines: DPO's β sweep (and its later rounds, when the run has dpo_rounds > 1, as PPO's with "
             "ppo_rounds > 1); best-of-n for n = 1, 2, 4 … (analytic KL, log n − (n−1)/n); PPO along training — "
             "SFT, the policy saved at the iterations in ppo.snapshots, and the final policy, each evaluated like the "
             "final models."),
        Figure(plots.plot_frontier(models, run_dir / "frontier.png", stages=stages),
               "Gold reward against KL to SFT"),
    ]
    missing = [what for family, what in (("best_of", "best-of-n"), ("ppo", "PPO"), ("ppo_ptx", "PPO-ptx"),
                                         ("dpo", "DPO"), ("grpo", "GRPO"))
               if not any(model_family(m) == family for m in models)]
    if missing:
        section.blocks.append(Text(f"Not in this run: {'; '.join(missing)}.", note=True))
    return section


def overoptimisation(summary: dict, run_dir: Path) -> Section:
    stages = summary.get("stages", {})
    section = Section("Overoptimisation")
    ppo = {n: rows for n in ("ppo", "ppo_ptx") if (rows := _rl_curve(stages.get(n)))}
    bon = [r for r in stages.get("bon", {}).get("curve", []) if {"kl", "proxy_reward", "gold_reward"} <= r.keys()]
    if not ppo and not bon:
        section.blocks.append(Text("Not in this run: neither PPO nor best-of-n.", note=True))
        return section
    section.blocks.append(Text(
        "The proxy reward (the reward model's score, which the method optimises) and the gold reward (the oracle) "
        "against √KL to SFT. Over-optimisation shows as the proxy still rising while gold flattens or falls."))
    if bon:
        section.blocks.append(Text(_describe_bon(bon)))
    for name, curve in ppo.items():
        section.blocks.append(Text(_describe_ppo(name, curve)))
    section.blocks.append(Figure(plots.plot_overoptimisation(ppo, bon, run_dir / "overoptimisation.png", WINDOW),
                                 "Proxy and gold reward against square-root KL"))
    if not ppo or not bon:
        section.blocks.append(Text(f"Not in this run: {'PPO' if not ppo else 'best-of-n'}.", note=True))
    return section


def reward_model(summary: dict, run_dir: Path) -> Section:
    stages = summary.get("stages", {})
    section = Section("Reward model")
    rm = stages.get("rm")
    if rm:
        section.blocks.append(Text(
            f"The reward model ({rm.get('objective', '?')} on {_num(rm.get('train_prompts'), 'd')} ranked prompts, "
            f"{_num(rm.get('train_seconds'), '.0f')} s) orders held-out answer pairs like the noise-free oracle "
            f"{_num(rm.get('heldout_accuracy'), '.1%')} of the time; one simulated labeller does "
            f"{_num(rm.get('accuracy_ceiling'), '.1%')} (the ceiling for a model learnt from such labels). Spearman "
            f"with gold: {_num(rm.get('spearman_gold'), '.2f')} over all answers, "
            f"{_num(rm.get('spearman_within_prompt'), '.2f')} within a prompt."))
        if rm.get("prior"):
            section.blocks.append(Text(
                f"Its reward adds {rm['prior']['coef']:g} × the prior language model's surprise at the answer (the "
                f"log-probability of its least likely token under {'/'.join(Path(rm['prior']['model']).parts[-2:])}): the head "
                f"alone orders {_num(rm.get('heldout_accuracy_head'), '.1%')} of the pairs right, the surprise alone "
                f"{_num(rm.get('heldout_accuracy_prior'), '.1%')}."))
        cats = rm.get("per_category") or {}
        if cats:
            section.blocks.append(Table(["category", "held-out accuracy", "pairs"],
                                        [[c, _num(v.get("accuracy"), ".1%"), _num(v.get("n_pairs"), "d")]
                                         for c, v in sorted(cats.items())], numeric=True))
    else:
        section.blocks.append(Text("Not in this run: the reward model.", note=True))
    pairs = stages.get("rm_pairs")
    if pairs:
        n, prompts = pairs.get("train_comparisons"), pairs.get("train_prompts")
        per_prompt = f", {n / prompts:.1f} per prompt" if n and prompts else ""
        section.blocks.append(Text(
            f"The same reward model trained on the pairwise comparisons alone ({_num(n, 'd')} comparisons of two "
            f"answers on {_num(prompts, 'd')} prompts{per_prompt}): held-out accuracy "
            f"{_num(pairs.get('heldout_accuracy'), '.1%')}."))
    curve = stages.get("rm_curve", {})
    points = curve.get("points") or []
    if any(p.get("heldout_accuracy") is not None for p in points):
        match = curve.get("rankings_match_pairs")
        section.blocks += [
            Text("Data efficiency: held-out accuracy of reward models trained on N labelled prompts, as pairs "
                 "(one comparison per prompt) or as full rankings of every answer to a prompt"
                 + (f": {match_sentence(match, curve.get('seeds', 1))}." if match else ".")),
            Figure(plots.plot_rm_curve(points, run_dir / "rm_curve.png"), "Reward-model accuracy vs labelled prompts"),
        ]
    else:
        section.blocks.append(Text("Not in this run: the reward model's data-efficiency curve (rm_curve).", note=True))
    return section


def training(summary: dict, run_dir: Path) -> Section:
    stages = summary.get("stages", {})
    section = Section("Training curves")
    logs = {name: read_metrics(run_dir / name / "metrics.jsonl") for name in stages}
    logs = {name: rows for name, rows in logs.items() if rows}
    panels = training_panels(logs, stages)
    if not panels:
        section.blocks.append(Text("Not in this run: no stage wrote a metrics.jsonl.", note=True))
        return section
    section.blocks += [
        Text("Each stage's per-step log (metrics.jsonl): faint lines every step, solid lines a running mean, dots "
             "the held-out / validation evaluations. Losses in nats; RL rewards per response of the rollouts."),
        Figure(plots.plot_training(panels, run_dir / "training.png"), "Training curves of every stage"),
    ]
    return section


def samples(summary: dict, run_dir: Path) -> Section:
    stages = summary.get("stages", {})
    section = Section("Side-by-side samples")
    answers = {n: rows for n in SAMPLE_MODELS if (rows := read_samples(run_dir, n))}
    if not answers:
        section.blocks.append(Text("Not in this run: no samples.jsonl of the compared models.", note=True))
        return section
    section.blocks.append(Text(
        "One held-out prompt per category — the first one on which the models' answers differ — answered by "
        f"{'; '.join(label(n, stages) for n in answers)} (same prompts, same sampling "
        "seed). Gold: the oracle's score of that answer (−1 … 1)."))
    for category, prompt in pick_prompts(answers):
        section.blocks += [Subheading(category), Text(f"Prompt: {prompt}")]
        rows = []
        for name, by_prompt in answers.items():
            row = by_prompt.get((category, prompt))
            if row is not None:
                cut = "" if row.get("finished", True) else " […cut off]"
                rows.append([label(name, stages), row.get("response", "") + cut,
                             _num(row.get("gold"), "+.2f")])
        section.blocks.append(Table(["model", "answer", "gold"], rows))
    missing = [model_label(n) for n in SAMPLE_MODELS if n not in answers]
    if missing:
        section.blocks.append(Text(f"Not in this run: {'; '.join(missing)}.", note=True))
    return section


# ----------------------------------------------------------------------------------------------------
# reading the run

def ordered(models: dict, stages: dict) -> list[str]:
    """Model names in table order (plots.model_rank)."""
    return sorted(models, key=lambda name: plots.model_rank(name, stages))


def stage_seconds(name: str, stages: dict) -> float | None:
    """Training time of the stage that made model ``name``: pretraining for the base model, sampling and scoring
    for best-of-n, its own train_seconds otherwise."""
    stage = "pretrain" if name.startswith("base") else "bon" if name.startswith("best_of") else name
    s = stages.get(stage, {})
    return s.get("train_seconds", s.get("seconds"))


def read_metrics(path: Path) -> list[dict]:
    """A metrics.jsonl as rows {"step", <key without its stage prefix>: value} ("dpo/loss" → "loss")."""
    return [{k.split("/", 1)[-1]: v for k, v in row.items()} for row in _jsonl(path)]


def read_samples(run_dir: Path, name: str) -> dict[tuple[str, str], dict]:
    """Model ``name``'s held-out answers keyed by (category, prompt), in file order; {} when it has none.

    Base models and SFT answer in eval/<name>/, best-of-n in bon/<name>/, trained policies in <name>/eval/."""
    for path in (run_dir / "eval" / name / "samples.jsonl", run_dir / name / "eval" / "samples.jsonl",
                 run_dir / "bon" / name / "samples.jsonl"):
        if path.is_file():
            out: dict[tuple[str, str], dict] = {}
            for row in _jsonl(path):
                out.setdefault((row.get("category", "?"), row.get("prompt", "")), row)
            return out
    return {}


def _jsonl(path: Path) -> list[dict]:
    """The records of a JSONL file ([] when there is none); a torn line (an interrupted write) is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in rows if isinstance(r, dict)]


def pick_prompts(answers: dict[str, dict]) -> list[tuple[str, str]]:
    """Per category (in order of first appearance), the first prompt every model answered on which their answers
    are not all identical; the first prompt they all answered when they agree on every one."""
    first = next(iter(answers.values()))
    picked: dict[str, str] = {}
    settled: set[str] = set()
    for category, prompt in first:
        key = (category, prompt)
        if category in settled or not all(key in a for a in answers.values()):
            continue
        picked.setdefault(category, prompt)
        if len({a[key].get("response") for a in answers.values()}) > 1:
            picked[category] = prompt
            settled.add(category)
    return list(picked.items())


def training_panels(logs: dict[str, list[dict]], stages: dict) -> list[dict]:
    """The panels of the training figure (see plots.plot_training), for whichever stages logged."""
    def series(name: str, key: str, legend: str, smooth: int = 1, **style) -> dict | None:
        pts = [(r["step"], r[key]) for r in logs.get(name, []) if r.get(key) is not None and "step" in r]
        return {"label": legend, "x": [x for x, _ in pts], "y": [y for _, y in pts], "smooth": smooth,
                **style} if pts else None

    def run(name: str) -> dict:  # PPO-ptx dashed beside PPO
        return {"linestyle": "--" if name.endswith("ptx") else "-"}

    def proxy(name: str) -> str:  # the reward model's part of PPO's reward, when it logged one
        return "reward/rm" if any("reward/rm" in r for r in logs[name]) else "reward"

    dpos = sorted((n for n in logs if n.startswith("dpo")), key=lambda n: dpo_beta(n, stages) or 0.0)
    ppos = [n for n in ("ppo", "ppo_ptx") if n in logs]
    grpos = sorted(n for n in logs if n.startswith("grpo"))
    per_response = "KL, nats per response"
    specs = [
        ("Pretraining", "loss, nats per token (log scale)", True,
         [series("pretrain", "loss", "train", 20), series("pretrain", "heldout_loss", "held-out", marker=True)]),
        ("SFT", "loss, nats per assistant token (log)", True,
         [series("sft", "loss", "train", 20), series("sft", "val_loss", "validation", marker=True)]),
        ("Reward model: loss", "loss, nats per comparison set", False,
         [series("rm", "loss", "train", 20), series("rm", "val_loss", "validation", marker=True)]),
        ("Reward model: accuracy", "pairwise accuracy", False,
         [series("rm", "accuracy", "train", 20), series("rm", "val_accuracy", "validation", marker=True)]),
        (f"DPO: loss ({stages.get('dpo', {}).get('loss', 'dpo')})", "loss, nats", False,
         [series(n, "loss", label(n, stages), 10) for n in dpos]),
        ("PPO: reward of the rollouts", "reward (RM normalised; gold −1 … 1)", False,
         [s for n in ppos for s in (series(n, proxy(n), f"{label(n, stages)}: RM", WINDOW, color="tab:orange",
                                           **run(n)),
                                    series(n, "gold", f"{label(n, stages)}: gold", WINDOW, color="tab:blue",
                                           **run(n)))]),
        ("PPO: KL to SFT of the rollouts", per_response, False,
         [series(n, "kl", label(n, stages), WINDOW, color="tab:red", **run(n)) for n in ppos]),
        ("PPO-ptx: pretraining loss", "loss, nats per token", False,
         [series(n, "ptx/loss", label(n, stages), WINDOW) for n in ppos]),
        ("GRPO: reward of the rollouts", "reward (RM normalised / checker 0 … 1)", False,
         [series(n, "reward", label(n, stages), WINDOW) for n in grpos]),
        ("GRPO: gold reward of the rollouts", "gold reward (oracle, −1 … 1)", False,
         [series(n, "gold", label(n, stages), WINDOW) for n in grpos]),
        ("GRPO: KL to SFT of the rollouts", per_response, False,
         [series(n, "kl", label(n, stages), WINDOW) for n in grpos]),
    ]
    panels = []
    for title, ylabel, logy, group in specs:
        group = [s for s in group if s]
        if group:
            # the corner the curves leave free: losses fall, KL starts at 0, accuracy and reward rise
            corner = ("upper right" if ylabel.startswith("loss") else "upper left" if ylabel.startswith("KL")
                      else "lower right")
            panels.append({"title": title, "ylabel": ylabel, "logy": logy, "series": group, "legend": corner,
                           "xlabel": "iteration" if title.startswith(("PPO", "GRPO")) else "optimizer step"})
    return panels


def label(name: str, stages: dict) -> str:
    return model_label(name, dpo_beta(name, stages))


def _rl_curve(stage: dict | None) -> list[dict]:
    """The iterations of a PPO stage's curve that logged KL, gold and the proxy reward."""
    rows = (stage or {}).get("curve", [])
    proxy = "reward/rm" if any("reward/rm" in r for r in rows) else "reward"
    return [r for r in rows if {"kl", "gold", proxy} <= r.keys()]


def _describe_bon(curve: list[dict]) -> str:
    a, b = curve[0], curve[-1]
    peak = max(curve, key=lambda r: r["gold_reward"])
    text = (f"Best-of-n, n = {a['n']} → {b['n']} (KL {_change(a['kl'], b['kl'], '.2f')} nats): proxy "
            f"{_change(a['proxy_reward'], b['proxy_reward'])}, gold {_change(a['gold_reward'], b['gold_reward'])}")
    if peak is not b:
        text += f"; gold was highest at n = {peak['n']} ({_num(peak['gold_reward'], '+.3f')})"
    if "oracle_gold_reward" in b:
        text += f". Picking by the oracle instead reaches {_num(b['oracle_gold_reward'], '+.2f')} at n = {b['n']}"
    return text + "."


def _describe_ppo(name: str, curve: list[dict]) -> str:
    """What PPO's rollouts did, from the first to the last iterations (``curve`` as _rl_curve keeps it)."""
    proxy = "reward/rm" if any("reward/rm" in r for r in curve) else "reward"
    w = min(WINDOW, max(1, len(curve) // 2))

    def change(key: str, spec: str = "+.2f") -> str:
        first, last = curve[:w], curve[-w:]
        return _change(sum(r[key] for r in first) / w, sum(r[key] for r in last) / w, spec)

    text = (f"{model_label(name)} rollouts, mean of the first vs the last {w} iterations: KL "
            f"{change('kl', '.2f')} nats, proxy {change(proxy)}, gold {change('gold')}")
    for key, what in ((proxy, "proxy"), ("gold", "gold")):
        smooth = plots.running_mean([r[key] for r in curve], w)
        peak = max(range(len(smooth)), key=smooth.__getitem__)
        if peak < len(smooth) - 1:  # a peak before the end: say where
            first = curve[max(0, peak - w + 1)].get("step", "?")
            text += (f"; {what} peaked over iterations {first}–{curve[peak].get('step', '?')} "
                     f"({_num(smooth[peak], '+.2f')})")
    return text + "."


def _change(a: float, b: float, spec: str = "+.2f") -> str:
    return f"{_num(a, spec)} → {_num(b, spec)}"


def _win(m: dict) -> str:
    if m.get("win_rate_vs_sft") is None:
        return "–"
    ci = m.get("win_rate_vs_sft_ci")
    return f"{m['win_rate_vs_sft']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _num(x, spec: str) -> str:
    """``x`` formatted, "–" when missing; a signed zero reads +0.00, not -0.00."""
    if x is None or isinstance(x, float) and math.isnan(x):
        return "–"
    text = format(x, spec)
    return "+" + text[1:] if spec.startswith("+") and text.startswith("-") and float(text) == 0 else text


# ----------------------------------------------------------------------------------------------------
# rendering

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1150px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; } h3 { margin-bottom: 0.3em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
table.num td:not(:first-child), table.num th:not(:first-child) { text-align: right;
  font-variant-numeric: tabular-nums; }
td { white-space: pre-wrap; }
img { max-width: 100%; height: auto; }
p.note { color: #777; font-style: italic; }
"""


def to_html(title: str, sections: list[Section]) -> str:
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{esc(title)}</title>",
           f"<style>{CSS}</style></head><body>", f"<h1>{esc(title)}</h1>"]
    for section in sections:
        out.append(f"<section><h2>{esc(section.title)}</h2>")
        for b in section.blocks:
            if isinstance(b, Text):
                out.append(f'<p class="note">{esc(b.text)}</p>' if b.note else f"<p>{esc(b.text)}</p>")
            elif isinstance(b, Subheading):
                out.append(f"<h3>{esc(b.text)}</h3>")
            elif isinstance(b, Table):
                head = "".join(f"<th>{esc(h)}</th>" for h in b.header)
                body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in b.rows)
                cls = ' class="num"' if b.numeric else ""
                out.append(f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif isinstance(b, Figure):
                data = base64.b64encode(b.path.read_bytes()).decode("ascii")
                out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{esc(b.alt)}"></figure>')
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def to_markdown(title: str, sections: list[Section]) -> str:
    out = [f"# {_md(title)}", ""]
    for section in sections:
        out += [f"## {_md(section.title)}", ""]
        for b in section.blocks:
            if isinstance(b, Text):
                out += [f"*{_md(b.text)}*" if b.note else _md(b.text), ""]
            elif isinstance(b, Subheading):
                out += [f"### {_md(b.text)}", ""]
            elif isinstance(b, Table):
                align = ["---"] + [("---:" if b.numeric else "---")] * (len(b.header) - 1)
                out += ["| " + " | ".join(_md(h) for h in b.header) + " |", "| " + " | ".join(align) + " |"]
                out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in b.rows] + [""]
            elif isinstance(b, Figure):
                out += [f"![{_md(b.alt)}]({b.path.name})", ""]
    return "\n".join(out)


def _md(text: str) -> str:
    """Text safe inside Markdown (also a table cell): HTML escaped, emphasis/code/table characters backslashed,
    line breaks as <br>."""
    text = re.sub(r"([\\`*_|~])", r"\\\1", html.escape(str(text), quote=False))
    return re.sub(r"^#", r"\\#", text).replace("\n", "<br>")
