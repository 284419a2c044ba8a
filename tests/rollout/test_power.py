"""Sample size and power agree with statsmodels and with simulation."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import power_proportions_2indep

from loopstack.core.errors import ValidationError
from loopstack.rollout.stats import power_means, power_proportions, sample_size_means, sample_size_proportions


@pytest.mark.parametrize(
    ("baseline", "mde", "n", "ratio", "alternative"),
    [
        (0.10, 0.05, 50_000, 1.0, "two-sided"),
        (0.30, 0.02, 20_000, 1.0, "two-sided"),
        (0.05, 0.10, 30_000, 2.0, "two-sided"),
        (0.10, 0.05, 40_000, 1.0, "larger"),
        (0.10, -0.05, 40_000, 0.5, "smaller"),
        (0.50, 0.01, 100_000, 1.0, "two-sided"),
    ],
)
def test_power_proportions_matches_statsmodels(baseline, mde, n, ratio, alternative):
    treatment = baseline * (1 + mde)
    ours = power_proportions(baseline, mde, n, ratio=ratio, alternative=alternative)
    # statsmodels: sample 1 (nobs1, p1 = prop2 + diff) is our treatment when we pass the control as prop2
    # and flip the ratio, since its nobs2 = ratio * nobs1.
    ref = power_proportions_2indep(
        treatment - baseline, baseline, ratio * n, ratio=1 / ratio, alternative=alternative, return_results=False
    )
    assert ours == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize(
    ("mde", "std", "ratio", "alternative"),
    [(0.5, 2.0, 1.0, "two-sided"), (1.0, 10.0, 3.0, "two-sided"), (0.2, 1.0, 1.0, "larger")],
)
def test_means_match_statsmodels(mde, std, ratio, alternative):
    ref_n = NormalIndPower().solve_power(mde / std, power=0.8, alpha=0.05, ratio=ratio, alternative=alternative)
    ours = sample_size_means(mde, std, ratio=ratio, alternative=alternative)
    assert ours.control == int(np.ceil(ref_n - 1e-6))
    assert ours.treatment == int(np.ceil(ratio * ours.control - 1e-9))
    ref_power = NormalIndPower().power(mde / std, 1000, 0.05, ratio=ratio, alternative=alternative)
    assert power_means(mde, std, 1000, ratio=ratio, alternative=alternative) == pytest.approx(ref_power, rel=1e-9)


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9])
def test_sample_size_is_the_smallest_reaching_the_power(target):
    s = sample_size_proportions(0.12, 0.08, power=target)
    assert power_proportions(0.12, 0.08, s.control) >= target
    assert power_proportions(0.12, 0.08, s.control - 1) < target


def test_planned_power_holds_in_simulation():
    # 5 % relative lift on a 10 % rate at the planned size: the z-test detects it ~80 % of the time.
    from loopstack.rollout.stats import ztest_proportions

    s = sample_size_proportions(0.10, 0.05)
    rng = np.random.default_rng(11)
    x_c, x_t = rng.binomial(s.control, 0.10, 600), rng.binomial(s.treatment, 0.105, 600)
    hits = np.mean(
        [ztest_proportions(int(a), s.control, int(b), s.treatment).significant for a, b in zip(x_c, x_t, strict=True)]
    )
    assert 0.75 <= hits <= 0.85


def test_absolute_and_relative_effects_agree():
    assert sample_size_proportions(0.2, 0.01, relative=False) == sample_size_proportions(0.2, 0.05)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: sample_size_proportions(1.2, 0.05), "baseline"),
        (lambda: sample_size_proportions(0.9, 0.5), "outside"),
        (lambda: sample_size_proportions(0.1, 0.05, power=1.2), "power"),
        (lambda: sample_size_proportions(0.1, -0.05, alternative="larger"), "cannot be reached"),
        (lambda: power_means(1.0, 0.0, 100), "std"),
        (lambda: power_means(1.0, 1.0, 100, ratio=0), "ratio"),
    ],
)
def test_bad_plans_are_rejected(call, match):
    with pytest.raises(ValidationError, match=match):
        call()
