"""Rollout simulations: sequential testing under peeking, power, canary guardrails, bandit, assignment, ticks.

Fixed seeds; every number in bench/RESULTS.md "Rollouts" comes from one run of::

    bash bench/anchors.sh growthbook                  # GrowthBook SDK + gbstats, the anchor
    .venv/bin/python bench/rollout.py                 # everything (a few minutes)
    .venv/bin/python bench/rollout.py --quick         # smaller sizes, a smoke run
    .venv/bin/python bench/rollout.py --only aa power # some sections
    git worktree add /tmp/old <commit>                # then, the ticks of that commit's controller:
    PYTHONPATH=/tmp/old/src .venv/bin/python bench/rollout.py --only ticks

Sections
--------
aa          1,000 A/A experiments (10 % conversion, 10,000 units, coin-flip
            assignment) looked at after every 100 units: how many ever reach
            p < 0.05 with the always-valid test, and with a naive z-test.
power       true +5 % relative lift on 10 % at the planned sample size
            (80 % power): the z-test's detection rate at the end, and the
            sequential test's while peeking every 1,000 units.
canary      challenger with twice the champion's error rate (2 % vs 1 %),
            an equal one and a better one, through steps 1/5/25/50 %:
            decisions, and requests the bad challenger served before rollback.
bandit      Thompson sampling (min share 5 %) vs a uniform split, cumulative regret.
assignment  allocation vs weights over 100,000 ids, independence across
            salts, stability across processes, throughput.
anchor      the GrowthBook Python SDK assigns the same 100,000 ids
            identically; gbstats' sequential test gives the same intervals.
ticks       RolloutController.evaluate() on a canary with 500,000 logged
            requests in 200 traffic segments (30 % with feedback; for brier
            also their predictions), one new segment of each log per tick:
            a new controller per tick (every segment read) against one
            controller ticking (new segments only). Same logs for both; the
            per-variant numbers each tick records must be equal. Run it with
            ``PYTHONPATH=<checkout>/src`` to time another commit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from loopstack.rollout import CanaryAnalysis, CanaryPolicy, ThompsonBandit, VariantAssigner, VariantStats
from loopstack.rollout.stats import (
    SequentialTest,
    Summary,
    always_valid_p,
    power_proportions,
    sample_size_proportions,
    sequential_test,
    tuned_rho,
)

HERE = Path(__file__).resolve().parent
ANCHOR_PYTHON = HERE / ".anchors" / "growthbook" / "bin" / "python"
ALPHA = 0.05


def section_aa(quick: bool) -> dict[str, Any]:
    """A/A under continuous peeking: sequential vs naive false positive rates."""
    experiments, units, every = (200 if quick else 1000), 10_000, 100
    rng = np.random.default_rng(20240601)
    looks = np.arange(every, units + 1, every)
    seq_hits = naive_hits = final_hits = 0
    for chunk in np.array_split(np.arange(experiments), max(1, experiments // 100)):
        arm = rng.random((chunk.size, units)) < 0.5
        y = rng.random((chunk.size, units)) < 0.10
        n_t = np.cumsum(arm, axis=1)[:, looks - 1]
        n_c = looks - n_t
        x_t = np.cumsum(y & arm, axis=1)[:, looks - 1]
        x_c = np.cumsum(y & ~arm, axis=1)[:, looks - 1]
        seq_p, naive_p = _peek_p_values(x_c, n_c, x_t, n_t, planned_n=units)
        seq_hits += int((seq_p.min(axis=1) <= ALPHA).sum())
        naive_hits += int((naive_p.min(axis=1) < ALPHA).sum())
        final_hits += int((naive_p[:, -1] < ALPHA).sum())
    _check_vectorised_against_sequential_test()
    return {
        "experiments": experiments,
        "units": units,
        "look_every": every,
        "looks": looks.size,
        "sequential_fpr": seq_hits / experiments,
        "naive_peeking_fpr": naive_hits / experiments,
        "naive_single_look_fpr": final_hits / experiments,
    }


def _peek_p_values(x_c, n_c, x_t, n_t, planned_n: float) -> tuple[np.ndarray, np.ndarray]:
    """Always-valid and naive z-test p-values at every look (arrays: experiments x looks)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        p_c, p_t = x_c / n_c, x_t / n_t
        pooled = (x_c + x_t) / (n_c + n_t)
        var_c = p_c * (1 - p_c) * n_c / (n_c - 1)
        var_t = p_t * (1 - p_t) * n_t / (n_t - 1)
        # the library floors each arm's variance at the pooled one (the merged sample's, ddof 1)
        var_pooled = pooled * (1 - pooled) * (n_c + n_t) / (n_c + n_t - 1)
        var_c, var_t = np.maximum(var_c, var_pooled), np.maximum(var_t, var_pooled)
        se = np.sqrt(var_c / n_c + var_t / n_t)
        n_eff = 4.0 / (1.0 / n_c + 1.0 / n_t)
        seq = always_valid_p(p_t - p_c, se, n_eff, tuned_rho(ALPHA, planned_n))
        z = (p_t - p_c) / np.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_t))
        naive = 2 * sps.norm.sf(np.abs(np.nan_to_num(z)))
    return np.nan_to_num(seq, nan=1.0), naive


def _check_vectorised_against_sequential_test() -> None:
    """The vectorised bench path must give the same p-values as the library's SequentialTest."""
    rng = np.random.default_rng(7)
    x_c = np.cumsum(rng.binomial(50, 0.1, 20))
    x_t = np.cumsum(rng.binomial(50, 0.1, 20))
    n = np.arange(1, 21) * 50
    vec, _ = _peek_p_values(x_c[None], n[None], x_t[None], n[None], planned_n=10_000)
    test = SequentialTest(alpha=ALPHA, planned_n=10_000)
    running = [
        test.update(Summary.from_proportion(int(a), int(m)), Summary.from_proportion(int(b), int(m))).p_value
        for a, b, m in zip(x_c, x_t, n, strict=True)
    ]
    assert np.allclose(np.minimum.accumulate(vec[0]), running, rtol=1e-9), "vectorised p-values drifted"


def section_power(quick: bool) -> dict[str, Any]:
    """Detection rate of a true +5 % relative lift at the planned sample size."""
    baseline, lift, target = 0.10, 0.05, 0.80
    plan = sample_size_proportions(baseline, lift, power=target)
    experiments = 300 if quick else 1000
    rng = np.random.default_rng(20240602)
    step = 500  # per arm per look: a look every 1,000 units
    looks = int(np.ceil(2 * plan.control / step))  # run on to twice the plan to see the sequential test's cost
    per_arm = np.minimum(np.arange(1, looks + 1) * step, 2 * plan.control)
    at_plan = int(np.searchsorted(per_arm, plan.control))  # first look at or past the planned size
    per_arm[at_plan] = plan.control
    inc = np.diff(np.r_[0, per_arm])
    x_c = np.cumsum(rng.binomial(inc, baseline, (experiments, looks)), axis=1)
    x_t = np.cumsum(rng.binomial(inc, baseline * (1 + lift), (experiments, looks)), axis=1)
    seq_p, naive_p = _peek_p_values(x_c, per_arm, x_t, per_arm, planned_n=2 * plan.control)
    fixed = naive_p[:, at_plan] < ALPHA
    stopped = seq_p <= ALPHA
    first = np.where(stopped.any(axis=1), stopped.argmax(axis=1), looks)
    return {
        "baseline": baseline,
        "relative_lift": lift,
        "planned_power": target,
        "planned_per_arm": plan.control,
        "planned_power_check": power_proportions(baseline, lift, plan.control),
        "experiments": experiments,
        "fixed_detection_rate": float(fixed.mean()),
        "fixed_detection_ci95": _wilson(int(fixed.sum()), experiments),
        "sequential_detection_by_plan": float((first <= at_plan).mean()),
        "sequential_detection_by_2x_plan": float((first < looks).mean()),
        "sequential_median_stop_per_arm": float(np.median(per_arm[first[first < looks]]))
        if (first < looks).any()
        else None,
    }


def _wilson(hits: int, n: int) -> list[float]:
    z = 1.96
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 4), round(centre + half, 4)]


def section_canary(quick: bool) -> dict[str, Any]:
    """Canary through 1/5/25/50 % with error-rate and tail-latency guardrails."""
    policy = CanaryPolicy(steps=(0.01, 0.05, 0.25, 0.5), min_requests_per_step=2000, planned_n=20_000)
    runs = 40 if quick else 200
    scenarios = {
        "twice_the_errors": (0.02, 1.0),
        "equal": (0.01, 1.0),
        "better": (0.005, 1.0),
        "slower_p99": (0.01, 1.25),
    }
    out: dict[str, Any] = {
        "policy": {"steps": list(policy.steps), "min_requests_per_step": 2000, "alpha": policy.alpha},
        "runs": runs,
        "champion_error_rate": 0.01,
        "requests_per_interval": 5000,
    }
    for name, (error_rate, latency_scale) in scenarios.items():
        results = [_canary_run(policy, error_rate, latency_scale, seed=1000 + i) for i in range(runs)]
        actions = [r["action"] for r in results]
        served = np.array([r["canary_requests"] for r in results if r["action"] == "rollback"])
        out[name] = {
            "challenger_error_rate": error_rate,
            "latency_scale": latency_scale,
            "rollback_rate": actions.count("rollback") / runs,
            "promote_rate": actions.count("promote") / runs,
            "served_before_rollback_median": float(np.median(served)) if served.size else None,
            "served_before_rollback_p90": float(np.quantile(served, 0.9)) if served.size else None,
            "rollback_steps": sorted({r["step"] for r in results if r["action"] == "rollback"}),
        }
    return out


def _canary_run(policy: CanaryPolicy, error_rate: float, latency_scale: float, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    analysis = CanaryAnalysis(policy)
    requests = {"s": 0, "c": 0}
    errors = {"s": 0, "c": 0}
    latency: dict[str, list[np.ndarray]] = {"s": [], "c": []}
    decision = None
    for _ in range(2000):
        n_c = rng.binomial(5000, analysis.weight)
        for arm, n, rate, scale in (("s", 5000 - n_c, 0.01, 1.0), ("c", n_c, error_rate, latency_scale)):
            requests[arm] += n
            errors[arm] += rng.binomial(n, rate)
            latency[arm] = [*latency[arm][-9:], rng.lognormal(np.log(40 * scale), 0.5, min(n, 2000))]
        decision = analysis.evaluate(
            VariantStats(requests["s"], errors["s"], np.concatenate(latency["s"])),
            VariantStats(requests["c"], errors["c"], np.concatenate(latency["c"])),
        )
        if analysis.finished:
            break
    assert decision is not None
    return {"action": decision.action, "step": decision.step, "canary_requests": decision.canary_requests}


def section_bandit(quick: bool) -> dict[str, Any]:
    """Cumulative regret: Thompson sampling with a 5 % floor vs a uniform split."""
    rates = {"v1": 0.10, "v2": 0.11, "v3": 0.12}
    horizon, runs = (5000, 5) if quick else (20_000, 20)
    best = max(rates.values())
    uniform_regret = horizon * (best - np.mean(list(rates.values())))
    regrets, checkpoints = [], [1000, 5000, horizon]
    for seed in range(runs):
        world = np.random.default_rng(10_000 + seed)
        bandit = ThompsonBandit(list(rates), min_share=0.05, seed=seed)
        regret, curve = 0.0, {}
        for t in range(1, horizon + 1):
            arm = bandit.choose()
            bandit.update(arm, float(world.random() < rates[arm]))
            regret += best - rates[arm]
            if t in checkpoints:
                curve[t] = regret
        regrets.append(curve)
    mean_curve = {t: float(np.mean([c[t] for c in regrets])) for t in checkpoints}
    return {
        "rates": rates,
        "horizon": horizon,
        "runs": runs,
        "min_share": 0.05,
        "thompson_regret": mean_curve,
        "uniform_regret": {t: float(t * (best - np.mean(list(rates.values())))) for t in checkpoints},
        "regret_ratio_at_horizon": mean_curve[horizon] / uniform_regret,
    }


def section_assignment(quick: bool) -> dict[str, Any]:
    """Allocation, independence, stability and speed of GrowthBook-style assignment."""
    ids = [f"user-{i}" for i in range(100_000)]
    out: dict[str, Any] = {"ids": len(ids)}
    for weights in ([0.5, 0.5], [0.1, 0.3, 0.6], [0.9, 0.1]):
        ab = VariantAssigner("alloc", [f"v{i}" for i in range(len(weights))], weights=weights)
        shares = np.bincount(ab.assign_many(ids), minlength=len(weights)) / len(ids)
        out[f"max_abs_share_error_{weights}"] = float(np.max(np.abs(shares - weights)))
    first = VariantAssigner("exp-a", ["a", "b"]).assign_many(ids)
    second = VariantAssigner("exp-b", ["a", "b"]).assign_many(ids)
    table = np.histogram2d(first, second, bins=2)[0]
    out["independence_chi2_p"] = float(sps.chi2_contingency(table).pvalue)
    out["independence_cells"] = (table / len(ids)).round(4).tolist()
    digest = hashlib.sha256(VariantAssigner("stable", ["a", "b", "c"]).assign_many(ids).tobytes()).hexdigest()
    out["assignment_sha256"] = digest
    code = (
        "import hashlib,sys;from loopstack.rollout import VariantAssigner;"
        "ids=[f'user-{i}' for i in range(100_000)];"
        "print(hashlib.sha256(VariantAssigner('stable',['a','b','c']).assign_many(ids).tobytes()).hexdigest())"
    )
    others = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": str(s)}
        ).stdout.strip()
        for s in (1, 2)
    }
    out["stable_across_processes"] = others == {digest}
    ab = VariantAssigner("speed", ["a", "b"])
    start = time.perf_counter()
    ab.assign_many(ids)
    out["vectorised_ids_per_s"] = len(ids) / (time.perf_counter() - start)
    start = time.perf_counter()
    for u in ids[:20_000]:
        ab.assign(u)
    out["scalar_ids_per_s"] = 20_000 / (time.perf_counter() - start)
    return out


ANCHOR_SCRIPT = r"""
import json, sys, time
from growthbook.core import gbhash, getBucketRanges, chooseVariation
from gbstats.frequentist.tests import SequentialTwoSidedTTest, SequentialConfig
from gbstats.models.statistics import ProportionStatistic
job = json.load(sys.stdin)
ranges = getBucketRanges(3, 1.0, [0.1, 0.3, 0.6])
start = time.perf_counter()
assigned = [chooseVariation(gbhash("anchor-exp", u, 2), ranges) for u in job["ids"]]
elapsed = time.perf_counter() - start
cis = []
for x_c, x_t, n in job["proportions"]:
    config = SequentialConfig(difference_type="absolute", sequential_tuning_parameter=job["planned_n"])
    t = SequentialTwoSidedTTest(ProportionStatistic(n=n, sum=x_c), ProportionStatistic(n=n, sum=x_t), config)
    cis.append([t.confidence_interval[0], t.confidence_interval[1], t.p_value])
print(json.dumps({"assigned": assigned, "seconds": elapsed, "cis": cis}))
"""


def section_anchor(quick: bool) -> dict[str, Any]:
    """Same ids through the GrowthBook SDK, same summaries through gbstats' sequential test."""
    if not ANCHOR_PYTHON.exists():
        return {"skipped": "run `bash bench/anchors.sh growthbook` first"}
    ids = [f"user-{i}" for i in range(100_000)]
    rng = np.random.default_rng(3)
    props = [[int(rng.binomial(n, 0.1)), int(rng.binomial(n, 0.11)), int(n)] for n in rng.integers(500, 50_000, 50)]
    job = {"ids": ids, "proportions": props, "planned_n": 20_000}
    proc = subprocess.run(
        [str(ANCHOR_PYTHON), "-c", ANCHOR_SCRIPT], input=json.dumps(job), capture_output=True, text=True, check=True
    )
    theirs = json.loads(proc.stdout)
    ab = VariantAssigner("anchor-exp", ["a", "b", "c"], weights=[0.1, 0.3, 0.6])
    start = time.perf_counter()
    ours = ab.assign_many(ids).tolist()
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    ours_scalar = [ab.assign_index(u) for u in ids]
    ours_scalar_s = time.perf_counter() - start
    worst, widening = 0.0, 0.0
    for (x_c, x_t, n), (low, high, p) in zip(props, theirs["cis"], strict=True):
        # gbstats uses the ddof=0 variance p(1-p); pass the same so the numbers are comparable
        c, t = Summary(n, x_c / n, x_c / n * (1 - x_c / n)), Summary(n, x_t / n, x_t / n * (1 - x_t / n))
        # gbstats keeps each arm's own variance: loopstack's pooled_floor=False is the same test
        r = sequential_test(c, t, alpha=ALPHA, planned_n=20_000, pooled_floor=False)
        worst = max(worst, abs(r.diff_ci[0] - low), abs(r.diff_ci[1] - high), abs(r.p_value - p))
        floored = sequential_test(c, t, alpha=ALPHA, planned_n=20_000)  # the default: how much wider
        widening = max(widening, (floored.diff_ci[1] - floored.diff_ci[0]) / (high - low) - 1)
    identical = ours == theirs["assigned"] == ours_scalar
    if not identical or worst > 1e-9:
        raise SystemExit(f"anchor mismatch: identical assignments={identical}, gbstats max difference={worst}")
    return {
        "ids": len(ids),
        "identical_assignments": identical,
        "growthbook_sdk_s": theirs["seconds"],
        "loopstack_vectorised_s": ours_s,
        "loopstack_scalar_s": ours_scalar_s,
        "speedup_vectorised": theirs["seconds"] / ours_s,
        "gbstats_sequential_cases": len(props),
        "gbstats_max_abs_difference": worst,
        "pooled_floor_max_widening": widening,
    }


TICK_ROWS = 2500  # requests per traffic segment (2.5 s of a 1,000 requests/s endpoint)


def section_ticks(quick: bool) -> dict[str, Any]:
    """Time per controller tick: a new controller reading every segment vs one reading the new segments only."""
    import loopstack as ls

    segments, ticks = (40, 5) if quick else (200, 9)
    folder = HERE / ".work" / "rollout_ticks"
    shutil.rmtree(folder, ignore_errors=True)
    project = ls.Project.init(folder / "proj", name="bench-ticks")
    refs = _two_versions(project)
    out: dict[str, Any] = {"segments": segments, "requests": segments * TICK_ROWS, "ticks": ticks,
                           "feedback_share": 0.3}
    try:
        for metric in ("conversion", "brier"):
            runs = {mode: _tick_run(project, refs, folder, metric, mode, segments, ticks)
                    for mode in ("fresh", "incremental")}
            seen = {mode: run.pop("variants") for mode, run in runs.items()}
            if seen["fresh"] != seen["incremental"]:
                raise SystemExit(f"{metric}: the ticking controller saw other numbers than a fresh one")
            fresh, incremental = runs["fresh"]["median_s"], runs["incremental"]["median_s"]
            out[metric] = {**runs, "speedup_median": fresh / incremental}
    finally:
        project.close()
    return out


def _two_versions(project: Any) -> list[str]:
    from sklearn.dummy import DummyClassifier

    import loopstack as ls

    refs = []
    for k in range(2):
        model = DummyClassifier(strategy="prior").fit(np.zeros((4, 3)), [0, 1, 1, k])
        with ls.start_run(project=project) as run:
            run.log_model(model, "model", example=np.zeros((2, 3)))
        refs.append(f"m/{ls.register_model(run.id, 'model', name='m', project=project).version}")
    return refs


def _tick_run(project: Any, refs: list[str], folder: Path, metric: str, mode: str, segments: int,
              ticks: int) -> dict[str, Any]:
    """`segments` segments logged, then `ticks` times: one more segment of each log and a timed tick."""
    from loopstack.rollout import RolloutController

    endpoint, log_dir = f"{metric}-{mode}", folder / f"{metric}-{mode}"
    project.deployments.create(endpoint, refs[0], primary_metric=metric)
    started = project.deployments.canary(endpoint, refs[1], steps=[50, 100], min_requests_per_step=10**9,
                                         salt="ticks").version
    start_us = int(project.deployments.get(endpoint).state["started_at"] * 1e6) + 1
    for segment in range(segments):
        _log_segment(log_dir, endpoint, refs, segment, start_us, metric == "brier")
    controller = RolloutController(project, endpoint, log_dir=log_dir)
    first = _timed(controller.evaluate) if mode == "incremental" else None
    times = []
    for tick in range(ticks):
        _log_segment(log_dir, endpoint, refs, segments + tick, start_us, metric == "brier")
        if mode == "fresh":
            controller = RolloutController(project, endpoint, log_dir=log_dir)
        times.append(_timed(controller.evaluate))
    events = project.events.list(kind="rollout.canary.hold", subject=endpoint, limit=ticks, newest_first=True)
    assert project.deployments.get(endpoint).version == started, "the canary must hold throughout"
    return {"first_tick_s": first, "median_s": statistics.median(times), "tick_s": [round(t, 4) for t in times],
            "variants": [e.payload["variants"] for e in events]}


def _timed(call: Any) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _log_segment(log_dir: Path, endpoint: str, refs: list[str], segment: int, start_us: int, brier: bool) -> None:
    """One traffic segment of `TICK_ROWS` requests, its feedback segment and, for brier, its prediction segments."""
    import pyarrow as pa

    from loopstack.rollout.trafficlog import traffic_schema

    rng = np.random.default_rng([17, segment])
    n = TICK_ROWS
    ids = np.array([f"{segment:08x}{k:024x}" for k in range(n)], dtype=object)
    variant = np.where(rng.random(n) < 0.5, refs[0], refs[1])
    times = start_us + segment * 2_500_000 + np.arange(n) * 1000
    ok = rng.random(n) >= 0.01
    name = f"{1_800_000_000_000_000_000 + segment:019d}-1-{segment:06d}.parquet"
    traffic = {"request_id": ids, "time": times, "endpoint": [endpoint] * n, "variant": variant, "ref": variant,
               "deployment_version": np.full(n, 2), "unit_id": ids, "shadow": np.zeros(n, bool), "ok": ok,
               "status": np.where(ok, 200, 500).astype(np.int32), "latency_ms": rng.lognormal(2.0, 0.4, n),
               "error": [None] * n}
    _write(pa.table(traffic, schema=traffic_schema()), log_dir / "endpoints" / endpoint / name)
    p1 = rng.random(n)
    labels = (rng.random(n) < p1).astype(float)
    sent = (rng.random(n) < 0.3) & ok
    feedback = {"request_id": ids[sent], "time": times[sent] + 60_000_000, "model": [None] * int(sent.sum()),
                "label": [str(int(v)) for v in labels[sent]], "label_value": labels[sent]}
    from loopstack.serving.predlog import _feedback_schema  # the schema PredictionLog writes

    _write(pa.table(feedback, schema=_feedback_schema()), log_dir / "feedback" / name)
    if brier:
        for ref in refs:
            mine = (variant == ref) & ok
            _write(_predictions(ids[mine], times[mine], ref, p1[mine]),
                   log_dir / "predictions" / endpoint / ref.split("/")[1] / name)


def _predictions(ids: np.ndarray, times: np.ndarray, ref: str, p1: np.ndarray) -> Any:
    """Prediction-log rows as `PredictionLog` writes them: one row per request, predict_proba of two classes."""
    import pyarrow as pa

    n = len(ids)
    proba = pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2), pa.int32()),
                                     pa.array(np.column_stack([1 - p1, p1]).reshape(-1)))
    zeros = pa.array(np.zeros(n))
    inputs = pa.StructArray.from_arrays([pa.array(p1), zeros, zeros], ["x0", "x1", "x2"])
    return pa.table({
        "request_id": pa.array(ids, pa.string()), "row": pa.array(np.zeros(n, np.int32)),
        "time": pa.array(times, pa.timestamp("us", tz="UTC")), "model": pa.array([ref.split("/")[0]] * n),
        "version": pa.array([ref.split("/")[1]] * n), "variant": pa.array([ref] * n),
        "latency_ms": pa.array(np.full(n, 3.0)), "inputs": inputs,
        "outputs": pa.StructArray.from_arrays([proba], ["predict_proba"]),
    })


def _write(table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


SECTIONS = {
    "aa": section_aa,
    "power": section_power,
    "canary": section_canary,
    "bandit": section_bandit,
    "assignment": section_assignment,
    "anchor": section_anchor,
    "ticks": section_ticks,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller simulations (smoke run)")
    parser.add_argument("--only", nargs="*", choices=sorted(SECTIONS), help="run only these sections")
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()}", flush=True)
    results = {}
    for name in args.only or list(SECTIONS):
        start = time.perf_counter()
        results[name] = SECTIONS[name](args.quick)
        results[name]["seconds"] = round(time.perf_counter() - start, 1)
        print(f"## {name}\n{json.dumps(results[name], indent=1, default=str)}", flush=True)
    print(f"load average after: {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
