"""Give the worker's Python threads their names at the OS level too (Linux), so ``top -H``,
``ps -L`` and per-thread CPU accounting (``/proc/<pid>/task/*/comm``) tell them apart from
each other and from the model's compute threads. Best effort: elsewhere it does nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading

_PR_SET_NAME = 15
_libc = None


def name_this_thread(name: str | None = None) -> bool:
    """Set the calling thread's OS name (at most 15 bytes; ``embedclf-`` becomes ``ec-``)."""
    global _libc
    if not sys.platform.startswith("linux"):
        return False
    name = (name or threading.current_thread().name).replace("embedclf-", "ec-")
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
