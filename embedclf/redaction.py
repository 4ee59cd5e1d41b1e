"""Hiding secrets: URLs masked in every form, and error texts redacted of a URL's secrets. Pure (stdlib only)."""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit

#: ``scheme://`` at the start of a URL, or of the next URL of a ``;``-separated list (kombu failover/sentinel)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_NEXT_URL = re.compile(r";(?=[A-Za-z][A-Za-z0-9+.\-]*://)")
#: ``key=value`` in a query string; the value runs to the next ``&`` (a raw ``#``/``;`` stays inside it)
_QUERY_PARAM = re.compile(r"([?&])([^=&?#]*)=([^&]*)")
#: ``password=value`` in a libpq-style ``key=value`` string
_DSN_PARAM = re.compile(r"(?:(?<=\s)|^)([A-Za-z_]*pass(?:word|wd)?|pwd)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.I)
_SECRET_KEY = re.compile(r"pass|pwd|secret|token|credential", re.I)
#: one host of a netloc after masking: ``name``, ``[v6]``, either with ``:digits``
_CLEAN_HOST = re.compile(r"(\[[0-9A-Za-z:.%]*\]|[^:\[\]]*)(:[0-9]*)?")
_MASK = "***"


def _secret_spans(url: str) -> list[tuple[int, int]]:
    """Character ranges of ``url`` that hold (or may hold) a secret; see :func:`mask_url`."""
    spans: list[tuple[int, int]] = []
    starts = [0] + [m.end() for m in _NEXT_URL.finditer(url)]
    ends = [m.start() for m in _NEXT_URL.finditer(url)] + [len(url)]
    for start, end in zip(starts, ends):
        spans += _segment_spans(url, start, end)
    return spans


def _segment_spans(url: str, start: int, end: int) -> list[tuple[int, int]]:
    seg = url[start:end]
    scheme = _SCHEME.match(seg)
    if scheme is None:  # not a URL: libpq-style "password=..." is still a secret
        return [(start + m.start(2), start + m.end(2)) for m in _DSN_PARAM.finditer(seg)]
    spans: list[tuple[int, int]] = []
    rest = scheme.end()
    # userinfo runs to the LAST "@": a raw "@", "/", "?" or "#" in a password then stays inside it
    # (SQLAlchemy reads a password up to the first "@", urllib a netloc up to the first "/?#":
    # masking up to the last "@" covers both, at the price of over-masking an "@" in a query)
    at = seg.rfind("@", rest)
    host_from = rest
    if at >= 0:
        colon = seg.find(":", rest, at)
        if colon >= 0:
            spans.append((start + colon + 1, start + at))
        host_from = at + 1
    for m in _QUERY_PARAM.finditer(seg, rest):
        if _SECRET_KEY.search(unquote(m.group(2))) and m.group(3):
            spans.append((start + m.start(3), start + m.end(3)))
    # the hosts must read as host[:port][,host[:port]...]; anything else (a password that urllib
    # takes for a port, e.g. "redis://:pa/ss") is hidden as well
    netloc_end = len(seg)
    for i in range(host_from, len(seg)):
        if seg[i] in "/?#":
            netloc_end = i
            break
    hosts = seg[host_from:netloc_end]
    if any(not _CLEAN_HOST.fullmatch(h) for h in hosts.split(",")):
        spans.append((start + host_from, start + netloc_end))
    return spans


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def mask_url(url: str) -> str:
    """Hide every secret of a URL (``redis://:secret@h/0`` -> ``redis://:***@h/0``); never raises.

    Hidden: the userinfo password (everything between the user's ``:`` and the last ``@``, so a
    password holding a raw ``/``, ``?``, ``#`` or ``@`` is hidden whole), query parameters whose
    name says password/secret/token (``?password=...``), each URL of a ``;``-separated list
    (kombu's sentinel and failover form), libpq ``password=...`` strings, and host parts that do
    not read as ``host[:port]``. A URL that urllib cannot parse after masking is reported as
    ``<unparsable url>``.
    """
    try:
        text = str(url)
        out, pos = [], 0
        for a, b in _merge(_secret_spans(text)):
            out += [text[pos:a], _MASK]
            pos = b
        masked = "".join(out) + text[pos:]
        for part in _NEXT_URL.split(masked):
            urlsplit(part)
        return masked
    except Exception:  # noqa: BLE001 - never raise, never echo the input
        return "<unparsable url>"


def url_secrets(url: str) -> list[str]:
    """The secret strings of ``url`` as they may appear in messages: raw, decoded and re-encoded,
    their pieces between URL delimiters (a parser's error may quote only a piece), and the prefixes
    of 5 characters or more of each (a truncated message may end inside one)."""
    found: set[str] = set()
    try:
        for a, b in _merge(_secret_spans(str(url))):
            raw = str(url)[a:b]
            forms = {raw}
            for decoded in {unquote(raw), unquote_plus(raw)}:  # as drivers read it, and re-encoded
                forms |= {decoded, quote(decoded, safe=""), quote(decoded), quote_plus(decoded, safe=""),
                          quote_plus(decoded)}
            for form in forms:
                for piece in [form, *re.split(r"(?:[/?#@:;&=,\[\]\s+]|%[0-9A-Fa-f]{2})+", form)]:
                    found.add(piece)
                    # a message cut short ("...[:200]") may end inside a secret: hide its prefixes too
                    found.update(piece[:k] for k in range(5, len(piece)))
    except Exception:  # noqa: BLE001
        pass
    return sorted((s for s in found if len(s) >= 3), key=len, reverse=True)


def redact(message: str, *urls: str) -> str:
    """``message`` with each of ``urls`` replaced by its masked form and every secret of them hidden.

    For error texts from drivers and URL parsers, which may quote a URL or a piece of it."""
    text = str(message)
    for url in urls:
        if url:
            text = text.replace(url, mask_url(url))
    for url in urls:
        for secret in url_secrets(url) if url else ():
            text = text.replace(secret, _MASK)
    return text
