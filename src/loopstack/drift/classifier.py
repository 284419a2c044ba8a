"""Domain classifier: multivariate drift as "can a model tell reference rows from current rows?".

Rows of both samples are labelled 0 (reference) and 1 (current), encoded
with `FrequencyEncoder`, and a gradient-boosted classifier is scored by
stratified k-fold ROC AUC. An AUC near 0.5 means the samples are
indistinguishable; drift is declared when the mean AUC reaches `threshold`.
This catches changes no single column shows, such as a broken correlation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loopstack.core.errors import ValidationError
from loopstack.drift.data import as_table
from loopstack.drift.encode import FrequencyEncoder


@dataclass(frozen=True)
class ClassifierDriftResult:
    """Cross-validated AUC of the domain classifier and the verdict."""

    auc: float
    fold_aucs: list[float]
    threshold: float
    drifted: bool
    n_reference: int
    n_current: int


@dataclass
class DomainClassifier:
    """Detect multivariate drift with a cross-validated reference-vs-current classifier.

    Parameters
    ----------
    threshold
        Mean AUC at or above which the samples are said to differ.
    folds
        Number of stratified folds.
    max_rows
        Rows sampled from each side (the AUC needs few thousand rows to be tight).
    model
        Any scikit-learn classifier with `predict_proba`; default a random
        forest of 50 trees (handles NaN natively, single-threaded: OpenMP
        boosters stall on a busy machine).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 2))
    >>> y = np.column_stack([x[:, 0], -x[:, 0] + 0.1 * rng.normal(size=500)])  # same marginals, new correlation
    >>> ref = {"a": x[:, 0], "b": x[:, 0] + 0.1 * rng.normal(size=500)}
    >>> DomainClassifier(max_rows=500, folds=3).score(ref, {"a": y[:, 0], "b": y[:, 1]}).drifted
    True
    """

    threshold: float = 0.55
    folds: int = 5
    max_rows: int = 10_000
    columns: Sequence[str] | None = None
    model: Any = None
    seed: int = 0

    def score(self, reference: Any, current: Any) -> ClassifierDriftResult:
        """Fit and score the domain classifier on the two samples."""
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import StratifiedKFold

        rng = np.random.default_rng(self.seed)
        ref, cur = _sample(as_table(reference), self.max_rows, rng), _sample(as_table(current), self.max_rows, rng)
        if min(ref.num_rows, cur.num_rows) < self.folds:
            raise ValidationError(f"the domain classifier needs at least {self.folds} rows per sample")
        encoder = FrequencyEncoder(columns=self.columns).fit(ref)
        x = np.vstack([encoder.transform(ref), encoder.transform(cur)])
        y = np.r_[np.zeros(ref.num_rows), np.ones(cur.num_rows)]
        aucs = []
        splitter = StratifiedKFold(self.folds, shuffle=True, random_state=self.seed)
        for train, test in splitter.split(x, y):
            model = self._model().fit(x[train], y[train])
            aucs.append(float(roc_auc_score(y[test], model.predict_proba(x[test])[:, 1])))
        auc = float(np.mean(aucs))
        return ClassifierDriftResult(auc, aucs, self.threshold, auc >= self.threshold, ref.num_rows, cur.num_rows)

    def _model(self) -> Any:
        from sklearn.base import clone

        if self.model is not None:
            return clone(self.model)
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(50, min_samples_leaf=5, n_jobs=1, random_state=self.seed)


def _sample(table: Any, size: int, rng: np.random.Generator) -> Any:
    if table.num_rows <= size:
        return table
    return table.take(np.sort(rng.choice(table.num_rows, size, replace=False)))
