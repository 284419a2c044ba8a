"""Shadow comparison: how the challenger's mirrored answers differ from the champion's.

Both variants' predictions of a shadowed endpoint are in the prediction log
under the endpoint's name, told apart by the ``variant`` column; a mirrored
request keeps the caller's request id, so the two answers pair up on
``(request_id, row)``. Failures of the shadow are only in the traffic log.

- agreement: share of paired rows where both give the same answer (the same
  arg-max class for probability outputs; values within ``atol`` otherwise);
- output distribution difference: the two-sample Kolmogorov-Smirnov
  statistic (and p-value) between the scalar outputs (the positive-class
  probability for binary classifiers, the largest probability otherwise),
  plus the mean absolute difference of paired outputs;
- latency: the shadow's p50 and p99 minus the champion's, over paired rows;
- shadow errors: failed mirrored requests and their rate.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from loopstack.core.errors import ValidationError
from loopstack.rollout.stats.summary import finite_or_none


@dataclass(frozen=True)
class ShadowReport:
    """Champion vs shadow on the same requests.

    Examples
    --------
    >>> ShadowReport("a", "b", 10, 0.9, 0.2, 0.5, 0.01, 1.5, 3.0, 0, 0.0).agreement
    0.9
    """

    champion: str
    challenger: str
    pairs: int
    agreement: float
    ks_statistic: float
    ks_p_value: float
    mean_abs_diff: float
    latency_p50_delta_ms: float
    latency_p99_delta_ms: float
    shadow_errors: int
    shadow_error_rate: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON record; NaN and +-inf (outputs a model answered with NaN) are None."""
        return {k: finite_or_none(v) if isinstance(v, float) else v for k, v in asdict(self).items()}


def compare_shadow(log_dir: str | os.PathLike[str], endpoint: str, champion: str, challenger: str, *,
                   atol: float = 1e-6, since: float | None = None) -> ShadowReport:
    """Compare `challenger`'s mirrored answers for `endpoint` with `champion`'s.

    Parameters
    ----------
    log_dir : str or path
        The server's log folder.
    endpoint : str
        The deployment endpoint.
    champion, challenger : str
        Variant names (``deployment.champion`` and ``deployment.challenger``).
    atol : float
        Scalar outputs closer than this count as agreeing.
    since : float, optional
        UNIX time the shadow started (``deployment.state["started_at"]``): the pairs and the shadow
        errors both come from requests logged since then. By default both come from the whole log,
        which also holds any earlier shadow of the same variant.
    """
    from scipy.stats import ks_2samp

    from loopstack.rollout.trafficlog import read_traffic_log, rows_since
    from loopstack.serving import read_prediction_log

    table = rows_since(read_prediction_log(log_dir, endpoint), since)
    a, b = _side(table, champion), _side(table, challenger)
    keys = sorted(set(a) & set(b))
    if not keys:
        raise ValidationError(f"no request of endpoint {endpoint!r} was answered by both {champion!r} and "
                              f"{challenger!r} yet; send traffic while the shadow runs")
    out_a, out_b = _outputs(a, keys, champion), _outputs(b, keys, challenger)
    if out_a.shape[1] != out_b.shape[1]:  # broadcasting one against the other would give numbers, all meaningless
        raise ValidationError(f"{champion!r} answered with {out_a.shape[1]} values per row and {challenger!r} with "
                              f"{out_b.shape[1]}: their outputs cannot be compared; shadow a model of the same "
                              "output form (probabilities of the same classes, or one score)")
    lat_a = np.array([a[k][1] for k in keys])
    lat_b = np.array([b[k][1] for k in keys])
    if out_a.shape[1] > 1:
        agree = out_a.argmax(axis=1) == out_b.argmax(axis=1)
    else:
        agree = np.isclose(out_a[:, 0], out_b[:, 0], atol=atol, rtol=0)
    sa, sb = _scalar(out_a), _scalar(out_b)
    ks = ks_2samp(sa, sb)
    traffic = read_traffic_log(log_dir, endpoint, since)  # the pairs' window: an earlier shadow's failures are not ours
    mirrored = [v == challenger and s for v, s in zip(traffic["variant"].to_pylist(), traffic["shadow"].to_pylist(),
                                                       strict=True)]
    failed = sum(m and not ok for m, ok in zip(mirrored, traffic["ok"].to_pylist(), strict=True))
    return ShadowReport(
        champion, challenger, len(keys), float(agree.mean()), float(ks.statistic), float(ks.pvalue),
        float(np.abs(out_a - out_b).mean()),
        float(np.quantile(lat_b, 0.5) - np.quantile(lat_a, 0.5)),
        float(np.quantile(lat_b, 0.99) - np.quantile(lat_a, 0.99)),
        int(failed), failed / max(1, sum(mirrored)),
    )


def _side(table: Any, variant: str) -> dict[tuple[str, int], tuple[Any, float]]:
    """``(request_id, row) -> (output, latency_ms)`` of one variant."""
    import pyarrow.compute as pc

    rows = table.filter(pc.equal(table["variant"], variant))
    outputs = rows["outputs"].combine_chunks().field(0).to_pylist()
    return {(r, int(i)): (o, lat) for r, i, o, lat in zip(rows["request_id"].to_pylist(), rows["row"].to_pylist(),
                                                          outputs, rows["latency_ms"].to_pylist(), strict=True)}


def _outputs(side: dict[tuple[str, int], tuple[Any, float]], keys: list[tuple[str, int]], variant: str) -> np.ndarray:
    """The paired rows' outputs of one variant as a (rows, width) array."""
    rows = [np.atleast_1d(np.asarray(side[k][0], dtype=float)) for k in keys]
    widths = sorted({row.size for row in rows})
    if len(widths) != 1:
        raise ValidationError(f"{variant!r} logged outputs of different widths {widths}; a shadow comparison needs "
                              "one output form per variant")
    return np.stack(rows)


def _scalar(outputs: np.ndarray) -> np.ndarray:
    if outputs.shape[1] == 1:
        return outputs[:, 0]
    if outputs.shape[1] == 2:
        return outputs[:, 1]
    return outputs.max(axis=1)


__all__ = ["ShadowReport", "compare_shadow"]
