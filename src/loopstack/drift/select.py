"""Which test runs on a column, with which threshold, and what counts as drift.

By default the test is picked per column from its kind and size the way
Evidently picks it:

* reference of at most 1,000 rows: Kolmogorov-Smirnov for a numerical column
  with more than 5 distinct values; otherwise chi-square, or the z-test when
  there are at most 2 distinct values;
* larger reference: normed Wasserstein for a numerical column with more than
  5 distinct values; Jensen-Shannon otherwise (categorical or discrete).

Distinct values are counted over both samples together, nulls excluded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loopstack.core.errors import ConfigError
from loopstack.drift import stats
from loopstack.drift.data import CATEGORICAL, NUMERICAL

SMALL_REFERENCE = 1000
FEW_VALUES = 5


@dataclass(frozen=True)
class StatTest:
    """A named column test: how to score a pair of samples and when the score means drift.

    Examples
    --------
    >>> TESTS["ks"].drifted(0.05, 0.05), TESTS["chisquare"].drifted(0.05, 0.05)
    (True, False)
    """

    name: str
    func: Callable[..., float]
    default_threshold: float
    p_value: bool  # lower scores mean drift
    inclusive: bool  # drift also when the score equals the threshold
    kinds: tuple[str, ...]

    def drifted(self, score: float, threshold: float) -> bool:
        """Whether `score` crosses `threshold` in this test's direction."""
        if score != score:  # NaN: the test could not run
            return False
        if self.p_value:
            return score <= threshold if self.inclusive else score < threshold
        return score >= threshold if self.inclusive else score > threshold


TESTS: dict[str, StatTest] = {
    "ks": StatTest("ks", stats.ks, 0.05, True, True, (NUMERICAL,)),
    "chisquare": StatTest("chisquare", stats.chi_square, 0.05, True, False, (NUMERICAL, CATEGORICAL)),
    "z": StatTest("z", stats.z_test, 0.05, True, False, (NUMERICAL, CATEGORICAL)),
    "wasserstein": StatTest("wasserstein", stats.wasserstein, 0.1, False, True, (NUMERICAL,)),
    "jensenshannon": StatTest("jensenshannon", stats.jensen_shannon, 0.1, False, True, (NUMERICAL, CATEGORICAL)),
    "psi": StatTest("psi", stats.psi, 0.1, False, True, (NUMERICAL, CATEGORICAL)),
}


def default_test(kind: str, n_reference: int, n_unique: int) -> str:
    """The name of the test Evidently would run on a column of this kind and size.

    Examples
    --------
    >>> default_test("numerical", 100_000, 5000), default_test("categorical", 500, 2)
    ('wasserstein', 'z')
    """
    if n_reference <= SMALL_REFERENCE:
        if kind == NUMERICAL and n_unique > FEW_VALUES:
            return "ks"
        return "chisquare" if n_unique > 2 else "z"
    if kind == NUMERICAL and n_unique > FEW_VALUES:
        return "wasserstein"
    return "jensenshannon"


def get_test(name: str | StatTest, kind: str) -> StatTest:
    """Look up a test by name, checking it applies to the column's kind."""
    if isinstance(name, StatTest):
        return name
    test = TESTS.get(name)
    if test is None:
        raise ConfigError(f"unknown drift test {name!r}; choose one of {sorted(TESTS)}")
    if kind not in test.kinds:
        raise ConfigError(f"test {name!r} cannot run on a {kind} column; choose one of {_for(kind)}")
    return test


def resolve(
    column: str,
    kind: str,
    n_reference: int,
    n_unique: int,
    options: Any,
) -> tuple[StatTest, float]:
    """The test and threshold for one column, after per-column and per-kind overrides."""
    chosen = options.tests.get(column) or (options.num_test if kind == NUMERICAL else options.cat_test)
    test = get_test(chosen or default_test(kind, n_reference, n_unique), kind)
    threshold = options.thresholds.get(column, options.threshold)
    return test, test.default_threshold if threshold is None else float(threshold)


def _for(kind: str) -> list[str]:
    return sorted(name for name, test in TESTS.items() if kind in test.kinds)
