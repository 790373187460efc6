"""Arena leaderboard: Bradley-Terry strengths with ties, on an Elo scale, with bootstrap intervals.

A vote compares model a with model b. Each model i has a strength r_i (natural-log odds scale) and

    r̂ = argmin_r  -Σ_votes log P(vote | r_a - r_b; s)  +  prior · Σ_i r_i²

where a decisive vote scores the tie model's log P(winner ≻ loser) and a tie scores log P(a ~ b).
Bradley & Terry (1952) give the win odds e^{r_a - r_b}; the ties follow Davidson (1970, strength ν) or
Rao & Kupper (1967, strength log θ), both from ``alignkit.losses.reward``. The tie strength s is chosen by
maximum likelihood over a geometric grid unless given. The published rating is Chatbot Arena's
(Chiang et al. 2024, arXiv 2403.04132): base + scale/ln 10 · r, so 400 points are 10:1 odds, with a 95 %
interval from refitting on battles resampled with replacement.

Deliberate simplifications: "both_bad" counts as a tie for the ratings, as Chatbot Arena does; every vote
weighs the same (no style control or per-prompt weighting); the bootstrap keeps the full-data tie strength
fixed; the prior is the only thing tying together groups of models that never met, so ratings across such
groups are not comparable.

    board = leaderboard(battles)            # battles: [(model_a, model_b, "a" | "b" | "tie" | "both_bad")]
    print(format_leaderboard(board))
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from alignkit.losses.reward import TIE_MODELS

VOTES = ("a", "b", "tie", "both_bad")

Battle = tuple[str, str, str]

# Strength grid = default · √2^k, k = -6..6: a factor 8 either way. For Davidson that spans a tie rate at
# equal strength ν/(2+ν) of 6 % to 80 %; a likelihood maximum beyond the grid is clamped to its edge.
_GRID_STEPS = range(-6, 7)


@dataclass(frozen=True)
class _Rows:
    """Battles merged into U distinct outcomes, so a fit or a bootstrap replicate costs O(U), not O(votes)."""
    first: Tensor   # (U,) long  winner of a decisive row; for a tie, the lower model index
    second: Tensor  # (U,) long  loser of a decisive row; for a tie, the higher model index
    tie: Tensor     # (U,) bool  "tie" or "both_bad"
    count: Tensor   # (U,) float64 how many battles had this outcome


# ---------------------------------------------------------------- validation and aggregation


def _check(battles: Sequence[Battle], tie_model: str) -> None:
    if tie_model not in TIE_MODELS:
        raise ValueError(f"tie_model must be one of {', '.join(TIE_MODELS)}, got {tie_model!r}")
    for i, battle in enumerate(battles):
        if len(battle) != 3:
            raise ValueError(f"battle {i}: expected (model_a, model_b, vote), got {battle!r}")
        a, b, vote = battle
        if not isinstance(a, str) or not isinstance(b, str):
            raise ValueError(f"battle {i}: model names must be strings, got {a!r} and {b!r}")
        if a == b:
            raise ValueError(f"battle {i}: model {a!r} is on both sides; a battle compares two different models")
        if vote not in VOTES:
            raise ValueError(f"battle {i}: vote {vote!r} is not one of {', '.join(VOTES)}")


def _aggregate(battles: Sequence[Battle], index: dict[str, int]) -> _Rows:
    # Both tie models give P(a ~ b) = P(b ~ a), so a tie is stored in one orientation; swapping the
    # sides of every battle then yields identical rows, hence bit-identical fits.
    merged: Counter[tuple[int, int, bool]] = Counter()
    for a, b, vote in battles:
        i, j = index[a], index[b]
        if vote == "a":
            merged[i, j, False] += 1
        elif vote == "b":
            merged[j, i, False] += 1
        else:
            merged[min(i, j), max(i, j), True] += 1
    keys = sorted(merged)
    return _Rows(first=torch.tensor([k[0] for k in keys], dtype=torch.long),
                 second=torch.tensor([k[1] for k in keys], dtype=torch.long),
                 tie=torch.tensor([k[2] for k in keys], dtype=torch.bool),
                 count=torch.tensor([merged[k] for k in keys], dtype=torch.float64))


def _check_strength(strength: float, rows: _Rows) -> None:
    # A zero strength gives ties probability 0: one observed tie would make the likelihood zero.
    if not math.isfinite(strength) or strength < 0:
        raise ValueError(f"tie_strength must be a finite number >= 0, got {strength}")
    if strength == 0 and bool(rows.tie.any()):
        raise ValueError("tie_strength=0 gives ties probability 0, but the battles have ties; use > 0")


# ---------------------------------------------------------------- maximum likelihood


def _objective(r: Tensor, rows: _Rows, count: Tensor, tie_model: str, strength: float,
               prior: float) -> Tensor:
    """Penalised NLL of strengths r (n,) for the rows weighted by count (U,), divided by the vote count.

    Dividing by a constant leaves the minimiser alone and keeps LBFGS's gradient tolerance meaningful
    whether there are ten votes or a million.
    """
    log_probs, _ = TIE_MODELS[tie_model]
    log_win, log_tie = log_probs(r[rows.first], r[rows.second], strength)
    log_p = torch.where(rows.tie, log_tie, log_win)  # (U,)
    return (prior * r.square().sum() - (count * log_p).sum()) / count.sum()


def _fit(rows: _Rows, count: Tensor, n: int, tie_model: str, strength: float, prior: float,
         init: Tensor | None = None) -> tuple[Tensor, float]:
    """Strengths (n,) float64 with mean 0 that minimise ``_objective``, and the minimum (per vote)."""
    r = (torch.zeros(n, dtype=torch.float64) if init is None else init.clone()).requires_grad_(True)
    # The objective is convex (log P is a log-sigmoid or minus a log-sum-exp of affine functions of r),
    # so quasi-Newton from any start reaches the optimum; a warm start just gets there in fewer steps.
    opt = torch.optim.LBFGS([r], lr=1.0, max_iter=200, history_size=20, tolerance_grad=1e-10,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = _objective(r, rows, count, tie_model, strength, prior)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        # The likelihood ignores a common shift of r. With prior > 0 the optimum already has mean 0;
        # with prior = 0 centring picks the one representative that is reported.
        r_hat = r.detach() - r.detach().mean()
        return r_hat, float(_objective(r_hat, rows, count, tie_model, strength, prior))


def _strength_grid(tie_model: str) -> list[float]:
    default = TIE_MODELS[tie_model][1]
    return [default * math.sqrt(2.0) ** k for k in _GRID_STEPS]


def _fit_all(battles: Sequence[Battle], tie_model: str, tie_strength: float | None,
             prior: float) -> tuple[list[str], _Rows, Tensor, float]:
    """Validated names (sorted), merged rows, strengths (n,) and the tie strength used."""
    _check(battles, tie_model)
    if prior < 0:
        raise ValueError(f"prior must be >= 0, got {prior}")
    names = sorted({name for a, b, _ in battles for name in (a, b)})
    rows = _aggregate(battles, {name: i for i, name in enumerate(names)})
    if not names:
        default = TIE_MODELS[tie_model][1]
        return names, rows, torch.zeros(0, dtype=torch.float64), default if tie_strength is None else tie_strength
    if tie_strength is not None:
        _check_strength(tie_strength, rows)
        r, _ = _fit(rows, rows.count, len(names), tie_model, tie_strength, prior)
        return names, rows, r, tie_strength
    # Profile likelihood over the grid: the strength enters the log-probs as a Python float, so each
    # grid point is its own fit, warm-started from its neighbour's strengths.
    best: tuple[float, Tensor, float] | None = None
    r = None
    for strength in _strength_grid(tie_model):
        r, loss = _fit(rows, rows.count, len(names), tie_model, strength, prior, init=r)
        if best is None or loss < best[0]:
            best = (loss, r, strength)
    assert best is not None
    return names, rows, best[1], best[2]


def fit_ratings(battles: list[Battle], *, tie_model: str = "davidson", tie_strength: float | None = None,
                prior: float = 0.01) -> tuple[dict[str, float], float]:
    """Bradley-Terry strengths with ties: ({model: r} on the natural-log scale with mean 0, tie strength).

    battles: (model_a, model_b, vote), vote in VOTES; "tie" and "both_bad" are both ties. tie_model:
    "davidson" (strength ν) or "rao_kupper" (strength log θ). tie_strength None picks the maximum-likelihood
    value on a geometric grid around the model's default (``_strength_grid``); a number fixes it. prior is
    the weight of the Gaussian penalty prior·Σr², which makes the fit unique and keeps a model that never
    lost finite; prior = 0 is the plain MLE.
    """
    names, _, r, strength = _fit_all(battles, tie_model, tie_strength, prior)
    return {name: float(v) for name, v in zip(names, r.tolist(), strict=True)}, float(strength)


# ---------------------------------------------------------------- the leaderboard


def _bootstrap(rows: _Rows, n: int, r_hat: Tensor, *, tie_model: str, strength: float, prior: float,
               replicates: int, seed: int) -> Tensor:
    """Strengths (replicates, n) refitted on battles resampled with replacement.

    Resampling N battles with replacement is a multinomial draw of N over the distinct rows with
    probabilities count/N, so a replicate is new row counts, not a new list of battles.
    """
    gen = torch.Generator().manual_seed(seed)
    total = int(rows.count.sum())
    boot = []
    for _ in range(replicates):
        # One replicate's draws at a time: memory O(votes), not O(replicates · votes).
        draws = torch.multinomial(rows.count, total, replacement=True, generator=gen)
        counts = torch.bincount(draws, minlength=len(rows.count)).to(torch.float64)
        boot.append(_fit(rows, counts, n, tie_model, strength, prior, init=r_hat)[0])
    return torch.stack(boot)


def _tallies(battles: Sequence[Battle], names: list[str]) -> tuple[dict, dict, dict]:
    """Per-model vote counts, and the pairwise won-points and battle counts (name -> name -> number)."""
    per_model = {m: {"votes": 0, "wins": 0, "losses": 0, "ties": 0, "both_bad": 0} for m in names}
    points = {i: dict.fromkeys(names, 0.0) for i in names}
    met = {i: dict.fromkeys(names, 0) for i in names}
    for a, b, vote in battles:
        met[a][b] += 1
        met[b][a] += 1
        per_model[a]["votes"] += 1
        per_model[b]["votes"] += 1
        if vote in ("a", "b"):
            winner, loser = (a, b) if vote == "a" else (b, a)
            per_model[winner]["wins"] += 1
            per_model[loser]["losses"] += 1
            points[winner][loser] += 1.0
        else:
            key = "ties" if vote == "tie" else "both_bad"
            per_model[a][key] += 1
            per_model[b][key] += 1
            points[a][b] += 0.5
            points[b][a] += 0.5
    return per_model, points, met


def leaderboard(battles: list[Battle], *, tie_model: str = "davidson", bootstrap: int = 200, seed: int = 0,
                scale: float = 400.0, base: float = 1000.0, tie_strength: float | None = None,
                prior: float = 0.01) -> dict:
    """The published leaderboard as plain JSON-ready data (see the module docstring for the model).

    rating = base + scale/ln 10 · r; "ci" is the 2.5 / 97.5 percentile of the rating over ``bootstrap``
    replicates (seeded by ``seed``; None when bootstrap = 0). "win_rate"[i][j] is the fraction of i-vs-j
    battles that i won, a tie or both_bad counting one half (None where they never met); "battles"[i][j]
    counts them. Models are sorted best first; tie_strength and prior are passed to ``fit_ratings``.
    """
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
    names, rows, r_hat, strength = _fit_all(battles, tie_model, tie_strength, prior)
    to_rating = scale / math.log(10.0)
    ci: list[list[float] | None] = [None] * len(names)
    if names and bootstrap > 0:
        boot = _bootstrap(rows, len(names), r_hat, tie_model=tie_model, strength=strength, prior=prior,
                          replicates=bootstrap, seed=seed)
        bounds = torch.quantile(base + to_rating * boot, torch.tensor([0.025, 0.975], dtype=torch.float64), dim=0)
        ci = [[float(lo), float(hi)] for lo, hi in bounds.T.tolist()]
    ratings = {m: base + to_rating * float(v) for m, v in zip(names, r_hat.tolist(), strict=True)}
    per_model, points, met = _tallies(battles, names)
    order = sorted(range(len(names)), key=lambda i: (-ratings[names[i]], names[i]))
    ranked = [names[i] for i in order]
    return {
        "models": [{"name": names[i], "rating": ratings[names[i]], "ci": ci[i], **per_model[names[i]]}
                   for i in order],
        "win_rate": {i: {j: points[i][j] / met[i][j] if met[i][j] else None for j in ranked} for i in ranked},
        "battles": {i: {j: met[i][j] for j in ranked} for i in ranked},
        "n_votes": len(battles), "tie_model": tie_model, "tie_strength": float(strength),
        "bootstrap": bootstrap, "scale": scale, "base": base,
    }


def format_leaderboard(board: dict) -> str:
    """A plain-text table: rank, model, rating, 95 % CI, votes, W/L/T/BB; then the win-rate matrix."""
    models = board["models"]
    if not models:
        return "no votes yet"
    width = max(5, *(len(m["name"]) for m in models))
    lines = [f"{'rank':>4}  {'model':<{width}}  {'rating':>7}  {'95% CI':>15}  {'votes':>6}  W/L/T/BB"]
    for rank, m in enumerate(models, 1):
        ci = "-" if m["ci"] is None else f"{m['ci'][0]:.0f} to {m['ci'][1]:.0f}"
        record = f"{m['wins']}/{m['losses']}/{m['ties']}/{m['both_bad']}"
        lines.append(f"{rank:>4}  {m['name']:<{width}}  {m['rating']:>7.1f}  {ci:>15}  {m['votes']:>6}  {record}")
    lines.append("")
    lines.append(f"win rate (row beats column; tie = 1/2), {board['n_votes']} votes, "
                 f"{board['tie_model']} tie strength {board['tie_strength']:.3g}")
    names = [m["name"] for m in models]
    # Columns are numbered by rank so the matrix stays narrow however long the model names are.
    lines.append(f"{'':<{width + 6}}" + "".join(f"{k:>6}" for k in range(1, len(names) + 1)))
    for rank, i in enumerate(names, 1):
        cells = "".join(f"{'-' if (w := board['win_rate'][i][j]) is None else f'{w:.2f}':>6}" for j in names)
        lines.append(f"{rank:>4}  {i:<{width}}{cells}")
    return "\n".join(lines)


def kendall_tau(x: dict[str, float], y: dict[str, float]) -> float:
    """Kendall's τ-b between two scorings of the same keys (Kendall 1945; ties in either scoring allowed).

    τ_b = (concordant - discordant) / sqrt((P - ties_x)(P - ties_y)) over the P = n(n-1)/2 pairs; NaN
    when either scoring gives every key the same score, where the order it would compare is undefined.
    """
    if set(x) != set(y):
        raise ValueError(f"kendall_tau needs the same keys; only in x: {sorted(set(x) - set(y))}, "
                         f"only in y: {sorted(set(y) - set(x))}")
    keys = sorted(x)
    if len(keys) < 2:
        raise ValueError(f"kendall_tau needs at least 2 keys, got {len(keys)}")
    concordant = discordant = ties_x = ties_y = 0
    for i, k in enumerate(keys):
        for m in keys[i + 1:]:
            dx, dy = x[k] - x[m], y[k] - y[m]
            ties_x += dx == 0
            ties_y += dy == 0
            concordant += dx * dy > 0
            discordant += dx * dy < 0
    pairs = len(keys) * (len(keys) - 1) // 2
    denom = math.sqrt((pairs - ties_x) * (pairs - ties_y))
    return (concordant - discordant) / denom if denom > 0 else math.nan
