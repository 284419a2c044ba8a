"""Stream detectors find planted changes soon after they happen and stay quiet on stationary streams."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopstack.core.errors import ConfigError, ValidationError
from loopstack.drift import ADWIN, DDM, ChangeDetector, PageHinkley, detect


def _abrupt(seed: int, n: int = 2000, at: int = 1000, jump: float = 1.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.r_[rng.normal(0, 1, at), rng.normal(jump, 1, n - at)]


@pytest.mark.parametrize("make", [ADWIN, PageHinkley, DDM])
def test_detectors_follow_the_river_protocol(make: type) -> None:
    detector = make()
    assert isinstance(detector, ChangeDetector)
    assert detector.update(0.0) is detector and detector.drift_detected is False


@pytest.mark.parametrize("seed", range(5))
def test_adwin_finds_an_abrupt_mean_change(seed: int) -> None:
    hits = detect(ADWIN(), _abrupt(seed))
    assert hits and 1000 <= hits[0] < 1200
    assert not [h for h in hits if h < 1000]


@pytest.mark.parametrize("seed", range(5))
def test_page_hinkley_finds_an_abrupt_mean_change(seed: int) -> None:
    # delta is half the smallest shift worth catching; River's default (0.005) also alarms on noise
    hits = detect(PageHinkley(delta=0.5, threshold=25), _abrupt(seed))
    assert hits and 1000 <= hits[0] < 1100


def test_page_hinkley_directions() -> None:
    down = [5.0] * 300 + [0.0] * 100
    assert detect(PageHinkley(mode="up"), down) == []
    assert detect(PageHinkley(mode="down"), down)
    with pytest.raises(ConfigError, match="mode"):
        PageHinkley(mode="sideways")


@pytest.mark.parametrize("seed", range(5))
def test_ddm_finds_a_jump_in_the_error_rate(seed: int) -> None:
    rng = np.random.default_rng(seed)
    errors = np.r_[rng.uniform(size=3000) < 0.1, rng.uniform(size=1000) < 0.3]
    hits = detect(DDM(), errors)  # DDM can also fire early on its noisy first estimates, like River's
    assert [h for h in hits if 3000 <= h < 3300]


def test_ddm_warns_before_it_detects() -> None:
    rng = np.random.default_rng(1)
    detector, warned_at, drift_at = DDM(), None, None
    for i, error in enumerate(np.r_[rng.uniform(size=3000) < 0.1, rng.uniform(size=1000) < 0.4]):
        detector.update(error)
        if detector.warning_detected and warned_at is None:
            warned_at = i
        if detector.drift_detected:
            drift_at = i
            break
    assert warned_at is not None and drift_at is not None and warned_at <= drift_at


def test_stationary_streams_raise_few_false_alarms() -> None:
    alarms = {"adwin": 0, "ph": 0, "ddm": 0}
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        values = rng.normal(0, 1, 3000)
        alarms["adwin"] += len(detect(ADWIN(), values))
        alarms["ph"] += len(detect(PageHinkley(delta=0.5, threshold=25), values))
        alarms["ddm"] += len(detect(DDM(), rng.uniform(size=3000) < 0.2))
    assert alarms["adwin"] <= 2 and alarms["ph"] <= 2 and alarms["ddm"] <= 3, alarms


def test_adwin_window_shrinks_after_a_change() -> None:
    detector = ADWIN()
    for x in _abrupt(0):
        detector.update(x)
    assert detector.width < 2000 and detector.estimation == pytest.approx(1.5, abs=0.3)


@pytest.mark.parametrize("make", [ADWIN, PageHinkley, DDM])
def test_a_value_that_would_poison_the_state_is_refused_and_the_state_kept(make: type) -> None:
    """One NaN made ADWIN's and Page-Hinkley's means NaN for good: no change was ever found again."""
    from loopstack.core.errors import ValidationError

    detector = make()
    for _ in range(200):
        detector.update(0.0)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValidationError, match=r"(nan|inf)"):
            detector.update(bad)
    found = [detector.update(1.0).drift_detected for _ in range(300)]
    assert any(found)


def test_ddm_refuses_values_other_than_0_and_1() -> None:
    from loopstack.core.errors import ValidationError

    detector = DDM()
    with pytest.raises(ValidationError, match=r"2\.0.*0 \(right\) or 1 \(wrong\)"):
        detector.update(2)
    assert detector.n == 0
    assert detector.update(True).n == 1


def test_adwin_takes_huge_finite_values_without_overflowing() -> None:
    # (x - mean) ** 2 raised OverflowError past |x| ~ 1e154; River's arithmetic overflows to inf instead
    assert detect(ADWIN(), [1e155, -1e155] * 100) == []


@pytest.mark.parametrize(("make", "message"), [
    (lambda: DDM(warm_start=-5), r"DDM warm_start=-5 must be an integer >= 0"),
    (lambda: DDM(warm_start=2.5), r"DDM warm_start=2.5 must be an integer"),
    (lambda: DDM(drift_threshold=-1), r"DDM warning_threshold=2.0 and drift_threshold=-1 must satisfy 0 < warning"),
    (lambda: DDM(warning_threshold=3, drift_threshold=3), r"warning_threshold=3 and drift_threshold=3 must satisfy"),
    (lambda: DDM(warning_threshold=0), r"warning_threshold=0 and"),
    (lambda: PageHinkley(threshold=-1), r"PageHinkley threshold=-1 must be > 0"),
    (lambda: PageHinkley(threshold=0), r"PageHinkley threshold=0 must be > 0"),
    (lambda: PageHinkley(alpha=2), r"PageHinkley alpha=2 must be in \(0, 1\]"),
    (lambda: PageHinkley(alpha=0), r"PageHinkley alpha=0 must be in \(0, 1\]"),
    (lambda: PageHinkley(min_instances=0), r"PageHinkley min_instances=0 must be an integer >= 1"),
])
def test_detector_settings_that_break_detection_are_refused(make: object, message: str) -> None:
    """A negative warm start meant none; thresholds in the wrong order, a threshold <= 0 or alpha > 1 alarmed on
    almost every value (alpha > 1 also let the sums grow without bound)."""
    with pytest.raises(ConfigError, match=message):
        make()  # type: ignore[operator]


def test_the_edges_of_the_detector_settings_are_accepted() -> None:
    assert DDM(warm_start=0).warm_start == 0
    assert PageHinkley(alpha=1.0, min_instances=1).alpha == 1.0


def _state(detector: object) -> dict[str, object]:
    """Everything a detector carries from one value to the next (its rows copied: ADWIN's histogram)."""
    return {k: ([list(row) for row in v] if k == "_rows" else v) for k, v in vars(detector).items()}


@st.composite
def _streams(draw: st.DrawFn) -> tuple[str, list[float], list[int]]:
    """A stream with planted shifts (0/1 errors for DDM), and where to cut it into update_many batches."""
    kind = draw(st.sampled_from(["adwin", "page_hinkley", "ddm"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(0, 3000))
    shifts = np.repeat(rng.normal(0, draw(st.sampled_from([0.0, 1.0, 3.0])), 4), -(-n // 4))[:n]
    if kind == "ddm":
        values = (rng.uniform(size=n) < np.clip(0.1 + 0.1 * np.abs(shifts), 0, 1)).astype(float).tolist()
    else:
        values = (rng.normal(size=n) * draw(st.sampled_from([1e-3, 1.0, 1e6])) + shifts).tolist()
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    return kind, values, cuts


@settings(max_examples=60, deadline=None)
@given(_streams())
def test_update_many_matches_update_one_value_at_a_time(case: tuple[str, list[float], list[int]]) -> None:
    """update_many runs the same arithmetic on local variables: it must find the same changes, and leave
    the same state, as one update() per value, however the stream is cut into batches."""
    kind, values, cuts = case
    make = {"adwin": lambda: ADWIN(clock=8), "page_hinkley": lambda: PageHinkley(delta=0.1, threshold=5),
            "ddm": DDM}[kind]
    single, batched = make(), make()
    states, expected = {}, []
    for position, x in enumerate(values):
        if single.update(x).drift_detected:
            expected.append(position)
        states[position + 1] = _state(single)
    cuts = sorted({*cuts, *(p + 1 for p in expected)})  # also right after each detection: its flags are state
    found: list[int] = []
    for start, end in zip([0, *cuts], [*cuts, len(values)], strict=True):
        found += [start + i for i in batched.update_many(values[start:end])]
        assert _state(batched) == states.get(end, _state(make()))
    assert found == expected


@pytest.mark.parametrize(("make", "bad"), [(ADWIN, float("nan")), (PageHinkley, float("inf")), (DDM, 0.5)])
def test_update_many_refuses_a_batch_with_a_bad_value_whole(make: type, bad: float) -> None:
    detector = make()
    detector.update_many([0.0, 1.0] * 20)
    before = _state(detector)
    with pytest.raises(ValidationError, match=r"\.update\("):
        detector.update_many([1.0, 0.0, bad, 1.0])
    assert _state(detector) == before  # nothing of the batch was taken
