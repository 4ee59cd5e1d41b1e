"""One settings object, read from ``EMBEDCLF_*`` environment variables.

Nothing here connects to anything: the settings are plain values that the
adapters (store, worker, CLI) receive and use to build their own resources.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from typing import Mapping
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit

PREFIX = "EMBEDCLF_"


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in {"1", "true", "yes", "on"}:
        return True
    if v in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


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
#: settings that are secrets as a whole (URLs are masked by :func:`mask_url` instead)
SECRET_FIELDS = ("api_token",)


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


@dataclass(frozen=True)
class BatchSettings:
    #: flush a batch when it holds this many tasks ...
    max_size: int = 64
    #: ... or when its oldest task has waited this long (milliseconds)
    max_wait_ms: int = 50
    #: token budget of one embed call for embedders that count tokens (llama.cpp)
    max_tokens: int = 4096


@dataclass(frozen=True)
class Settings:
    database_url: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/embedclf"
    broker_url: str = "redis://127.0.0.1:6379/0"
    #: with ``sentinel://`` broker URLs: the name of the Redis primary the sentinels watch
    broker_sentinel_master: str = "mymaster"
    #: queue the worker consumes; "celery" is what a plain ``send_task`` uses
    queue: str = "celery"
    #: embedder spec, see ``embedclf.embedders.spec``
    embedder: str = "minilm"
    #: texts longer than this (characters) are refused with an error row
    max_text_chars: int = 20_000
    #: torch intra-op threads while the heads run (the embedder keeps its own); 0 = leave torch's setting
    head_threads: int = 1
    #: a multi-text task (``texts=[...]``) may carry at most this many texts
    max_texts_per_task: int = 1000
    #: serialized task bodies larger than this (bytes) are refused: by the client before sending, by the
    #: worker before decoding the JSON (error row). 1 MiB holds a max-length text even at 12 bytes per
    #: character (JSON-escaped astral characters) with room to spare
    max_payload_bytes: int = 1_048_576
    #: where workers store each task's result for ``AsyncResult.get()`` (any Celery result backend URL, e.g.
    #: ``redis://host:6379/1``); empty: no Celery results (the rows in Postgres are the results)
    result_backend: str = ""
    #: how long stored results live (Celery's ``result_expires``, seconds)
    result_expires_s: int = 86_400
    #: producers wait until this many Redis replicas have each push (``WAIT``), and push again if they have
    #: not: no accepted task is lost when a failover promotes a replica (0: don't wait)
    enqueue_wait_replicas: int = 0
    #: producers (Client, ``embedclf enqueue``) retry an unreachable broker this long, then fail (seconds)
    enqueue_retry_s: float = 30.0
    #: how often a worker looks for newly activated head versions (seconds)
    head_refresh_s: float = 2.0
    #: seconds before Redis hands an unacknowledged message of Celery's own consumer to another worker
    #: (the classify queue does not use it: see heartbeat_ttl_s)
    visibility_timeout_s: int = 3600
    #: a worker refreshes its heartbeat key in Redis every ttl/4 s; once the key has expired (the worker is
    #: gone) other workers return the messages it held to the queue
    heartbeat_ttl_s: float = 30.0
    #: on a warm shutdown a worker finishes and writes the batch in hand for at most this long
    shutdown_timeout_s: float = 60.0
    #: a task whose worker died this many times while processing it gets an error row
    max_attempts: int = 3
    #: Prometheus metrics port of each worker process (0 = no metrics server)
    metrics_port: int = 0
    #: address the metrics server binds; loopback unless configured (EMBEDCLF_METRICS_ADDR=0.0.0.0 to expose)
    metrics_addr: str = "127.0.0.1"
    #: bearer token the HTTP API (``embedclf serve``) requires on every /v1 endpoint (``Authorization: Bearer
    #: <token>``); empty: the API is open. Never printed (masked by describe(), hidden from repr)
    api_token: str = field(default="", repr=False)
    #: where downloaded GGUF files are kept
    model_dir: str = field(default_factory=lambda: os.path.expanduser("~/.cache/embedclf/models"))
    log_level: str = "INFO"
    batch: BatchSettings = field(default_factory=BatchSettings)

    def __post_init__(self) -> None:
        # postgres:// and postgresql:// (what most tools print) mean the psycopg2 driver here
        url = self.database_url.strip()
        for prefix in ("postgres://", "postgresql://", "postgres+psycopg2://"):
            if url.startswith(prefix):
                object.__setattr__(self, "database_url", "postgresql+psycopg2://" + url[len(prefix):])
                break

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            if f.name == "batch":
                continue
            key = PREFIX + f.name.upper()
            if key in env:
                values[f.name] = _convert(f.type, env[key], key)
        batch: dict[str, object] = {}
        for f in fields(BatchSettings):
            key = f"{PREFIX}BATCH_{f.name.upper()}"
            if key in env:
                batch[f.name] = _convert(f.type, env[key], key)
        settings = cls(**values, batch=BatchSettings(**batch))  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        _check_url(self.database_url, "EMBEDCLF_DATABASE_URL", ("postgresql", "postgresql+psycopg2"),
                   "a PostgreSQL URL, postgresql://user:password@host:5432/dbname")
        _check_url(self.broker_url, "EMBEDCLF_BROKER_URL", ("redis", "rediss", "sentinel"),
                   "a Redis URL, redis://[:password@]host:6379/0 (or rediss://, sentinel://)")
        if self.batch.max_size < 1:
            raise ValueError("EMBEDCLF_BATCH_MAX_SIZE must be >= 1")
        if self.batch.max_wait_ms < 0:
            raise ValueError("EMBEDCLF_BATCH_MAX_WAIT_MS must be >= 0")
        if self.batch.max_tokens < 16:
            raise ValueError("EMBEDCLF_BATCH_MAX_TOKENS must be >= 16")
        if self.max_text_chars < 1:
            raise ValueError("EMBEDCLF_MAX_TEXT_CHARS must be >= 1")
        if self.max_payload_bytes < 1024:
            raise ValueError("EMBEDCLF_MAX_PAYLOAD_BYTES must be >= 1024")
        if not 0 <= self.enqueue_retry_s <= 86400:
            raise ValueError("EMBEDCLF_ENQUEUE_RETRY_S must be between 0 and 86400 seconds")
        if not (self.head_refresh_s > 0 and self.head_refresh_s < 86400):
            raise ValueError("EMBEDCLF_HEAD_REFRESH_S must be a positive number of seconds")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError("EMBEDCLF_METRICS_PORT must be a port number (0 = off)")
        if self.max_attempts < 1:
            raise ValueError("EMBEDCLF_MAX_ATTEMPTS must be >= 1")
        if not 0 <= self.head_threads <= 1024:
            raise ValueError("EMBEDCLF_HEAD_THREADS must be between 0 and 1024")
        if not 0 <= self.enqueue_wait_replicas <= 16:
            raise ValueError("EMBEDCLF_ENQUEUE_WAIT_REPLICAS must be between 0 and 16")
        if self.result_expires_s < 1:
            raise ValueError("EMBEDCLF_RESULT_EXPIRES_S must be >= 1")
        if not 1 <= self.max_texts_per_task <= 100_000:
            raise ValueError("EMBEDCLF_MAX_TEXTS_PER_TASK must be between 1 and 100000")
        if not 1 <= self.heartbeat_ttl_s <= 3600:
            raise ValueError("EMBEDCLF_HEARTBEAT_TTL_S must be between 1 and 3600 seconds")
        if not 0 <= self.shutdown_timeout_s <= 3600:
            raise ValueError("EMBEDCLF_SHUTDOWN_TIMEOUT_S must be between 0 and 3600 seconds")
        if self.visibility_timeout_s < 5:
            raise ValueError("EMBEDCLF_VISIBILITY_TIMEOUT_S must be >= 5")
        if self.api_token and not all("!" <= c <= "~" for c in self.api_token):
            # an Authorization header carries printable ASCII; a stray space or newline would lock everyone out
            raise ValueError("EMBEDCLF_API_TOKEN must be printable ASCII without spaces")

    def broker_transport_options(self) -> dict[str, object]:
        """What kombu needs besides the URL (the sentinel primary's name for ``sentinel://`` URLs)."""
        if self.broker_url.strip().lower().startswith("sentinel://"):
            return {"master_name": self.broker_sentinel_master}
        return {}

    def with_overrides(self, **kwargs: object) -> "Settings":
        return replace(self, **kwargs)  # type: ignore[arg-type]

    def describe(self) -> dict[str, object]:
        """Settings as printable values, secrets masked."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "batch":
                for bf in fields(value):
                    out[f"batch.{bf.name}"] = getattr(value, bf.name)
            elif f.name.endswith("_url") or f.name == "result_backend":
                out[f.name] = mask_url(value) if value else value
            elif "token" in f.name or "password" in f.name:
                out[f.name] = "***" if value else value
            else:
                out[f.name] = value
        return out


def _check_url(url: str, var: str, schemes: tuple[str, ...], what: str) -> None:
    """One line naming the variable when ``url`` cannot be used (never the URL's password)."""
    pieces = [p for p in url.split(";") if p.strip()] if url.strip().lower().startswith("sentinel://") else [url]
    for piece in pieces or [url]:
        try:
            parts = urlsplit(piece.strip())
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            raise ValueError(f"{var} is not a valid URL ({mask_url(url)}): {redact(str(exc), url)}") from None
        scheme = parts.scheme.lower()
        if scheme not in schemes or (len(pieces) > 1 and scheme != "sentinel"):
            shown = f"{scheme}://" if scheme else mask_url(piece)
            raise ValueError(f"{var} must be {what}; got {shown}")


#: every environment variable the settings read, for docs and for the compose test
def env_names() -> list[str]:
    names = [PREFIX + f.name.upper() for f in fields(Settings) if f.name != "batch"]
    names += [f"{PREFIX}BATCH_{f.name.upper()}" for f in fields(BatchSettings)]
    return names


def _convert(type_name: object, raw: str, key: str) -> object:
    t = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", str(type_name))
    try:
        if t == "int":
            return int(raw)
        if t == "float":
            return float(raw)
        if t == "bool":
            return _bool(raw)
        return raw
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None
