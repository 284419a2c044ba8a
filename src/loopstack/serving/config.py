"""Settings of the online server: one `ModelSpec` per served model, one `ServerSettings` per process.

Settings are plain frozen dataclasses checked on construction, so a bad value
fails when the server is configured, not on the first request.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from loopstack.core.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}\Z")  # \Z: "$" also matches before a final newline
METHODS = ("auto", "predict", "predict_proba")
BATCHING = ("max_batch_size", "max_wait_ms", "max_queue", "inline_ms", "timeout_s")  # ModelSpec's batching fields


@dataclass(frozen=True)
class ModelSpec:
    """How one model is served.

    Parameters
    ----------
    name : str
        The name clients use in URLs (``/v2/models/{name}/infer``).
    ref : str, optional
        Registry reference, ``"fraud@champion"`` or ``"fraud/3"``; loaded with
        `loopstack.registry.api.load_model`.
    model : object, optional
        An already loaded model (anything with ``predict``); used instead of `ref`.
    max_batch_size : int
        Most rows in one vectorized predict.
    max_wait_ms : float
        Longest a queued request waits for its batch to fill while another
        batch is running. A request that finds the model idle runs at once.
    max_queue : int
        Most rows waiting; beyond it requests get 503 with Retry-After.
    inline_ms : float
        A batch whose predict is expected to take at most this long runs on the
        event loop itself rather than in a worker thread (see
        `loopstack.serving.batcher`). 0 sends every predict to the thread.
    timeout_s : float
        Per-request deadline (queue wait plus predict); past it, 504.
    method : {"auto", "predict", "predict_proba"}
        What the model computes; ``auto`` uses predict_proba when available.
    variant : str, optional
        Label written to the prediction log (rollouts set it per deployment).
    features : str or tuple of str, optional
        A feature service name or feature references (``"driver_stats:trips"``): requests
        may then send entity keys (``{"entities": [{"driver_id": 7}]}``) and the server
        reads the features from the project's online store.

    Examples
    --------
    >>> ModelSpec.parse("fraud@champion").name
    'fraud'
    >>> ModelSpec.parse("scorer=fraud/3", max_batch_size=32).ref
    'fraud/3'
    """

    name: str
    ref: str | None = None
    model: Any = field(default=None, compare=False, repr=False)
    max_batch_size: int = 64
    max_wait_ms: float = 2.0
    max_queue: int = 2048
    inline_ms: float = 1.0
    timeout_s: float = 10.0
    method: str = "auto"
    variant: str | None = None
    features: str | tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.features, list):
            object.__setattr__(self, "features", tuple(self.features))
        if not _NAME.match(self.name):
            raise ConfigError(
                f"model name {self.name!r} must be 1-128 letters, digits, '_', '.' or '-' "
                "(it appears in URLs); rename it with NAME=REF"
            )
        if self.ref is None and self.model is None:
            raise ConfigError(f"model {self.name!r} needs a registry ref (e.g. 'fraud@champion') or a model object")
        _positive("max_batch_size", self.max_batch_size, self.name)
        _positive("max_queue", self.max_queue, self.name)
        _positive("timeout_s", self.timeout_s, self.name)
        if not self.max_wait_ms >= 0:  # NaN too
            raise SettingError("max_wait_ms", self.max_wait_ms, f"model {self.name!r}", "must be >= 0")
        if isinstance(self.inline_ms, bool) or not isinstance(self.inline_ms, int | float) \
                or not 0 <= self.inline_ms < math.inf:
            raise SettingError("inline_ms", self.inline_ms, f"model {self.name!r}", "must be >= 0 and finite")
        if self.method not in METHODS:
            raise ConfigError(f"method={self.method!r} for model {self.name!r} must be one of {METHODS}")

    @classmethod
    def parse(cls, text: str, **settings: Any) -> ModelSpec:
        """Build a spec from ``REF`` or ``NAME=REF``; the served name defaults to the model name."""
        name, sep, ref = text.partition("=")
        if not sep:
            ref, name = text, re.split(r"[@/]", text, maxsplit=1)[0]
        if not ref:
            raise ConfigError(f"model {text!r} has no reference; write NAME=REF, e.g. fraud=fraud@champion")
        return cls(name=name, ref=ref, **settings)

    def with_ref(self, ref: str) -> ModelSpec:
        """The same settings pointing at another registry reference (for a hot swap)."""
        return replace(self, ref=ref, model=None)


@dataclass(frozen=True)
class ServerSettings:
    """Process-wide settings of the online server.

    Parameters
    ----------
    log_dir : str, optional
        Folder of the prediction log (Parquet segments); None disables it.
    log_flush_s : float
        Longest a prediction waits in memory before its segment is written.
    log_segment_rows : int
        Rows that trigger writing a segment early.
    predict_threads : int, optional
        Threads the math libraries (OpenMP, BLAS) may use in one predict. The
        default leaves one core to the event loop.
    retry_after_s : int
        Value of the Retry-After header on 503.
    refresh_s : float
        How often aliases (``fraud@champion``) are re-resolved; a moved alias
        swaps the new version in. 0 disables it.
    gpu : str, optional
        GPU type of the price table this server holds (e.g. ``"L4"``); its
        GPU-seconds, cost and cost per 1,000 predictions are exported at
        ``/metrics``. None (CPU serving) exports predictions with zero cost.
    gpus : int
        Cards the server holds.
    max_body_bytes : int
        Largest request body, once a gzip or deflate ``Content-Encoding`` is decoded, that the
        server takes (default 64 MiB); a larger one is a 413 naming this limit.
    variant_batching : mapping, optional
        Batching settings of every deployment variant the server serves (``loopstack deploy serve``),
        from `BATCHING`: e.g. ``{"max_batch_size": 128, "inline_ms": 0}``. A variant comes and goes
        with its deployment, so it has no `ModelSpec` of its own; what is not given keeps ModelSpec's
        default.

    Examples
    --------
    >>> ServerSettings(log_dir=None).retry_after_s
    1
    >>> ServerSettings(variant_batching={"max_wait_ms": 5.0}).variant_spec("fraud-api", "fraud/2", "b").max_wait_ms
    5.0
    """

    log_dir: str | None = None
    log_flush_s: float = 1.0
    log_segment_rows: int = 50_000
    predict_threads: int | None = None
    retry_after_s: int = 1
    refresh_s: float = 0.0
    gpu: str | None = None
    gpus: int = 1
    max_body_bytes: int = 64 * 2**20
    variant_batching: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.variant_batching) - set(BATCHING))
        if unknown:
            raise ConfigError(f"variant_batching takes {list(BATCHING)}; {unknown} are not batching settings")
        object.__setattr__(self, "variant_batching", dict(self.variant_batching))  # the caller's dict may change
        self.variant_spec("variants", "checked/1", None)  # out-of-range values fail now, not at the first deploy
        _positive("log_flush_s", self.log_flush_s, "server")
        _positive("log_segment_rows", self.log_segment_rows, "server")
        _positive("gpus", self.gpus, "server")
        _positive("max_body_bytes", self.max_body_bytes, "server")
        if self.predict_threads is not None:
            _positive("predict_threads", self.predict_threads, "server")
        if not self.refresh_s >= 0:  # NaN too
            raise SettingError("refresh_s", self.refresh_s, None, "must be >= 0 (0 disables alias refresh)")

    def variant_spec(self, endpoint: str, ref: str, variant: str | None) -> ModelSpec:
        """How a deployment's variant is served: under its endpoint's name, with `variant_batching`."""
        try:
            return ModelSpec(name=endpoint, ref=ref, variant=variant, **self.variant_batching)
        except SettingError as error:
            raise SettingError(error.setting, error.value, "deployment variants", error.rule) from None

    def threads(self) -> int:
        """Math-library threads per predict: all cores but one for the event loop."""
        if self.predict_threads is not None:
            return self.predict_threads
        return max(1, available_cores() - 1)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class SettingError(ConfigError):
    """A setting's value is out of range; the parts are kept so the CLI can name the flag the user typed."""

    def __init__(self, setting: str, value: Any, owner: str | None, rule: str) -> None:
        self.setting, self.value, self.rule = setting, value, rule
        super().__init__(f"{setting}={value!r}{'' if owner is None else ' for ' + owner} {rule}")


def _positive(name: str, value: float, owner: str) -> None:
    if not isinstance(value, int | float) or not value > 0:  # NaN too: a NaN deadline failed every request
        raise SettingError(name, value, repr(owner), "must be a positive number")
