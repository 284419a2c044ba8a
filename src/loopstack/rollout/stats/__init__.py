"""Experiment statistics for A/B tests, canaries and bandits.

Everything works on per-variant sufficient statistics (`Summary`: count, mean,
variance), so results can be computed from a server's counters or one SQL
``GROUP BY`` as well as from raw arrays.

- `power`: sample size and power for proportions and means.
- `frequentist`: two-proportion z-test and Welch's t-test with intervals for
  the absolute and the relative lift.
- `cuped`: variance reduction with a pre-period covariate.
- `srm`: sample ratio mismatch check (chi-square, flagged at p < 0.001).
- `sequential`: always-valid confidence sequences and p-values, for watching
  a test continuously.
- `corrections`: Holm and Benjamini-Hochberg.
- `subgroups`: per-segment breakdowns with correction.
- `verdict`: better / worse / inconclusive / withheld per metric, rendered
  for the terminal and for reports.

Examples
--------
>>> from loopstack.rollout import stats
>>> stats.sample_size_proportions(0.10, 0.05).control
57763
"""

from loopstack.rollout.stats.corrections import adjust, benjamini_hochberg, holm
from loopstack.rollout.stats.cuped import cuped, cuped_adjust, cuped_theta
from loopstack.rollout.stats.frequentist import Comparison, relative_lift, welch_ttest, ztest_proportions
from loopstack.rollout.stats.power import (
    SampleSize,
    power_means,
    power_proportions,
    sample_size_means,
    sample_size_proportions,
)
from loopstack.rollout.stats.sequential import (
    SequentialTest,
    always_valid_p,
    effective_n,
    halfwidth,
    sequential_test,
    tuned_rho,
)
from loopstack.rollout.stats.srm import SRM_THRESHOLD, SRMResult, srm_check
from loopstack.rollout.stats.subgroups import SubgroupResult, subgroup_breakdown
from loopstack.rollout.stats.summary import Summary
from loopstack.rollout.stats.verdict import Report, Verdict, analyze, verdict

__all__ = [
    # data
    "Summary",
    "Comparison",
    # planning
    "SampleSize",
    "power_proportions",
    "power_means",
    "sample_size_proportions",
    "sample_size_means",
    # fixed-horizon tests
    "ztest_proportions",
    "welch_ttest",
    "relative_lift",
    "cuped",
    "cuped_adjust",
    "cuped_theta",
    # sequential
    "SequentialTest",
    "sequential_test",
    "always_valid_p",
    "halfwidth",
    "tuned_rho",
    "effective_n",
    # checks and corrections
    "SRM_THRESHOLD",
    "SRMResult",
    "srm_check",
    "adjust",
    "holm",
    "benjamini_hochberg",
    "SubgroupResult",
    "subgroup_breakdown",
    # verdicts
    "Verdict",
    "Report",
    "verdict",
    "analyze",
]
