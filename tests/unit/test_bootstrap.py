"""Bootstrap intervals against known answers: synthetic verdicts whose true mean (or
true difference) is known, a fixed seed, and the interval's width against the
textbook standard error."""
from __future__ import annotations

import math

import numpy as np
import pytest

from wmsub.score.bootstrap import bootstrap_ci, paired_bootstrap
from wmsub.score.scoring import VideoVerdict, score_verdicts


def verdicts(n: int, p_newton: float, instruction=2.0, rng=None, prefix="s") -> list[VideoVerdict]:
    """n videos; newton passes with probability p_newton (exactly round(n*p) when rng is
    None), every other question passes, instruction fixed."""
    if rng is None:
        k = round(n * p_newton)
        newton = [True] * k + [False] * (n - k)
    else:
        newton = list(rng.random(n) < p_newton)
    return [VideoVerdict(f"{prefix}{i}", instruction, (bool(newton[i]), True, True, True, True), (True, True), {})
            for i in range(n)]


def test_constant_scores_have_a_zero_width_interval():
    ci = bootstrap_ci(verdicts(50, 1.0, instruction=3.0))
    assert ci["total"] == pytest.approx([10.0, 10.0]) and ci["newton"] == pytest.approx([1.0, 1.0])
    assert set(ci) >= {"instruction", "newton", "physical_laws", "common_sense", "total"}


def test_interval_width_matches_the_binomial_standard_error():
    n, p = 350, 0.8
    ci = bootstrap_ci(verdicts(n, p))
    half = 1.96 * math.sqrt(p * (1 - p) / n)  # 0.0419
    assert ci["newton"][0] == pytest.approx(p - half, abs=0.01)
    assert ci["newton"][1] == pytest.approx(p + half, abs=0.01)
    # every other question is constant: the total's spread is newton's alone
    assert ci["total"][1] - ci["total"][0] == pytest.approx(ci["newton"][1] - ci["newton"][0], abs=1e-9)


def test_the_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    p, runs = 0.7, 200
    covered = 0
    for run in range(runs):
        ci = bootstrap_ci(verdicts(120, p, rng=rng), resamples=1000, seed=run)
        covered += ci["newton"][0] <= p <= ci["newton"][1]
    assert 0.90 <= covered / runs <= 0.99, covered


def test_same_seed_same_interval_and_no_videos_no_interval():
    v = verdicts(80, 0.6)
    assert bootstrap_ci(v) == bootstrap_ci(v)
    assert bootstrap_ci([])["total"] is None


def test_paired_difference_recovers_a_known_effect():
    n = 200
    a = verdicts(n, 0.9)  # newton passes on the first 180
    b = verdicts(n, 0.8)  # ... on the first 160: 20 instances flipped to fail
    delta, ci = paired_bootstrap(a, b)
    assert delta["newton"] == pytest.approx(-20 / n) and delta["total"] == pytest.approx(-20 / n)
    assert delta["instruction"] == 0 and ci["instruction"] == [0.0, 0.0]
    assert ci["newton"][0] < -0.1 < ci["newton"][1] < 0  # excludes 0: a real effect
    # pairing: the interval of the difference is that of 20 flips out of 200
    half = 1.96 * math.sqrt(0.1 * 0.9 / n)
    assert ci["newton"][0] == pytest.approx(-0.1 - half, abs=0.01)
    assert score_verdicts(b)["total"] - score_verdicts(a)["total"] == pytest.approx(delta["total"])


def test_paired_difference_of_identical_runs_is_exactly_zero():
    a = verdicts(60, 0.5, rng=np.random.default_rng(1))
    delta, ci = paired_bootstrap(a, a)
    assert all(v == 0 for v in delta.values()) and ci["total"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="same instances"):
        paired_bootstrap(a, a[:-1])
