"""Shape rules: a pure core, nothing connects at import, small modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = [
    "embedclf.embedders.base", "embedclf.embedders.fake", "embedclf.heads.mlp", "embedclf.heads.checkpoint",
    "embedclf.training.split", "embedclf.training.trainer", "embedclf.training.metrics",
    "embedclf.training.evaluate", "embedclf.payload", "embedclf.batching", "embedclf.classify",
    "embedclf.envelope", "embedclf.embedders.null",
    "embedclf.config",
]
ADAPTER_LIBS = ["sqlalchemy", "psycopg2", "celery", "kombu", "redis", "click", "llama_cpp",
                "sentence_transformers", "transformers", "alembic", "huggingface_hub"]


def test_core_imports_no_adapter_library():
    code = (
        "import sys\n"
        f"for m in {CORE!r}: __import__(m)\n"
        f"bad = sorted(l for l in {ADAPTER_LIBS!r} if l in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core modules pulled in: {out.stdout.strip()}"


def test_importing_the_app_connects_to_nothing():
    """worker.app builds the Celery app from settings without opening a socket or loading a model."""
    code = (
        "import socket, sys\n"
        "def refuse(*a, **k): raise AssertionError('network use at import time')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse\n"
        "import worker.app, embedclf.cli\n"
        "assert worker.app.app.main == 'embedclf'\n"
        "assert 'embedclf.classify' in worker.app.app.tasks\n"
        "assert 'sentence_transformers' not in sys.modules and 'llama_cpp' not in sys.modules\n"
        "print('ok')\n"
    )
    env = {"EMBEDCLF_BROKER_URL": "redis://127.0.0.1:1/0", "EMBEDCLF_DATABASE_URL": "postgresql://x@127.0.0.1:1/x",
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.parametrize("package", ["embedclf", "worker", "migrations"])
def test_no_module_over_400_lines(package):
    big = {str(p.relative_to(ROOT)): n for p in (ROOT / package).rglob("*.py")
           if (n := len(p.read_text().splitlines())) > 400}
    assert big == {}


def test_app_settings_are_safe():
    from embedclf.config import Settings
    from worker.app import create_app

    app = create_app(Settings(batch=Settings().batch))
    conf = app.conf
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_pool == "solo"
    # Celery's own consumer never reads the classify queue: the bulk receive step does
    assert Settings().queue not in {q.name for q in conf.task_queues}
    assert any(step.__name__ == "BulkReceive" for step in app.steps["consumer"])
    assert conf.broker_transport_options["visibility_timeout"] == Settings().visibility_timeout_s
