"""Arena leaderboard math (alignkit.serve.arena.ratings): the closed-form MLEs of docs/algorithms.md §13, recovery,
tallies, invariances."""

import json
import math
import random

import pytest

from alignkit.losses.reward import DAVIDSON_NU
from alignkit.serve.arena.ratings import (
    VOTES,
    fit_ratings,
    format_leaderboard,
    kendall_tau,
    leaderboard,
)

TRUE = {"m0": -1.0, "m1": -0.4, "m2": 0.0, "m3": 0.5, "m4": 0.9}  # mean 0, like the fitted strengths


def simulate(strengths: dict[str, float], n: int, *, nu: float, seed: int) -> list[tuple[str, str, str]]:
    """Votes drawn from Davidson's model; a tie is reported as "tie" or "both_bad" at random."""
    rng = random.Random(seed)
    names = sorted(strengths)
    battles = []
    for _ in range(n):
        a, b = rng.sample(names, 2)
        ra, rb = strengths[a], strengths[b]
        vote = rng.choices(["a", "b", "tie"], [math.exp(ra), math.exp(rb), nu * math.exp((ra + rb) / 2)])[0]
        if vote == "tie":
            vote = rng.choice(["tie", "both_bad"])
        battles.append((a, b, vote))
    return battles


@pytest.fixture(scope="module")
def sim() -> list[tuple[str, str, str]]:
    return simulate(TRUE, 2000, nu=2 ** -0.5, seed=0)


# ---------------------------------------------------------------- closed forms for two models


# Two models, d = r_A - r_B, x = e^{d/2}. Dividing Davidson's probabilities by e^{(r_A+r_B)/2}:
#   P(A≻B) = x/D, P(B≻A) = (1/x)/D, P(tie) = ν/D, D = x + 1/x + ν.
# With w wins of A, l of B, t ties, N = w+l+t: log L = (w - l)·d/2 - N·log D, and d log L/dd = 0 gives
#   (w - l)(x + 1/x + ν) = N(x - 1/x).
# w=3, l=1, t=0, ν=1: 2(x + 1/x + 1) = 4(x - 1/x)  ⇒ x² - x - 3 = 0   ⇒ x = (1 + √13)/2, d = 1.66824
# w=3, l=1, t=2, ν=1: 2(x + 1/x + 1) = 6(x - 1/x)  ⇒ 2x² - x - 4 = 0  ⇒ x = (1 + √33)/4, d = 1.04484
# w=3, l=1, ν=0 (Bradley-Terry): 2x = 4(x - 1/x)   ⇒ x² = 3          ⇒ d = ln 3 = 1.09861
@pytest.mark.parametrize("ties, nu, d", [
    (0, 1.0, 2 * math.log((1 + math.sqrt(13)) / 2)),
    (2, 1.0, 2 * math.log((1 + math.sqrt(33)) / 4)),
    (0, 0.0, math.log(3)),
])
def test_two_models_davidson_closed_form(ties, nu, d):
    battles = [("A", "B", "a"), ("B", "A", "b"), ("A", "B", "a"), ("A", "B", "b")] + [("A", "B", "tie")] * ties
    r, strength = fit_ratings(battles, tie_strength=nu, prior=0.0)
    assert strength == nu
    assert r["A"] - r["B"] == pytest.approx(d, abs=1e-6)
    assert r["A"] + r["B"] == pytest.approx(0.0, abs=1e-9)  # centred
    board = leaderboard(battles, tie_strength=nu, prior=0.0, bootstrap=0)
    a, b = board["models"]
    assert (a["name"], b["name"]) == ("A", "B") and a["ci"] is None
    assert a["rating"] - b["rating"] == pytest.approx(400 / math.log(10) * d, abs=1e-4)
    assert (a["rating"] + b["rating"]) / 2 == pytest.approx(1000.0)


def test_prior_keeps_an_unbeaten_model_finite():
    battles = [("A", "B", "a")] * 5 + [("B", "C", "a")] * 3 + [("C", "B", "a")]
    r, _ = fit_ratings(battles, tie_strength=DAVIDSON_NU, prior=0.01)
    assert all(math.isfinite(v) for v in r.values())
    assert r["A"] > r["B"] > r["C"]
    assert sum(r.values()) == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------- recovery and the tie strength


def test_recovers_known_strengths(sim):
    board = leaderboard(sim, bootstrap=200, seed=0)
    to_rating = 400 / math.log(10)
    fitted = {m["name"]: (m["rating"] - 1000) / to_rating for m in board["models"]}
    assert max(abs(fitted[k] - TRUE[k]) for k in TRUE) < 0.2  # about 3 standard errors at 2000 votes
    assert kendall_tau(fitted, TRUE) == 1.0
    assert [m["name"] for m in board["models"]] == ["m4", "m3", "m2", "m1", "m0"]
    inside = [m["ci"][0] <= 1000 + to_rating * TRUE[m["name"]] <= m["ci"][1] for m in board["models"]]
    assert sum(inside) >= 4
    assert all(m["ci"][0] < m["rating"] < m["ci"][1] for m in board["models"])
    # the simulation's ν = 1/√2 is a grid point (DAVIDSON_NU · √2^-1); the ML pick is it or a neighbour
    assert any(board["tie_strength"] == pytest.approx(nu) for nu in (2 ** -1, 2 ** -0.5, 1.0))
    # Rao-Kupper is the wrong tie model for these votes, but must still order the models
    r_rk, _ = fit_ratings(sim, tie_model="rao_kupper")
    assert kendall_tau(r_rk, TRUE) == 1.0


# Equal wins, so d = 0 and log L(ν) = t·log ν - N·log(2 + ν) + const, maximised at ν* = 2t / (N - t).
# 10/10 wins + 5 ties: ν* = 10/20 = 0.5, a grid point (√2^-2). + 30 ties: ν* = 60/20 = 3, between grid
# points 2√2 and 4: log L(2√2) = 30·1.0397 - 50·1.5745 = -47.53 > log L(4) = 30·1.3863 - 50·1.7918 = -48.0.
@pytest.mark.parametrize("ties, nu", [(5, 0.5), (30, 2 ** 1.5)])
def test_grid_search_tie_strength_by_hand(ties, nu):
    battles = [("A", "B", "a")] * 10 + [("A", "B", "b")] * 10 + [("A", "B", "tie")] * ties
    r, strength = fit_ratings(battles)
    assert strength == pytest.approx(nu)
    assert r["A"] == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("tie_model", ["davidson", "rao_kupper"])
def test_more_ties_raise_the_tie_strength(tie_model):
    few = simulate(TRUE, 600, nu=0.3, seed=1)
    many = simulate(TRUE, 600, nu=3.0, seed=1)
    _, s_few = fit_ratings(few, tie_model=tie_model)
    _, s_many = fit_ratings(many, tie_model=tie_model)
    assert s_many > 2 * s_few


# ---------------------------------------------------------------- tallies, both_bad


TOY = [("A", "B", "a"), ("B", "A", "b"), ("A", "B", "tie"), ("B", "C", "a"), ("C", "B", "both_bad")]


def test_toy_tallies_and_win_rate_by_hand():
    board = leaderboard(TOY, bootstrap=20)
    by_name = {m["name"]: m for m in board["models"]}
    assert [m["name"] for m in board["models"]] == ["A", "B", "C"]
    expected = {"A": (3, 2, 0, 1, 0), "B": (5, 1, 2, 1, 1), "C": (2, 0, 1, 0, 1)}
    for name, (votes, wins, losses, ties, both_bad) in expected.items():
        m = by_name[name]
        assert (m["votes"], m["wins"], m["losses"], m["ties"], m["both_bad"]) == (votes, wins, losses, ties, both_bad)
    wr = board["win_rate"]
    assert wr["A"]["B"] == pytest.approx(5 / 6) and wr["B"]["A"] == pytest.approx(1 / 6)  # (2 + ½) / 3
    assert wr["B"]["C"] == pytest.approx(0.75) and wr["C"]["B"] == pytest.approx(0.25)  # (1 + ½) / 2
    assert wr["A"]["C"] is None and wr["C"]["A"] is None and wr["A"]["A"] is None
    assert board["battles"] == {"A": {"A": 0, "B": 3, "C": 0}, "B": {"A": 3, "B": 0, "C": 2},
                                "C": {"A": 0, "B": 2, "C": 0}}
    assert board["n_votes"] == 5 and board["bootstrap"] == 20 and board["tie_model"] == "davidson"


def test_both_bad_is_a_tie_for_the_ratings(sim):
    as_ties = [(a, b, "tie" if v == "both_bad" else v) for a, b, v in sim]
    assert fit_ratings(sim) == fit_ratings(as_ties)
    assert any(v == "both_bad" for _, _, v in sim)


def test_format_leaderboard():
    text = format_leaderboard(leaderboard(TOY, bootstrap=20))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["rank", "model", "rating"]
    assert lines[1].split()[:2] == ["1", "A"] and lines[3].split()[:2] == ["3", "C"]
    assert "2/0/1/0" in lines[1] and "1/2/1/1" in lines[2]
    matrix = lines[-3:]  # rows A, B, C: A never met C
    assert matrix[0].split() == ["1", "A", "-", "0.83", "-"]
    assert matrix[2].split() == ["3", "C", "-", "0.25", "-"]
    assert format_leaderboard(leaderboard([])) == "no votes yet"


# ---------------------------------------------------------------- invariances and determinism


def test_swapping_sides_changes_nothing(sim):
    flip = {"a": "b", "b": "a", "tie": "tie", "both_bad": "both_bad"}
    swapped = [(b, a, flip[v]) for a, b, v in sim]
    r, s = fit_ratings(sim)
    r_swapped, s_swapped = fit_ratings(swapped)
    assert s == s_swapped
    assert r_swapped == pytest.approx(r, abs=1e-9)
    board, board_swapped = leaderboard(sim, bootstrap=30), leaderboard(swapped, bootstrap=30)
    ci, ci_swapped = ([x for m in b["models"] for x in m["ci"]] for b in (board, board_swapped))
    assert ci_swapped == pytest.approx(ci)
    # the win-rate matrix of the swapped battles is the same matrix
    assert board_swapped["win_rate"] == board["win_rate"]


def test_seeded_bootstrap_is_deterministic():
    battles = simulate(TRUE, 300, nu=1.0, seed=2)
    first = leaderboard(battles, bootstrap=40, seed=7)
    assert leaderboard(battles, bootstrap=40, seed=7) == first
    other = leaderboard(battles, bootstrap=40, seed=8)
    assert [m["ci"] for m in other["models"]] != [m["ci"] for m in first["models"]]
    assert [m["rating"] for m in other["models"]] == [m["rating"] for m in first["models"]]


# ---------------------------------------------------------------- Kendall's τ-b


def test_kendall_tau_hand_numbers():
    x = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
    assert kendall_tau(x, x) == 1.0
    assert kendall_tau(x, {k: -v for k, v in x.items()}) == -1.0
    # one swap among 4: 5 concordant, 1 discordant of 6 pairs
    assert kendall_tau(x, {"a": 1.0, "b": 2.0, "c": 4.0, "d": 3.0}) == pytest.approx(4 / 6)
    # b and c tied in y: 5 concordant, 0 discordant; τ-b = 5 / sqrt((6 - 0)(6 - 1)), not τ-a = 5/6
    assert kendall_tau(x, {"a": 1.0, "b": 2.0, "c": 2.0, "d": 3.0}) == pytest.approx(5 / math.sqrt(30))
    assert math.isnan(kendall_tau(x, dict.fromkeys(x, 0.0)))


def test_kendall_tau_errors():
    with pytest.raises(ValueError, match="same keys"):
        kendall_tau({"a": 1.0, "b": 2.0}, {"a": 1.0, "c": 2.0})
    with pytest.raises(ValueError, match="at least 2"):
        kendall_tau({"a": 1.0}, {"a": 1.0})


# ---------------------------------------------------------------- errors, empty input, JSON


@pytest.mark.parametrize("battles, match", [
    ([("A", "B", "a"), ("A", "A", "tie")], "battle 1: model 'A' is on both sides"),
    ([("A", "B", "A")], "battle 0: vote 'A' is not one of a, b, tie, both_bad"),
    ([("A", "B")], "expected \\(model_a, model_b, vote\\)"),
])
def test_bad_battles_raise(battles, match):
    with pytest.raises(ValueError, match=match):
        fit_ratings(battles)
    with pytest.raises(ValueError, match=match):
        leaderboard(battles)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="tie_model"):
        fit_ratings(TOY, tie_model="bradley_terry")
    with pytest.raises(ValueError, match="tie_strength=0"):
        fit_ratings(TOY, tie_strength=0.0)
    with pytest.raises(ValueError, match="bootstrap"):
        leaderboard(TOY, bootstrap=-1)


def test_empty_battles_give_an_empty_board():
    board = leaderboard([])
    assert board["models"] == [] and board["n_votes"] == 0
    assert board["win_rate"] == {} and board["battles"] == {}
    assert fit_ratings([]) == ({}, DAVIDSON_NU)


def test_board_is_plain_json():
    board = leaderboard(TOY + [("A", "C", "b")], bootstrap=10)
    text = json.dumps(board, allow_nan=False)
    assert json.loads(text) == board
    assert set(VOTES) == {"a", "b", "tie", "both_bad"}
