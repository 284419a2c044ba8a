"""Drift detection: column tests, data-set and multivariate drift, stream detectors, performance, reports.

The column tests and the test each column gets follow Evidently's defaults,
so ``compare(reference, current)`` flags the columns Evidently's data-drift
preset flags, with the same scores. Heavy libraries (pyarrow, SciPy,
scikit-learn) load when first used.

Examples
--------
>>> import numpy as np
>>> from loopstack.drift import compare
>>> rng = np.random.default_rng(0)
>>> compare({"x": rng.normal(size=3000)}, {"x": rng.normal(0.5, 1, size=3000)}).drifted_columns
['x']
"""

from loopstack.drift.adwin import ADWIN
from loopstack.drift.base import ChangeDetector, detect
from loopstack.drift.cbpe import CBPE, expected_metrics
from loopstack.drift.classifier import ClassifierDriftResult, DomainClassifier
from loopstack.drift.compare import DriftOptions, EmptySampleError, benjamini_hochberg, column_drift, compare
from loopstack.drift.ddm import DDM
from loopstack.drift.monitor import Monitor
from loopstack.drift.page_hinkley import PageHinkley
from loopstack.drift.performance import accuracy, f1, join_labels, mae, performance, rmse, roc_auc
from loopstack.drift.reconstruction import ReconstructionDrift, ReconstructionResult
from loopstack.drift.reference import load_reference, training_datasets
from loopstack.drift.result import ColumnDrift, DriftResult, Histogram
from loopstack.drift.select import TESTS, StatTest, default_test
from loopstack.drift.sources import LogWindow, PredictionLogSource
from loopstack.drift.stats import chi_square, jensen_shannon, ks, psi, wasserstein, z_test
from loopstack.drift.windows import CountWindow, SlidingWindow, TimeWindow, WindowSlice

__all__ = [
    # column and data-set drift
    "compare",
    "column_drift",
    "DriftOptions",
    "DriftResult",
    "EmptySampleError",
    "ColumnDrift",
    "Histogram",
    "benjamini_hochberg",
    # column tests and their selection
    "ks",
    "chi_square",
    "z_test",
    "wasserstein",
    "jensen_shannon",
    "psi",
    "TESTS",
    "StatTest",
    "default_test",
    # multivariate
    "DomainClassifier",
    "ClassifierDriftResult",
    "ReconstructionDrift",
    "ReconstructionResult",
    # streams
    "ChangeDetector",
    "ADWIN",
    "PageHinkley",
    "DDM",
    "detect",
    # performance
    "performance",
    "join_labels",
    "accuracy",
    "f1",
    "roc_auc",
    "rmse",
    "mae",
    "CBPE",
    "expected_metrics",
    # windows, monitoring, reference data
    "CountWindow",
    "TimeWindow",
    "SlidingWindow",
    "WindowSlice",
    "Monitor",
    "PredictionLogSource",
    "LogWindow",
    "load_reference",
    "training_datasets",
]
