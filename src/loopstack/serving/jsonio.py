"""JSON for the request path: orjson's speed with the standard library's answers.

Parsing and writing a single-row request's JSON with the standard library took
about 20 µs of the event loop's time per request; orjson takes about 3. Where
the two disagree the standard library's behaviour is kept: a body orjson
refuses (``NaN`` literals, UTF-16) is parsed again by `json.loads`, which
accepts it or raises the error clients already get, and an answer holding NaN
or infinity is written by `json.dumps` (``NaN``, as before), since orjson would
write ``null``. One difference stays: orjson reads an integer past 64 bits as
the nearest float, where `json.loads` keeps it exact. Model inputs become
float64 rows either way, so the prediction routes use this module; routes that
store what they read as sent (feedback labels) keep the standard library.
Parsing is `loopstack.core.jsonio.loads`, shared with the feature store's
online reads.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson

from loopstack.core.jsonio import loads


def dumps(payload: Any, outputs: np.ndarray | None = None) -> bytes:
    """Serialize `payload`; pass the `outputs` array it holds so non-finite floats are written as before.

    Examples
    --------
    >>> import numpy as np
    >>> dumps({"p": [0.5]}, np.array([0.5]))
    b'{"p":[0.5]}'
    >>> dumps({"p": [float("nan")]}, np.array([np.nan]))
    b'{"p": [NaN]}'
    """
    body = orjson.dumps(payload)
    if b"null" in body and outputs is not None and outputs.dtype.kind == "f" and not np.isfinite(outputs).all():
        return json.dumps(payload).encode()  # orjson wrote a NaN or infinity as null
    return body


__all__ = ["dumps", "loads"]
