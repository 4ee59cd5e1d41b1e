"""`pip install embedclf` without extras: a producer's install, Celery and Redis only, that enqueues and gets results.

Installs this checkout into a fresh virtualenv (dependencies from the package index, as a user's pip
would), checks that no model library came with it, then enqueues through a real worker (run from
the full install) and waits for the results with the Celery result backend.
"""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import pytest
import redis

from tests.conftest import settings_env
from tests.helpers import tiny_head

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]
ROOT = Path(__file__).resolve().parents[1]

PRODUCER = r"""
import json, sys
from embedclf.client import Client
client = Client(sys.argv[1], result_backend=sys.argv[1])
one = client.classify("tiny", "hello from a light install").get(timeout=120)
many = client.wait(client.classify_many("tiny", ["first", "second", ""]), timeout=120)
client.close()
print(json.dumps({"one": one, "many": many}, default=str))
"""


def test_light_install_enqueues_and_gets_results(settings, clean_db, start_worker, tmp_path):
    env_dir = tmp_path / "light"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True,
                             timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    probe = subprocess.run([str(py), "-c", "import importlib.util as u, json; print(json.dumps([m for m in "
                            "('torch', 'sentence_transformers', 'llama_cpp', 'sqlalchemy', 'numpy', 'click') "
                            "if u.find_spec(m)]))"], capture_output=True, text=True, check=True)
    # click comes with celery; no model, array or database library does
    assert [m for m in json.loads(probe.stdout) if m != "click"] == []
    cli = subprocess.run([str(env_dir / "bin" / "embedclf"), "--version"], capture_output=True, text=True)
    assert cli.returncode == 1 and "pip install 'embedclf[worker]'" in cli.stderr and len(cli.stderr.splitlines()) == 1

    tiny_head(clean_db)
    redis.Redis.from_url(settings.broker_url).delete(settings.queue)
    w = start_worker(settings_env(settings, EMBEDCLF_EMBEDDER="fake:32", EMBEDCLF_RESULT_BACKEND=settings.broker_url),
                     name="w-light")
    w.wait_ready()
    out = subprocess.run([str(py), "-c", PRODUCER, settings.broker_url], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout)
    assert got["one"]["status"] == "ok" and got["one"]["head_name"] == "tiny"
    assert [r[0]["status"] if isinstance(r, list) else r["status"] for r in got["many"]] == ["ok", "ok", "error"]
