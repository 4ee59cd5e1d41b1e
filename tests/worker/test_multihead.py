"""Many heads, one embedding: one row per (task, head), each text embedded once per batch.

First through ``process_batch`` against the real Postgres (fake embedder, fast), then end to end
through a real Celery worker with MiniLM serving two trained heads and a zero-shot head.
"""

from __future__ import annotations

import collections
import datetime as dt
import re
import time

import pytest
from click.testing import CliRunner

from embedclf.classify import classify_requests, error_row
from embedclf.cli import cli
from embedclf.config import Settings
from embedclf.data import load_labeled
from embedclf.demo import HOLDOUT_CSV, TRAIN_CSV
from embedclf.embedders.fake import FakeEmbedder
from embedclf.heads.checkpoint import HeadArtifact
from embedclf.heads.zeroshot import LabelSpec, build_zeroshot
from embedclf.payload import ClassifyRequest, PayloadError, parse_request, salvage
from embedclf.store import repository as repo
from embedclf.training.trainer import TrainParams, train_head
from tests.conftest import settings_env
from tests.helpers import produce, wait_rows
from worker.intake import fingerprint
from worker.resources import WorkerResources

pytestmark = pytest.mark.postgres

FRUIT = ["apple banana", "ripe mango", "banana split", "fresh apple", "mango smoothie", "pear and apple"]
CARS = ["fast car engine", "car tyres", "engine oil change", "new car brakes", "tyres and brakes", "diesel engine"]
#: the second head's labels, derived from the demo labels: a coarser view of the same texts
AREA = {"billing": "money", "returns": "money", "shipping": "delivery", "product_question": "pre_sale",
        "technical_issue": "tech", "account_access": "tech"}


def store_fake_head(engine, emb: FakeEmbedder, name: str, labels_of: dict[str, str]) -> None:
    texts = (FRUIT + CARS) * 20
    labels = [labels_of["fruit" if t in FRUIT else "cars"] for t in texts]
    result = train_head(emb.embed(texts), labels, TrainParams(epochs=30, hidden_dim=32, patience=30))
    repo.add_head_version(engine, name, HeadArtifact.from_head(result.head, result.labels, emb.model_id))


def item(task_id: str, kwargs: dict) -> ClassifyRequest | dict:
    """A message as the worker's intake makes it: a request, or the row that answers the whole task."""
    fp = fingerprint(kwargs)
    try:
        return parse_request(task_id, (), kwargs, 1000, fingerprint=fp)
    except PayloadError as exc:
        return error_row(task_id, str(exc), fingerprint=fp, **salvage(kwargs))


def process_batch(items: list, res: WorkerResources) -> int:
    """What the worker's batch and write threads do with one batch: classify, then one write."""
    requests = [p for p in items if isinstance(p, ClassifyRequest)]
    rows = classify_requests(requests, res.embedder, res.heads.snapshot(), broken=res.heads.broken)
    rows += [dict(p) for p in items if isinstance(p, dict)]
    now = dt.datetime.now(dt.timezone.utc)
    for row in rows:
        row.update(received_at=now, worker=res.hostname)
    return res.write_results(rows).inserted


def rows_by_key(engine) -> dict[tuple[str, str | None], dict]:
    rows = repo.query_predictions(engine, limit=None)
    keys = [(r["task_id"], r["head_name"]) for r in rows]
    assert len(keys) == len(set(keys)), collections.Counter(keys).most_common(3)
    return dict(zip(keys, rows))


@pytest.fixture
def resources(clean_db, pg_url):
    res = WorkerResources(Settings(database_url=pg_url, head_refresh_s=60), embedder=FakeEmbedder(32))
    store_fake_head(clean_db, res.embedder, "topic", {"fruit": "fruit", "cars": "cars"})
    store_fake_head(clean_db, res.embedder, "edible", {"fruit": "yes", "cars": "no"})
    yield res
    res.close()


def test_one_row_per_task_and_head_and_redelivery_adds_nothing(resources, clean_db):
    batch = [
        item("m1", {"heads": ["topic", "edible"], "text": "apple and mango", "request_id": "r1"}),
        item("m2", {"heads": ["edible", "nope", "topic"], "text": "car engine"}),
        item("s1", {"head": "topic", "text": "car engine"}),
        item("bad", {"heads": ["topic", "edible"], "text": "   "}),
        item("dup", {"heads": ["topic", "topic"], "text": "apple"}),
    ]
    assert process_batch(batch, resources) == 8
    rows = rows_by_key(clean_db)
    assert set(rows) == {("m1", "topic"), ("m1", "edible"), ("m2", "edible"), ("m2", "nope"), ("m2", "topic"),
                         ("s1", "topic"), ("bad", None), ("dup", None)}
    assert (rows["m1", "topic"]["label"], rows["m1", "edible"]["label"]) == ("fruit", "yes")
    assert (rows["m2", "topic"]["label"], rows["m2", "edible"]["label"]) == ("cars", "no")
    assert rows["m1", "edible"]["request_id"] == "r1" and rows["m1", "topic"]["head_version"] == 1
    assert rows["m2", "nope"]["status"] == "error" and "unknown head 'nope'" in rows["m2", "nope"]["error"]
    assert rows["s1", "topic"]["top3"] == rows["m2", "topic"]["top3"]  # same text, same head
    assert rows["bad", None]["error"] == "'text' is empty"
    assert "more than once" in rows["dup", None]["error"]
    # each distinct text embedded once for the whole batch (two texts, six head rows)
    assert resources.embedder.calls[-1] == 2
    # a redelivery of the whole batch, or of one multi-head task, inserts nothing new
    assert process_batch(batch, resources) == 0
    assert process_batch([item("m1", {"heads": ["edible", "topic"], "text": "apple and mango"})], resources) == 0
    assert len(repo.query_predictions(clean_db, limit=None)) == 8


def test_a_head_added_later_fills_only_its_own_row(resources, clean_db):
    """Redelivered after a head appeared: the rows already written stay, the new head's row is added."""
    task = item("late", {"heads": ["topic", "fresh"], "text": "ripe mango"})
    assert process_batch([task], resources) == 2
    assert rows_by_key(clean_db)["late", "fresh"]["status"] == "error"
    assert process_batch([task], resources) == 0  # same answer: nothing new, nothing duplicated


# --- end to end: a real worker, MiniLM, two trained heads and a zero-shot head --------------


@pytest.fixture(scope="module")
def demo_heads(engine, minilm):
    from sqlalchemy import text

    train = load_labeled(TRAIN_CSV)
    X = minilm.embed(train.texts)
    support = train_head(X, train.labels, TrainParams(epochs=40))
    area = train_head(X, [AREA[y] for y in train.labels], TrainParams(epochs=40))
    zeroshot = build_zeroshot(minilm, [LabelSpec.of(y) for y in sorted(set(train.labels))])
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE predictions, head_events, heads RESTART IDENTITY"))
    repo.add_head_version(engine, "support", HeadArtifact.from_head(support.head, support.labels, minilm.model_id))
    repo.add_head_version(engine, "area", HeadArtifact.from_head(area.head, area.labels, minilm.model_id))
    repo.add_head_version(engine, "zs", zeroshot)
    return {"support": (support.head, support.labels), "area": (area.head, area.labels),
            "zs": (zeroshot.build(), zeroshot.labels)}


BATCH_LINE = re.compile(r"embedded (\d+) distinct texts in \d+ call\(s\) for (\d+) tasks, (\d+) head rows")


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.redis
def test_worker_serves_several_heads_from_one_embedding(settings, engine, demo_heads, minilm, start_worker,
                                                        tmp_path):
    holdout = load_labeled(HOLDOUT_CSV)
    worker = start_worker(settings_env(settings, EMBEDCLF_BATCH_MAX_SIZE="32", EMBEDCLF_BATCH_MAX_WAIT_MS="100",
                                       EMBEDCLF_LOG_LEVEL="DEBUG"), name="w-multi")
    worker.wait_ready()
    # 90 held-out texts, each for three heads, through `embedclf enqueue --head ... --head ... --head ...`
    ids_file = tmp_path / "ids.txt"
    env = {"EMBEDCLF_DATABASE_URL": settings.database_url, "EMBEDCLF_BROKER_URL": settings.broker_url,
           "EMBEDCLF_QUEUE": settings.queue}
    r = CliRunner().invoke(cli, ["enqueue", "--head", "support", "--head", "area", "--head", "zs", "--file",
                                 str(HOLDOUT_CSV), "--ids-out", str(ids_file), "--per-task", "1", "--quiet"], env=env,
                           catch_exceptions=False)
    assert r.exit_code == 0 and "heads 'support', 'area', 'zs'" in r.output, r.output + r.stderr
    cli_ids = [line.split("\t")[0] for line in ids_file.read_text().splitlines()]
    assert len(cli_ids) == len(set(cli_ids)) == len(holdout.texts)
    # and from a plain Celery producer: an unknown head among several, a bad multi-head task
    extra = [
        {"id": "unknown", "kwargs": {"heads": ["support", "nope", "zs"], "text": "I was charged twice"}},
        {"id": "blank", "kwargs": {"heads": ["support", "area"], "text": " "}},
    ]
    produce(settings.broker_url, extra, tmp_path)
    expected_keys = {(t, h) for t in cli_ids for h in ("support", "area", "zs")}
    expected_keys |= {("unknown", "support"), ("unknown", "nope"), ("unknown", "zs"), ("blank", None)}

    wait_rows(engine, cli_ids + ["unknown", "blank"], worker)  # waits for the first row of each task ...
    rows = {}
    for _ in range(100):  # ... and then for every row (one INSERT per batch: they land together)
        rows = rows_by_key(engine)
        if len(rows) >= len(expected_keys):
            break
        time.sleep(0.2)
    assert set(rows) == expected_keys  # exactly one row per (task, head), nothing else

    # every head's label equals the offline prediction of that head on the same MiniLM vectors
    X = minilm.embed(holdout.texts)
    for name, (head, labels) in demo_heads.items():
        proba = head.predict_proba(X)
        for tid, p in zip(cli_ids, proba):
            row = rows[tid, name]
            assert row["status"] == "ok" and row["head_version"] == 1 and row["embedder_id"] == minilm.model_id
            assert row["label"] == labels[int(p.argmax())], (name, row["text"])
            assert row["score"] == pytest.approx(float(p.max()), abs=1e-4)
    # the coarse head and the fine head agree on most texts (they learnt the same data)
    agree = sum(AREA[rows[t, "support"]["label"]] == rows[t, "area"]["label"] for t in cli_ids)
    assert agree >= 0.9 * len(cli_ids)  # measured 86 of 90
    zs_acc = sum(rows[t, "zs"]["label"] == y for t, y in zip(cli_ids, holdout.labels)) / len(cli_ids)
    assert zs_acc > 0.5  # zero-shot, served like any head (see tests/heads/test_zeroshot.py for the bar)
    assert rows["unknown", "nope"]["status"] == "error" and "unknown head 'nope'" in rows["unknown", "nope"]["error"]
    assert rows["unknown", "support"]["label"] == "billing" and rows["unknown", "zs"]["status"] == "ok"
    assert rows["blank", None]["error"] == "'text' is empty"

    # Embedded once: classify_requests logs, right after its one embed call per batch, how many distinct
    # texts that call got and how many tasks and head rows it served. Summed over the worker's batches:
    # 91 distinct texts for 91 tasks and 3 * 90 + 2 = 272 head rows.
    lines = [tuple(map(int, m.groups())) for m in BATCH_LINE.finditer(worker.log())]
    assert lines, worker.log()[-2000:]
    assert sum(n for n, _, _ in lines) == len(holdout.texts) + 1
    assert sum(t for _, t, _ in lines) == len(holdout.texts) + 1
    assert sum(r for _, _, r in lines) == 3 * len(holdout.texts) + 2
    assert "retrying one by one" not in worker.log()
    print(f"\nmulti-head e2e: {len(rows)} rows from {len(lines)} batches, zero-shot accuracy {zs_acc:.3f}, "
          f"support/area agreement {agree}/{len(cli_ids)}")
