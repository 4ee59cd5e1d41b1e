"""Progress for long work: a tqdm bar in a terminal, a plain line every few seconds otherwise.

Written to a file or a pipe (``make demo > log``, CI), a tqdm bar is thousands of carriage-return
updates; :func:`bar` gives the same interface printing ``desc: n/total unit (p%), rate`` at most every
``every_s`` seconds and once at the end instead.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any


class LineProgress:
    """tqdm's ``update``/``close``/``n``/``total`` as periodic plain lines."""

    def __init__(self, total: int | None, desc: str, unit: str, file: IO[str], every_s: float) -> None:
        self.total, self.desc, self.unit, self.file, self.every_s = total, desc, unit, file, every_s
        self.n = 0
        self._start = self._last = time.monotonic()
        self._closed = False
        self._postfix = ""

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._line(now)

    def _line(self, now: float) -> None:
        rate = self.n / max(now - self._start, 1e-9)
        of = f"/{self.total}" if self.total else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = f", {self._postfix}" if self._postfix else ""
        print(f"{self.desc}: {self.n}{of} {self.unit}{pct}, {rate:.1f} {self.unit}/s{extra}", file=self.file,
              flush=True)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self._postfix = s

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **values: Any) -> None:
        items = {**(ordered_dict or {}), **values}
        self._postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._line(time.monotonic())

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Off:
    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Off:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def bar(total: int | None = None, desc: str = "", unit: str = "it", disable: bool = False, file: IO[str] | None = None,
        every_s: float = 10.0, **tqdm_kwargs: Any) -> Any:
    """A progress bar on ``file`` (stderr): tqdm on a terminal, periodic lines elsewhere, nothing if disabled."""
    out = file or sys.stderr
    if disable:
        return _Off()
    if hasattr(out, "isatty") and out.isatty():
        from tqdm import tqdm

        tqdm_kwargs.setdefault("dynamic_ncols", True)
        return tqdm(total=total, desc=desc, unit=unit, file=out, **tqdm_kwargs)
    return LineProgress(total, desc, unit, out, every_s)
