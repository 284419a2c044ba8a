"""Counts from the SQL checks equal plain pandas computations on random frames."""

from __future__ import annotations

import re

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopstack.quality import Between, InSet, NotNull, Regex, StringLength, Suite, Unique, profile

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

numbers = st.lists(st.one_of(st.none(), st.just(float("nan")), st.floats(-1e6, 1e6)), min_size=0, max_size=60)
keys = st.lists(st.one_of(st.none(), st.integers(-5, 5)), min_size=0, max_size=60)
words = st.lists(st.one_of(st.none(), st.text(alphabet="abcXYZ-19", max_size=8)), min_size=0, max_size=60)


def run(check, column, values, dtype=None):
    frame = pd.DataFrame({column: pd.Series(values, dtype=dtype)})
    return Suite("p", [check]).run(frame).results[0], frame[column]


@SETTINGS
@given(numbers, st.floats(-1e6, 1e6), st.floats(0, 1e6))
def test_not_null_and_between_match_pandas(values, low, width):
    high = low + width
    nulls, series = run(NotNull("x"), "x", values, "float64")
    assert nulls.unexpected_count == int(series.isna().sum())
    assert nulls.element_count == len(series)
    ranged, _ = run(Between("x", min=low, max=high), "x", values, "float64")
    present = series.dropna()
    assert ranged.unexpected_count == int((~present.between(low, high)).sum())
    assert ranged.element_count == len(present)


@SETTINGS
@given(keys)
def test_unique_matches_pandas_duplicated_keep_false(values):
    result, series = run(Unique("k"), "k", values, "Int64")
    present = series.dropna()
    assert result.unexpected_count == int(present.duplicated(keep=False).sum())


@SETTINGS
@given(words, st.sets(st.text(alphabet="abcXYZ-19", max_size=3), min_size=1, max_size=4), st.integers(0, 8))
def test_set_length_and_regex_match_pandas(values, allowed, longest):
    in_set, series = run(InSet("w", sorted(allowed)), "w", values, "object")
    present = series.dropna()
    assert in_set.unexpected_count == int((~present.isin(allowed)).sum())
    length, _ = run(StringLength("w", max=longest), "w", values, "object")
    assert length.unexpected_count == int((present.str.len() > longest).sum())
    pattern = r"^[a-c]+-\d"
    regex, _ = run(Regex("w", pattern), "w", values, "object")
    assert regex.unexpected_count == sum(re.search(pattern, value) is None for value in present)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 9), st.one_of(st.none(), st.floats(-10, 10)), st.sampled_from("abc")),
                min_size=1, max_size=40))  # fmt: skip
def test_a_profiled_suite_passes_on_its_own_reference(rows):
    frame = pd.DataFrame(rows, columns=["i", "f", "s"])
    assert profile(frame).run(frame).passed


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 200), st.integers(0, 12), st.lists(st.one_of(st.none(), st.floats(-10, 10)), max_size=20),
       st.sampled_from([100.0, -1e6]))  # fmt: skip
def test_a_suite_profiled_with_outliers_passes_on_its_own_reference(zeros, far, noise, outlier):
    """More than 1% of the reference beyond 4 std (95 zeros, 5 hundreds) failed the proposed 0.99."""
    frame = pd.DataFrame({"x": pd.Series([0.0] * zeros + [outlier] * far + noise, dtype="float64")})
    assert profile(frame, outliers=True).run(frame).passed
