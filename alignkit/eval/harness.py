"""The evaluation harness: sample responses to held-out world prompts and let the oracle judge them.

Per model (``EVAL`` in DESIGN.md's summary.json contract):
- ``gold_reward``: the oracle's mean score, overall and per category;
- ``win_rate_vs_<ref>`` with a 95 % CI: per prompt, the model's response against the reference model's
  response to the same prompt, judged by gold score (a tie counts half);
- ``rates``: helpful accuracy, honesty, harmlessness, over-refusal, proper endings;
- ``kl_to_<ref>``: KL(π ‖ π_ref) per response, estimated on the model's own samples with the
  sequence-level k1 estimator Σ_t [log π(a_t|·) − log π_ref(a_t|·)] (unbiased; Schulman, "Approximating
  KL Divergence"), both log-probs at the sampling temperature, so it is the KL between the two
  tempered sampling distributions; k3 is reported beside it;
- ``mean_length`` in tokens.

Three prompting modes: ``chat`` (the tokenizer's chat template, stop at end of turn), and for base
models ``zero_shot`` (the bare question) and ``few_shot`` (``shots`` solved Q/A examples of the helpful
categories first) — both stop at the first blank line. Sampling settings and seed are recorded in the
output, and the same seed gives the same samples.

    alignkit eval --model runs/demo/sft/model
    alignkit eval --model runs/mine/dpo/model --reference runs/demo/sft/model
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from statistics import mean

import torch

from alignkit.config import EvalConfig
from alignkit.errors import AlignkitError
from alignkit.eval.metrics import category_rates, kl_k1, kl_k3, win_rate
from alignkit.rollout.sampler import sample
from alignkit.rollout.types import Samples
from alignkit.training.logging import info

MODES = ("chat", "zero_shot", "few_shot")
BASE_STOP = ["\n\n"]


@dataclass
class ModelRun:
    """One model's responses to the evaluation prompts, judged."""
    mode: str
    tasks: list            # world Task per prompt
    responses: list[str]
    judgements: list       # oracle Judgement per prompt
    samples: Samples       # token ids and masks, for log-probs


def eval_tasks(world, cfg: EvalConfig) -> list:
    """The first ``n_per_category`` held-out tasks of each category (all categories when none given)."""
    try:
        tasks = world.tasks("heldout", categories=list(cfg.categories) or None)
    except ValueError as e:
        raise AlignkitError(f"categories: {e}") from None
    counts: dict = {}
    keep = []
    for t in tasks:
        counts[t.category] = counts.get(t.category, 0) + 1
        if counts[t.category] <= cfg.n_per_category:
            keep.append(t)
    return keep


def prompts_for(world, tokenizer, tasks: list, mode: str, cfg: EvalConfig) -> tuple[list[str], list[str] | None]:
    from alignkit.data.templates import render_prompt
    from alignkit.world import FEW_SHOT_DEFAULT

    if mode == "chat":
        return [render_prompt(tokenizer, [{"role": "user", "content": t.prompt}]) for t in tasks], None
    if mode == "zero_shot":
        return [world.zero_shot_prompt(t.prompt) for t in tasks], BASE_STOP
    if mode == "few_shot":
        return [world.few_shot_prompt(t.prompt, shots=cfg.shots, seed=cfg.seed + i, categories=FEW_SHOT_DEFAULT)
                for i, t in enumerate(tasks)], BASE_STOP
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def run_model(model, tokenizer, world, tasks: list, mode: str, cfg: EvalConfig) -> ModelRun:
    """Sample one response per task and judge it."""
    prompts, stop = prompts_for(world, tokenizer, tasks, mode, cfg)
    samples = sample(model, tokenizer, prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                     top_p=cfg.top_p, batch_size=cfg.batch_size, seed=cfg.seed, stop_strings=stop,
                     show_progress=cfg.progress)
    responses = [t.strip() for t in samples.texts]
    judgements = [world.oracle.judge(t, r) for t, r in zip(tasks, responses)]
    return ModelRun(mode, tasks, responses, judgements, samples)


@torch.no_grad()
def kl_per_response(policy, reference, samples: Samples, *, temperature: float, batch_size: int) -> dict:
    """Sequence-level k1 and k3 estimates of KL(π ‖ π_ref) on the policy's own samples: (B,) each."""
    from alignkit.models.logprobs import completion_logprobs

    args = (samples.prompt_ids, samples.prompt_mask, samples.completion_ids, samples.completion_mask)
    logp = completion_logprobs(policy, *args, temperature=temperature, batch_size=batch_size)
    ref = completion_logprobs(reference, *args, temperature=temperature, batch_size=batch_size)
    mask = samples.completion_mask
    return {"k1": kl_k1(logp, ref, mask), "k3": kl_k3(logp, ref, mask)}


def summarise(run: ModelRun, cfg: EvalConfig, *, references: dict[str, ModelRun | list[float]] | None = None,
              kl: dict[str, dict] | None = None) -> dict:
    """The EVAL block of summary.json for ``run``; win rates against each reference (a run on the same
    prompts, or its gold scores in prompt order), KL if given."""
    scores = [j.score for j in run.judgements]
    per_category: dict = {}
    for t, j in zip(run.tasks, run.judgements):
        per_category.setdefault(t.category, []).append(j)
    out = {
        "gold_reward": mean(scores),
        "rates": category_rates([t.category for t in run.tasks], run.judgements),
        "per_category": {c: {"gold_reward": mean(j.score for j in js), "accuracy": mean(float(j.correct) for j in js),
                             "n": len(js)} for c, js in sorted(per_category.items())},
        "mean_length": float(run.samples.completion_mask.sum(dim=1).float().mean()),
        "finished_rate": mean(float(f) for f in run.samples.finished),
        "n_prompts": len(run.tasks),
        "mode": run.mode,
        "sampling": {k: getattr(cfg, k) for k in ("temperature", "top_p", "max_new_tokens", "seed")},
    }
    for ref_name, ref in (references or {}).items():
        ref_scores = [j.score for j in ref.judgements] if isinstance(ref, ModelRun) else list(ref)
        wr = win_rate(scores, ref_scores, tie_margin=cfg.tie_margin)
        out[f"win_rate_vs_{ref_name}"] = wr["win_rate"]
        out[f"win_rate_vs_{ref_name}_ci"] = wr["ci"]
        if ref_name == "sft":
            out["win_rate_ci"] = wr["ci"]  # the summary.json contract's name for the CI of win_rate_vs_sft
    for ref_name, est in (kl or {}).items():
        out[f"kl_to_{ref_name}"] = float(est["k1"].mean())
        out[f"kl_to_{ref_name}_k3"] = float(est["k3"].mean())
    return out


def ideal_win_rate(world, run: ModelRun, *, tie_margin: float) -> dict:
    """:func:`~alignkit.eval.metrics.win_rate` of the world's ideal answers against ``run``'s answers.

    Every ideal answer gets the oracle's top score (1), so this is the highest win rate any model can reach
    against these answers: each prompt where ``run`` already scored 1 can at best be tied (½). It puts a
    model's win rate vs SFT on a scale: 0.5 is SFT's level, this value is perfect."""
    ideal = [world.oracle.score(t, t.ideal) for t in run.tasks]
    return win_rate(ideal, [j.score for j in run.judgements], tie_margin=tie_margin)


def write_run(run: ModelRun, summary: dict, out_dir: Path, kl: dict | None = None) -> None:
    """``summary.json`` and ``samples.jsonl`` (one line per prompt: response, gold score, verdicts)."""
    from alignkit.data.sources import write_jsonl
    from alignkit.training.checkpoint import write_json_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "summary.json", summary)
    lengths = run.samples.completion_mask.sum(dim=1).tolist()
    rows = []
    for i, (t, r, j) in enumerate(zip(run.tasks, run.responses, run.judgements)):
        row = {"prompt": t.prompt, "category": t.category, "response": r, "gold": j.score, "correct": j.correct,
               "refused": j.refused, "finished": run.samples.finished[i], "length": lengths[i]}
        for ref_name, est in (kl or {}).items():
            row[f"kl_to_{ref_name}"] = float(est["k1"][i])
        rows.append(row)
    write_jsonl(out_dir / "samples.jsonl", rows)


def evaluate_dirs(model_dir: str | Path, world, cfg: EvalConfig, *, reference_dir: str | Path | None = None,
                  mode: str = "chat", reference_name: str = "reference",
                  reference_samples: str | Path | None = None) -> dict:
    """``alignkit eval``: a model dir (and optionally a reference dir) on the same held-out prompts.

    ``reference_samples``: the reference's ``samples.jsonl`` from an earlier evaluation of these prompts
    (anything else is refused before any sampling); its gold scores are used instead of sampling the
    reference again (a reference dir, if given, is still loaded for the KL). The win rate is then
    against those answers, whatever temperature they were sampled at."""
    from alignkit.models.load import load_model
    from alignkit.models.tokenizer import same_vocabulary
    from alignkit.training.setup import resolve_device

    out = Path(cfg.out) if cfg.out else Path(model_dir).resolve().parent / "eval"
    earlier = [f for f in ("summary.json", "samples.jsonl") if (out / f).exists()]
    if earlier and not cfg.overwrite:
        raise AlignkitError(f"{out} already holds an evaluation ({', '.join(earlier)}); pass overwrite=true to "
                            "replace it, or another out=")
    tasks = eval_tasks(world, cfg)
    stored = None
    if reference_samples is not None:
        stored = _stored_scores(reference_samples, tasks)
    device = str(resolve_device(cfg.device))
    model, tokenizer = load_model(model_dir, device=device)
    run = run_model(model, tokenizer, world, tasks, mode, cfg)
    references, kl = {}, {}
    if stored is not None:
        references[reference_name] = stored
    if reference_dir is not None:
        ref_model, ref_tok = load_model(reference_dir, device=device)
        if stored is None:
            references[reference_name] = run_model(ref_model, ref_tok, world, tasks, "chat", cfg)
        if same_vocabulary(ref_tok, tokenizer):
            kl[reference_name] = kl_per_response(model, ref_model, run.samples, temperature=cfg.temperature,
                                              batch_size=cfg.batch_size)
        else:
            info(f"eval: no KL to {reference_dir}: its tokenizer is not the model's (KL compares the two models' "
                 "next-token distributions over one vocabulary); the win rate is measured")
    summary = summarise(run, cfg, references=references, kl=kl)
    write_run(run, {**summary, "model": str(model_dir), "reference": str(reference_dir) if reference_dir else None,
                    "reference_samples": str(reference_samples) if stored is not None else None,
                    "config": asdict(cfg)}, out, kl)
    return summary


def _stored_scores(path: str | Path, tasks: list) -> list[float]:
    """Gold scores from a samples.jsonl that answers exactly ``tasks``' prompts in order, each with a numeric
    ``gold``; anything else is a one-line error naming the first line that differs."""
    from alignkit.data.sources import iter_jsonl

    if not Path(path).is_file():
        raise AlignkitError(f"reference samples {path}: no such file")
    what = (f"a samples.jsonl of these {len(tasks)} held-out prompts, in order (written by `alignkit eval` or a "
            "run's eval stage with the same world, categories and n_per_category)")
    rows = list(iter_jsonl(path))
    if len(rows) != len(tasks):
        raise AlignkitError(f"reference samples {path}: {len(rows)} records, expected {what}")
    gold = []
    for (line, row), task in zip(rows, tasks):
        if not isinstance(row, dict) or row.get("prompt") != task.prompt:
            raise AlignkitError(f"{path}:{line}: field 'prompt' is not the held-out prompt {task.prompt!r} "
                                f"(expected {what})")
        g = row.get("gold")
        if not isinstance(g, (int, float)) or isinstance(g, bool):
            raise AlignkitError(f"{path}:{line}: field 'gold' is {g!r} (expected the oracle's score, a number)")
        gold.append(float(g))
    return gold


def category_accuracy(model_dir: str | Path, world, cfg: EvalConfig, categories: list[str], *, draws: int) -> dict:
    """How often a model does what the category asks on its held-out prompts, ``draws`` samples per prompt
    (seeds ``cfg.seed`` … ``cfg.seed + draws − 1``): ``{category: {"accuracy", "ci", "n_prompts", "draws"}}``.

    One sample per prompt leaves a 40-prompt accuracy uncertain by about ±15 points; several draws shrink
    that. The 95 % CI is over prompts (each prompt's mean over its draws), since draws of one prompt are
    not independent of each other."""
    from alignkit.eval.metrics import mean_ci
    from alignkit.models.load import load_model
    from alignkit.training.setup import resolve_device

    cfg = replace(cfg, categories=list(categories))
    tasks = eval_tasks(world, cfg)
    model, tokenizer = load_model(model_dir, device=str(resolve_device(cfg.device)))
    hits = [0.0] * len(tasks)
    for d in range(draws):
        run = run_model(model, tokenizer, world, tasks, "chat", replace(cfg, seed=cfg.seed + d, progress=False))
        hits = [h + float(j.correct) / draws for h, j in zip(hits, run.judgements)]
    out = {}
    for category in categories:
        per_prompt = [h for t, h in zip(tasks, hits) if t.category == category]
        if per_prompt:
            m, lo, hi = mean_ci(per_prompt)
            out[category] = {"accuracy": m, "ci": [lo, hi], "n_prompts": len(per_prompt), "draws": draws}
    return out


def format_table(models: dict[str, dict], reference: str = "sft") -> str:
    """A plain-text comparison table (one row per model)."""
    head = (f"{'model':<16}{'win vs ' + reference:>22}{'gold':>8}{'helpful':>9}{'honest':>8}{'harmless':>10}"
            f"{'over-ref':>10}{'ending':>8}{'KL':>7}{'len':>6}")
    lines = [head, "-" * len(head)]
    for name, m in models.items():
        wr = m.get(f"win_rate_vs_{reference}")
        ci = m.get(f"win_rate_vs_{reference}_ci")
        win = f"{wr:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if wr is not None else "-"
        r = m["rates"]
        kl = m.get(f"kl_to_{reference}")
        lines.append(f"{name:<16}{win:>22}{m['gold_reward']:>+8.3f}" + "".join(
            f"{_pct(r.get(k)):>{w}}" for k, w in (("helpful", 9), ("honest", 8), ("harmless", 10),
                                                  ("over_refusal", 10), ("proper_ending", 8)))
                     + f"{(f'{kl:.2f}' if kl is not None else '-'):>7}{m['mean_length']:>6.1f}")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"

