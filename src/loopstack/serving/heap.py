"""Keeping CPython's garbage collector out of the serving tail.

A serving process holds a large heap that lives as long as the process:
scikit-learn, SciPy, pandas, pyarrow, the model. CPython's full collection walks
all of it, and it runs every few thousand requests, because each request leaves
tracked objects alive across a collection (its task, futures, buffers) and the
collector counts them as new long-lived objects. Measured at 64 concurrent
requests on a two-core box: nine full collections in thirteen seconds, up to
0.5 s each, holding the GIL while the event loop waits, which is the whole p99.

`settle` runs once the models are loaded: ``gc.freeze()`` moves every object
alive then into the permanent generation that collections skip (they are still
freed by reference counting as usual), and a larger young-generation threshold
makes the remaining, now small, collections rarer. It does not collect first:
the collections that ran during start-up leave a few dozen unreachable objects
at most, not worth the 0.1 s a full collection adds to the cold start. Only
the process that owns the server (`loopstack.serving.serve`) does this; an app
embedded in another process (tests, notebooks) leaves the collector alone.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000  # CPython's default is 700: a collection every few requests at this load


def settle(young_threshold: int = YOUNG_THRESHOLD) -> int:
    """Freeze the heap and raise the young-generation threshold; returns the frozen count.

    Examples
    --------
    >>> import gc
    >>> before = gc.get_threshold()
    >>> settle() > 0
    True
    >>> gc.get_threshold()[0]
    20000
    >>> gc.unfreeze(); gc.set_threshold(*before)
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
    return gc.get_freeze_count()
