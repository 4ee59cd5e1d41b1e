"""One settings object, read from ``EMBEDCLF_*`` environment variables.

Nothing here connects to anything: the settings are plain values that the
adapters (store, worker, CLI) receive and use to build their own resources.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from urllib.parse import SplitResult, urlsplit

from embedclf.errors import ConfigError
from embedclf.redaction import mask_url, redact, url_secrets  # noqa: F401  (re-exported: the settings' masking)

PREFIX = "EMBEDCLF_"
#: the embedder spec of workers and the CLI when EMBEDCLF_EMBEDDER is not set (``minilm``, torch, before issue 13)
DEFAULT_EMBEDDER = "minilm-int8"


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in {"1", "true", "yes", "on"}:
        return True
    if v in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"not a boolean: {value!r}")


#: settings that are secrets as a whole (URLs are masked by :func:`mask_url` instead)
SECRET_FIELDS = ("api_token",)


@dataclass(frozen=True)
class BatchSettings:
    #: flush a batch when it holds this many texts (also the most texts per embedding call) ... 256, not 64 (the
    #: default until 2026-12-04): the heads, rows and writes cost less a text in bigger batches (the text thread's
    #: CPU 0.35-0.50 s against 0.81-0.86 s per 5,000 texts; bench e2e / raw medians 0.89-1.05 against 0.80-0.91,
    #: docs/benchmarks.md), the default embedder runs each text alone whatever the batch, and below capacity
    #: batches stay small (the wait below closes them first): latency there did not grow
    max_size: int = 256
    #: ... or when its oldest task has waited this long (milliseconds)
    max_wait_ms: int = 50
    #: token budget of one embed call for embedders that count tokens (llama.cpp)
    max_tokens: int = 4096


@dataclass(frozen=True)
class Settings:
    #: Postgres (SQLAlchemy URL; ``postgresql://`` and ``postgres://`` work too)
    database_url: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/embedclf"
    #: the Celery broker: ``redis://``, ``rediss://`` (TLS) or a ``sentinel://`` list
    broker_url: str = "redis://127.0.0.1:6379/0"
    #: with ``sentinel://`` broker URLs: the name of the Redis primary the sentinels watch
    broker_sentinel_master: str = "mymaster"
    #: queue the worker consumes; "celery" is what a plain ``send_task`` uses
    queue: str = "celery"
    #: embedder spec, see ``embedclf.embedders.spec``. The default ``minilm-int8`` has its own embedder id: heads
    #: trained on torch ``minilm`` (the default before) need EMBEDCLF_EMBEDDER=minilm, or retraining
    embedder: str = DEFAULT_EMBEDDER
    #: texts longer than this (characters) are refused with an error row
    max_text_chars: int = 20_000
    #: torch intra-op threads while the heads run (the embedder keeps its own); 0 = leave torch's setting
    head_threads: int = 1
    #: compute what the heads need from the texts alone (a hybrid head's TF-IDF logits) on a thread of its own
    #: while the batch is embedded: that CPU work hides behind a GPU's; on a small CPU-only host it shares the
    #: model's cores (measured neutral within ±1 % on 2 cores)
    text_thread: bool = True
    #: apply a batch's heads on the text thread while the batch thread embeds the next batch (needs
    #: ``text_thread``): the heads' CPU time overlaps the model's instead of following it
    head_overlap: bool = True
    #: threads of the text pool (with ``text_thread``): with ``head_overlap`` the heads of up to this many batches
    #: run at once. A head's products release the GIL, so on a host with cores to spare (a GPU host) 2-4 lift the
    #: heads' ceiling: the default hybrid head alone ran 1.24-1.62x the texts/s on 2 threads as on 1 (2 cores).
    #: On a CPU-only host the model needs those cores: 1
    text_threads: int = 1
    #: a worker process's GIL switch interval in milliseconds (``sys.setswitchinterval``; Python's default is 5):
    #: a model lane back from a run waits at most this long for the GIL while another thread runs Python (heads,
    #: decoding, the writer). 0.5 measured +4 pt of e2e / raw on 2 cores (docs/benchmarks.md); 0 = Python's own
    gil_switch_ms: float = 0.5
    #: a worker process's garbage collector: once the model and heads are loaded, the objects alive (the model,
    #: heads, libraries: ~250,000) are frozen (``gc.freeze()``: never scanned again) and the generation-0
    #: threshold is set to this. Each full collection had walked them all: 3 s of GC in a 300,000-text drain,
    #: 36,000 → 62,000 rows/s with this (docs/benchmarks.md); 0 = Python's own collector settings, no freeze
    gc_threshold: int = 10_000
    #: a multi-text task (``texts=[...]``) may carry at most this many texts
    max_texts_per_task: int = 1000
    #: messages larger than this (bytes, headers included) are refused: by the client before sending, by the
    #: worker before reading them (error row); a compressed body may not decompress to more either. 1 MiB
    #: holds a max-length text even at 12 bytes per character (JSON-escaped astral characters)
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
    #: how often a worker looks for newly activated head versions (seconds), on a thread of its own
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
    #: worker processes ``embedclf worker`` runs and supervises (each a whole worker: model, heads, threads). One
    #: process is capped by its GIL: with a small encoder on a GPU, try 2-4 (not yet measured on a GPU). With a
    #: metrics port P, process i serves on P + i
    worker_processes: int = 1
    #: Prometheus metrics port of each worker process (0 = no metrics server)
    metrics_port: int = 0
    #: address the metrics server binds; loopback unless configured (EMBEDCLF_METRICS_ADDR=0.0.0.0 to expose)
    metrics_addr: str = "127.0.0.1"
    #: bearer token the HTTP API (``embedclf serve``) requires on every /v1 endpoint (``Authorization: Bearer
    #: <token>``); empty: the API is open. Never printed (masked by describe(), hidden from repr)
    api_token: str = field(default="", repr=False)
    #: where downloaded GGUF files and the built ONNX files are kept
    model_dir: str = field(default_factory=lambda: os.path.expanduser("~/.cache/embedclf/models"))
    #: log level of embedclf's own loggers (and the workers')
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
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
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
        check_broker_url(self.broker_url)
        if self.batch.max_size < 1:
            raise ConfigError("EMBEDCLF_BATCH_MAX_SIZE must be >= 1")
        if not 0 <= self.gil_switch_ms <= 1000:
            raise ConfigError("EMBEDCLF_GIL_SWITCH_MS must be between 0 (Python's default) and 1000 milliseconds")
        if self.gc_threshold < 0:
            raise ConfigError("EMBEDCLF_GC_THRESHOLD must be >= 0 (0: Python's own garbage collector settings)")
        if self.batch.max_wait_ms < 0:
            raise ConfigError("EMBEDCLF_BATCH_MAX_WAIT_MS must be >= 0")
        if self.batch.max_tokens < 16:
            raise ConfigError("EMBEDCLF_BATCH_MAX_TOKENS must be >= 16")
        if self.max_text_chars < 1:
            raise ConfigError("EMBEDCLF_MAX_TEXT_CHARS must be >= 1")
        if self.max_payload_bytes < 1024:
            raise ConfigError("EMBEDCLF_MAX_PAYLOAD_BYTES must be >= 1024")
        if not 0 <= self.enqueue_retry_s <= 86400:
            raise ConfigError("EMBEDCLF_ENQUEUE_RETRY_S must be between 0 and 86400 seconds")
        if not (self.head_refresh_s > 0 and self.head_refresh_s < 86400):
            raise ConfigError("EMBEDCLF_HEAD_REFRESH_S must be a positive number of seconds")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError("EMBEDCLF_METRICS_PORT must be a port number (0 = off)")
        if self.max_attempts < 1:
            raise ConfigError("EMBEDCLF_MAX_ATTEMPTS must be >= 1")
        if not 1 <= self.text_threads <= 64:
            raise ConfigError("EMBEDCLF_TEXT_THREADS must be between 1 and 64")
        if not 0 <= self.head_threads <= 1024:
            raise ConfigError("EMBEDCLF_HEAD_THREADS must be between 0 and 1024")
        if not 0 <= self.enqueue_wait_replicas <= 16:
            raise ConfigError("EMBEDCLF_ENQUEUE_WAIT_REPLICAS must be between 0 and 16")
        if self.result_expires_s < 1:
            raise ConfigError("EMBEDCLF_RESULT_EXPIRES_S must be >= 1")
        if not 1 <= self.max_texts_per_task <= 100_000:
            raise ConfigError("EMBEDCLF_MAX_TEXTS_PER_TASK must be between 1 and 100000")
        if not 1 <= self.heartbeat_ttl_s <= 3600:
            raise ConfigError("EMBEDCLF_HEARTBEAT_TTL_S must be between 1 and 3600 seconds")
        if not 1 <= self.worker_processes <= 64:
            raise ConfigError("EMBEDCLF_WORKER_PROCESSES must be between 1 and 64")
        if not 0 <= self.shutdown_timeout_s <= 3600:
            raise ConfigError("EMBEDCLF_SHUTDOWN_TIMEOUT_S must be between 0 and 3600 seconds")
        if self.visibility_timeout_s < 5:
            raise ConfigError("EMBEDCLF_VISIBILITY_TIMEOUT_S must be >= 5")
        if self.api_token and not all("!" <= c <= "~" for c in self.api_token):
            # an Authorization header carries printable ASCII; a stray space or newline would lock everyone out
            raise ConfigError("EMBEDCLF_API_TOKEN must be printable ASCII without spaces")

    def broker_transport_options(self) -> dict[str, object]:
        """What kombu needs besides the URL (the sentinel primary's name for ``sentinel://`` URLs)."""
        if self.broker_url.strip().lower().startswith("sentinel://"):
            return {"master_name": self.broker_sentinel_master}
        return {}

    def with_overrides(self, **kwargs: object) -> Settings:
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


def check_broker_url(url: str, var: str = "EMBEDCLF_BROKER_URL") -> None:
    """ConfigError (a ValueError), one line naming ``var``, for a broker URL the workers or clients cannot use."""
    _check_url(url, var, ("redis", "rediss", "sentinel"),
               "a Redis URL, redis://[:password@]host:6379/0 (or rediss://, sentinel://)")


def _check_url(url: str, var: str, schemes: tuple[str, ...], what: str) -> None:
    """One line naming the variable when ``url`` cannot be used (never the URL's password)."""
    pieces = [p for p in url.split(";") if p.strip()] if url.strip().lower().startswith("sentinel://") else [url]
    for piece in pieces or [url]:
        try:
            parts = urlsplit(piece.strip())
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            raise ConfigError(f"{var} is not a valid URL ({mask_url(url)}): {redact(str(exc), url)}") from None
        scheme = parts.scheme.lower()
        if scheme not in schemes or (len(pieces) > 1 and scheme != "sentinel"):
            shown = f"{scheme}://" if scheme else mask_url(piece)
            raise ConfigError(f"{var} must be {what}; got {shown}")
        if scheme in _USERINFO_CUT_SCHEMES and _userinfo_cut(parts):
            raise ConfigError(f"{var}: its user or password holds an unencoded '/', '?' or '#' (percent-encode it: "
                              "%2F, %3F, %23); as written, Redis clients would read another host and connect there")


#: schemes whose clients (redis-py, kombu) read a URL with urllib: an unencoded ``/ ? #`` in its password ends
#: the host part early, leaving no host (so localhost:6379, DB 0) and the real host in the path
_USERINFO_CUT_SCHEMES = ("redis", "rediss", "sentinel")


def _userinfo_cut(parts: SplitResult) -> bool:
    """Whether an ``@`` that follows the host part shows userinfo cut short by ``/``, ``?`` or ``#``
    (``redis://:pa/ss@host:6379/0``); a ``?password=`` query may hold ``@`` after its ``=``."""
    if "@" in parts.netloc:
        return False
    query_head = parts.query.split("@", 1)[0] if "@" in parts.query else None
    return "@" in parts.path or "@" in parts.fragment or (query_head is not None and "=" not in query_head)


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
        raise ConfigError(f"{key}: {exc}") from None
