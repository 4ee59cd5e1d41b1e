"""A worker process's garbage collector: freeze what was loaded, collect the young objects less often.

Once the model and heads are loaded, the objects alive (the model's and heads' Python objects, Celery,
torch, scikit-learn: about 250,000) never become garbage, yet every full collection walked them all:
3 s of collection in a 300,000-text drain. :func:`tune` freezes them (``gc.freeze()``: the collector
never scans them again) and raises the generation-0 threshold; :func:`restore` undoes both when the
last service of the process stops (several services can run in one process, as in the tests).
Measured in docs/benchmarks.md; ``EMBEDCLF_GC_THRESHOLD`` (0 leaves Python's collector as it is).
"""

from __future__ import annotations

import gc
import logging
import threading

log = logging.getLogger(__name__)

_lock = threading.Lock()
_users = 0
_before: tuple[int, int, int] | None = None


def tune(threshold: int) -> bool:
    """Freeze the objects alive now and set the generation-0 threshold (the first caller of the process
    does it); returns whether this caller must :func:`restore`. ``threshold`` 0: nothing changes."""
    global _users, _before
    if threshold <= 0:
        return False
    with _lock:
        if _users == 0:
            _before = gc.get_threshold()
            gc.collect()  # what is garbage already is not frozen
            gc.freeze()
            gc.set_threshold(threshold, _before[1], _before[2])
            log.info("garbage collector: %d objects frozen, generation-0 threshold %d", gc.get_freeze_count(),
                     threshold)
        _users += 1
    return True


def restore() -> None:
    """Undo :func:`tune` once its last caller restores (objects frozen go back to the oldest generation)."""
    global _users, _before
    with _lock:
        if _users == 0:
            return
        _users -= 1
        if _users == 0 and _before is not None:
            gc.unfreeze()
            gc.set_threshold(*_before)
            _before = None
