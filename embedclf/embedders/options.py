"""Parsing of embedder spec options (``?key=value`` after an embedder spec).

Shared by every embedder adapter; pure, no imports beyond the spec error.
"""

from __future__ import annotations

from collections.abc import Sequence

from embedclf.embedders.spec import SpecError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(key: str, value: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case) -> bool, else :class:`SpecError`."""
    v = str(value).strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise SpecError(f"option {key}={value!r} is not a boolean (use 1/0, true/false)")


def parse_int(key: str, value: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise SpecError(f"option {key}={value!r} is not an integer") from None


def check_options(options: dict[str, str], known: Sequence[str], kind: str) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise SpecError(
            f"unknown {kind} option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
