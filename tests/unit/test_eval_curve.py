"""The reward-model curve's summary: where rankings reach the accuracy of pairs."""

import subprocess
import sys


def _points(pairs: dict, rankings: dict) -> list[dict]:
    return ([{"form": "pairs", "prompts": n, "heldout_accuracy": a} for n, a in pairs.items()]
            + [{"form": "rankings", "prompts": n, "heldout_accuracy": a} for n, a in rankings.items()])


def test_matching_count_interpolates_in_log_count():
    from alignkit.eval.curve import match_sentence, matching_count

    # pairs reach 0.80 at 1000; rankings 0.78 at 500 and 0.82 at 1000: halfway in log(count) is √(500·1000)
    m = matching_count(_points({500: 0.76, 1000: 0.80}, {250: 0.70, 500: 0.78, 1000: 0.82}))
    assert m == {"pairs_prompts": 1000, "pairs_accuracy": 0.80, "rankings_prompts": 707, "bound": "interpolated"}
    assert match_sentence(m, 3) == ("pairs reach 0.800 with 1000 prompts; rankings reach it with about 707 "
                                    "(means of 3 seeds)")
    # equal at the largest count: exactly that count, no fewer
    assert matching_count(_points({1000: 0.8}, {500: 0.7, 1000: 0.8}))["rankings_prompts"] == 1000


def test_matching_count_bounds_and_misses():
    from alignkit.eval.curve import match_sentence, matching_count

    above = matching_count(_points({100: 0.7, 400: 0.75}, {100: 0.76, 400: 0.8}))
    assert above["rankings_prompts"] == 100 and above["bound"] == "at_most"
    missed = matching_count(_points({100: 0.7, 400: 0.75}, {100: 0.6, 400: 0.74}))
    assert missed["rankings_prompts"] is None
    assert match_sentence(missed, 1).endswith("do not reach it at any count (one seed)")
    # the first crossing counts, not a later one; a skipped point (None) is left out
    first = matching_count(_points({400: 0.75}, {100: 0.6, 200: 0.8, 300: 0.7, 400: 0.76}))
    assert first["bound"] == "interpolated" and 100 < first["rankings_prompts"] < 200
    assert matching_count(_points({400: 0.75}, {100: 0.6, 400: None})) is None  # a skipped point is left out
    assert matching_count(_points({400: 0.75}, {200: 0.8})) is None  # no count with both forms


def test_the_report_reads_the_curve_without_torch():
    """The report (and the curve's summary it prints) imports no torch: a report takes about a second."""
    code = "import sys, alignkit.eval.report, alignkit.eval.curve; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
