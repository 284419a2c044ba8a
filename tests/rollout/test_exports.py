"""The public surface is what we mean to export."""

from __future__ import annotations

import loopstack.rollout as rollout
import loopstack.rollout.stats as stats


def test_rollout_exports():
    assert set(rollout.__all__) == {
        "stats",
        "VariantAssigner",
        "gb_hash",
        "fnv1a32",
        "bucket_ranges",
        "choose_variation",
        "in_namespace",
        "ThompsonBandit",
        "CanaryAnalysis",
        "CanaryPolicy",
        "Decision",
        "VariantStats",
        "Deployment",
        "Deployments",
        "TrafficRouter",
        "TrafficLog",
        "read_traffic_log",
        "RolloutController",
        "SCORING_RULES",
        "compare_shadow",
    }
    assert all(hasattr(rollout, name) for name in rollout.__all__)


def test_stats_exports_resolve():
    assert {"Summary", "analyze", "sequential_test", "srm_check", "sample_size_proportions", "cuped"} <= set(
        stats.__all__
    )
    assert all(hasattr(stats, name) for name in stats.__all__)
    assert len(set(stats.__all__)) == len(stats.__all__)
