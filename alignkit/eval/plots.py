"""Figures of a run (PNG, matplotlib): win rates, the reward-vs-KL frontier, over-optimisation (best-of-n, PPO),
the reward model's data efficiency and the training curves.

Each function takes the numbers a stage wrote (summary.json, metrics.jsonl) and a path; nothing is recomputed.
matplotlib is imported inside the functions (with the non-interactive Agg backend), so importing this
module costs nothing.
"""

from __future__ import annotations

import math
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_best_of_n(curve: list[dict], sft_gold: float, path: str | Path) -> Path:
    """Proxy (RM) and gold reward of best-of-n against the analytic KL, beside the oracle's own choice."""
    plt = _pyplot()
    kl = [row["kl"] for row in curve]
    proxy = [row["proxy_reward"] for row in curve]
    gold = [row["gold_reward"] for row in curve]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(kl, proxy, "o-", color="tab:orange", label="proxy: reward model")
    left.set(title="What best-of-n optimises", xlabel="KL(best-of-n ‖ SFT), nats (log n − (n−1)/n)",
             ylabel="reward-model score (normalised)")
    right.plot(kl, gold, "o-", color="tab:blue", label="selected by the reward model")
    right.plot(kl, [row["oracle_gold_reward"] for row in curve], "s--", color="tab:green",
               label="selected by the oracle (ceiling)")
    right.axhline(sft_gold, color="gray", linestyle=":", label="SFT, one sample")
    right.set(title="What it achieves", xlabel="KL(best-of-n ‖ SFT), nats", ylabel="gold reward (oracle, −1 … 1)")
    for ax, ys in ((left, proxy), (right, gold)):
        for row, y in zip(curve, ys):
            ax.annotate(f"n={row['n']}", (row["kl"], y), textcoords="offset points", xytext=(4, -10), fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_rm_curve(points: list[dict], path: str | Path) -> Path:
    """Held-out accuracy against the number of labelled prompts, one line per data form (the mean over seeds,
    each seed's accuracy as a faint dot)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for form, style, color, label in (("pairs", "o-", "tab:blue", "pairs (one comparison per prompt)"),
                                      ("rankings", "s-", "tab:orange", "rankings (all answers of a prompt)")):
        mine = sorted((p for p in points if p["form"] == form and p.get("heldout_accuracy") is not None),
                      key=lambda p: p["prompts"])
        if not mine:
            continue
        seeds = max(len(p.get("heldout_accuracy_per_seed") or []) for p in mine)
        ax.plot([p["prompts"] for p in mine], [p["heldout_accuracy"] for p in mine], style, color=color,
                label=label + (f", mean of {seeds} seeds" if seeds > 1 else ""))
        if seeds > 1:  # each seed's model, faint, beside the mean
            xs = [p["prompts"] for p in mine for _ in p["heldout_accuracy_per_seed"]]
            ys = [a for p in mine for a in p["heldout_accuracy_per_seed"]]
            ax.scatter(xs, ys, s=10, color=color, alpha=0.35)
    ax.axhline(0.5, color="gray", linestyle=":", label="chance")
    ax.set(title="Reward model: accuracy vs labelled prompts", xlabel="labelled prompts",
           ylabel="held-out accuracy vs noise-free oracle")
    ax.set_xscale("log", base=2)
    counts = sorted({p["prompts"] for p in points})
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_ppo(curve: list[dict], path: str | Path, window: int = 5) -> Path:
    """PPO's reward over-optimisation over iterations: the reward-model score and the gold reward of each
    iteration's rollouts (dots; lines: running mean over ``window`` iterations), and their KL to the reference."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    steps = [row["step"] for row in curve]
    proxy_key = "reward/rm" if any("reward/rm" in row for row in curve) else "reward"
    gold_axis = left.twinx()
    for ax, key, color, label in ((left, proxy_key, "tab:orange", "proxy: reward model (normalised)"),
                                  (gold_axis, "gold", "tab:blue", "gold: oracle")):
        pts = [(row["step"], row[key]) for row in curve if key in row]
        if not pts:
            continue
        xs, ys = [x for x, _ in pts], [y for _, y in pts]
        ax.plot(xs, ys, ".", color=color, alpha=0.4)
        ax.plot(xs, running_mean(ys, window), "-", color=color, label=label)
        ax.set_ylabel(label, color=color)
    left.set(title="Reward of the rollouts", xlabel="PPO iteration")
    right.plot(steps, [row["kl"] for row in curve], ".", color="tab:gray", alpha=0.4)
    right.plot(steps, running_mean([row["kl"] for row in curve], window), "-", color="tab:gray")
    right.set(title="KL(π ‖ SFT) of the rollouts", xlabel="PPO iteration", ylabel="nats per response")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, plt, path)


def running_mean(values: list[float], window: int) -> list[float]:
    return [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1])
            for i in range(len(values))]


def plot_frontier(models: dict[str, dict], path: str | Path, stages: dict[str, dict] | None = None) -> Path:
    """Gold reward against KL to SFT on the held-out prompts: every evaluated policy as a marker, DPO's β sweep
    joined in β order, and, given the run's ``stages``, the paths behind them — best-of-n over n, and PPO's
    policy along training (SFT → its evaluated ``snapshots`` → the final policy)."""
    plt = _pyplot()
    stages = stages or {}
    fig, ax = plt.subplots(figsize=(9, 6.5))
    sft = models.get("sft")
    for name in ("ppo", "ppo_ptx", "grpo"):
        snaps = stages.get(name, {}).get("snapshots") or []
        final = models.get(name)
        if not snaps or final is None or final.get("kl_to_sft") is None:
            continue
        path_pts = ([(0.0, sft["gold_reward"])] if sft else []) + [(p["kl_to_sft"], p["gold_reward"]) for p in snaps] \
            + [(final["kl_to_sft"], final["gold_reward"])]
        ax.plot([x for x, _ in path_pts], [y for _, y in path_pts], ".:", color=model_color(name), alpha=0.8,
                label=f"{model_label(name)} along training (iterations {', '.join(str(p['step']) for p in snaps)})")
        for p in snaps:
            ax.annotate(f"it {p['step']}", (p["kl_to_sft"], p["gold_reward"]), textcoords="offset points",
                        xytext=(3, -11), fontsize=7, color=model_color(name))
    bon_curve = stages.get("bon", {}).get("curve")
    if bon_curve:
        ax.plot([r["kl"] for r in bon_curve], [r["gold_reward"] for r in bon_curve], ".--",
                color=model_color("best_of"), alpha=0.8, label="best-of-n, n = 1, 2, 4 … (analytic KL)")
        for r in bon_curve:
            ax.annotate(f"n={r['n']}", (r["kl"], r["gold_reward"]), textcoords="offset points", xytext=(3, -11),
                        fontsize=7, color=model_color("best_of"))
    models = {n: m for n, m in models.items() if m.get("kl_to_sft") is not None and m.get("gold_reward") is not None}
    sweep = sorted((dpo_beta(name, stages), m["kl_to_sft"], m["gold_reward"], name) for name, m in models.items()
                   if dpo_beta(name, stages) is not None)
    if sweep:
        ax.plot([s[1] for s in sweep], [s[2] for s in sweep], "o-", color=model_color("dpo"), markersize=8,
                markeredgecolor="black", label="DPO, β sweep" if len(sweep) > 1 else "DPO")
        for beta, kl, gold, _ in sweep:
            ax.annotate(f"β={beta:g}", (kl, gold), textcoords="offset points", xytext=(5, 4), fontsize=8)
    swept = {s[3] for s in sweep}
    rounds = []
    for family, of in (("dpo", dpo_round), ("ppo", ppo_round)):
        later = sorted((n for n in models if of(n)), key=of)
        if later:  # later rounds: a path from the first round's policy
            chain = ([family] if family in models else []) + later
            ax.plot([models[n]["kl_to_sft"] for n in chain], [models[n]["gold_reward"] for n in chain], "D--",
                    color=model_color(family), markersize=8, markeredgecolor="black",
                    label=f"{family.upper()}, rounds 2-{of(later[-1])} (preferences on its own answers)")
            for n in later:
                ax.annotate(f"round {of(n)}", (models[n]["kl_to_sft"], models[n]["gold_reward"]),
                            textcoords="offset points", xytext=(5, -12), fontsize=8)
        rounds += later
    for name, m in models.items():
        if name in swept or name in rounds:
            continue
        ax.plot(m["kl_to_sft"], m["gold_reward"], "*" if name == "sft" else "D", color=model_color(name),
                markersize=16 if name == "sft" else 9, markeredgecolor="black", linestyle="none",
                label=model_label(name, dpo_beta(name, stages)), zorder=3)
    ax.set(title="Gold reward vs KL to SFT (held-out prompts)",
           xlabel="KL(π ‖ SFT), nats per response", ylabel="gold reward (oracle, −1 … 1)")
    ax.margins(x=0.08, y=0.08)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    fig.tight_layout()
    return _save(fig, plt, path)


def _by_kl(curve: list[dict], key: str, window: int) -> tuple[list[float], list[float]]:
    """RL iterations sorted by their rollouts' KL, then ``kl`` and ``key`` as running means over ``window``.

    In training order the KL is not monotone (it rises, then wanders around where the KL penalty holds it), so a
    smoothed path in step order doubles back on itself; sorted by KL it reads as reward at a distance from SFT."""
    rows = sorted(curve, key=lambda r: r["kl"])
    return running_mean([r["kl"] for r in rows], window), running_mean([r[key] for r in rows], window)


def plot_win_rate(rows: list[dict], path: str | Path) -> Path:
    """Win rate vs SFT per model as horizontal bars with the 95 % CI; ``rows``: {name, label, win, ci} in order."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.4))
    ys = list(range(len(rows)))
    wins = [r["win"] for r in rows]
    err = [[r["win"] - r["ci"][0] for r in rows], [r["ci"][1] - r["win"] for r in rows]]
    ax.barh(ys, wins, xerr=err, color=[model_color(r["name"]) for r in rows], alpha=0.85, capsize=3,
            error_kw={"elinewidth": 1})
    for y, r in zip(ys, rows):
        ax.annotate(f"{r['win']:.2f}", (r["ci"][1], y), textcoords="offset points", xytext=(4, -3), fontsize=8)
    ax.axvline(0.5, color="black", linestyle="--", linewidth=1, label="0.5: as good as SFT")
    ax.set_yticks(ys, [r["label"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set(title="Win rate vs SFT on the held-out prompts (oracle judge, 95 % CI)",
           xlabel="win rate vs SFT (tie = ½)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_overoptimisation(ppo_curves: dict[str, list[dict]], bon_curve: list[dict] | None, path: str | Path,
                          window: int = 5) -> Path:
    """Proxy (reward model) and gold reward against √KL: PPO's rollouts in training (dots: iterations; lines:
    sorted by KL, running mean over ``window``; one line style per run in ``ppo_curves``) and best-of-n over n.
    A panel only for what is given."""
    plt = _pyplot()
    panels = [p for p, given in (("ppo", ppo_curves), ("bon", bon_curve)) if given]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.8 * len(panels), 4.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "ppo":
            for (name, curve), style in zip(ppo_curves.items(), ("-", "--", ":")):
                proxy_key = "reward/rm" if any("reward/rm" in r for r in curve) else "reward"
                for key, color, what in ((proxy_key, "tab:orange", "proxy (RM)"), ("gold", "tab:blue", "gold")):
                    ax.plot([math.sqrt(max(r["kl"], 0.0)) for r in curve], [r[key] for r in curve], ".",
                            color=color, alpha=0.3)
                    kl, ys = _by_kl(curve, key, window)
                    ax.plot([math.sqrt(max(k, 0.0)) for k in kl], ys, style, color=color,
                            label=f"{model_label(name)}: {what}")
            ax.set(title=f"PPO rollouts in training (by KL, mean of {window})")
        else:
            x = [math.sqrt(r["kl"]) for r in bon_curve]
            ax.plot(x, [r["proxy_reward"] for r in bon_curve], "o-", color="tab:orange", label="proxy (RM)")
            ax.plot(x, [r["gold_reward"] for r in bon_curve], "s-", color="tab:blue", label="gold")
            for xi, r in zip(x, bon_curve):
                ax.annotate(f"n={r['n']}", (xi, r["proxy_reward"]), textcoords="offset points", xytext=(4, -11),
                            fontsize=7)
            ax.set(title="Best-of-n (held-out prompts)")
        ax.set(xlabel="√KL(π ‖ SFT), √nats", ylabel="reward (RM: normalised; gold: oracle −1 … 1)")
        ax.margins(x=0.06, y=0.08)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_training(panels: list[dict], path: str | Path, ncols: int = 3) -> Path:
    """A grid of small training-curve panels. Each panel: {title, xlabel, ylabel, series, logy, legend (its
    corner)}; each series:
    {label, x, y, smooth (running-mean window; the raw values drawn faintly behind), marker (sparse points),
    color, linestyle} (all but label, x, y optional)."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.3 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for series in panel["series"]:
            smooth, style = series.get("smooth", 1), {"color": series.get("color"),
                                                      "linestyle": series.get("linestyle", "-")}
            if series.get("marker"):
                ax.plot(series["x"], series["y"], marker="o", markersize=4, label=series["label"], **style)
            elif smooth > 1:
                (raw,) = ax.plot(series["x"], series["y"], alpha=0.2, linewidth=0.8, **style)
                ax.plot(series["x"], running_mean(series["y"], smooth), label=f"{series['label']} (mean of {smooth})",
                        **(style | {"color": raw.get_color()}))
            else:
                ax.plot(series["x"], series["y"], label=series["label"], **style)
        ax.set(title=panel["title"], xlabel=panel.get("xlabel", "step"), ylabel=panel["ylabel"])
        if panel.get("logy"):
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 0.5, 1, 2, 5 rather than 5×10⁻¹
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.title.set_fontsize(10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc=panel.get("legend", "upper right"))  # a fixed corner: "best" costs seconds
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    # fixed margins in inches (every panel has the same furniture): tight_layout would draw the grid twice
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.15 / width, bottom=0.6 / height, top=1 - 0.35 / height,
                        wspace=0.38, hspace=0.5)
    return _save(fig, plt, path)


# Names and colours of the evaluated models, shared by the figures and the report's tables.
FAMILY_COLORS = {"base": "tab:gray", "sft": "black", "best_of": "tab:orange", "ppo": "tab:red",
                 "ppo_ptx": "tab:pink", "dpo": "tab:green", "grpo": "tab:purple", "grpo_checker": "tab:brown"}


def model_family(name: str) -> str:
    """``base``, ``sft``, ``best_of``, ``ppo``, ``ppo_ptx``, ``dpo``, ``grpo`` or ``grpo_checker`` (GRPO on a
    checker reward, e.g. ``grpo_arithmetic``); the name itself when it is none of these."""
    if name.startswith("base"):
        return "base"
    if name.startswith("best_of"):
        return "best_of"
    if name.startswith("dpo"):
        return "dpo"
    if name.startswith("grpo_"):
        return "grpo_checker"
    if ppo_round(name):
        return "ppo"
    return name


# Table and figure order of the evaluated models (by family; the main DPO row before its β sweep).
MODEL_ORDER = ("base_zero_shot", "base_few_shot", "sft", "best_of", "ppo", "ppo_ptx", "dpo", "grpo", "grpo_checker")


def model_rank(name: str, stages: dict[str, dict] | None = None) -> tuple:
    """Sort key of model ``name`` in MODEL_ORDER; unknown names last."""
    kind = name if name in MODEL_ORDER else model_family(name)
    rank = MODEL_ORDER.index(kind) if kind in MODEL_ORDER else len(MODEL_ORDER)
    later_round = dpo_round(name) or ppo_round(name) or 0
    return (rank, name.startswith("dpo_beta_"), later_round, dpo_beta(name, stages or {}) or 0.0, name)


def model_color(name: str) -> str:
    return FAMILY_COLORS.get(model_family(name), "tab:cyan")


def model_label(name: str, beta: float | None = None) -> str:
    """A readable row label: ``base_few_shot`` → "Base, few-shot", ``dpo_beta_0.03`` → "DPO, β 0.03"."""
    fixed = {"base_zero_shot": "Base, zero-shot", "base_few_shot": "Base, few-shot", "sft": "SFT", "ppo": "PPO",
             "ppo_ptx": "PPO-ptx", "grpo": "GRPO (reward model)"}
    if name in fixed:
        return fixed[name]
    if name.startswith("best_of_"):
        return f"Best-of-{name.removeprefix('best_of_')} (reward model)"
    if dpo_round(name):
        return f"DPO, round {dpo_round(name)}"
    if ppo_round(name):
        return f"PPO, round {ppo_round(name)}"
    if name.startswith("dpo"):
        beta = beta if beta is not None else dpo_beta(name, {})
        return "DPO" if beta is None else f"DPO, β {beta:g}"
    if name.startswith("grpo_"):
        return f"GRPO, {name.removeprefix('grpo_').replace('_', ' ')} checker"
    return name


def dpo_round(name: str) -> int | None:
    """The round of a later DPO round's model (``dpo_round_<r>`` → r); None for every other name."""
    return _round(name, "dpo")


def ppo_round(name: str) -> int | None:
    """The round of a later PPO round's model (``ppo_round_<r>`` → r); None for every other name."""
    return _round(name, "ppo")


def _round(name: str, family: str) -> int | None:
    suffix = name.removeprefix(f"{family}_round_")
    return int(suffix) if suffix != name and suffix.isdigit() else None


def dpo_beta(name: str, stages: dict[str, dict]) -> float | None:
    """DPO's β of model ``name`` in the β sweep: from its stage summary, else from a ``dpo_beta_<β>`` name;
    None for non-DPO models and for later DPO rounds (``dpo_round_<r>``, not part of the sweep)."""
    if not name.startswith("dpo") or dpo_round(name):
        return None
    if stages.get(name, {}).get("beta") is not None:
        return float(stages[name]["beta"])
    try:
        return float(name.removeprefix("dpo_beta_")) if name.startswith("dpo_beta_") else None
    except ValueError:
        return None


def _save(fig, plt, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
