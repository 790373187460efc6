"""Figures of a run (PNG, matplotlib): best-of-n over-optimisation and the reward model's data efficiency.

Each function takes the numbers a stage wrote to its summary.json and a path; nothing is recomputed.
matplotlib is imported inside the functions (with the non-interactive Agg backend), so importing this
module costs nothing.
"""

from __future__ import annotations

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
    """Held-out accuracy against the number of labelled prompts, one line per data form."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for form, style, label in (("pairs", "o-", "pairs (one comparison per prompt)"),
                               ("rankings", "s-", "rankings (all answers of a prompt)")):
        pts = sorted((p["prompts"], p["heldout_accuracy"]) for p in points
                     if p["form"] == form and p.get("heldout_accuracy") is not None)
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], style, label=label)
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
        ax.plot(xs, _running_mean(ys, window), "-", color=color, label=label)
        ax.set_ylabel(label, color=color)
    left.set(title="Reward of the rollouts", xlabel="PPO iteration")
    right.plot(steps, [row["kl"] for row in curve], ".", color="tab:gray", alpha=0.4)
    right.plot(steps, _running_mean([row["kl"] for row in curve], window), "-", color="tab:gray")
    right.set(title="KL(π ‖ SFT) of the rollouts", xlabel="PPO iteration", ylabel="nats per response")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, plt, path)


def _running_mean(values: list[float], window: int) -> list[float]:
    return [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1])
            for i in range(len(values))]


def plot_frontier(models: dict[str, dict], path: str | Path) -> Path:
    """Gold reward against KL to SFT for every evaluated policy that has one (SFT, best-of-n, DPO's β sweep…)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    families: dict[str, list] = {}
    for name, m in models.items():
        if m.get("kl_to_sft") is not None:
            family = "dpo" if name.startswith("dpo") else "best-of-n" if name.startswith("best_of") else name
            families.setdefault(family, []).append((m["kl_to_sft"], m["gold_reward"], name))
    for family, pts in sorted(families.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if len(pts) > 1 else "o", label=family)
        for kl, gold, name in pts:
            ax.annotate(name.replace("dpo_beta_", "β="), (kl, gold), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
    ax.set(title="Reward vs KL to SFT", xlabel="KL(π ‖ SFT), nats per response", ylabel="gold reward (oracle)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig, plt, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
